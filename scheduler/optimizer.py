"""Fleet placement with OR-Tools MathOpt: integer nodes of each supply for each workload.

Formulation (docs/workloads.md has the user-facing rules):

- ``x[w,c]`` integer nodes of column c (a supply that can serve workload w), bounded by the
  supply's capacity and by the nodes that alone would cover w's demand;
- coverage ``sum units * x >= demand * s[w]``; capacity ``sum_w x[w,c] <= capacity(supply)``;
  on-demand share ``sum (on_demand - share) * units * x >= 0``; spread: ``y[w,g]`` marks group g
  (a provider, or a provider's region) carrying at least demand/k, and ``sum_g y >= k``;
- lexicographic priorities: when all demand can be served, ``s = 1`` and cost is minimised. When
  not, first maximise ``sum priority * s`` (served fraction), then minimise cost holding it.

Only columns that matter are generated: each workload starts with its cheapest columns per unit
of demand, then column generation on the LP relaxation prices every feasible column with the
LP's duals and adds those with negative reduced cost until none is left. That makes the
reported LP bound valid for the full problem while the MIP sees a fraction of the columns.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from ortools.math_opt.python import mathopt

from gpu_supply.errors import UserError
from gpu_supply.offer import Offer
from pricing.fx import FxTable
from scheduler.plan import Explanation, Placement, Plan, SolverReport, Unmet
from scheduler.supply import FILTERS, ColumnBuilder, Columns, SupplyTable
from scheduler.throughput import ProfileRow, ThroughputModel
from scheduler.workloads import Workload

SOLVERS = {"highs": mathopt.SolverType.HIGHS, "scip": mathopt.SolverType.GSCIP, "cpsat": mathopt.SolverType.CP_SAT}
INITIAL_COLUMNS = 8  # cheapest columns per workload to start from
COVER_FACTOR = 2.0  # ...plus more until their capacity covers this many times the demand
COLUMNS_PER_ROUND = 4  # columns added per workload per pricing round
MAX_PRICING_ROUNDS = 25
REDUCED_COST_TOLERANCE = 1e-7


@dataclass(frozen=True)
class PlanOptions:
    time_limit_s: float = 30.0
    solver: str = "highs"
    unknown_capacity: int | None = None  # nodes assumed per offer where suppliers don't say; None = unlimited
    currency: str = "USD"
    relative_gap: float = 0.001
    explain: bool = True  # per-workload explanations (a small MIP per GPU type; benchmarks turn it off)


class _Model:
    """The MathOpt model, grown column by column; LP while generating columns, MIP at the end."""

    def __init__(self, workloads: list[Workload], table: SupplyTable, columns: list[Columns], partial: bool) -> None:
        self.workloads, self.table, self.columns, self.partial = workloads, table, columns, partial
        self.model = mathopt.Model(name="placement")
        self.x: dict[tuple[int, int], mathopt.Variable] = {}
        self.y: dict[tuple[int, str], mathopt.Variable] = {}
        self.served: dict[int, mathopt.Variable] = {}
        self.active: dict[int, mathopt.Variable] = {}  # spread workloads in partial mode: served at all
        self.cover: dict[int, mathopt.LinearConstraint] = {}
        self.share: dict[int, mathopt.LinearConstraint] = {}
        self.group: dict[tuple[int, str], mathopt.LinearConstraint] = {}
        self.capacity: dict[int, mathopt.LinearConstraint] = {}
        self.weight: dict[mathopt.Variable, float] = {}  # cost objective coefficient of each column
        self.minimising_cost = False
        self.integers: list[mathopt.Variable] = []
        self._groups: dict[int, np.ndarray] = {}
        for index, workload in enumerate(workloads):
            demand = workload.demand_units
            if partial:
                served = self.model.add_variable(lb=0, ub=1, name=f"s[{workload.name}]")
                self.served[index] = served
                self.cover[index] = self.model.add_linear_constraint(-demand * served >= 0, name=f"cover[{index}]")
            else:
                self.cover[index] = self.model.add_linear_constraint(lb=demand, name=f"cover[{index}]")
            if workload.min_on_demand_share > 0:
                self.share[index] = self.model.add_linear_constraint(lb=0, name=f"share[{index}]")
            spread = self._spread(workload)
            if spread:
                needed = self.model.add_linear_constraint(lb=0 if partial else spread, name=f"spread[{index}]")
                if partial:
                    active = self.model.add_variable(lb=0, ub=1, name=f"u[{index}]")
                    self.integers.append(active)
                    self.active[index] = active
                    needed.set_coefficient(active, -spread)
                    self.model.add_linear_constraint(self.served[index] - active <= 0)
                self.group[(index, "")] = needed

    @staticmethod
    def _spread(workload: Workload) -> int:
        return workload.spread.min_providers or workload.spread.min_regions or 0

    def group_key(self, workload: Workload, supply: int) -> str:
        offer = self.table.supplies[supply].offer
        return offer.provider if workload.spread.min_providers else f"{offer.provider}/{offer.region}"

    def add(self, index: int, position: int) -> None:
        """Add column ``position`` of workload ``index`` with its coefficients in every row it touches."""
        if (index, position) in self.x:
            return
        workload, columns = self.workloads[index], self.columns[index]
        supply, units = int(columns.supply[position]), float(columns.units[position])
        capacity = self.table.capacity[supply]
        bound = math.ceil(workload.demand_units / units - 1e-9)
        variable = self.model.add_variable(lb=0, ub=min(capacity, bound), name=f"x[{index},{supply}]")
        self.x[(index, position)] = variable
        self.integers.append(variable)
        self.cover[index].set_coefficient(variable, units)
        self.weight[variable] = float(columns.weight[position])
        if self.minimising_cost:
            self.model.objective.set_linear_coefficient(variable, self.weight[variable])
        if index in self.share:
            on_demand = 0.0 if columns.spot[position] else 1.0
            self.share[index].set_coefficient(variable, (on_demand - workload.min_on_demand_share) * units)
        if math.isfinite(capacity):
            if supply not in self.capacity:
                self.capacity[supply] = self.model.add_linear_constraint(ub=capacity, name=f"capacity[{supply}]")
            self.capacity[supply].set_coefficient(variable, 1)
        spread = self._spread(workload)
        if spread:
            key = (index, self.group_key(workload, supply))
            if key not in self.group:
                flag = self.model.add_variable(lb=0, ub=1, name=f"y[{index},{key[1]}]")
                self.y[key] = flag
                self.integers.append(flag)
                self.group[key] = self.model.add_linear_constraint(lb=0, name=f"group[{index},{key[1]}]")
                self.group[key].set_coefficient(flag, -workload.demand_units / spread)
                self.group[(index, "")].set_coefficient(flag, 1)
            self.group[key].set_coefficient(variable, units)

    def objective_serve(self) -> None:
        self.model.minimize(-mathopt.fast_sum(workload.priority * self.served[index]
                                              for index, workload in enumerate(self.workloads)))

    def objective_cost(self, served_floor: float | None = None) -> None:
        if served_floor is not None:
            self.model.add_linear_constraint(mathopt.fast_sum(
                workload.priority * self.served[index] for index, workload in enumerate(self.workloads)) >= served_floor)
        self.model.minimize(mathopt.fast_sum(weight * variable for variable, weight in self.weight.items()))
        self.minimising_cost = True

    def set_integer(self, integer: bool) -> None:
        for variable in self.integers:
            variable.integer = integer

    def groups_of(self, index: int) -> np.ndarray:
        """Spread group key of every column of a spread workload."""
        if index not in self._groups:
            workload = self.workloads[index]
            self._groups[index] = np.array([self.group_key(workload, int(supply))
                                            for supply in self.columns[index].supply], dtype=object)
        return self._groups[index]

    def capacity_duals(self, duals: dict) -> np.ndarray:
        values = np.zeros(len(self.table))
        for supply, constraint in self.capacity.items():
            values[supply] = duals.get(constraint, 0.0)
        return values

    def reduced_costs(self, duals: dict, capacity_duals: np.ndarray, index: int, serving: bool) -> np.ndarray:
        """Reduced cost c - A'y of every column of workload ``index`` under the LP's duals."""
        workload, columns = self.workloads[index], self.columns[index]
        reduced = (np.zeros(len(columns)) if serving else columns.weight.astype(float)) \
            - columns.units * duals.get(self.cover[index], 0.0)
        if index in self.share:
            on_demand = np.where(columns.spot, 0.0, 1.0)
            reduced -= duals.get(self.share[index], 0.0) * (on_demand - workload.min_on_demand_share) * columns.units
        if self._spread(workload):
            group_duals = {key: duals.get(constraint, 0.0) for (w, key), constraint in self.group.items()
                           if w == index and key}
            reduced -= columns.units * np.array([group_duals.get(key, 0.0) for key in self.groups_of(index)])
        return reduced - capacity_duals[columns.supply]


class _Solver:
    def __init__(self, options: PlanOptions) -> None:
        if options.solver not in SOLVERS:
            raise UserError("--solver", f"unknown solver {options.solver!r}", f"use one of {', '.join(SOLVERS)}")
        self.options = options
        self.deadline = time.monotonic() + options.time_limit_s
        self.stages: list[str] = []

    def remaining(self) -> timedelta:
        return timedelta(seconds=max(0.5, self.deadline - time.monotonic()))

    def params(self, solver: mathopt.SolverType, **extra) -> mathopt.SolveParameters:
        """Deterministic settings: a fixed seed, and one thread where the solver takes a thread count."""
        threads = None if solver == mathopt.SolverType.HIGHS else 1  # HiGHS rejects it; its MIP runs on one
        return mathopt.SolveParameters(time_limit=self.remaining(), random_seed=0, threads=threads, **extra)

    def lp(self, model: _Model) -> mathopt.SolveResult:
        model.set_integer(False)
        return mathopt.solve(model.model, mathopt.SolverType.HIGHS, params=self.params(mathopt.SolverType.HIGHS))

    def mip(self, model: _Model, hints: dict[mathopt.Variable, float]) -> mathopt.SolveResult:
        model.set_integer(True)
        solver = SOLVERS[self.options.solver]
        params = self.params(solver, relative_gap_tolerance=self.options.relative_gap)
        model_params = mathopt.ModelSolveParameters(
            solution_hints=[mathopt.SolutionHint(variable_values=hints)] if hints and solver != SOLVERS["highs"] else [])
        return mathopt.solve(model.model, solver, params=params, model_params=model_params)

    def generate_columns(self, model: _Model, serving: bool) -> mathopt.SolveResult:
        """Column generation on the LP relaxation until no column has a negative reduced cost."""
        for _ in range(MAX_PRICING_ROUNDS):
            result = self.lp(model)
            if result.termination.reason != mathopt.TerminationReason.OPTIMAL:
                return result
            added = 0
            duals = result.dual_values()
            capacity_duals = model.capacity_duals(duals)
            for index in range(len(model.workloads)):
                reduced = model.reduced_costs(duals, capacity_duals, index, serving)
                order = np.argsort(reduced, kind="stable")
                taken = 0
                for position in order:
                    if reduced[position] >= -REDUCED_COST_TOLERANCE * max(1.0, abs(float(model.columns[index].weight[position]))) \
                            or taken >= COLUMNS_PER_ROUND:
                        break
                    if (index, int(position)) not in model.x:
                        model.add(index, int(position))
                        taken += 1
                added += taken
            if not added or time.monotonic() > self.deadline:
                return result
        return self.lp(model)


def _initial_positions(workload: Workload, columns: Columns, table: SupplyTable) -> list[int]:
    """Cheapest columns per unit of demand, enough to cover it a few times over, plus one per spread group."""
    positions = list(range(min(INITIAL_COLUMNS, len(columns))))
    covered = sum(min(table.capacity[columns.supply[p]], 1e12) * columns.units[p] for p in positions)
    position = len(positions)
    while covered < COVER_FACTOR * workload.demand_units and position < len(columns):
        positions.append(position)
        covered += min(table.capacity[columns.supply[position]], 1e12) * columns.units[position]
        position += 1
    if workload.spread.min_providers or workload.spread.min_regions:
        seen: set[str] = set()
        for position in range(len(columns)):
            offer = table.supplies[int(columns.supply[position])].offer
            key = offer.provider if workload.spread.min_providers else f"{offer.provider}/{offer.region}"
            if key not in seen:
                seen.add(key)
                positions.append(position)
    return sorted(set(positions))


def plan(workloads: list[Workload], offers: list[Offer], *, options: PlanOptions = PlanOptions(),
         fx: FxTable | None = None, profiles: list[ProfileRow] | None = None, previous: Plan | None = None) -> Plan:
    """Place every workload on the cheapest feasible supply, by priority when supply is short."""
    started = time.monotonic()
    solver = _Solver(options)
    table = SupplyTable(offers, fx or FxTable(), options.currency, options.unknown_capacity)
    builder = ColumnBuilder(table, ThroughputModel(profiles))
    columns = [builder.columns(index, workload) for index, workload in enumerate(workloads)]
    keys = {(index, table.supplies[int(supply)].offer.key): position
            for index, cols in enumerate(columns) for position, supply in enumerate(cols.supply)}
    previous_nodes = {} if previous is None else {
        (index, key): nodes for (name, key), nodes in previous.assignment.items()
        for index, workload in enumerate(workloads) if workload.name == name}

    def seeded(partial: bool) -> _Model:
        model = _Model(workloads, table, columns, partial)
        for index, workload in enumerate(workloads):
            for position in _initial_positions(workload, columns[index], table):
                model.add(index, position)
        for (index, key) in previous_nodes:
            if (index, key) in keys:
                model.add(index, keys[(index, key)])
        return model

    def hints(model: _Model) -> dict[mathopt.Variable, float]:
        return {model.x[(index, keys[(index, key)])]: float(nodes) for (index, key), nodes in previous_nodes.items()
                if (index, key) in keys and (index, keys[(index, key)]) in model.x}

    model = seeded(partial=False)
    model.objective_cost()
    lp = solver.generate_columns(model, serving=False)
    solver.stages.append("cost-lp")
    result = None
    if lp.termination.reason == mathopt.TerminationReason.OPTIMAL:
        result = solver.mip(model, hints(model))
        solver.stages.append("cost-mip")
    if result is None or not result.has_primal_feasible_solution():
        # Not all demand can be served: priorities first, then cost at that service level.
        model = seeded(partial=True)
        model.objective_serve()
        solver.generate_columns(model, serving=True)
        served = solver.mip(model, hints(model))
        solver.stages.append("serve-mip")
        floor = -served.objective_value() if served.has_primal_feasible_solution() else 0.0
        model.objective_cost(served_floor=floor - 1e-6 * max(1.0, floor))
        lp = solver.generate_columns(model, serving=False)
        result = solver.mip(model, hints(model))
        solver.stages.append("cost-mip")
    return _assemble(workloads, table, builder, columns, model, result, lp, options, solver, started)


def _solution(model: _Model, result: mathopt.SolveResult) -> dict[tuple[int, int], int]:
    if not result.has_primal_feasible_solution():
        return {}
    values = result.variable_values()
    return {key: int(round(values[variable])) for key, variable in model.x.items() if values[variable] > 0.5}


def _assemble(workloads, table, builder, columns, model, result, lp, options, solver, started) -> Plan:
    chosen = _solution(model, result)
    used_by_supply: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for (index, position), nodes in chosen.items():
        used_by_supply[int(columns[index].supply[position])].append((workloads[index].name, nodes))
    placements, unmet, explanations = [], [], []
    assignment: dict[tuple[str, str], int] = {}
    for index, workload in enumerate(workloads):
        cols = columns[index]
        mine = sorted(((position, nodes) for (w, position), nodes in chosen.items() if w == index),
                      key=lambda item: item[0])
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
            explanations.append(_explain(index, workload, cols, mine, workload_cost, table, builder, used_by_supply))
    bounds = result.termination.objective_bounds if result is not None else None
    objective = result.objective_value() if result is not None and result.has_primal_feasible_solution() else None
    bound = bounds.dual_bound if bounds is not None and math.isfinite(bounds.dual_bound) else None
    gap = (objective - bound) / max(abs(objective), 1e-9) if objective is not None and bound is not None else None
    lp_bound = lp.objective_value() if lp is not None and lp.termination.reason == mathopt.TerminationReason.OPTIMAL \
        else None
    report = SolverReport(
        solver=options.solver, status=result.termination.reason.name.lower() if result is not None else "infeasible",
        objective=None if objective is None else round(objective, 2), bound=None if bound is None else round(bound, 2),
        gap=None if gap is None else round(max(gap, 0.0), 6), seconds=round(time.monotonic() - started, 3),
        lp_bound=None if lp_bound is None else round(lp_bound, 2), columns=len(model.x), stages=tuple(solver.stages))
    return Plan(options.currency, tuple(placements), tuple(unmet), tuple(explanations), report, assignment)


def _capacity_reason(workload, cols, table, used_by_supply) -> str:
    """Name the cheapest supplies this workload could use that are full, and who holds them."""
    full = []
    for position in range(len(cols)):
        supply = int(cols.supply[position])
        holders = used_by_supply.get(supply, [])
        if math.isfinite(table.capacity[supply]) and sum(nodes for _, nodes in holders) >= table.capacity[supply]:
            others = ", ".join(f"{name} {nodes}" for name, nodes in holders if name != workload.name)
            full.append(f"{table.supplies[supply].label} ({int(table.capacity[supply])} nodes"
                        + (f"; taken by {others}" if others else "") + ")")
        if len(full) == 3:
            break
    if not full:
        return "spread or on-demand share cannot be met by the supply left"
    return "capacity of " + "; ".join(full)


def _explain(index, workload, cols, mine, workload_cost, table, builder, used_by_supply) -> Explanation:
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
    single_gpu, single_cost = _best_single_type(workload, cols, table)
    return Explanation(workload.name, labels, rejected, because, single_gpu,
                       None if single_cost is None else round(single_cost, 2),
                       None if single_cost is None or not mine else round(single_cost - workload_cost, 2))


def _cheapest_policy_excluded(workload, builder, max_unit) -> tuple[str, float, str] | None:
    """The cheapest supply the model would run on that a policy filter excludes, if cheaper than the plan's."""
    table = builder.table
    degrees, rates = builder._per_gpu_type(workload)
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
    """Cheapest plan for this workload alone on one GPU type, with its own policies and full capacities."""
    best: tuple[str | None, float | None] = (None, None)
    gpu_of = np.array([table.supplies[int(supply)].offer.gpu for supply in cols.supply], dtype=object)
    for gpu in sorted(set(gpu_of)):
        keep = np.flatnonzero(gpu_of == gpu)
        subset = Columns(0, cols.supply[keep], cols.units[keep], cols.replicas[keep], cols.tensor_parallel[keep],
                         cols.cost[keep], cols.cost[keep], cols.spot[keep])
        model = _Model([workload], table, [subset], partial=False)
        for position in range(len(subset)):
            model.add(0, position)
        model.objective_cost()
        model.set_integer(True)
        result = mathopt.solve(model.model, mathopt.SolverType.HIGHS, params=mathopt.SolveParameters(
            time_limit=timedelta(seconds=2), relative_gap_tolerance=1e-4, random_seed=0))
        if result.has_primal_feasible_solution() and (best[1] is None or result.objective_value() < best[1]):
            best = (gpu, result.objective_value())
    return best
