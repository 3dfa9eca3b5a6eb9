"""Fleet placement with OR-Tools MathOpt: integer nodes of each supply for each workload.

Formulation (docs/workloads.md has the user-facing rules):

- ``x[w,c]`` integer nodes of column c (a supply that can serve workload w), bounded by the
  supply's capacity and by the nodes that alone would cover w's demand;
- coverage ``sum units * x >= demand * s[w]``; capacity ``sum_w x[w,c] <= capacity(supply)``;
  on-demand share ``sum (on_demand - share) * units * x >= 0``; spread: ``y[w,g]`` marks group g
  (a provider, or a provider's region) carrying at least demand/k, and ``sum_g y >= k``;
- whole-node cuts (see ``_Model.ceilings``): in those rows a node counts for no more than the row
  can ask of it, and share workloads get ``sum on_demand units * x >= share * s``, so the LP bound
  reflects that nodes come whole;
- lexicographic priorities: when all demand can be served, ``s = 1`` and cost is minimised. When
  not, first maximise ``sum priority * s`` (served fraction), then minimise cost holding it.

Only columns that matter are generated: each workload starts with its cheapest columns per unit
of demand, then column generation on the LP relaxation prices every feasible column with the
LP's duals and adds those with negative reduced cost until none is left. That makes the
reported LP bound valid for the full problem while the MIPs see a fraction of the columns.
Service comes from the rounded lexicographic LP (and a service MIP when supply is short); cost
from a MIP, or for large models a large-neighbourhood search of small exact MIPs.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from ortools.math_opt import model_parameters_pb2, model_pb2, solution_pb2
from ortools.math_opt.core.python import solver as core_solver
from ortools.math_opt.python import callback, init_arguments, mathopt

from gpu_supply.errors import UserError
from gpu_supply.offer import Offer
from pricing.fx import FxTable
from scheduler.baselines import greedy_assignment
from scheduler.plans import Explanation, Placement, Plan, SolverReport, Unmet
from scheduler.supply import FILTERS, ColumnBuilder, Columns, SupplyTable
from scheduler.throughput import ProfileRow, ThroughputModel
from scheduler.workloads import Workload

SOLVERS = {"highs": mathopt.SolverType.HIGHS, "scip": mathopt.SolverType.GSCIP, "cpsat": mathopt.SolverType.CP_SAT}
PRICING_BUDGET = 0.4  # share of the time limit column generation may take before rounding
COST_PRICING_BUDGET = 0.5  # ...and of the time then left, once service is decided
RECOST_PRICING_BUDGET = 0.4  # ...or this where the service stage's top-up was dear: the cost stage's will
# likely be too, and its re-cost needs the time (see _recost)
PRICING_GAP = 2e-3  # the service stage's column generation stops once a round adds less than this share to
# its LP's service (the whole-node service MIP and top-up decide the last fraction)
INITIAL_COLUMNS = 8  # cheapest columns per workload to start from
SPREAD_COLUMNS_PER_GROUP = 3  # ...and this many per spread group
HIGHS_HEURISTIC_EFFORT = 0.3  # HiGHS default 0.05
LNS_ABOVE_COLUMNS = 5_000  # larger models are improved piecewise (see _improve) rather than by one MIP
LNS_WORKLOADS = 20  # workloads re-solved together per neighbourhood (why not 40: docs/workloads.md)
LNS_SECONDS = 1.0  # most seconds per neighbourhood MIP
MERGE_SECONDS = 2.0  # most seconds for merging the service-stage plan with the rounded LP (see _merge)
RECOST_ABOVE = 0.01  # a top-up adding more than this share to the plan's cost is re-costed (see _recost)
RECOST_LEAD = 3.0  # ...for which the rounding passes and repair before it leave this many times an LP and a
# rounding (and the re-cost starts where one of each is left before the finish reserve)
FINISH_RESERVE = (0.1, 6.0)  # share of the time limit (at most so many seconds) rounding and repair leave
# the merge, or the service MIP over the workloads still short (see _serve_short)
SHORT_SHARE = 0.5  # ...of which that service MIP may take this share of the time left, and its cost MIP
# the same share of what is then left (the rest bounds the cost at the new levels, see _held_at)
COMPLETION_SWEEPS = 3  # passes completing the workloads a rounding left short from nodes freed after them
DISPLACE_DEPTH = 3  # chains of workloads displaced to their fallback nodes, at most this long (see _Rounding)
ROUNDING_PASSES = 4  # roundings of the cost LP, each letting those the last left short pick first
REPAIR_STEPS = ((8, 0.15), (40, 0.5))  # workloads re-solved with one the rounded LP left short, and most
# seconds: a small neighbourhood first, a larger one where that cannot serve it (those that find no plan in
# that long rarely do in twice it; at 1,000 workloads 0.5 s and 1 s took 2.6 s of 10 from the search).
# 8 rather than 15 first: the re-cost's repair at 5,000 completes more of them before its reserve
ROOM_COLUMNS = 4  # cheapest columns with free nodes each re-solved workload may also move to
LNS_RELATED = 4  # workloads holding a seed's supplies re-solved with it
RESTRICTED_CHEAPEST = 2  # cheapest columns per workload kept beside the LP's support (see _restricted)
SERVE_SHARE = 0.35  # of the time left, for whole-node service (a MIP, or see _serve_more) when supply is short
SERVICE_GAP = 1e-4  # ...which runs to this gap, not the plan's: service comes first (at 0.5 %, tight 10 lost 0.05 %)
LEVELS_SHARE = 0.5  # of the time left, for the cost MIP holding each level before one holding the total
SMALL_MIP_SHARE = 0.5  # ...and for small models' last cost MIP, before a neighbourhood search (see _cost_stage)
SERVICE_TOLERANCE = 1e-6  # priority-weighted service a plan may fall short of the total held (solver tolerance)
SOLVE_FLOOR = 0.05  # fewest seconds a solve is given, past the deadline if need be (0.2 overran small plans' finish)
FINISH_SECONDS = (0.1, 0.0004)  # kept back from the time limit for assembling the plan: fixed + per workload
# (it took 0.05 s at 1,000 workloads and 0.3-0.5 s at 5,000; explanations come after the limit)
COVER_FACTOR = 2.0  # ...plus more until their capacity covers this many times the demand
COLUMNS_PER_ROUND = 8  # columns added per workload per pricing round
MAX_PRICING_ROUNDS = 25
CAPACITY_PRICED = 2.0  # a cost-stage pricing round adds columns on a supply for up to this many times its capacity
REDUCED_COST_TOLERANCE = 1e-7
GAIN_BANDS = 256  # most bands of gain (a quarter octave each) _Model.scarcity counts nodes in
LAGRANGIAN_COLUMNS = 3_000_000  # in models with this many columns (generated or not) and more, cost-stage
LAGRANGIAN_BELOW = 0.5  # rounds whose own bound is below this share of their LP's value also take the
# Lagrangian's bound and columns (see generate_columns), as every model's last round does
LAGRANGIAN_STEPS = 2  # alternations of capacity prices and cover duals per cost-stage round (see _Model.lagrangian)
COVER_BRANCHES = 2_000  # most branches of _whole_node_cover before a MIP takes over
COVER_DEPTH = 400  # ...and most columns deep
CHEAPEST_SORTED = 32  # columns a fractional cover sorts first, all only where these fall short (see _cheapest_first)
EXPLAIN_THREADS = 2  # workloads explained at once (see _single_type_plans)
UNSCALED_COLUMNS = 20_000  # LPs with this many columns and more are solved unscaled first: the
# columns' coefficients are fractions of demand near 1 already, and at 5,000 workloads HiGHS's scaling
# made the largest service LP 4x slower (9.6 s against 2.3 s) and cost LPs 15-20 % slower; same optima
UNSCALED = 0  # HiGHS's simplex_scale_strategy: off


@dataclass(frozen=True)
class PlanOptions:
    time_limit_s: float = 30.0
    solver: str = "highs"
    unknown_capacity: int | None = None  # nodes assumed per offer where suppliers don't say; None = unlimited
    currency: str = "USD"
    relative_gap: float = 0.005
    explain: bool = True  # per-workload explanations (a small MIP per GPU type; benchmarks turn it off)


@dataclass(frozen=True)
class _Result:
    """What a solve returned, as arrays indexed by variable and constraint id.

    MathOpt's own result object parses every value, dual and basis entry into Python dicts, which
    cost more than the LP solves themselves once models reach tens of thousands of columns.
    """

    reason: mathopt.TerminationReason
    feasible: bool  # has a primal feasible solution
    objective: float | None
    dual_bound: float
    values: np.ndarray
    duals: np.ndarray
    reduced: np.ndarray = field(default_factory=lambda: np.zeros(0))  # reduced cost of each variable (LPs)

    @property
    def optimal(self) -> bool:
        return self.reason == mathopt.TerminationReason.OPTIMAL

    def value(self, variable: _Variable) -> float:
        return float(self.values[variable.id]) if variable.id < len(self.values) else 0.0

    def dual(self, constraint: _Row) -> float:
        return float(self.duals[constraint.id]) if constraint.id < len(self.duals) else 0.0

    def dual_values(self, ids: np.ndarray) -> np.ndarray:
        """Duals of the rows ``ids`` (0 for rows the solve did not have)."""
        return _padded(self.duals, ids)

    def reduced_costs(self, ids: np.ndarray) -> np.ndarray:
        """Reduced costs of the variables ``ids`` (0 for variables the solve did not have)."""
        return _padded(self.reduced, ids)


def _padded(vector: np.ndarray, ids: np.ndarray) -> np.ndarray:
    padded = np.zeros(max(len(vector), int(ids.max()) + 1 if len(ids) else 0))
    padded[:len(vector)] = vector
    return padded[ids]


def _dense(vector) -> np.ndarray:
    ids = np.asarray(vector.ids, dtype=np.int64)
    dense = np.zeros(int(ids.max()) + 1 if len(ids) else 0)
    dense[ids] = np.asarray(vector.values, dtype=float)
    return dense


class _Variable:
    __slots__ = ("id", "lower_bound", "upper_bound", "integer")

    def __init__(self, id_: int, lower_bound: float, upper_bound: float, integer: bool) -> None:
        self.id, self.lower_bound, self.upper_bound, self.integer = id_, lower_bound, upper_bound, integer


class _Row:
    __slots__ = ("id", "program")

    def __init__(self, id_: int, program: _Program) -> None:
        self.id, self.program = id_, program

    def set_coefficient(self, variable: _Variable, value: float) -> None:
        self.program.entries.append((self.id, variable.id, value))


class _Program:
    """A linear (or mixed-integer) program kept as plain lists and handed to the solver as MathOpt's
    ModelProto. Building it through ``mathopt.Model`` costs tens of microseconds per coefficient in
    Python, more than the solves themselves once models reach tens of thousands of columns."""

    def __init__(self) -> None:
        self.variables: list[_Variable] = []
        self.row_bounds: list[tuple[float, float]] = []
        self.entries: list[tuple[int, int, float]] = []  # (row, variable, coefficient), each pair once
        self.objective: dict[_Variable, float] = {}  # minimised

    def add_variable(self, lb: float = 0.0, ub: float = math.inf, integer: bool = False) -> _Variable:
        variable = _Variable(len(self.variables), lb, ub, integer)
        self.variables.append(variable)
        return variable

    def add_row(self, lb: float = -math.inf, ub: float = math.inf,
                terms: tuple[tuple[_Variable, float], ...] = ()) -> _Row:
        row = _Row(len(self.row_bounds), self)
        self.row_bounds.append((lb, ub))
        for variable, value in terms:
            row.set_coefficient(variable, value)
        return row

    def export(self) -> model_pb2.ModelProto:
        proto = model_pb2.ModelProto()
        variables = proto.variables
        variables.ids.extend(range(len(self.variables)))
        variables.lower_bounds.extend([variable.lower_bound for variable in self.variables])
        variables.upper_bounds.extend([variable.upper_bound for variable in self.variables])
        variables.integers.extend([variable.integer for variable in self.variables])
        terms = sorted((variable.id, value) for variable, value in self.objective.items() if value)
        proto.objective.linear_coefficients.ids.extend([id_ for id_, _ in terms])
        proto.objective.linear_coefficients.values.extend([value for _, value in terms])
        proto.linear_constraints.ids.extend(range(len(self.row_bounds)))
        proto.linear_constraints.lower_bounds.extend([lb for lb, _ in self.row_bounds])
        proto.linear_constraints.upper_bounds.extend([ub for _, ub in self.row_bounds])
        if self.entries:
            entries = np.array(self.entries)
            order = np.lexsort((entries[:, 1], entries[:, 0]))
            matrix = proto.linear_constraint_matrix
            matrix.row_ids.extend(entries[order, 0].astype(np.int64).tolist())
            matrix.column_ids.extend(entries[order, 1].astype(np.int64).tolist())
            matrix.coefficients.extend(entries[order, 2].tolist())
        return proto


def _solve(program: _Program, solver: mathopt.SolverType, params: mathopt.SolveParameters,
           hint: dict[_Variable, float] | None = None) -> _Result:
    """One solve through MathOpt's core solver, with the result read straight from its proto (see _Result)."""
    model_params = model_parameters_pb2.ModelSolveParametersProto()
    if hint:
        values = sorted((variable.id, value) for variable, value in hint.items())
        solution = model_params.solution_hints.add().variable_values
        solution.ids.extend([id_ for id_, _ in values])
        solution.values.extend([value for _, value in values])
    raw = core_solver.solve(program.export(), solver.value, init_arguments.StreamableSolverInitArguments().to_proto(),
                            params.to_proto(), model_params, None, callback.CallbackRegistration().to_proto(),
                            None, None)
    termination = raw.termination
    primal = raw.solutions[0].primal_solution if raw.solutions and raw.solutions[0].HasField("primal_solution") \
        else None
    feasible = primal is not None and primal.feasibility_status == solution_pb2.SOLUTION_STATUS_FEASIBLE
    dual = raw.solutions[0].dual_solution if raw.solutions else None
    return _Result(reason=mathopt.TerminationReason(termination.reason), feasible=feasible,
                   objective=primal.objective_value if feasible else None,
                   dual_bound=termination.objective_bounds.dual_bound,
                   values=_dense(primal.variable_values) if feasible else np.zeros(0),
                   duals=_dense(dual.dual_values) if dual is not None else np.zeros(0),
                   reduced=_dense(dual.reduced_costs) if dual is not None else np.zeros(0))


class _FlatColumns:
    """Every workload's columns end to end, so a pricing round prices all of them in a few array
    operations (a loop over workloads cost most of a round at thousands of workloads)."""

    def __init__(self, workloads: list[Workload], columns: list[Columns]) -> None:
        lengths = np.array([len(cols) for cols in columns], dtype=np.int64)
        self.offset = np.concatenate([[0], np.cumsum(lengths)])
        self.workload = np.repeat(np.arange(len(columns)), lengths)
        demand = np.array([workload.demand_units for workload in workloads])
        self.supply = np.concatenate([cols.supply for cols in columns]).astype(np.int64)
        units = np.concatenate([cols.units for cols in columns]).astype(float)
        self.share_units = units / demand[self.workload]  # rows are in fractions of demand
        self.weight = np.concatenate([cols.weight for cols in columns]).astype(float)
        self.tolerance = REDUCED_COST_TOLERANCE * np.maximum(1.0, np.abs(self.weight))
        self.share = np.array([workload.min_on_demand_share for workload in workloads])
        self.on_demand = ~np.concatenate([cols.spot for cols in columns]).astype(bool)
        # Columns of workloads with an on-demand share, and their coefficients in its two rows.
        self.share_columns = np.flatnonzero(self.share[self.workload] > 0)
        self.share_coefficient = ((self.on_demand - self.share[self.workload]) * self.share_units)[self.share_columns]
        spread = np.array([workload.spread.count for workload in workloads], dtype=float)
        self.group_cap = 1.0 / np.maximum(spread, 1.0)[self.workload]  # a group row's coefficient cap
        self.alone = np.ceil(demand[self.workload] / units - 1e-9)  # nodes that alone cover demand


@dataclass(frozen=True)
class _Priced:
    """A Lagrangian bound on the cost LP at given capacity prices (see ``_Model.priced``), the cover duals
    those prices imply, and the columns each workload covers its level with there (flat positions)."""

    bound: float
    cover: np.ndarray  # per workload, in fractions of demand as the cover rows are
    columns: np.ndarray


class _Model:
    """The MathOpt model, grown column by column; LP while generating columns, MIP at the end.

    ``served[w]`` is the fraction of w's demand served, bounded by what w could get alone
    (``targets``), then held at the service decided; objectives: service, then cost.
    """

    def __init__(self, workloads: list[Workload], table: SupplyTable, columns: list[Columns],
                 targets: list[float], capacity: np.ndarray | None = None, flat: _FlatColumns | None = None) -> None:
        self.workloads, self.table, self.columns = workloads, table, columns
        self.targets = list(targets)  # demand units each workload could get alone
        self.flat = flat or _FlatColumns(workloads, columns)
        self.has = np.zeros(len(self.flat.supply), dtype=bool)  # which columns have a variable (were generated)
        self.capacity_left = table.capacity if capacity is None else capacity  # nodes these workloads may use
        # Most nodes of each column worth having: the supply's capacity, or what alone covers demand.
        self.upper = np.minimum(self.capacity_left[self.flat.supply], self.flat.alone)
        self.model = _Program()
        self.x: dict[tuple[int, int], _Variable] = {}
        self.y: dict[tuple[int, str], _Variable] = {}
        self.served: dict[int, _Variable] = {}
        self.active: dict[int, _Variable] = {}  # spread workloads: served at all
        self.cover: dict[int, _Row] = {}
        self.share: dict[int, _Row] = {}
        self.on_demand: dict[int, _Row] = {}  # share workloads: on-demand units >= share x served
        self.caps: dict[int, float] = {}  # row id -> most any one node counts for in it (see ceilings)
        self.group: dict[tuple[int, str], _Row] = {}
        self.capacity: dict[int, _Row] = {}
        self.weight: dict[_Variable, float] = {}  # cost objective coefficient of each column
        self.integers: list[_Variable] = []
        self.costed = True  # whether the objective prices columns (not while maximising service alone)
        self.levels_fixed = False  # whether every workload's service is held at a level (cost stage)
        self.levels = np.zeros(len(workloads))  # the levels heuristics complete workloads to (fractions of demand)
        self.total: float | None = None  # the priority-weighted service held in all, where only that is held
        self._groups: dict[int, np.ndarray] = {}
        self._codes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cover_units: np.ndarray | None = None  # see cover_units; the levels fixed change it
        self.demand = np.array([workload.demand_units for workload in workloads])
        for index, workload in enumerate(workloads):
            demand = workload.demand_units
            served = self.model.add_variable(lb=0, ub=targets[index] / demand)
            self.served[index] = served
            # Rows are in fractions of the workload's demand, so coefficients stay near 1 for any unit.
            self.cover[index] = self.model.add_row(lb=0, terms=((served, -1.0),))
            if workload.min_on_demand_share > 0:  # on-demand units >= share x all units provisioned
                self.share[index] = self.model.add_row(lb=0)
                self.on_demand[index] = self.model.add_row(lb=0, terms=((served, -workload.min_on_demand_share),))
            spread = workload.spread.count
            if spread:  # all or nothing: k groups, each carrying demand/k, when served at all
                active = self.model.add_variable(lb=0, ub=1)
                self.active[index] = active
                self.integers.append(active)
                self.model.add_row(ub=0, terms=((served, 1.0), (active, -1.0)))
                self.group[(index, "")] = self.model.add_row(lb=0, terms=((active, -spread),))
        self._set_caps()

    def span(self, index: int) -> slice:
        """Where the workload's columns are in ``flat``, ``has`` and ``upper``."""
        return slice(self.flat.offset[index], self.flat.offset[index + 1])

    def has_variable(self, index: int) -> np.ndarray:
        """Which of the workload's columns have a variable (were generated): a view of ``has``."""
        return self.has[self.span(index)]

    def generated(self, index: int) -> np.ndarray:
        return np.flatnonzero(self.has_variable(index))

    def level(self, index: int) -> float:
        """The service the workload is held at (demand units), once ``fix_served`` has fixed it (see
        ``holding_total`` for where only the total is held)."""
        return self.levels[index] * self.demand[index]

    def group_key(self, workload: Workload, supply: int) -> str:
        return self.table.spread_groups(workload.spread)[supply]

    def over(self, keys, targets: list[float] | None = None) -> "_Model":
        """A new model of the same fleet with these columns, at ``targets`` (default: this one's)."""
        other = _Model(self.workloads, self.table, self.columns, self.targets if targets is None else targets,
                       flat=self.flat)
        for key in sorted(keys):
            other.add(*key)
        return other

    def add(self, index: int, position: int) -> None:
        """Add column ``position`` of workload ``index`` with its coefficients in every row it touches."""
        if (index, position) in self.x or self.served[index].upper_bound <= 0:  # nothing servable: no columns
            return
        workload, columns = self.workloads[index], self.columns[index]
        supply, units = int(columns.supply[position]), float(columns.units[position]) / workload.demand_units
        capacity = self.capacity_left[supply]
        variable = self.model.add_variable(lb=0, ub=float(self.upper[self.span(index)][position]))
        self.x[(index, position)] = variable
        self.has_variable(index)[position] = True
        self.integers.append(variable)
        self._set_capped(self.cover[index], variable, units)
        self.weight[variable] = float(columns.weight[position])
        if self.costed:
            self.model.objective[variable] = self.weight[variable]
        if index in self.share:
            on_demand = 0.0 if columns.spot[position] else 1.0
            self.share[index].set_coefficient(variable, (on_demand - workload.min_on_demand_share) * units)
            if on_demand:
                self._set_capped(self.on_demand[index], variable, units)
        if math.isfinite(capacity):
            if supply not in self.capacity:
                self.capacity[supply] = self.model.add_row(ub=capacity)
            self.capacity[supply].set_coefficient(variable, 1)
        spread = workload.spread.count
        if spread:
            key = (index, self.group_key(workload, supply))
            if key not in self.group:
                flag = self.model.add_variable(lb=0, ub=1)
                self.y[key] = flag
                self.integers.append(flag)
                self.group[key] = self.model.add_row(lb=0, terms=((flag, -1 / spread),))
                self.caps[self.group[key].id] = 1 / spread
                self.group[(index, "")].set_coefficient(flag, 1)
            self._set_capped(self.group[key], variable, units)

    def _set_capped(self, row: _Row, variable: _Variable, units: float) -> None:
        row.set_coefficient(variable, min(units, self.caps[row.id]))

    def ceilings(self) -> np.ndarray:
        """The most of its demand each workload may be served (fractions), where the coefficients of its
        cover row are capped: one node that alone serves that much covers the row whole, fractional
        or not, so whole-node plans satisfy the capped row too while the LP can no longer buy a
        sliver of a node. The same holds for the on-demand row (capped at share x ceiling) and the
        spread group rows (at 1/k). These cuts lift the LP bound where nodes are large against demand."""
        return np.array([self.served[index].upper_bound for index in range(len(self.workloads))])

    @functools.cached_property
    def finite_columns(self) -> np.ndarray:
        """Which columns are on supplies of known capacity (flat order)."""
        return np.isfinite(self.capacity_left)[self.flat.supply]

    def cover_units(self) -> np.ndarray:
        """Every column's coefficient in its cover row, capped at the workload's ceiling (flat order;
        read-only, kept until the levels change: each pricing round reads it several times, and at
        5,000 workloads building it takes 0.03 s)."""
        if self._cover_units is None:
            self._cover_units = np.minimum(self.flat.share_units, self.ceilings()[self.flat.workload])
            self._cover_units.flags.writeable = False
        return self._cover_units

    def _set_caps(self) -> None:
        """Cap the cover and on-demand rows at the current ceilings, lowering coefficients already set
        (service levels are fixed at or below the targets, so ceilings come down; where _held_at
        raises a level afterwards, a coefficient keeps its lower cap, which only asks for more nodes)."""
        for index, ceiling in enumerate(self.ceilings()):
            self.caps[self.cover[index].id] = ceiling
            if index in self.on_demand:
                self.caps[self.on_demand[index].id] = self.workloads[index].min_on_demand_share * ceiling
        caps = self.caps
        self.model.entries = [(row, column, min(value, caps[row]) if row in caps else value)
                              for row, column, value in self.model.entries]

    def objective_serve(self) -> None:
        self.costed = False
        self.model.objective = {self.served[index]: -float(workload.priority)
                                for index, workload in enumerate(self.workloads)}

    def objective_cost(self) -> None:
        self.costed = True
        self.model.objective = dict(self.weight)

    def fix_served(self, levels: list[float] | None = None) -> None:
        """Hold each workload's service at ``levels`` (demand units; default: its upper bound)."""
        for index, variable in self.served.items():
            level = variable.upper_bound if levels is None else levels[index] / self.workloads[index].demand_units
            variable.upper_bound = variable.lower_bound = self.levels[index] = level
        self.levels_fixed = True
        self._cover_units = None
        self._set_caps()

    def holding_total(self) -> _Model:
        """This model (its levels fixed) with only the priority-weighted service total held at what the
        levels serve, each workload's own service free up to its target: the lexicographic rule itself,
        which holding every level only approximates (tighter, so its MIPs solve sooner, but where the
        service stage's plan is dear, the cheap plans serve the same total differently: tight 100,
        seed 5, stayed at 1.49 times the LP). The rounding and repair complete workloads to the
        levels its LP serves them at, and trade service among them where whole nodes fall short."""
        other = self.over(self.x)
        other.levels = self.levels.copy()
        priorities = np.array([float(workload.priority) for workload in self.workloads])
        other.total = float(priorities @ self.levels)
        other.model.add_row(lb=other.total - SERVICE_TOLERANCE,
                            terms=tuple((other.served[index], priorities[index]) for index in range(len(priorities))))
        other.objective_cost()
        return other

    def priced(self, scarcity: np.ndarray) -> _Priced:
        """A lower bound on the cost LP over every column at capacity prices ``scarcity`` (>= 0): each
        workload covers its fixed level alone and fractionally at cost plus price, cheapest per unit
        first (its share and spread rules dropped, which can only lower the bound), less what the
        prices add for the capacity there is (Lagrangian duality on the capacity rows)."""
        finite = np.isfinite(self.capacity_left) & (scarcity > 0)
        total = -float(scarcity[finite] @ self.capacity_left[finite])
        flat, levels = self.flat, self.ceilings()  # levels are fixed: each ceiling is the level
        cover, chosen = np.zeros(len(self.workloads)), []
        # Most workloads cover their level with one column, their cheapest per unit: found for all at
        # once, the rest one by one (fractions of demand, as the rows are).
        units = self.cover_units()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(units > 0, (flat.weight + scarcity[flat.supply]) / units, math.inf)
        starts = flat.offset[:-1]
        has_columns = np.diff(flat.offset) > 0
        cheapest = np.full(len(self.workloads), math.inf)
        cheapest[has_columns] = np.minimum.reduceat(ratio, starts[has_columns])
        at = np.flatnonzero(ratio == cheapest[flat.workload])
        at = at[np.r_[True, flat.workload[at][1:] != flat.workload[at][:-1]]]  # the first per workload
        alone = np.zeros(len(self.workloads), dtype=bool)
        alone[flat.workload[at]] = self.upper[at] * units[at] >= levels[flat.workload[at]]
        alone &= levels > 0
        total += float(cheapest[alone] @ levels[alone])
        cover[alone] = cheapest[alone]
        chosen.append(at[alone[flat.workload[at]]])
        for index in np.flatnonzero(~alone & (levels > 0)).tolist():
            span = self.span(index)
            covered = _fractional_cover(ratio[span], units[span], self.upper[span], levels[index])
            if covered is None:
                return _Priced(-math.inf, cover, np.zeros(0, dtype=np.int64))
            cost, cover[index], used = covered
            total += cost
            chosen.append(used + flat.offset[index])
        return _Priced(float(total), cover, np.concatenate(chosen))

    def scarcity(self, cover: np.ndarray) -> np.ndarray:
        """The capacity prices that bound the cost LP best given the workloads' cover duals: on each
        supply, the gain of a node of a column (cover dual x units, less cost) above the price is
        paid for every node the column may take, and the price itself for every node of capacity,
        so the best price is the gain at which the nodes still gaining more reach the capacity."""
        flat = self.flat
        gain = self.cover_units() * np.maximum(cover, 0.0)[flat.workload] - flat.weight
        positive = np.flatnonzero((gain > 0) & self.finite_columns)
        prices = np.zeros(len(self.table))
        if not len(positive):
            return prices
        gain, supply, nodes = gain[positive], flat.supply[positive], self.upper[positive]
        # Nodes by supply and band of gain (quarter octaves, highest first): the band where they reach the
        # capacity holds the price, found among its own columns (sorting millions of gains each round
        # cost more than the LP).
        band = np.log2(gain)  # (in place: 24 ms instead of 64 ms over 5 M gains, a dozen times a plan)
        band *= -4.0
        np.floor(band, out=band)
        band -= band.min()
        band = np.minimum(band, GAIN_BANDS - 1, out=band).astype(np.int64)  # the last takes all below
        bands = int(band.max()) + 1
        by_band = np.bincount(supply * bands + band, weights=nodes, minlength=len(self.table) * bands)
        reach = np.cumsum(by_band.reshape(len(self.table), bands), axis=1)
        full = reach >= self.capacity_left[:, None]
        contested = np.flatnonzero(full[:, -1])
        crossing = np.full(len(self.table), -1)
        crossing[contested] = np.argmax(full[contested], axis=1)
        earlier = np.zeros(len(self.table))  # nodes in the bands above the crossing one
        earlier[contested] = np.where(crossing[contested] > 0, reach[contested, crossing[contested] - 1], 0.0)
        inside = np.flatnonzero(band == crossing[supply])
        gain, supply, nodes = gain[inside], supply[inside], nodes[inside]
        order = np.lexsort((-gain, supply))
        gain, supply, nodes = gain[order], supply[order], nodes[order]
        starts = np.flatnonzero(np.r_[True, supply[1:] != supply[:-1]])
        within = np.cumsum(nodes)
        within -= np.repeat(within[starts] - nodes[starts], np.diff(np.r_[starts, len(supply)]))
        reached = np.flatnonzero(earlier[supply] + within >= self.capacity_left[supply])
        first = reached[np.r_[True, supply[reached][1:] != supply[reached][:-1]]] if len(reached) else reached
        prices[supply[first]] = gain[first]
        return prices

    def lagrangian(self, cover: np.ndarray | None = None) -> tuple[_Priced, np.ndarray]:
        """The best ``priced`` bound from cover duals (an LP's, cut short or not; by default those of
        every workload at its cheapest, capacity free, itself a candidate), alternating capacity prices
        best for the cover duals and cover duals best for the prices LAGRANGIAN_STEPS times (each step
        can only raise the bound; it stalls where it started, so the start matters), and the prices
        that gave it."""
        prices = np.zeros(len(self.table))
        best = _Priced(-math.inf, cover, np.zeros(0, dtype=np.int64)) if cover is not None else self.priced(prices)
        cover = best.cover
        for _ in range(LAGRANGIAN_STEPS):
            scarcity = self.scarcity(cover)
            priced = self.priced(scarcity)
            if priced.bound <= best.bound:
                break
            best, prices, cover = priced, scarcity, priced.cover
        return best, prices

    def set_integer(self, integer: bool) -> None:
        for variable in self.integers:
            variable.integer = integer

    def groups_of(self, index: int) -> np.ndarray:
        """Spread group key of every column of a spread workload."""
        if index not in self._groups:
            self._groups[index] = self.table.spread_groups(self.workloads[index].spread)[self.columns[index].supply]
        return self._groups[index]

    def group_codes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """A spread workload's group keys, and each of its columns' position among them."""
        if index not in self._codes:
            self._codes[index] = np.unique(self.groups_of(index), return_inverse=True)
        return self._codes[index]

    def capacity_duals(self, result: _Result) -> np.ndarray:
        values = np.zeros(len(self.table))
        for supply, constraint in self.capacity.items():
            values[supply] = result.dual(constraint)
        return values

    def group_duals(self, result: _Result) -> dict[int, dict[str, float]]:
        """Each spread workload's group row duals by group key, "" for its row counting the groups."""
        values: dict[int, dict[str, float]] = defaultdict(dict)
        for (index, key), constraint in self.group.items():
            values[index][key] = result.dual(constraint)
        return values

    def cover_duals(self, result: _Result) -> np.ndarray:
        return result.dual_values(np.array([self.cover[index].id for index in range(len(self.workloads))]))

    def reduced_costs(self, result: _Result, capacity_duals: np.ndarray) -> np.ndarray:
        """Reduced cost c - A'y of every column, generated or not, under the LP's duals (end to end,
        as in ``flat``); c is the column's cost, or 0 while the objective is service alone."""
        flat = self.flat
        cover = self.cover_duals(result)
        reduced = (flat.weight if self.costed else 0.0) - self.cover_units() * cover[flat.workload] \
            - capacity_duals[flat.supply]
        if self.share:  # (over the share workloads' columns only: a few array passes less over millions)
            share, on_demand = np.zeros(len(self.workloads)), np.zeros(len(self.workloads))
            indices = np.fromiter(self.share, dtype=np.int64)
            share[indices] = result.dual_values(np.array([self.share[index].id for index in indices]))
            on_demand[indices] = result.dual_values(np.array([self.on_demand[index].id for index in indices]))
            columns = flat.share_columns
            owner = flat.workload[columns]
            capped = np.minimum(flat.share_units[columns], flat.share[owner] * self.ceilings()[owner])
            reduced[columns] -= share[owner] * flat.share_coefficient
            reduced[columns] -= on_demand[owner] * flat.on_demand[columns] * capped
        for index, mine in self.group_duals(result).items():
            # A group with no row yet is priced at k times the group count's dual: the least at which
            # the flag a column there brings is not itself priced negative, so the column's reduced
            # cost is that of the pair (a 0 instead missed every column opening a group, and the
            # bound overshot the LP).
            new_group = self.workloads[index].spread.count * max(mine[""], 0.0)
            keys, inverse = self.group_codes(index)
            span = self.span(index)
            reduced[span] -= np.minimum(flat.share_units[span], flat.group_cap[span]) \
                * np.array([mine.get(key, new_group) for key in keys])[inverse]
        return reduced

    def satisfies(self, assignment: dict[tuple[int, int], int]) -> bool:
        """Whether an assignment meets the share and spread rows (capacity is the caller's to keep)."""
        return not self.broken(assignment)

    def broken(self, assignment: dict[tuple[int, int], int]) -> set[int]:
        """Workloads whose nodes in ``assignment`` break their own share or spread rule."""
        by_workload: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for (index, position), nodes in assignment.items():
            by_workload[index].append((position, nodes))
        broken = set()
        for index, mine in by_workload.items():
            workload, cols = self.workloads[index], self.columns[index]
            share, spread = workload.min_on_demand_share, workload.spread.count
            if not share and not spread:
                continue
            total = sum(float(cols.units[p]) * n for p, n in mine)
            if share and total:
                on_demand = sum(float(cols.units[p]) * n for p, n in mine if not cols.spot[p])
                if on_demand < share * total - 1e-6:
                    broken.add(index)
            if spread and total:
                per_group: dict[str, float] = defaultdict(float)
                for p, n in mine:
                    per_group[self.group_key(workload, int(cols.supply[p]))] += float(cols.units[p]) * n
                if sum(amount >= workload.demand_units / spread - 1e-9 for amount in per_group.values()) < spread:
                    broken.add(index)
        return broken

    def hint(self, assignment: dict[tuple[int, int], int]) -> dict[_Variable, float]:
        """A complete solution hint (nodes, served fractions, spread flags) from an assignment."""
        values = {variable: 0.0 for variable in self.x.values()}
        covered: dict[int, float] = defaultdict(float)
        per_group: dict[tuple[int, str], float] = defaultdict(float)
        for (index, position), nodes in assignment.items():
            if (index, position) not in self.x:
                continue
            values[self.x[(index, position)]] = float(nodes)
            units = float(self.columns[index].units[position]) * nodes
            covered[index] += units
            if self.workloads[index].spread.count:
                group = self.group_key(self.workloads[index], int(self.columns[index].supply[position]))
                per_group[(index, group)] += units
        for index, variable in self.served.items():
            values[variable] = min(variable.upper_bound, covered[index] / self.workloads[index].demand_units)
        for (index, key), variable in self.y.items():
            spread = self.workloads[index].spread.count
            carried = per_group[(index, key)] >= self.workloads[index].demand_units / spread - 1e-9
            values[variable] = 1.0 if carried else 0.0
        for index, variable in self.active.items():
            values[variable] = 1.0 if covered[index] > 0 else 0.0
        # Solvers reject hints outside a variable's bounds (served fractions may be fixed): clamp them.
        return {variable: min(max(value, variable.lower_bound), variable.upper_bound)
                for variable, value in values.items()}


class _Solver:
    def __init__(self, options: PlanOptions, workloads: int) -> None:
        if options.solver not in SOLVERS:
            raise UserError("--solver", f"unknown solver {options.solver!r}", f"use one of {', '.join(SOLVERS)}")
        self.options = options
        self.started = time.monotonic()
        # Solves stop this early so that the plan, assembled afterwards, is ready within the limit.
        self.deadline = self.started + options.time_limit_s - FINISH_SECONDS[0] - FINISH_SECONDS[1] * workloads
        self.stages: list[str] = []
        self.lp_bound: float | None = None  # proven lower bound on the last column generation's full LP
        self.lp_exact = False  # ...and it is that LP's optimum: every column priced out
        # The best cost-stage round's Lagrangian bound, its service variables' reduced costs and the
        # levels (fractions of demand) they were held at: the bound at other levels (see level_bound).
        self.level_duals: tuple[float, np.ndarray, np.ndarray] | None = None
        # The capacity prices of the best cost-stage round's Lagrangian bound: they bound the cost at
        # any levels (see _Model.priced), where an LP that has not converged gives no bound of its own.
        self.capacity_prices: np.ndarray | None = None
        self.lp_seconds = 0.0  # how long the last LP took
        self.finish_reserve = min(FINISH_RESERVE[1], FINISH_RESERVE[0] * options.time_limit_s)

    def remaining(self, share: float = 1.0, most: float = math.inf) -> timedelta:
        left = self.deadline - time.monotonic()
        return timedelta(seconds=min(most, max(SOLVE_FLOOR, left * share)))

    def params(self, solver: mathopt.SolverType, share: float = 1.0, most: float = math.inf,
               **extra) -> mathopt.SolveParameters:
        """Deterministic settings: a fixed seed, and one thread where the solver takes a thread count."""
        threads = None if solver == mathopt.SolverType.HIGHS else 1  # HiGHS rejects it; its MIP runs on one
        return mathopt.SolveParameters(time_limit=self.remaining(share, most), random_seed=0, threads=threads,
                                       **extra)

    def time_left(self, reserve: float = 0.0) -> bool:
        """Whether there is time before the deadline, keeping ``reserve`` seconds for what comes after."""
        return time.monotonic() + reserve < self.deadline

    def lp(self, model: _Model) -> _Result | None:
        """The LP relaxation, or None when the solver fails (plans then rest on the incumbent). HiGHS's
        dual simplex (its default) hits internal errors on some large pricing LPs that its primal
        simplex solves, so a failure is retried with that once. Large LPs are first solved unscaled
        (see UNSCALED_COLUMNS), and retried scaled where that fails."""
        model.set_integer(False)
        first = [(None, True)] if len(model.x) >= UNSCALED_COLUMNS else []
        for algorithm, unscaled in [*first, (None, False), (mathopt.LPAlgorithm.PRIMAL_SIMPLEX, False)]:
            params = self.params(mathopt.SolverType.HIGHS)
            params.lp_algorithm = algorithm
            if unscaled:
                params.highs.int_options["simplex_scale_strategy"] = UNSCALED
            started = time.monotonic()
            try:
                result = _solve(model.model, mathopt.SolverType.HIGHS, params)
            except Exception:  # noqa: BLE001 - HiGHS internal errors surface as StatusNotOk or, through an
                # OR-Tools wrapper bug, AttributeError
                self.stages.append("lp-failed")
                continue
            self.lp_seconds = time.monotonic() - started
            return result
        return None

    def mip(self, model: _Model, hint: dict[_Variable, float], share: float = 1.0,
            most: float = math.inf, gap: float | None = None) -> _Result | None:
        """A MIP solve within ``gap`` (default: the plan's relative gap) or the time share."""
        model.set_integer(True)
        solver = SOLVERS[self.options.solver]
        gap = self.options.relative_gap if gap is None else gap
        params = self.params(solver, share, most, relative_gap_tolerance=gap)
        if solver == mathopt.SolverType.HIGHS:
            # Good incumbents matter more than bound proofs within a planning time limit.
            params.highs.double_options["mip_heuristic_effort"] = HIGHS_HEURISTIC_EFFORT
        return self.solve_hinted(model.model, solver, params, hint)

    def solve_hinted(self, program: _Program, solver: mathopt.SolverType, params: mathopt.SolveParameters,
                     hint: dict[_Variable, float]) -> _Result | None:
        """A MIP solve from ``hint``, or None when the solver fails (plans then rest on the incumbent)."""
        try:
            return _solve(program, solver, params, hint)
        except Exception:  # noqa: BLE001 - a solver that rejects the hint (OR-Tools' error wrapper itself
            # fails on some statuses, raising AttributeError) gets the same program without it
            try:
                return _solve(program, solver, params)
            except Exception:  # noqa: BLE001 - no result
                self.stages.append("mip-failed")
                return None

    def level_bound(self, levels: np.ndarray) -> float | None:
        """A proven lower bound on the cost at other service levels (fractions of demand), from the
        best cost-stage round's duals, which stay feasible whatever the levels: its bound plus each
        service variable's reduced cost times the change in its level. A level is counted only where
        it came down (a plan at a higher one meets the lower; the LP's rows keep the caps of the old
        levels, which only ask more of higher ones)."""
        if self.level_duals is None:
            return None
        bound, prices, before = self.level_duals
        return max(0.0, bound + float(prices @ (np.minimum(levels, before) - before)))

    def generate_columns(self, model: _Model, budget: float, gap: float = 0.0) -> _Result | None:
        """Column generation on the LP relaxation until no column has a negative reduced cost, or a
        round lowers the LP's objective by no more than ``gap`` times it (tailing off).

        Stops early when ``budget`` (a share of the time left) would be spent by another round, with
        one last LP over the columns added so far. Every priced round also
        gives a proven lower bound on the LP over all columns (``lp_bound``), by Lagrangian duality
        with the round's duals: the restricted LP's value plus, for each column not yet generated,
        its negative reduced cost times its upper bound, or, once service levels are fixed and where
        higher, the Lagrangian bound from the round's cover duals (``_Model.lagrangian``), which prices
        every supply, not only those the restricted LP has rows for. Its columns (what each workload
        would cover its level with at those prices) join the next round beside the most negative
        ones: an LP far from converged prices few supplies, and adding only the columns most negative
        under its duals converged in about a third more rounds at 5,000 workloads. Once nothing prices
        out, the bound is the LP's value itself (``lp_exact``).
        """
        stop = time.monotonic() + budget * max(0.0, self.deadline - time.monotonic())
        self.lp_exact, self.lp_bound, self.level_duals, self.capacity_prices = False, None, None, None
        result = None
        flat = model.flat
        servable = np.array([model.served[index].upper_bound > 0 for index in range(len(model.workloads))])
        final = False  # whether the next LP is the last: priced for the bound, adding nothing
        previous = math.inf  # the last round's LP objective
        best_priced = -math.inf  # the best round's Lagrangian bound
        free: tuple[_Priced, np.ndarray] | None = None  # the Lagrangian from capacity left free
        for round_ in range(MAX_PRICING_ROUNDS + 1):
            if not self.time_left():
                return result
            started = time.monotonic()
            result = self.lp(model)
            seconds = time.monotonic() - started
            if result is None or not result.optimal:
                return result
            capacity_duals = model.capacity_duals(result)
            reduced = model.reduced_costs(result, capacity_duals)
            # Unserved workloads' columns could only add cost.
            fresh = np.flatnonzero((reduced < -flat.tolerance) & ~model.has & servable[flat.workload])
            bound = result.objective + float(reduced[fresh] @ model.upper[fresh])
            if model.levels_fixed and (self.level_duals is None or bound >= self.level_duals[0]):
                served = np.array([variable.id for variable in model.served.values()])
                levels = np.array([variable.lower_bound for variable in model.served.values()])
                self.level_duals = (bound, result.reduced_costs(served), levels)
            lagrangian = None
            last = final or not self.time_left(2 * seconds)
            large = len(flat.supply) >= LAGRANGIAN_COLUMNS
            if model.levels_fixed and len(fresh) and (last or large and bound < LAGRANGIAN_BELOW * result.objective):
                lagrangian, prices = model.lagrangian(model.cover_duals(result))
                candidates = [(lagrangian, prices)]
                if not large:  # and, once a stage and for the bound only (its columns crowd the cheapest
                    # supplies), from capacity left free: LP duals shaped by share and spread rows, which
                    # the bound drops, can price below that. At 5,000 workloads they bound far higher,
                    # and the 1.2 s it takes there cost a round.
                    free = free or model.lagrangian()
                    candidates.append(free)
                for candidate, candidate_prices in candidates:
                    if candidate.bound >= best_priced:
                        best_priced, self.capacity_prices = candidate.bound, candidate_prices
            if model.costed:  # costs are never negative, so neither is the bound
                bound = max(bound, best_priced, 0.0)
            self.lp_bound = float(bound if self.lp_bound is None else max(self.lp_bound, bound))
            if not len(fresh):
                self.lp_exact, self.lp_bound = True, float(result.objective)
                return result
            if final or previous - result.objective <= gap * abs(result.objective):
                return result
            previous = result.objective
            before = len(model.x)
            picked = _most_negative(fresh, reduced[fresh], flat.workload[fresh], COLUMNS_PER_ROUND)
            if model.costed:  # (while service is open, more columns find more service sooner)
                picked = _within_capacity(picked, reduced[picked], flat.supply[picked], model.upper[picked],
                                          model.capacity_left)
            if lagrangian is not None:  # and what each workload would cover its level with at those prices
                picked = np.union1d(picked, lagrangian.columns[~model.has[lagrangian.columns]])
            for column in picked.tolist():
                index = int(flat.workload[column])
                model.add(index, column - int(flat.offset[index]))
            # The LP returned has every column generated: the last round that adds columns is the
            # one whose next LP (about as slow as this one per column) would end past the budget.
            final = round_ == MAX_PRICING_ROUNDS - 1 or time.monotonic() + seconds * len(model.x) / before > stop
        return result


def _most_negative(positions: np.ndarray, values: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Of ``positions`` (ascending, so grouped by owner), each owner's ``count`` with the smallest
    values, ties to the earlier. A few passes of segment minima: sorting millions of candidates
    each pricing round cost more than the LP."""
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.r_[starts, len(owners)])
    values = values.copy()
    chosen = []
    for _ in range(count):
        least = np.repeat(np.minimum.reduceat(values, starts), lengths) if len(starts) else values
        hits = np.flatnonzero((values == least) & np.isfinite(values))
        if not len(hits):
            break
        hits = hits[np.r_[True, owners[hits[1:]] != owners[hits[:-1]]]]  # the earliest of ties
        chosen.append(hits)
        values[hits] = np.inf
    return positions[np.sort(np.concatenate(chosen))] if chosen else positions[:0]


def _within_capacity(positions: np.ndarray, values: np.ndarray, supplies: np.ndarray, nodes: np.ndarray,
                     capacity: np.ndarray) -> np.ndarray:
    """Of ``positions``, per supply the most negative (``values``) while the nodes they could take stay
    within CAPACITY_PRICED times its capacity. A supply the LP has no column on yet has no capacity
    price, so every workload prices it cheap: adding them all would fill the LP with columns the next
    round's price makes worthless."""
    order = np.lexsort((positions, values, supplies))
    supplies, nodes = supplies[order], nodes[order]
    starts = np.flatnonzero(np.r_[True, supplies[1:] != supplies[:-1]])
    before = np.cumsum(nodes) - nodes
    before -= np.repeat(before[starts], np.diff(np.r_[starts, len(supplies)]))
    keep = before < CAPACITY_PRICED * capacity[supplies]
    return np.sort(positions[order][keep])


def _initial_positions(workload: Workload, columns: Columns, table: SupplyTable) -> np.ndarray:
    """Cheapest columns per unit of demand (enough to cover it a few times over), the cheapest of each
    node shape (small nodes fill integer remainders), and the cheapest few of each spread group."""
    covered = np.cumsum(np.minimum(table.capacity[columns.supply], 1e12) * columns.units)
    enough = int(np.searchsorted(covered, COVER_FACTOR * workload.demand_units)) + 1
    chosen = [np.arange(min(max(INITIAL_COLUMNS, enough), len(columns)))]
    chosen.append(np.unique(columns.replicas, return_index=True)[1])
    if workload.spread.count:
        groups = table.spread_groups(workload.spread)[columns.supply]
        chosen.extend(np.flatnonzero(groups == group)[:SPREAD_COLUMNS_PER_GROUP] for group in set(groups))
    return np.unique(np.concatenate(chosen))


def _servable(workload: Workload, columns: Columns, table: SupplyTable) -> float:
    """Most demand the workload could get with all supply to itself (its service target)."""
    demand = workload.demand_units
    capacity = np.minimum(table.capacity[columns.supply], np.ceil(demand / columns.units)) * columns.units
    total = float(capacity.sum())
    if workload.min_on_demand_share > 0:
        total = min(total, float(capacity[~columns.spot].sum()) / workload.min_on_demand_share)
    spread = workload.spread.count
    if spread:
        _, group = np.unique(table.spread_groups(workload.spread)[columns.supply], return_inverse=True)
        if int((np.bincount(group, weights=capacity) >= demand / spread).sum()) < spread:
            return 0.0
    return min(demand, total)


def plan(workloads: list[Workload], offers: list[Offer], *, options: PlanOptions = PlanOptions(),
         fx: FxTable | None = None, profiles: list[ProfileRow] | None = None, previous: Plan | None = None) -> Plan:
    """Place every workload on the cheapest feasible supply, by priority when supply is short."""
    solver = _Solver(options, len(workloads))
    table = SupplyTable(offers, fx or FxTable(), options.currency, options.unknown_capacity)
    builder = ColumnBuilder(table, ThroughputModel(profiles))
    columns = [builder.columns(index, workload) for index, workload in enumerate(workloads)]
    targets = [_servable(workload, columns[index], table) for index, workload in enumerate(workloads)]
    model = _Model(workloads, table, columns, targets)
    greedy, _ = greedy_assignment(workloads, columns, table)
    warm = _previous_assignment(previous, workloads, columns, table) if previous is not None else {}
    for index, workload in enumerate(workloads):
        for position in _initial_positions(workload, columns[index], table):
            model.add(index, int(position))
    for index, position in [*greedy, *warm]:
        model.add(index, position)
    incumbent = _best_of(model, _drop_broken(model, greedy), _drop_broken(model, warm))
    model.objective_serve()
    relaxed = solver.generate_columns(model, budget=PRICING_BUDGET, gap=PRICING_GAP)
    solver.stages.append("pricing-lp")
    incumbent = _best_of(model, incumbent, _round_lp(model, relaxed, incumbent))
    levels = _coverage(model, incumbent)
    short = _any_short(levels, targets)
    pricing_budget = COST_PRICING_BUDGET
    if short and solver.time_left():
        # Whole-node service, maximised by a MIP from the rounded LP (large models: piecewise): rounding
        # alone misses what whole nodes of several shapes allow.
        if len(model.x) <= LNS_ABOVE_COLUMNS:
            stage_one = _solution(model, solver.mip(model, model.hint(incumbent), share=SERVE_SHARE, gap=SERVICE_GAP))
            solver.stages.append("serve-mip")
        else:
            stage_one = _serve_more(solver, model, incumbent)
            solver.stages.append("serve-lns")
        polished = _best_of(model, incumbent, stage_one, _polish(model, stage_one))
        topped = _top_up(model, polished, targets)
        incumbent = _best_of(model, polished, topped)
        if _dear_raise(model, polished, polished, topped):
            pricing_budget = RECOST_PRICING_BUDGET
    # Service is decided: the most priority-weighted demand served in whole nodes. The cost stage keeps
    # every workload's service at that level (lexicographic, not a blend) and minimises cost; where
    # some are short, small models then keep only the total (see _cost_stage).
    levels = _coverage(model, incumbent)
    if len(model.x) > LNS_ABOVE_COLUMNS:  # the cost LP starts from the columns that mattered so far
        model = _restricted(model, relaxed, incumbent)
    model.fix_served([levels[index] for index in range(len(workloads))])
    model.objective_cost()
    short = _any_short(levels, targets)
    chosen, result = _cost_stage(solver, model, incumbent, pricing_budget, short)
    return _assemble(workloads, table, builder, columns, model, chosen, result, options, solver)


def _any_short(levels: dict[int, float], targets: list[float]) -> bool:
    """Whether any workload is served less than it could get alone (demand units)."""
    return any(levels[index] < target - 1e-6 for index, target in enumerate(targets))


def _serve_more(solver: _Solver, model: _Model, assignment: dict[tuple[int, int], int]
                ) -> dict[tuple[int, int], int]:
    """More whole-node service for large models: by priority, each workload below what it could get
    alone is re-solved with the workloads holding the full supplies of its columns, and those
    holding theirs, for the most priority-weighted service (one pass, in SERVE_SHARE of the time
    left). One MIP over the columns that matter found nothing beyond the rounded LP in 8 to 12 s at
    5,000 workloads, nor in 1.6 s at tight 1,000; this serves 64 to 77 priority units more there,
    and 12 more at tight 1,000, in as long or less."""
    stop = time.monotonic() + SERVE_SHARE * max(0.0, solver.deadline - time.monotonic())
    search, done = _Neighbourhoods(solver, model, assignment), set()
    for seed in _by_priority(model, range(len(model.workloads))):
        left = min(stop, solver.deadline) - time.monotonic()
        if left <= 0:
            break
        if seed not in done and _units(model, seed, search.nodes.get(seed, {})) < model.targets[seed] - 1e-6:
            done.update(search.serve_around(seed, left))
    return search.assignment


def _cost_stage(solver: _Solver, model: _Model, incumbent: dict[tuple[int, int], int], pricing_budget: float,
                short: bool):
    """Cost at fixed service: an LP-rounded incumbent (see _rounded_cost_lp), then one MIP over every
    generated column, or for models too large for that, a large-neighbourhood search.

    Where some workload is ``short`` of its target, the plan need only keep the service total
    (see _Model.holding_total), and the LP, rounding and repair run again holding only that. Where
    its rounding costs less than the one holding each level by more than the plan's gap, the MIP
    holding each level takes LEVELS_SHARE of the time left and one holding only the total the rest
    (tight 100, seed 4: the level MIP found 46.77 M in 3.4 s, the total's nothing below 47.13 M in
    9 s; seed 5: the level MIP nothing below 38.06 M, the total's 26.1 M). Else only the level MIP
    runs (it solves sooner), and the plan reports the total's LP bound, not that MIP's.

    The MIP of small models takes SMALL_MIP_SHARE of the time left; where it has not reached the
    plan's gap by then, a neighbourhood search (see _improve) takes the rest from the best plan,
    each workload held at what that plan serves it (tight 100, seeds 9, 13 and 14: the MIP had
    found nothing below 77.21, 50.41 and 31.13 M in 8.5 s; the search reaches 76.60, 49.55 and
    30.45 M). The plan then reports the LP bound."""
    lp, repaired, passes, recosting, large = _rounded_cost_lp(solver, model, incumbent, pricing_budget)
    if large:  # each pass offers the repair and the merge what it completed
        # The nodes the repaired plan leaves free may serve others more (and more than those it left short lack).
        topped = _top_up(model, repaired, model.targets)
        if _dear_raise(model, incumbent, repaired, topped) and solver.time_left(solver.finish_reserve + recosting):
            model, lp, repaired, topped = _recost(solver, model, lp, repaired, topped)
        topped = _serve_short(solver, model, repaired, topped)
        gain = _score(model, topped, model.targets)[0] - _score(model, incumbent, model.targets)[0] if topped else -1
        if gain > 1e-6 or (gain >= -1e-6 and _short(model, repaired)):  # (the repair traded service)
            incumbent = _held_at(solver, model, topped)
        else:  # the candidates mixed workload by workload
            incumbent = _merge(solver, model, [repaired, *passes, incumbent])
        solver.stages.append("cost-lns")
        return _improve(solver, model, lp, incumbent), None
    incumbent = _best_of(model, incumbent, repaired)
    judge, candidates = model, [incumbent]  # the model whose service a plan must keep, and plans that do
    if short and solver.time_left():
        solver.stages.append("total")
        judge = model.holding_total()
        total_lp, traded = _rounded_cost_lp(solver, judge, incumbent, pricing_budget)[:2]
        candidates.append(traded)
        if _score(judge, traded)[1] < (1 - solver.options.relative_gap) * _score(model, incumbent)[1]:
            first = solver.mip(model, model.hint(incumbent), share=LEVELS_SHARE)  # (the easier MIP first)
            solver.stages.append("cost-mip")
            candidates.append(_solution(model, first))
            model, incumbent, lp = judge, _best_of(judge, *candidates), total_lp
    result = solver.mip(model, model.hint(incumbent), share=SMALL_MIP_SHARE) if solver.time_left() else None
    solver.stages.append("cost-mip")
    solved = _solution(model, result)
    chosen = _best_of(judge, solved, *candidates)
    if chosen is not solved:
        solver.stages.append("heuristic-kept")
    if (result is None or not result.optimal) and solver.time_left():  # the MIP stalls: search neighbourhoods
        covered = _covered(model, chosen)
        model.fix_served([min(covered[index], model.targets[index]) for index in range(len(model.workloads))])
        chosen = _best_of(judge, chosen, _improve(solver, model, lp, chosen))
        solver.stages.append("cost-lns")
        return chosen, None
    return chosen, result if model is judge else None


def _rounded_cost_lp(solver: _Solver, model: _Model, incumbent: dict[tuple[int, int], int], pricing_budget: float):
    """The cost LP by column generation (for ``pricing_budget`` of the time left), rounded in passes,
    and the best rounding repaired where it left workloads short; with the seconds a re-cost would
    take, and whether the LP left the model large (improved piecewise rather than by one MIP).
    Without the repair, the MIP of roomy 100 (seed 7) started from the service stage's plan and
    found nothing cheaper in 9.5 s (1.997 times the LP); repaired in 0.2 s, it ends at 1.009."""
    lp = solver.generate_columns(model, budget=pricing_budget)
    solver.stages.append("cost-lp")
    if model.total is not None and lp is not None and lp.feasible:  # the levels the LP serves the total at
        model.levels = np.array([lp.value(model.served[index]) for index in range(len(model.workloads))])
    large = len(model.x) > LNS_ABOVE_COLUMNS  # improved piecewise rather than by one MIP
    started = time.monotonic()
    rounded = latest = _round_lp(model, lp, incumbent, spread_first=large)
    passes = [latest]
    rounding_seconds = time.monotonic() - started
    recosting = solver.lp_seconds + rounding_seconds if large else 0.0  # a re-cost starts with an LP and a rounding
    leave = solver.finish_reserve + RECOST_LEAD * recosting  # for what follows the passes and the repair
    reserve = rounding_seconds + leave  # another pass, and then that
    first: tuple[int, ...] = ()
    for _ in range(ROUNDING_PASSES - 1):  # workloads a pass left short go first in the next
        short = _short(model, latest)
        if not short or set(short) <= set(first) or not solver.time_left(reserve):  # or the same pass again
            break
        first = tuple(dict.fromkeys([*short, *first]))
        latest = _round_lp(model, lp, incumbent, first, spread_first=large)
        passes.append(latest)
        rounded = _best_of(model, rounded, latest)
    # Completed, the plan starts near the LP's cost, not from the service stage's (see the docstring).
    return lp, _repair(solver, model, rounded, incumbent, passes, leave), passes, recosting, large


class _Neighbourhoods:
    """An assignment improved a few workloads at a time: the workloads of a neighbourhood are re-solved
    together as an exact MIP over their generated columns, within the capacity everyone else leaves,
    and a better answer (more service, or the same for less) replaces theirs. Service levels stay fixed."""

    def __init__(self, solver: _Solver, model: _Model, assignment: dict[tuple[int, int], int]) -> None:
        self.solver, self.model = solver, model
        self.nodes: dict[int, dict[int, int]] = defaultdict(dict)  # workload -> column -> nodes
        self.holders: dict[int, dict[int, int]] = defaultdict(dict)  # supply -> workload -> nodes
        for (index, position), nodes in assignment.items():
            self._put(index, position, nodes)

    def _put(self, index: int, position: int, nodes: int) -> None:
        self.nodes[index][position] = nodes
        supply = int(self.model.columns[index].supply[position])
        self.holders[supply][index] = self.holders[supply].get(index, 0) + nodes

    def _clear(self, index: int) -> None:
        for position, nodes in self.nodes.pop(index, {}).items():
            supply = int(self.model.columns[index].supply[position])
            self.holders[supply][index] -= nodes
            if not self.holders[supply][index]:
                del self.holders[supply][index]

    @property
    def assignment(self) -> dict[tuple[int, int], int]:
        return {(index, position): n for index, mine in self.nodes.items() for position, n in mine.items()}

    def costs(self) -> np.ndarray:
        cost = np.zeros(len(self.model.workloads))
        for index, mine in self.nodes.items():
            cost[index] = _cost(self.model, index, mine)
        return cost

    def short(self, index: int) -> bool:
        """Whether the workload's nodes serve less than its (fixed) service level."""
        return not _covers(self.model, index, self.nodes.get(index, {}))

    def full(self, supply: int) -> bool:
        return sum(self.holders[supply].values()) >= self.model.table.capacity[supply] - 0.5

    def blocking(self, index: int, positions) -> list[int]:
        """Workloads holding the full supplies of these columns of ``index``, most nodes first: moving
        them is what lets ``index`` reach those supplies."""
        held: dict[int, int] = defaultdict(int)
        for position in positions:
            supply = int(self.model.columns[index].supply[position])
            if self.full(supply):
                for other, nodes in self.holders[supply].items():
                    if other != index:
                        held[other] += nodes
        return sorted(held, key=lambda other: (-held[other], other))

    def around(self, index: int, size: int) -> list[int]:
        """The workload, the workloads holding the full supplies of its columns, those holding theirs,
        and so on, up to ``size`` in all."""
        chunk, frontier = [index], [index]
        while frontier and len(chunk) < size:
            frontier = [other for held in frontier for other in self.blocking(held, self.model.generated(held))]
            frontier = [other for other in dict.fromkeys(frontier) if other not in chunk][:size - len(chunk)]
            chunk.extend(frontier)
        return chunk

    def serve_around(self, index: int, seconds: float) -> list[int]:
        """Re-solve the workload with those around it (LNS_WORKLOADS in all) for the most service, in at
        most ``seconds`` (and LNS_SECONDS); the workloads re-solved."""
        chunk = self.around(index, LNS_WORKLOADS)
        self.resolve(chunk, serve=True, most=min(LNS_SECONDS, seconds))
        return chunk

    def resolve(self, chunk: list[int], most: float = LNS_SECONDS, serve: bool = False,
                levels: list[float] | None = None) -> bool:
        """Re-solve these workloads together at their service levels (or ``levels``), for the least
        cost, or with ``serve``, for the most priority-weighted service (each up to its target;
        whatever it costs); whether their nodes changed for the better."""
        model, members = self.model, set(chunk)
        left = model.table.capacity.copy()
        for supply, held in self.holders.items():
            left[supply] -= sum(nodes for index, nodes in held.items() if index not in members)
        if levels is None:
            levels = [model.targets[index] if serve else model.level(index) for index in chunk]
        part = _Model([model.workloads[i] for i in chunk], model.table, [model.columns[i] for i in chunk],
                      levels, capacity=left)
        if not serve:
            part.fix_served(levels)
        for local, index in enumerate(chunk):
            room = np.flatnonzero(left[model.columns[index].supply] >= 1)[:ROOM_COLUMNS]
            for position in sorted({*model.generated(index).tolist(), *self.nodes[index], *room.tolist()}):
                part.add(local, position)
        if serve:
            part.objective_serve()
        else:
            part.objective_cost()
        current = {(local, position): n for local, index in enumerate(chunk)
                   for position, n in self.nodes[index].items()}
        solved = _solution(part, self.solver.mip(part, part.hint(current), most=most))
        if not solved or not _worse(part, current, solved):
            return False
        for index in chunk:
            self._clear(index)
        for (local, position), n in solved.items():
            self._put(chunk[local], position, n)
            model.add(chunk[local], position)
        return True

    def search(self, seeds: list[int], related) -> bool:
        """One pass over ``seeds``, re-solving neighbourhoods of LNS_WORKLOADS: each seed not yet
        re-solved comes with up to LNS_RELATED of the workloads ``related(seed)`` names."""
        improved, done, chunk = False, set(), []
        for seed in seeds:
            if not self.solver.time_left():
                return improved
            if seed in done:
                continue
            group = [seed, *[other for other in related(seed) if other not in done][:LNS_RELATED]]
            group = group[:LNS_WORKLOADS - len(chunk)]
            chunk.extend(group)
            done.update(group)
            if len(chunk) >= LNS_WORKLOADS:
                improved |= self.resolve(chunk)
                chunk = []
        return (self.resolve(chunk) or improved) if chunk and self.solver.time_left() else improved


def _repair(solver: _Solver, model: _Model, rounded: dict[tuple[int, int], int],
            fallback: dict[tuple[int, int], int], alternatives: list[dict[tuple[int, int], int]],
            reserve: float | None = None) -> dict[tuple[int, int], int]:
    """The rounded LP with the workloads it left short of their service level completed, each re-solved
    with the workloads holding the full supplies of its columns, those holding theirs, and so on
    (the rounding is close to the LP's cost; the service-stage plan it would otherwise lose to rarely
    is). Small neighbourhoods solve fast and to near optimality; larger ones only where needed. Any
    still short then take their nodes in one of the ``alternatives`` that serves them (cheapest
    first), or in ``fallback`` (a plan that serves everyone), those they displace making up from
    free nodes (see _Rounding.displace). Last, those still short trade service with their
    neighbourhoods until the plan serves as much priority-weighted demand as ``fallback``. The first
    two leave ``reserve`` seconds (default: the finish reserve)."""
    reserve = solver.finish_reserve if reserve is None else reserve
    search = _Neighbourhoods(solver, model, rounded)
    for index in _short(model, rounded):
        for size, seconds in REPAIR_STEPS:
            if not solver.time_left(reserve) or not search.short(index):
                break
            search.resolve(search.around(index, size), most=min(seconds, solver.deadline - time.monotonic() - reserve))
    repaired = search.assignment
    short = _short(model, repaired)
    if not short:
        return repaired
    rounding = _Rounding.of(model, repaired)
    fallback_nodes, others = _by_workload(fallback), [_by_workload(plan) for plan in alternatives]
    for index in short:
        if not solver.time_left(reserve):
            break
        complete = [mine[index] for mine in others if _covers(model, index, mine[index])]
        for nodes in sorted(complete, key=lambda nodes: _cost(model, index, nodes)) + [fallback_nodes[index]]:
            if rounding.displace(index, nodes, fallback_nodes):
                break
    repaired = _drop_broken(model, rounding.assignment)
    short = _short(model, repaired)
    if not short:
        return repaired
    # Where supply is tight, the plans are too rigid for that: every supply is full in each, and
    # taking one workload's nodes from another cascades through them all. Those still short are
    # then re-solved with their blockers for the most service, which may go to others in the
    # neighbourhood (the service total, not each workload's level, is what stage one decided).
    search, required = _Neighbourhoods(solver, model, repaired), _score(model, fallback, model.targets)[0]
    for index in _by_priority(model, short):
        if not solver.time_left() or _score(model, search.assignment, model.targets)[0] >= required - 1e-6:
            break
        if search.short(index):
            search.serve_around(index, solver.deadline - time.monotonic())
    return search.assignment


def _by_workload(assignment: dict[tuple[int, int], int]) -> dict[int, dict[int, int]]:
    nodes: dict[int, dict[int, int]] = defaultdict(dict)
    for (index, position), n in assignment.items():
        nodes[index][position] = n
    return nodes


def _units(model: _Model, index: int, nodes: dict[int, int]) -> float:
    """Demand units these nodes of the workload serve."""
    units = model.columns[index].units
    return sum(float(units[position]) * n for position, n in nodes.items())


def _covers(model: _Model, index: int, nodes: dict[int, int]) -> bool:
    """Whether these nodes serve the workload its (fixed) service level."""
    return _units(model, index, nodes) >= model.level(index) - 1e-6


def _cost(model: _Model, index: int, nodes: dict[int, int]) -> float:
    weight = model.columns[index].weight
    return sum(float(weight[position]) * n for position, n in nodes.items())


def _merge(solver: _Solver, model: _Model, candidates: list[dict[tuple[int, int], int]]
           ) -> dict[tuple[int, int], int]:
    """The cheapest mix of candidate plans: each workload takes all its nodes from one candidate that
    meets its service level, within every supply's capacity (a small 0-1 program). At least one
    candidate must meet every level; the cheapest that does is the fallback. The program starts from
    a greedy mix (see _greedy_mix) that starts each workload on the first candidate serving it,
    which is also the answer where the solver has no time to improve on it."""
    if not solver.time_left():
        return _best_of(model, *candidates)
    base = _best_of(model, *[candidate for candidate in candidates if not _short(model, candidate)])
    options = {index: [nodes] for index, nodes in _by_workload(base).items()}  # option 0: the fallback's
    start: dict[int, int] = {}
    for candidate in candidates:
        for index, nodes in _by_workload(candidate).items():
            if _covers(model, index, nodes):
                choices = options.setdefault(index, [{}])  # none in the fallback: its level is 0
                if nodes not in choices:
                    choices.append(nodes)
                start.setdefault(index, choices.index(nodes))
    costs = {index: [_cost(model, index, nodes) for nodes in choices] for index, choices in options.items()}
    uses = {index: [_supplies_used(model, index, nodes) for nodes in choices] for index, choices in options.items()}
    picks = _greedy_mix(model.table.capacity, costs, uses, start)
    greedy = {(index, position): n for index, pick in picks.items() for position, n in options[index][pick].items()}
    if all(costs[index][pick] <= min(costs[index]) for index, pick in picks.items()):
        return _best_of(model, *candidates, greedy)  # each workload's cheapest option, and they fit: optimal
    merge = _Program()
    usage: dict[int, list[tuple[_Variable, int]]] = defaultdict(list)
    hint, chosen = {}, {}
    for index, choices in options.items():
        variables = [merge.add_variable(0, 1, integer=True) for _ in choices]
        merge.add_row(1, 1, terms=tuple((variable, 1.0) for variable in variables))
        for number, (variable, nodes) in enumerate(zip(variables, choices)):
            chosen[variable] = (index, nodes)
            hint[variable] = 1.0 if number == picks[index] else 0.0
            merge.objective[variable] = costs[index][number]
            for supply, n in uses[index][number].items():
                usage[supply].append((variable, n))
    for supply, used in usage.items():
        if sum(n for _, n in used) > model.table.capacity[supply]:
            merge.add_row(ub=model.table.capacity[supply], terms=tuple((variable, float(n)) for variable, n in used))
    params = solver.params(mathopt.SolverType.HIGHS, most=MERGE_SECONDS, relative_gap_tolerance=1e-4)
    params.highs.string_options["presolve"] = "off"  # HiGHS's presolve ignores the time limit: 19 s of a
    # 2 s limit on a 5,000-workload merge
    result = solver.solve_hinted(merge, mathopt.SolverType.HIGHS, params, hint)
    merged = {(index, position): n for variable, (index, nodes) in chosen.items() if result.value(variable) > 0.5
              for position, n in nodes.items()} if result is not None and result.feasible else {}
    return _best_of(model, *candidates, greedy, merged)


def _supplies_used(model: _Model, index: int, nodes: dict[int, int]) -> dict[int, int]:
    used: dict[int, int] = defaultdict(int)
    for position, n in nodes.items():
        used[int(model.columns[index].supply[position])] += n
    return dict(used)


def _greedy_mix(capacity: np.ndarray, costs: dict[int, list[float]], uses: dict[int, list[dict[int, int]]],
                start: dict[int, int]) -> dict[int, int]:
    """Each workload on its ``start`` option (option 0 where it has none); then, while a supply is over
    capacity, one workload on it moves to the option that frees it at the least cost per node
    freed: any option that overfills no other supply, else option 0. All on option 0 fits, and the
    other moves only lower the overfill, so this ends within capacity. Last, each workload in turn
    takes its cheapest option that fits."""
    picks = {index: start.get(index, 0) for index in costs}
    used: dict[int, int] = defaultdict(int)
    holders: dict[int, set[int]] = defaultdict(set)

    def move(index: int, option: int) -> None:
        for supply, n in uses[index][picks[index]].items():
            used[supply] -= n
            holders[supply].discard(index)
        picks[index] = option
        for supply, n in uses[index][option].items():
            used[supply] += n
            holders[supply].add(index)

    def fits(index: int, option: int, supply: int | None = None) -> bool:
        """Whether the move overfills no supply (but ``supply``, which it frees)."""
        now = uses[index][picks[index]]
        return all(used[other] + n - now.get(other, 0) <= capacity[other]
                   for other, n in uses[index][option].items() if other != supply)

    def freeing(index: int, supply: int):
        """(cost per node freed, workload, option) of the workload's moves that free nodes of ``supply``."""
        now = uses[index][picks[index]]
        for option, then in enumerate(uses[index]):
            freed = now.get(supply, 0) - then.get(supply, 0)
            if option != picks[index] and freed > 0 and (option == 0 or fits(index, option, supply)):
                yield (costs[index][option] - costs[index][picks[index]]) / freed, index, option

    for index, pick in picks.items():
        picks[index] = 0
        for supply, n in uses[index][0].items():  # registered on option 0, then moved to its start
            used[supply] += n
            holders[supply].add(index)
        move(index, pick)
    over = {supply for supply, n in used.items() if n > capacity[supply]}
    while over:
        supply = min(over)
        _, mover, option = min(way for index in holders[supply] if picks[index] for way in freeing(index, supply))
        move(mover, option)
        over = {supply for supply in over | set(uses[mover][option]) if used[supply] > capacity[supply]}
    for index in sorted(picks):
        for option in np.argsort(costs[index], kind="stable").tolist():
            if costs[index][option] >= costs[index][picks[index]]:
                break
            if fits(index, option):
                move(index, option)
                break
    return picks


def _improve(solver: _Solver, model: _Model, lp: _Result | None,
             assignment: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """Large-neighbourhood search, in passes while they pay. A pass by excess re-solves the workloads
    whose whole nodes cost most above their LP share together with the workloads holding the supplies
    their LP share is on (so capacity can change hands, not only columns). Where one stops paying,
    passes by supply follow: each supply the LP prices (dearest first) with the workloads holding it
    and those whose LP share is on it. The kinds alternate each time one stops paying, until neither
    pays (the first stalls near 1 % above the LP at 1,000 workloads; see docs/workloads.md)."""
    if lp is None or not lp.feasible:
        return assignment
    search = _Neighbourhoods(solver, model, assignment)
    lp_cost = np.zeros(len(model.workloads))
    support: dict[int, list[int]] = defaultdict(list)
    users: dict[int, set[int]] = defaultdict(set)  # supply -> workloads whose LP share is on it
    for (index, position), variable in model.x.items():
        value = lp.value(variable)
        lp_cost[index] += float(model.columns[index].weight[position]) * value
        if value > 1e-6:
            support[index].append(position)
            users[int(model.columns[index].supply[position])].add(index)
    prices = model.capacity_duals(lp)
    priced = [int(supply) for supply in np.argsort(prices, kind="stable") if prices[supply] < -1e-9]

    def by_excess() -> bool:
        cost = search.costs()
        excess = cost - lp_cost
        order = [int(index) for index in np.argsort(-excess, kind="stable")
                 if excess[index] > 1e-6 * max(cost[index], 1.0)]
        return bool(order) and search.search(order, lambda index: search.blocking(index, support[index]))

    def by_supply() -> bool:
        improved = False
        for supply in priced:
            if not solver.time_left():
                break
            held = search.holders[supply]
            members = sorted(set(held) | users[supply], key=lambda index: (-held.get(index, 0), index))
            improved |= bool(members) and search.resolve(members[:LNS_WORKLOADS])
        return improved

    passes, unpaid = (by_excess, by_supply), 0
    while solver.time_left() and unpaid < len(passes):
        if passes[0]():
            unpaid = 0
        else:
            unpaid += 1
            passes = passes[::-1]
    return search.assignment


def _short(model: _Model, assignment: dict[tuple[int, int], int]) -> list[int]:
    """Workloads this assignment serves less than their (fixed) service level."""
    covered = _coverage(model, assignment)
    return [index for index in range(len(model.workloads)) if covered[index] < model.level(index) - 1e-6]


def _round_lp(model: _Model, lp: _Result | None, fallback: dict[tuple[int, int], int],
              first: tuple[int, ...] = (), spread_first: bool = False) -> dict[tuple[int, int], int]:
    """Whole nodes near an LP solution's service and cost.

    Every workload takes the LP's nodes rounded down (never over capacity). Then, by priority, spread
    workloads complete their groups (or give their nodes back when they cannot), and the others
    refill what rounding lost from their cheapest columns with room, topping up on-demand nodes where
    rounding broke their on-demand share. A workload left short of the LP's service takes its nodes
    in ``fallback`` instead where they serve more and still fit (a spread workload the LP did not
    place, too); otherwise it stays partly served. The workloads ``first`` names are rounded and
    completed before anyone else takes a node (a pass after they were left short); with
    ``spread_first``, so are spread workloads next, the hardest to complete (for the cost stage of
    large models, where rounding them last cost 0.5 to 0.8 % at 1,000 workloads; it served less in
    the service stage, and gave the MIP of smaller ones no better a start). Last, those still short
    are completed again from what others trimmed.
    """
    if lp is None or not lp.feasible:
        return {}
    rounding = _Rounding(model, -model.capacity_duals(lp))
    fallback_covered = _coverage(model, fallback)
    fallback_nodes: dict[int, dict[int, int]] = defaultdict(dict)
    for (index, position), nodes in fallback.items():
        fallback_nodes[index][position] = nodes
    by_workload: dict[int, list[tuple[int, _Variable]]] = defaultdict(list)
    for (index, position), variable in model.x.items():
        by_workload[index].append((position, variable))

    def round_down(index: int) -> None:
        for position, variable in by_workload[index]:
            if lp.value(variable) >= 1 - 1e-6:
                rounding.take(index, position, math.floor(lp.value(variable) + 1e-6))

    def needed(index: int) -> float:
        return lp.value(model.served[index]) * model.workloads[index].demand_units

    def complete(index: int) -> None:
        workload = model.workloads[index]
        level = needed(index)
        if workload.spread.count:
            flow: dict[str, float] = defaultdict(float)
            groups = model.groups_of(index)
            for position, variable in by_workload[index]:
                flow[groups[position]] += lp.value(variable) * float(model.columns[index].units[position])
            if level < 1e-6 or not rounding.complete_spread(index, flow):
                rounding.release(index)
                rounding.restore(index, fallback_nodes[index])
        else:
            rounding.refill(index, level)
            if rounding.covered[index] < level - 1e-6 and fallback_covered[index] > rounding.covered[index]:
                rounding.release(index)  # rounding fell short where the fallback did not: take its nodes
                if not rounding.restore(index, fallback_nodes[index]):
                    rounding.refill(index, level)
        rounding.trim(index, level)

    by_priority = _by_priority(model, range(len(model.workloads)))
    if spread_first:  # spread workloads, all or nothing and the hardest to complete, next
        first = tuple(dict.fromkeys([*first, *[i for i in by_priority if model.workloads[i].spread.count]]))
    for index in first:
        round_down(index)
        complete(index)
    chosen_first = set(first)
    rest = [index for index in by_priority if index not in chosen_first]
    for index in rest:
        round_down(index)
    for index in rest:
        complete(index)
    short = [*first, *rest]
    for _ in range(COMPLETION_SWEEPS):  # nodes trimmed or given back since may complete those left short
        short = [index for index in short if rounding.covered[index] < needed(index) - 1e-6]
        before = sum(rounding.covered[index] for index in short)
        for index in short:
            complete(index)
        if sum(rounding.covered[index] for index in short) <= before + 1e-6:
            break
    return _drop_broken(model, rounding.assignment)


class _Rounding:
    """An assignment being built under the supplies' capacities (cheapest columns come first)."""

    def __init__(self, model: _Model, scarcity: np.ndarray) -> None:
        self.model = model
        self.scarcity = scarcity  # per node, on top of its price: the LP's capacity duals
        self.free = model.table.capacity.copy()
        self.nodes: dict[int, dict[int, int]] = defaultdict(dict)  # workload -> column -> nodes
        self.covered: dict[int, float] = defaultdict(float)

    def take(self, index: int, position: int, nodes: int) -> int:
        """Up to ``nodes`` more nodes of a column, as many as capacity allows; returns how many."""
        supply = int(self.model.columns[index].supply[position])
        nodes = int(min(nodes, self.free[supply]))
        if nodes <= 0:
            return 0
        self.model.add(index, position)
        self.nodes[index][position] = self.nodes[index].get(position, 0) + nodes
        self.free[supply] -= nodes
        self.covered[index] += nodes * float(self.model.columns[index].units[position])
        return nodes

    def fill(self, index: int, needed: float, positions: np.ndarray) -> None:
        """Cover ``needed`` more units from these columns (cheapest per unit first): whole nodes of the
        cheapest column with room while they fit, then the column that covers the remainder cheapest."""
        cols = self.model.columns[index]
        positions = np.asarray(positions, dtype=np.int64)
        weight = cols.weight[positions] + self.scarcity[cols.supply[positions]]
        order = np.argsort(weight / cols.units[positions], kind="stable")
        positions, weight = positions[order], weight[order]
        units = cols.units[positions].astype(float)
        target = self.covered[index] + needed
        while self.covered[index] < target - 1e-6:
            remainder = target - self.covered[index]
            free = self.free[cols.supply[positions]]
            room = np.flatnonzero(free >= 1)
            if not len(room):
                return
            first = int(room[0])
            whole = int(min(free[first], math.floor(remainder / units[first] + 1e-9)))
            if whole >= 1:
                self.take(index, int(positions[first]), whole)
                continue
            nodes = np.ceil(remainder / units[room] - 1e-9)
            fits = nodes <= free[room]
            if not fits.any():  # nothing covers the remainder alone: take what the cheapest has
                self.take(index, int(positions[first]), int(free[first]))
                continue
            cost = np.where(fits, weight[room] * nodes, np.inf)
            best = int(np.argmin(cost))
            self.take(index, int(positions[room[best]]), int(nodes[best]))

    def refill(self, index: int, needed: float) -> None:
        workload, cols = self.model.workloads[index], self.model.columns[index]
        share = workload.min_on_demand_share
        on_demand = np.flatnonzero(~cols.spot)
        self.fill(index, needed - self.covered[index], on_demand if share else np.arange(len(cols)))
        if share and share < 1:  # rounding down may have cut more on-demand than spot nodes
            total = sum(float(cols.units[p]) * n for p, n in self.nodes[index].items())
            spot = sum(float(cols.units[p]) * n for p, n in self.nodes[index].items() if cols.spot[p])
            self.fill(index, (share * total - (total - spot)) / (1 - share), on_demand)

    def complete_spread(self, index: int, flow: dict[str, float]) -> bool:
        """Fill the spread groups the LP used most (then those it holds most of, then the cheapest others)
        to demand/k each."""
        workload, cols = self.model.workloads[index], self.model.columns[index]
        spread, groups = workload.spread.count, self.model.groups_of(index)
        part = workload.demand_units / spread
        allowed = ~cols.spot if workload.min_on_demand_share else np.ones(len(cols), dtype=bool)
        carried: dict[str, float] = defaultdict(float)
        for position, nodes in self.nodes[index].items():
            carried[groups[position]] += float(cols.units[position]) * nodes
        first_position = {}
        for position, group in enumerate(groups):
            first_position.setdefault(group, position)
        complete = 0
        for group in sorted(first_position, key=lambda g: (-flow.get(g, 0.0), -carried[g], first_position[g])):
            if complete == spread:
                break
            before = self.covered[index]
            self.fill(index, part - carried[group], np.flatnonzero((groups == group) & allowed))
            carried[group] += self.covered[index] - before
            complete += carried[group] >= part - 1e-9
        return complete == spread and not self.model.broken(
            {(index, position): nodes for position, nodes in self.nodes[index].items()})

    def trim(self, index: int, level: float) -> None:
        """Give back nodes this workload does not need to stay at ``level`` within its rules, dearest
        per unit first (rounding down and completing spread groups leave surplus)."""
        mine, cols = self.nodes.get(index), self.model.columns[index]
        if not mine:
            return
        for position in sorted(mine, key=lambda p: -float(cols.weight[p] / cols.units[p])):
            units = float(cols.units[position])
            surplus = min(mine[position], math.floor((self.covered[index] - level) / units + 1e-9))
            while surplus > 0:
                trial = {(index, p): n - (surplus if p == position else 0) for p, n in mine.items()}
                if not self.model.broken(trial):
                    break
                surplus -= 1
            if surplus <= 0:
                continue
            mine[position] -= surplus
            if not mine[position]:
                del mine[position]
            self.free[int(cols.supply[position])] += surplus
            self.covered[index] -= surplus * units

    @property
    def assignment(self) -> dict[tuple[int, int], int]:
        return {(index, position): nodes for index, mine in self.nodes.items() for position, nodes in mine.items()}

    @classmethod
    def of(cls, model: _Model, assignment: dict[tuple[int, int], int]) -> _Rounding:
        """An assignment to build on, priced at the nodes' own prices."""
        rounding = cls(model, np.zeros(len(model.table)))
        for (index, position), nodes in assignment.items():
            rounding.take(index, position, nodes)
        return rounding

    def displace(self, index: int, nodes_by_column: dict[int, int], fallback: dict[int, dict[int, int]],
                 depth: int = DISPLACE_DEPTH) -> bool:
        """Give the workload these nodes, taking them from whoever holds them where none are free; those
        workloads make up what they lost from free nodes (their cheapest first), or where they cannot,
        are displaced to their nodes in ``fallback`` (a plan that fits) in turn, up to ``depth`` deep.
        Whether that kept everyone at their service level (if not, nothing changes)."""
        if not nodes_by_column:
            return False
        saved = self.free.copy(), {i: dict(mine) for i, mine in self.nodes.items()}, dict(self.covered)
        self.release(index)
        displaced = set()

        def first_to_go(key: tuple[int, int]) -> tuple:
            """Holders free to refill node by node first, then those holding most."""
            return _has_rules(self.model.workloads[key[0]]), -self.nodes[key[0]][key[1]], key

        for position, nodes in nodes_by_column.items():
            supply = int(self.model.columns[index].supply[position])
            holders = sorted(((i, p) for i, mine in self.nodes.items() for p in mine
                              if int(self.model.columns[i].supply[p]) == supply), key=first_to_go)
            for other, at in holders:
                if self.free[supply] >= nodes:
                    break
                self._give_back(other, at, int(min(self.nodes[other][at], nodes - self.free[supply])))
                displaced.add(other)
            self.take(index, position, nodes)
        for other in _by_priority(self.model, displaced):
            level = self.model.level(other)
            if self.model.workloads[other].spread.count:
                self.complete_spread(other, {})
            else:
                self.refill(other, level)
            self.trim(other, level)
            if self.covered[other] < level - 1e-6 and depth > 1:
                self.displace(other, fallback[other], fallback, depth - 1)
        if all(self.covered[i] >= self.model.level(i) - 1e-6 for i in (index, *displaced)) \
                and not self.model.broken({key: n for key, n in self.assignment.items() if key[0] in displaced}):
            return True
        self.free, self.nodes, self.covered = saved[0], defaultdict(dict, saved[1]), defaultdict(float, saved[2])
        return False

    def _give_back(self, index: int, position: int, nodes: int) -> None:
        self.nodes[index][position] -= nodes
        if not self.nodes[index][position]:
            del self.nodes[index][position]
        self.free[int(self.model.columns[index].supply[position])] += nodes
        self.covered[index] -= nodes * float(self.model.columns[index].units[position])

    def release(self, index: int) -> None:
        for position, nodes in self.nodes.pop(index, {}).items():
            self.free[int(self.model.columns[index].supply[position])] += nodes
        self.covered[index] = 0.0

    def restore(self, index: int, nodes_by_column: dict[int, int]) -> bool:
        """These nodes of this workload, if every one of them still fits (else none)."""
        if all(self.take(index, position, nodes) == nodes for position, nodes in nodes_by_column.items()):
            return bool(nodes_by_column)
        self.release(index)
        return False


def _serve_short(solver: _Solver, model: _Model, plan: dict[tuple[int, int], int],
                 topped: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """The workloads ``plan`` serves below what they could get alone, re-solved together within the
    capacity the others leave, from their nodes in ``topped`` (``plan`` topped up): for the most
    priority-weighted service, then for the least cost at the service each then gets. Topping up
    one workload at a time gives a high-priority workload the nodes a lower one could use where it
    has no others; the MIP shares the free nodes out. At 5,000 workloads with tight supply it
    served 357 to 423 priority units more than the top-up (which served 94 more than ``plan``), at
    less cost; with roomy supply 4 to 5 more; at tight 1,000, 20 more (4.4) where it had the time."""
    covered = _covered(model, plan)
    below = _by_priority(model, [index for index in range(len(model.workloads))
                                 if covered[index] < model.targets[index] - 1e-6])
    if not below or not solver.time_left():
        return topped
    search = _Neighbourhoods(solver, model, topped)
    search.resolve(below, most=SHORT_SHARE * (solver.deadline - time.monotonic()), serve=True)
    covered = _covered(model, search.assignment)
    if solver.time_left():
        search.resolve(below, most=SHORT_SHARE * (solver.deadline - time.monotonic()),
                       levels=[min(covered[index], model.targets[index]) for index in below])
    return search.assignment


def _polish(model: _Model, solution: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """Stage 1's service at a lower cost. Its nodes on supplies it fills to capacity (the contested
    ones, which decide who is served) stay; so do spread and on-demand-share workloads' nodes. Every
    other workload, by priority, gives back its own remaining nodes and re-fills its service level
    cheapest-first from what is free, which always succeeds: what it gave back is still there."""
    table = model.table
    used = np.zeros(len(table))
    for (index, position), nodes in solution.items():
        used[int(model.columns[index].supply[position])] += nodes
    contested = np.isfinite(table.capacity) & (used >= table.capacity - 0.5)
    free = table.capacity - used
    levels = _coverage(model, solution)

    assignment = {key: nodes for key, nodes in solution.items()
                  if _has_rules(model.workloads[key[0]]) or contested[int(model.columns[key[0]].supply[key[1]])]}
    released: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key, nodes in solution.items():
        if key not in assignment:
            released[key[0]].append((int(model.columns[key[0]].supply[key[1]]), nodes))
    covered = _coverage(model, assignment)
    for index in _by_priority(model, range(len(model.workloads))):
        if _has_rules(model.workloads[index]):
            continue
        for supply, nodes in released[index]:
            free[supply] += nodes
        cols = model.columns[index]
        for position in range(len(cols)):  # cheapest per unit first
            if covered[index] >= levels[index] - 1e-6:
                break
            supply = int(cols.supply[position])
            units = float(cols.units[position])
            nodes = int(min(free[supply], math.ceil((levels[index] - covered[index]) / units - 1e-9)))
            if nodes > 0 and not contested[supply]:
                model.add(index, position)
                assignment[(index, position)] = assignment.get((index, position), 0) + nodes
                free[supply] -= nodes
                covered[index] += nodes * units
    return assignment if model.satisfies(assignment) else {}


def _dear_raise(model: _Model, incumbent: dict[tuple[int, int], int], plan: dict[tuple[int, int], int],
                topped: dict[tuple[int, int], int]) -> bool:
    """Whether ``topped`` (``plan`` topped up) serves more than ``incumbent`` (the service to beat) and
    the top-up added more than RECOST_ABOVE to ``plan``'s cost (see _recost)."""
    served, raised = _score(model, incumbent, model.targets)[0], _score(model, topped, model.targets)[0]
    return raised > served + 1e-6 and _score(model, topped)[1] > (1 + RECOST_ABOVE) * _score(model, plan)[1]


def _recost(solver: _Solver, model: _Model, lp: _Result | None, repaired: dict[tuple[int, int], int],
            topped: dict[tuple[int, int], int]
            ) -> tuple[_Model, _Result | None, dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """The cost stage once more at the service ``topped`` reaches: its LP over the columns generated
    so far, rounded, repaired from ``topped`` and topped up again. The top-up raises service with
    the nodes the cost plan left free, whatever they cost (at roomy 5,000 workloads, 20 to 200 times
    the raised workloads' cheapest price, +11 % on the plan); at the raised levels the LP moves
    others to make room for them at a fraction of that. Returns the model at the raised levels,
    its LP (which then guides the neighbourhood search), and the repaired and topped plans: the
    new ones where they serve more, or as much for less, else those given."""
    covered = _covered(model, topped)
    raised = model.over(set(model.x) | set(topped))
    raised.fix_served([min(covered[index], model.targets[index]) for index in range(len(model.workloads))])
    raised.objective_cost()
    relaxed = solver.lp(raised)
    solver.stages.append("recost-lp")
    if relaxed is None or not relaxed.feasible:
        return model, lp, repaired, topped
    rounded = _round_lp(raised, relaxed, topped, spread_first=True)
    again = _repair(solver, raised, rounded, topped, [], solver.finish_reserve / 2)
    retopped = _top_up(raised, again, raised.targets)
    if _worse(raised, retopped, topped, raised.targets):
        return raised, relaxed, repaired, topped
    return raised, relaxed, again, retopped


def _held_at(solver: _Solver, model: _Model, assignment: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """The assignment, with every workload's service held at what it serves there from now on, for the
    neighbourhood search, which re-solves workloads at their levels (the model's own rows keep the
    caps of the old levels; it is not solved again). The cost LP was at the old levels: where no
    level came down, every plan at the new ones is feasible there, so its bound still holds (no longer
    exact); where one came down, the bound moves with the levels (see _Solver.level_bound). The last
    cost round's capacity duals also price a bound at the new levels, raised ones included, which
    holds where that LP had not converged (its own bound is then <= 0). Alternating prices and cover
    duals from there (see _Model.lagrangian) raised that bound by 0.03 % at roomy 5,000 and 0.2 % at
    tight 5,000, in 0.8 and 0.4 s the neighbourhood search that follows can use better."""
    covered = _covered(model, assignment)
    levels = [min(covered[index], model.targets[index]) for index in range(len(model.workloads))]
    if any(level < model.level(index) - 1e-6 for index, level in enumerate(levels)):
        solver.lp_bound = solver.level_bound(np.array(levels) / model.demand)
    solver.lp_exact = False
    model.fix_served(levels)
    if solver.capacity_prices is not None:  # priced at the new levels, raised ones too
        solver.lp_bound = max(solver.lp_bound or 0.0, model.priced(solver.capacity_prices).bound)
    solver.stages.append("service-raised")
    return assignment


def _top_up(model: _Model, assignment: dict[tuple[int, int], int], targets: list[float]
            ) -> dict[tuple[int, int], int]:
    """More service from the nodes a plan leaves free: by priority, each workload below what it could get
    alone fills toward it from its cheapest columns with free nodes (within its rules; a spread
    workload only when it can be served whole). The service stage of large fleets sees a fraction of
    the columns, and the cost stage's rounding moves workloads off supplies: both leave nodes free
    that others can use."""
    rounding = _Rounding.of(model, assignment)
    for index in _by_priority(model, range(len(model.workloads))):
        target, before = targets[index], dict(rounding.nodes.get(index, {}))
        if rounding.covered[index] >= target - 1e-6:
            continue
        if model.workloads[index].spread.count:
            if before or not rounding.complete_spread(index, {}):
                rounding.release(index)
                rounding.restore(index, before)
                continue
        else:
            rounding.refill(index, target)
        rounding.trim(index, target)
        if model.broken({(index, position): n for position, n in rounding.nodes[index].items()}):
            rounding.release(index)
            rounding.restore(index, before)
    return rounding.assignment


def _restricted(model: _Model, lp: _Result | None, incumbent: dict[tuple[int, int], int]) -> _Model:
    """The model over the columns that matter: the LP's support, the incumbent's, and each workload's
    cheapest few."""
    targets = [variable.upper_bound * workload.demand_units
               for variable, workload in zip(model.served.values(), model.workloads)]
    support = {key for key, variable in model.x.items() if lp.value(variable) > 1e-6} \
        if lp is not None and lp.feasible else set()
    keys = support | set(incumbent)
    for index, columns in enumerate(model.columns):
        keys.update((index, position) for position in range(min(RESTRICTED_CHEAPEST, len(columns))))
    return model.over(keys, targets)


def _has_rules(workload: Workload) -> bool:
    """Whether the workload's nodes must keep a spread or an on-demand share (so they cannot move one at
    a time)."""
    return bool(workload.spread.count or workload.min_on_demand_share)


def _by_priority(model: _Model, indices) -> list[int]:
    """These workloads, highest priority first (then by index, for determinism)."""
    return sorted(indices, key=lambda index: (-model.workloads[index].priority, index))


def _covered(model: _Model, assignment: dict[tuple[int, int], int]) -> dict[int, float]:
    """Demand units each workload's nodes serve (uncapped)."""
    covered: dict[int, float] = defaultdict(float)
    for (index, position), nodes in assignment.items():
        covered[index] += float(model.columns[index].units[position]) * nodes
    return covered


def _coverage(model: _Model, assignment: dict[tuple[int, int], int]) -> dict[int, float]:
    covered = _covered(model, assignment)
    return {index: min(covered[index], model.served[index].upper_bound * workload.demand_units)
            for index, workload in enumerate(model.workloads)}


def _best_of(model: _Model, *candidates: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    best: dict[tuple[int, int], int] = {}
    for candidate in candidates:
        if candidate and model.satisfies(candidate) and (not best or _worse(model, best, candidate)):
            best = candidate
    return best


def _previous_assignment(previous: Plan, workloads: list[Workload], columns: list[Columns],
                         table: SupplyTable) -> dict[tuple[int, int], int]:
    """A previous plan's nodes mapped onto this problem's columns (for warm starts), within today's
    capacities (supply may have shrunk since)."""
    by_name = {workload.name: index for index, workload in enumerate(workloads)}
    supply_of = {key: index for index, key in enumerate(table.keys)}
    free = table.capacity.copy()
    assignment = {}
    for (name, key), nodes in sorted(previous.assignment.items()):
        index, supply = by_name.get(name), supply_of.get(key)
        if index is None or supply is None:
            continue
        positions = np.flatnonzero(columns[index].supply == supply)
        nodes = int(min(nodes, free[supply]))
        if len(positions) and nodes > 0:
            assignment[(index, int(positions[0]))] = nodes
            free[supply] -= nodes
    return assignment


def _score(model: _Model, assignment: dict[tuple[int, int], int], ceilings: list[float] | None = None
           ) -> tuple[float, float]:
    """Priority-weighted demand served (each workload's counted up to its ceiling, demand units; default
    the level it is held at, or its target before that, and in all at most the total where only that
    is held: more than the total counts for nothing in the cost stage) and cost."""
    served = _covered(model, assignment)
    cost = sum(float(model.columns[index].weight[position]) * nodes for (index, position), nodes in assignment.items())
    default = ceilings is None
    if default:
        ceilings = [model.served[index].upper_bound * workload.demand_units
                    for index, workload in enumerate(model.workloads)]
    value = sum(workload.priority * min(ceilings[index], served[index]) / workload.demand_units
                for index, workload in enumerate(model.workloads))
    if default and model.total is not None:
        value = min(value, model.total)
    return value, cost


def _worse(model: _Model, chosen: dict[tuple[int, int], int], other: dict[tuple[int, int], int],
           ceilings: list[float] | None = None) -> bool:
    """Whether ``chosen`` serves less priority-weighted demand than ``other``, or the same for more
    (each workload's service counted up to ``ceilings``, see _score)."""
    (mine, my_cost), (theirs, their_cost) = _score(model, chosen, ceilings), _score(model, other, ceilings)
    return mine < theirs - 1e-6 or (abs(mine - theirs) <= 1e-6 and my_cost > their_cost * (1 + 1e-9))


def _solution(model: _Model, result: _Result | None) -> dict[tuple[int, int], int]:
    """Nodes per column; a spread workload whose nodes don't make its spread (the MIP may leave stray
    nodes where an objective doesn't price them) is unserved and loses them."""
    if result is None or not result.feasible:
        return {}
    return _drop_broken(model, {key: int(round(result.value(variable))) for key, variable in model.x.items()
                                if result.value(variable) > 0.5})


def _drop_broken(model: _Model, assignment: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """Without the workloads whose nodes break their own spread or share rule (they count as unserved)."""
    broken = model.broken(assignment)
    return {key: nodes for key, nodes in assignment.items() if key[0] not in broken}


def _assemble(workloads, table, builder, columns, model, chosen, result, options, solver) -> Plan:
    used_by_supply: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for (index, position), nodes in chosen.items():
        used_by_supply[int(columns[index].supply[position])].append((workloads[index].name, nodes))
    placements, unmet, explanations = [], [], []
    assignment: dict[tuple[str, str], int] = {}
    by_workload: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (index, position), nodes in chosen.items():
        by_workload[index].append((position, nodes))
    singles = _single_type_plans(workloads, columns, table) if options.explain else []
    for index, workload in enumerate(workloads):
        cols = columns[index]
        mine = sorted(by_workload.get(index, []))
        served_units = 0.0
        workload_cost = 0.0
        for position, nodes in mine:
            supply = table.supplies[int(cols.supply[position])]
            offer = supply.offer
            units = float(cols.units[position]) * nodes
            served_units += units
            cost = float(cols.cost[position]) * nodes
            workload_cost += cost
            assignment[(workload.name, offer.key)] = nodes
            placements.append(Placement(
                workload=workload.name, provider=offer.provider, region=offer.region,
                zones=tuple(sorted({o.zone for o in supply.offers if o.zone})), instance_type=offer.instance_type,
                gpu=offer.gpu, gpu_count=offer.gpu_count, pricing=offer.pricing.value, nodes=nodes,
                replicas=int(cols.replicas[position]) * nodes, tensor_parallel=int(cols.tensor_parallel[position]),
                tokens_per_s=round(units, 1) if workload.serves_tokens else None,
                cost_per_hour=0.0 if offer.committed else round(supply.price_per_hour * nodes, 4),
                total_cost=round(cost, 2), committed=offer.committed,
                offer_keys=tuple(o.key for o in supply.offers)))
        missing = workload.demand_units - served_units
        if missing > 1e-6 * workload.demand_units:
            reason = (builder.shortfall_reason(workload) if len(cols) == 0
                      else _capacity_reason(workload, cols, table, used_by_supply))
            unmet.append(Unmet(workload.name, round(missing, 1) if workload.serves_tokens else None,
                               None if workload.serves_tokens else round(missing, 3), reason))
        if options.explain:
            explanations.append(_explain(workload, cols, mine, workload_cost, table, builder, used_by_supply,
                                         singles[index]))
    objective = sum(float(columns[index].weight[position]) * nodes
                    for (index, position), nodes in chosen.items()) if chosen else None
    lp_bound = solver.lp_bound
    if result is not None:  # the final MIP's own bound
        bound = result.dual_bound if math.isfinite(result.dual_bound) else None
        status = result.reason.name.lower()
    else:  # improved piecewise (or not at all): the LP bound
        bound = lp_bound
        status = "feasible" if chosen else "not_solved"
    gap = (objective - bound) / max(abs(objective), 1e-9) if objective is not None and bound is not None else None
    report = SolverReport(
        solver=options.solver, status=status,
        objective=None if objective is None else round(objective, 2),
        bound=None if bound is None else round(bound, 2),
        gap=None if gap is None else round(max(gap, 0.0), 6), seconds=round(time.monotonic() - solver.started, 3),
        lp_bound=None if lp_bound is None else round(lp_bound, 2), lp_exact=solver.lp_exact,
        columns=len(model.x), stages=tuple(solver.stages))
    return Plan(options.currency, tuple(placements), tuple(unmet), tuple(explanations), report, assignment)


def _capacity_reason(workload, cols, table, used_by_supply) -> str:
    """Name the cheapest supplies this workload could use that are full, and who holds them."""
    used = np.array([sum(nodes for _, nodes in used_by_supply.get(int(supply), [])) for supply in cols.supply[:200]])
    capacity = table.capacity[cols.supply[:200]]
    full = []
    for position in np.flatnonzero(np.isfinite(capacity) & (used >= capacity))[:3]:
        supply = int(cols.supply[position])
        others = ", ".join(f"{name} {nodes}" for name, nodes in used_by_supply.get(supply, []) if name != workload.name)
        full.append(f"{table.supplies[supply].label} ({int(table.capacity[supply])} nodes"
                    + (f"; taken by {others}" if others else "") + ")")
    if not full:
        return "spread or on-demand share cannot be met by the supply left"
    return "capacity of " + "; ".join(full)


def _single_type_plans(workloads: list[Workload], columns: list[Columns], table: SupplyTable
                       ) -> list[tuple[str | None, float | None]]:
    """Each workload's best single-GPU-type plan (_best_single_type), EXPLAIN_THREADS at once: most of
    the time is HiGHS's, which releases the GIL."""
    with ThreadPoolExecutor(EXPLAIN_THREADS, thread_name_prefix="gpu-supply-explain") as pool:
        return list(pool.map(_best_single_type, workloads, columns, itertools.repeat(table)))


def _explain(workload, cols, mine, workload_cost, table, builder, used_by_supply, single) -> Explanation:
    chosen_positions = {position for position, _ in mine}
    labels = tuple(f"{table.supplies[int(cols.supply[p])].label} x{nodes}" for p, nodes in mine)
    max_unit = max((float(cols.cost[p] / cols.units[p]) for p in chosen_positions), default=math.inf)
    rejected, because, rejected_unit = None, None, math.inf
    for position in range(len(cols)):  # cheapest per unit first
        if position in chosen_positions:
            continue
        supply = int(cols.supply[position])
        rejected = table.supplies[supply].label
        holders = [f"{name} ({nodes})" for name, nodes in used_by_supply.get(supply, []) if name != workload.name]
        unit = rejected_unit = float(cols.cost[position] / cols.units[position])
        if holders and math.isfinite(table.capacity[supply]) \
                and sum(n for _, n in used_by_supply[supply]) >= table.capacity[supply]:
            because = f"capacity taken by {', '.join(holders)}"
        elif unit < max_unit:
            because = "whole nodes, spread or on-demand share made it dearer for this demand"
        else:
            because = f"{(unit / max_unit - 1) * 100:.1f}% dearer per unit of demand" if math.isfinite(max_unit) \
                else "not needed"
        break
    excluded = _cheapest_policy_excluded(workload, builder, max_unit)
    if excluded is not None and excluded[1] < rejected_unit:
        rejected, because = excluded[0], f"excluded by {excluded[2]}"
    single_gpu, single_cost = single
    return Explanation(workload.name, labels, rejected, because, single_gpu,
                       None if single_cost is None else round(single_cost, 2),
                       None if single_cost is None or not mine else round(single_cost - workload_cost, 2))


def _cheapest_policy_excluded(workload, builder, max_unit) -> tuple[str, float, str] | None:
    """The cheapest supply the model would run on that a policy filter excludes, if cheaper than the plan's."""
    table = builder.table
    degrees, rates = builder.per_gpu_type(workload)
    masks = builder.masks(workload, degrees)
    runs = masks["model fit (memory or SLO)"]
    policy = [name for name in FILTERS if name != "model fit (memory or SLO)"]
    excluded = runs & ~np.logical_and.reduce([masks[name] for name in policy])
    if not excluded.any():
        return None
    supply = np.flatnonzero(excluded)
    tp = np.maximum(degrees[table.gpu[supply]], 1)
    units = (table.gpu_count[supply] // tp) * (rates[table.gpu[supply]] if workload.serves_tokens else 1.0)
    valid = units > 0
    if not valid.any():
        return None
    supply, units = supply[valid], units[valid]
    unit_cost = table.price[supply] * np.maximum(workload.hours, table.min_term[supply]) / units
    best = int(np.argmin(unit_cost))
    if unit_cost[best] >= max_unit:
        return None
    chosen = int(supply[best])
    failed = next(name for name in policy if not masks[name][chosen])
    return table.supplies[chosen].label, float(unit_cost[best]), failed


def _best_single_type(workload: Workload, cols: Columns, table: SupplyTable) -> tuple[str | None, float | None]:
    """Cheapest plan for this workload alone on one GPU type, with its own policies and full capacities,
    tried in the order of the types' fractional bounds, and none for a type whose bound is no lower
    than the best plan found. Without an on-demand share, a branch and bound over whole nodes
    (_rule_free_cover); with one, or where that runs long, a small MIP (about 5 ms each, HiGHS's own
    start-up: 1,000 workloads took 17 s to explain with MIPs alone)."""
    codes = table.gpu[cols.supply]  # (codes follow the names' order)
    types = {table.gpu_names[code]: np.flatnonzero(codes == code) for code in np.unique(codes).tolist()}
    demand = workload.demand_units
    units = np.minimum(cols.units, demand)  # a node counts for at most the demand, as in whole nodes
    capacity = table.capacity[cols.supply]
    covers = {gpu: _fractional_cover(cols.cost[keep] / units[keep], units[keep], capacity[keep], demand)
              for gpu, keep in types.items()}
    bounds = {gpu: math.inf if covered is None else covered[0] for gpu, covered in covers.items()}
    best: tuple[str | None, float | None] = (None, None)
    for gpu in sorted(types, key=lambda name: bounds[name]):  # (stable: by name among equal bounds)
        if not math.isfinite(bounds[gpu]) or best[1] is not None and bounds[gpu] >= best[1]:
            break
        cost = _best_for_type(workload, cols, types[gpu], table)
        if cost is not None and (best[1] is None or cost < best[1]):
            best = (gpu, cost)
    return best


def _best_for_type(workload: Workload, cols: Columns, keep: np.ndarray, table: SupplyTable) -> float | None:
    """The workload's cheapest plan on these of its columns (one GPU type's) alone; None if none serves it."""
    cost = None if workload.min_on_demand_share else _rule_free_cover(workload, cols, keep, table)
    if cost is None:
        return _single_type_mip(workload, cols, keep, table)
    return cost if math.isfinite(cost) else None


def _rule_free_cover(workload: Workload, cols: Columns, keep: np.ndarray, table: SupplyTable) -> float | None:
    """The workload's cheapest plan on these of its columns alone, by _whole_node_cover: a spread over
    k groups is the k cheapest groups each covering demand/k (the cover then follows). Infinite where
    none serves it; None where it takes a MIP to tell."""
    demand, spread = workload.demand_units, workload.spread.count
    cost, units, capacity = cols.cost[keep], cols.units[keep], table.capacity[cols.supply[keep]]
    if not spread:
        return _whole_node_cover(cost, np.minimum(units, demand), capacity, demand)
    groups = table.spread_groups(workload.spread)[cols.supply[keep]]
    share = demand / spread
    covers = []
    for group in dict.fromkeys(groups.tolist()):
        mine = groups == group
        cover = _whole_node_cover(cost[mine], np.minimum(units[mine], share), capacity[mine], share)
        if cover is None:
            return None
        covers.append(cover)
    return math.fsum(sorted(covers)[:spread]) if len(covers) >= spread else math.inf


def _single_type_mip(workload: Workload, cols: Columns, keep: np.ndarray, table: SupplyTable) -> float | None:
    """The workload's cheapest plan on these of its columns alone, rules kept: a small MIP."""
    subset = Columns(0, cols.supply[keep], cols.units[keep], cols.replicas[keep], cols.tensor_parallel[keep],
                     cols.cost[keep], cols.cost[keep], cols.spot[keep])
    model = _Model([workload], table, [subset], [workload.demand_units])
    for position in range(len(subset)):
        model.add(0, position)
    model.fix_served()
    model.objective_cost()
    model.set_integer(True)
    result = _solve(model.model, mathopt.SolverType.HIGHS, mathopt.SolveParameters(
        time_limit=timedelta(seconds=2), relative_gap_tolerance=1e-4, random_seed=0))
    return result.objective if result.feasible else None


def _whole_node_cover(cost: np.ndarray, units: np.ndarray, nodes: np.ndarray, level: float,
                      most_branches: int = COVER_BRANCHES) -> float | None:
    """The least cost of whole nodes covering ``level`` units, at most ``nodes`` of each column (rules
    dropped), exactly: depth first over the columns, cheapest per unit first, each taking as many
    nodes as could help and then fewer, cut off where the fractional cover of what is left cannot
    beat the best found (fewer nodes of a cheaper column only cost more from there). Infinite where
    the columns fall short; None where the search takes more than ``most_branches`` branches."""
    # Columns alike in cost and units (one node type in several regions) are one, with all their nodes:
    # the search would otherwise try every way of splitting nodes between them.
    (cost, units), alike = np.unique(np.stack([cost, units]), axis=1, return_inverse=True)
    nodes = np.bincount(alike.ravel(), weights=nodes, minlength=len(cost))
    nodes = np.minimum(nodes, np.ceil(level / units - 1e-9))  # more never helps (and capacity may be unbounded)
    order = np.argsort(cost / units, kind="stable")
    price, size, most = cost[order].tolist(), units[order].tolist(), nodes[order].tolist()
    reach = [0.0, *np.cumsum(units[order] * nodes[order]).tolist()]  # units of the first j columns, all nodes
    spend = [0.0, *np.cumsum(cost[order] * nodes[order]).tolist()]
    slack = 1e-9 * level
    best, branches = math.inf, 0

    def fractional(first: int, short: float) -> float:
        """Least cost of ``short`` units from the columns from ``first`` on, fractional nodes."""
        target = reach[first] + short
        end = bisect.bisect_left(reach, target - slack, lo=first + 1)
        if end == len(reach):
            return math.inf
        return spend[end - 1] - spend[first] + (target - reach[end - 1]) * price[end - 1] / size[end - 1]

    def search(first: int, short: float, paid: float) -> bool:  # False: out of branches
        nonlocal best, branches
        branches += 1
        if branches > most_branches or first > COVER_DEPTH:  # (Python's own recursion limit is 1,000)
            return False
        for taken in range(int(min(most[first], math.ceil(short / size[first] - 1e-9))), -1, -1):
            left, spent = short - taken * size[first], paid + taken * price[first]
            if left <= slack:
                best = min(best, spent)
                continue
            if first + 1 == len(price) or spent + fractional(first + 1, left) >= best * (1 - 1e-12):
                break  # and with fewer nodes of this column, more of dearer ones
            if not search(first + 1, left, spent):
                return False
        return True

    if fractional(0, level) == math.inf:
        return math.inf
    return best if search(0, level, 0.0) else None


def _fractional_cover(ratio: np.ndarray, units: np.ndarray, nodes: np.ndarray, level: float
                      ) -> tuple[float, float, np.ndarray] | None:
    """The least cost of covering ``level`` units with fractional nodes, at most ``nodes`` of each column
    and the cheapest ``ratio`` (cost per unit) first, rules dropped (a lower bound on any whole-node
    cover); the ratio of the last column used (what one more unit costs), and the columns used. None
    where the columns fall short."""
    order, reach = _cheapest_first(ratio, units * nodes, level)
    last = int(np.searchsorted(reach, level))
    if last >= len(order):
        return None
    before = float(reach[last - 1]) if last else 0.0
    whole, marginal = order[:last], float(ratio[order[last]])
    return float(ratio[whole] * units[whole] @ nodes[whole]) + (level - before) * marginal, marginal, order[:last + 1]


def _cheapest_first(ratio: np.ndarray, capacity: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns by ``ratio`` (ties by position) and the ``capacity`` they reach in that order: of the
    CHEAPEST_SORTED cheapest (and their ties) where those reach ``level``, else of all. The Lagrangian
    bound covers about a thousand workloads a round this way at 5,000, each over about 1,500 columns,
    and a few columns cover most: sorting them all took 100 us a cover (1.06 s a plan), now 40 us."""
    if len(ratio) > CHEAPEST_SORTED:
        threshold = np.partition(ratio, CHEAPEST_SORTED - 1)[CHEAPEST_SORTED - 1]
        cheap = np.flatnonzero(ratio <= threshold)
        order = cheap[np.argsort(ratio[cheap], kind="stable")]
        reach = np.cumsum(capacity[order])
        if reach[-1] >= level:
            return order, reach
    order = np.argsort(ratio, kind="stable")
    return order, np.cumsum(capacity[order])
