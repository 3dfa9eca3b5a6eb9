"""Commit-versus-on-demand maths for capacity planning: pure functions, no I/O.

A commitment (an IDC monthly contract, a 1-year reservation) is paid for every hour of its term
whether used or not; on-demand is paid only when used. Committing to a GPU pays when it is busy
more than ``commit rate / on-demand rate`` of the time: the break-even utilisation.

For a demand forecast (GPUs needed per period), the cheapest commitment level is where the
share of periods that would use the last committed GPU equals that break-even utilisation, as
in the newsvendor problem; ``best_commit`` finds it exactly, because total spend is piecewise
linear in the level with its kinks at the forecast's values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpu_supply.errors import UserError


def break_even_utilisation(commit_per_gpu_hour: float, on_demand_per_gpu_hour: float) -> float:
    """Share of hours a committed GPU must be busy to cost less than on-demand (may exceed 1: never)."""
    if on_demand_per_gpu_hour <= 0:
        raise UserError("on_demand_per_gpu_hour", f"must be positive, got {on_demand_per_gpu_hour}",
                        "pass the on-demand price per GPU-hour")
    if commit_per_gpu_hour < 0:
        raise UserError("commit_per_gpu_hour", f"must not be negative, got {commit_per_gpu_hour}",
                        "pass the committed price per GPU-hour")
    return commit_per_gpu_hour / on_demand_per_gpu_hour


@dataclass(frozen=True)
class CommitPlan:
    """A commitment level against a demand forecast, and what it costs over the forecast."""

    committed_gpus: float
    commit_cost: float
    on_demand_cost: float
    utilisation: float  # share of committed GPU-hours used
    break_even: float

    @property
    def total_cost(self) -> float:
        return self.commit_cost + self.on_demand_cost


def _validated(demand: Sequence[float]) -> list[float]:
    values = [float(value) for value in demand]
    if not values:
        raise UserError("demand", "the forecast is empty", "pass GPUs needed per period, e.g. [64, 80, 96]")
    if any(value < 0 or not math.isfinite(value) for value in values):
        raise UserError("demand", "GPUs needed must be finite and not negative", "fix the forecast values")
    return values


def commit_cost(demand: Sequence[float], committed_gpus: float, commit_per_gpu_hour: float,
                on_demand_per_gpu_hour: float, hours_per_period: float) -> CommitPlan:
    """Spend over the forecast when ``committed_gpus`` are committed and the rest bursts on-demand."""
    values = _validated(demand)
    committed = commit_per_gpu_hour * committed_gpus * hours_per_period * len(values)
    burst = sum(max(0.0, value - committed_gpus) for value in values) * on_demand_per_gpu_hour * hours_per_period
    used = sum(min(value, committed_gpus) for value in values)
    return CommitPlan(committed_gpus, committed, burst,
                      used / (committed_gpus * len(values)) if committed_gpus else 0.0,
                      break_even_utilisation(commit_per_gpu_hour, on_demand_per_gpu_hour))


def best_commit(demand: Sequence[float], commit_per_gpu_hour: float, on_demand_per_gpu_hour: float,
                hours_per_period: float) -> CommitPlan:
    """The cheapest commitment level for this forecast (ties: the smaller commitment)."""
    values = _validated(demand)
    candidates = sorted({0.0, *values})
    plans = [commit_cost(values, level, commit_per_gpu_hour, on_demand_per_gpu_hour, hours_per_period)
             for level in candidates]
    return min(plans, key=lambda plan: (round(plan.total_cost, 6), plan.committed_gpus))


def spend_by_strategy(demand: Sequence[float], on_demand_per_gpu_hour: float,
                      commit_per_gpu_hour: Mapping[str, float], hours_per_period: float) -> list[dict]:
    """Spend per period under each purchasing strategy: all on-demand; for each commitment option,
    committing to the peak, and the best commitment with on-demand for the rest."""
    values = _validated(demand)
    strategies = {"on-demand only": 0.0}
    rates = {"on-demand only": 0.0}
    for name, rate in commit_per_gpu_hour.items():
        strategies[f"{name}: commit to peak"] = max(values)
        strategies[f"{name}: best commit + on-demand"] = best_commit(
            values, rate, on_demand_per_gpu_hour, hours_per_period).committed_gpus
        rates[f"{name}: commit to peak"] = rates[f"{name}: best commit + on-demand"] = rate
    rows = []
    for strategy, level in strategies.items():
        for period, value in enumerate(values):
            plan = commit_cost([value], level, rates[strategy], on_demand_per_gpu_hour, hours_per_period)
            rows.append({"period": period, "strategy": strategy, "committed_gpus": level, "demand_gpus": value,
                         "spend": round(plan.total_cost, 2)})
    return rows
