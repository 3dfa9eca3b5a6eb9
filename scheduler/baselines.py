"""Simple placement strategies the optimizer is measured against (benchmarks/optimizer.py).

All work on the optimizer's own columns (same feasibility, throughput and costs), so the only
difference is the decision rule:

- ``greedy``: workloads by priority, then demand, each filling its cheapest-per-unit columns
  while capacity lasts (on-demand share and spread honoured by filling those parts first);
- ``cheapest_ignoring_capacity``: every workload takes its cheapest column as if alone, and the
  supplies over capacity are counted (what per-task tools like SkyPilot would pick);
- ``single_type``: per workload, the cheapest plan with one GPU type (capacity per supply honoured,
  other workloads ignored), as a Mélange-style "one GPU type" reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scheduler.supply import Columns, SupplyTable
from scheduler.workloads import Workload


@dataclass(frozen=True)
class BaselineResult:
    cost: float
    served_priority: float  # sum of priority x served fraction
    violations: int = 0  # supplies used beyond their capacity


def _fill(cols: Columns, positions: np.ndarray, needed: float, free: np.ndarray | None,
          taken: np.ndarray) -> tuple[float, float, float]:
    """Take nodes from ``positions`` in order until ``needed`` units are covered.

    Returns (cost, covered, of which on-demand). ``free`` caps nodes per supply (None: capacity
    ignored); ``taken`` accumulates nodes per supply.
    """
    cost = covered = on_demand = 0.0
    if free is not None:  # each supply appears once per workload: full ones can be skipped up front
        positions = positions[free[cols.supply[positions]] >= 1]
    for position in positions:
        if covered >= needed - 1e-9:
            break
        supply = int(cols.supply[position])
        units = float(cols.units[position])
        nodes = math.ceil((needed - covered) / units - 1e-9)
        if free is not None:
            nodes = int(min(nodes, free[supply]))
            free[supply] -= nodes
        taken[supply] += nodes
        cost += nodes * float(cols.cost[position])
        covered += nodes * units
        on_demand += 0.0 if cols.spot[position] else nodes * units
    return cost, covered, on_demand


def _serve_part(workload: Workload, cols: Columns, positions: np.ndarray, needed: float, free: np.ndarray | None,
                taken: np.ndarray) -> tuple[float, float]:
    """Cover ``needed`` units from ``positions``; on-demand units stay >= the share of all units."""
    share = workload.min_on_demand_share
    if share <= 0:
        return _fill(cols, positions, needed, free, taken)[:2]
    on_demand_positions = positions[~cols.spot[positions]]
    cost, covered, on_demand = _fill(cols, on_demand_positions, needed * share, free, taken)
    before = (None if free is None else free.copy(), taken.copy())
    rest_cost, rest, rest_on_demand = _fill(cols, positions, min(needed - covered, on_demand * (1 / share - 1)),
                                            free, taken)
    top_cost = top = 0.0
    if on_demand + rest_on_demand < share * (covered + rest) - 1e-9 and share < 1:
        # whole spot nodes overshot: top up on-demand
        top_cost, top, _ = _fill(cols, on_demand_positions,
                                 (share * (covered + rest) - on_demand - rest_on_demand) / (1 - share), free, taken)
    if on_demand + rest_on_demand + top < share * (covered + rest + top) - 1e-9:  # no on-demand left to top up:
        if free is not None:  # keep the on-demand part alone
            free[:] = before[0]
        taken[:] = before[1]
        return cost, covered
    return cost + rest_cost + top_cost, covered + rest + top


def _serve(workload: Workload, cols: Columns, table: SupplyTable, free: np.ndarray | None,
           taken: np.ndarray) -> tuple[float, float]:
    demand = workload.demand_units
    order = np.arange(len(cols))
    spread = workload.spread.count
    if not spread:
        cost, covered = _serve_part(workload, cols, order, demand, free, taken)
        return cost, min(covered, demand)
    # One equal part per distinct group, cheapest groups first (the order their first columns come in).
    _, first, group = np.unique(table.spread_groups(workload.spread)[cols.supply], return_index=True,
                                return_inverse=True)
    cost = covered = 0.0
    mine = np.zeros_like(taken)
    parts = []
    for cheapest in np.argsort(first)[:spread]:
        part_cost, part = _serve_part(workload, cols, order[group == cheapest], demand / spread, free, mine)
        cost, covered = cost + part_cost, covered + part
        parts.append(part)
    if len(parts) < spread or min(parts) < demand / spread - 1e-9:  # all or nothing: give a partial spread back
        if free is not None:
            free += mine
        return 0.0, 0.0
    taken += mine
    return cost, min(covered, demand)


def _result(workloads: list[Workload], outcomes: list[tuple[float, float]], violations: int = 0) -> BaselineResult:
    return BaselineResult(
        cost=sum(cost for cost, _ in outcomes),
        served_priority=sum(w.priority * covered / w.demand_units for w, (_, covered) in zip(workloads, outcomes)),
        violations=violations)


def greedy_assignment(workloads: list[Workload], columns: list[Columns], table: SupplyTable
                      ) -> tuple[dict[tuple[int, int], int], list[tuple[float, float]]]:
    """Greedy's nodes per (workload, column position), and its (cost, covered) per workload."""
    free = table.capacity.copy()
    nodes: dict[tuple[int, int], int] = {}
    outcomes: list[tuple[float, float]] = [(0.0, 0.0)] * len(workloads)
    for index in sorted(range(len(workloads)), key=lambda i: (-workloads[i].priority, -workloads[i].demand_units, i)):
        cols = columns[index]
        taken = np.zeros(len(table))
        outcomes[index] = _serve(workloads[index], cols, table, free, taken)
        for position in np.flatnonzero(taken[cols.supply] > 0):
            nodes[(index, int(position))] = int(taken[cols.supply[position]])
    return nodes, outcomes


def greedy(workloads: list[Workload], columns: list[Columns], table: SupplyTable) -> BaselineResult:
    return _result(workloads, greedy_assignment(workloads, columns, table)[1])


def cheapest_ignoring_capacity(workloads: list[Workload], columns: list[Columns], table: SupplyTable) -> BaselineResult:
    taken = np.zeros(len(table))
    outcomes = [_serve(workload, columns[index], table, None, taken) for index, workload in enumerate(workloads)]
    return _result(workloads, outcomes, violations=int(np.sum(taken > table.capacity + 1e-9)))


def single_type(workloads: list[Workload], columns: list[Columns], table: SupplyTable) -> BaselineResult:
    outcomes = []
    for index, workload in enumerate(workloads):
        cols = columns[index]
        gpu_of = np.array([table.supplies[int(s)].offer.gpu for s in cols.supply], dtype=object)
        best = (0.0, 0.0)
        for gpu in sorted(set(gpu_of)):
            keep = np.flatnonzero(gpu_of == gpu)
            subset = Columns(index, cols.supply[keep], cols.units[keep], cols.replicas[keep],
                             cols.tensor_parallel[keep], cols.cost[keep], cols.weight[keep], cols.spot[keep])
            spent, covered = _serve(workload, subset, table, table.capacity.copy(), np.zeros(len(table)))
            if (covered, -spent) > (best[1], -best[0]):
                best = (spent, covered)
        outcomes.append(best)
    return _result(workloads, outcomes)
