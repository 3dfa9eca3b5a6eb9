"""Ops-planning questions on top of the optimizer, for the notebooks: cost per million tokens,
monthly plans under a demand forecast, and what-if stress tests of a plan.

Everything here composes ``scheduler.plan`` with plain transformations of its inputs (workloads,
offers, FX); results come back as pandas DataFrames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from gpu_supply.errors import UserError
from gpu_supply.offer import HOURS_PER_MONTH, Offer, PricingModel
from pricing.fx import FxTable
from scheduler.optimizer import PlanOptions, plan
from scheduler.plans import Plan
from scheduler.supply import ColumnBuilder, SupplyTable
from scheduler.throughput import ProfileRow, ThroughputModel
from scheduler.workloads import Workload

SECONDS_PER_HOUR = 3600


def token_costs(workloads: Sequence[Workload], offers: Sequence[Offer], *, pricing: str = "on_demand",
                currency: str = "USD", fx: FxTable | None = None,
                profiles: list[ProfileRow] | None = None) -> pd.DataFrame:
    """Cost per million output tokens of each workload's model on each GPU type: the cheapest
    ``pricing`` price per GPU-hour of that GPU x the replica's GPUs / the replica's tokens per hour.

    Throughput comes from the optimizer's model (profiles, else roofline) at the workload's request
    shape and SLO; GPUs that cannot host the model within them, or within one node, are left out.
    """
    fx = fx or FxTable()
    chosen = [offer for offer in offers if offer.pricing.value == pricing and not offer.committed]
    table = SupplyTable(chosen, fx, currency, None)
    builder = ColumnBuilder(table, ThroughputModel(profiles))
    cheapest: dict[str, float] = {}
    largest_node: dict[str, int] = {}
    for supply in table.supplies:
        offer = supply.offer
        cheapest[offer.gpu] = min(cheapest.get(offer.gpu, math.inf), supply.price_per_hour / offer.gpu_count)
        largest_node[offer.gpu] = max(largest_node.get(offer.gpu, 0), offer.gpu_count)
    rows = []
    for workload in workloads:
        if workload.model is None:
            continue
        degrees, rates = builder.per_gpu_type(workload)
        for gpu, degree, rate in zip(table.gpu_names, degrees, rates):
            if degree <= 0 or rate <= 0 or gpu not in cheapest or degree > largest_node[gpu]:
                continue  # the model does not run on this GPU, or needs more of them than any node has
            per_hour = cheapest[gpu] * int(degree)
            rows.append({"workload": workload.name, "model": workload.model.name, "dtype": workload.model.dtype,
                         "gpu": gpu, "tensor_parallel": int(degree), "tokens_per_s_per_replica": round(float(rate), 1),
                         "price_per_gpu_hour": round(cheapest[gpu], 4),
                         "cost_per_million_tokens": round(per_hour / (float(rate) * SECONDS_PER_HOUR) * 1e6, 4),
                         "currency": currency.upper(), "pricing": pricing})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["workload", "cost_per_million_tokens"], ignore_index=True) if not frame.empty else frame


def scaled(workload: Workload, factor: float, hours: float | None = None) -> Workload:
    """The workload with its demand scaled by ``factor`` (fixed replica counts rounded up)."""
    demand = workload.demand
    if demand.tokens_per_s is not None:
        demand = demand.model_copy(update={"tokens_per_s": demand.tokens_per_s * factor})
    else:
        demand = demand.model_copy(update={"replicas": max(1, math.ceil(demand.replicas * factor))})
    return workload.model_copy(update={"demand": demand, **({"hours": hours} if hours is not None else {})})


def monthly_plans(workloads: Sequence[Workload], offers: Sequence[Offer], growth: float | Mapping[str, float],
                  months: int = 12, *, options: PlanOptions = PlanOptions(), fx: FxTable | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plan each month of a forecast in which each workload's demand grows by ``growth`` a month
    (one rate, or a rate per workload name; 0.1 = +10 %), every month needing a month of capacity.

    Returns (summary per month: spend, GPUs, GPU mix, suppliers, unmet; placements per month).
    """
    if months < 1:
        raise UserError("months", f"must be at least 1, got {months}", "plan one month or more")
    rates = {workload.name: growth.get(workload.name, 0.0) if isinstance(growth, Mapping) else growth
             for workload in workloads}
    summary, placements = [], []
    previous: Plan | None = None
    for month in range(months):
        fleet = [scaled(workload, (1 + rates[workload.name]) ** month, HOURS_PER_MONTH) for workload in workloads]
        result = plan(fleet, list(offers), options=options, fx=fx, previous=previous)
        previous = result
        frame = result.to_frame()
        gpus_used = (frame["nodes"] * frame["gpu_count"]) if not frame.empty else pd.Series(dtype=float)
        summary.append({
            "month": month + 1, "spend": round(result.total_cost, 2),
            "gpus": int(gpus_used.sum()),
            "gpu_mix": dict(gpus_used.groupby(frame["gpu"]).sum().astype(int)) if not frame.empty else {},
            "suppliers": sorted(frame["provider"].unique()) if not frame.empty else [],
            "unmet_workloads": len(result.unmet), "solver_status": result.solver.status})
        if not frame.empty:
            placements.append(frame.assign(month=month + 1))
    return pd.DataFrame(summary), (pd.concat(placements, ignore_index=True) if placements else pd.DataFrame())


# What-if scenarios: each turns (offers, fx) into the stressed (offers, fx).
Scenario = Callable[[list[Offer], FxTable], tuple[list[Offer], FxTable]]


def region_lost(provider: str, region: str) -> Scenario:
    """A supplier's region goes down: its offers disappear."""
    def apply(offers: list[Offer], fx: FxTable) -> tuple[list[Offer], FxTable]:
        return [offer for offer in offers if not (offer.provider == provider and offer.region == region)], fx
    return apply


def spot_prices(factor: float) -> Scenario:
    """Every spot price multiplied by ``factor``."""
    def apply(offers: list[Offer], fx: FxTable) -> tuple[list[Offer], FxTable]:
        return [replace(offer, price_per_hour=offer.price_per_hour * factor) if offer.pricing is PricingModel.SPOT
                else offer for offer in offers], fx
    return apply


def capacity_scaled(provider: str, factor: float, assumed_nodes: int) -> Scenario:
    """A supplier's capacity scaled by ``factor``; offers with unknown capacity are taken to have
    ``assumed_nodes`` before scaling (so "halved" means something for them too)."""
    def apply(offers: list[Offer], fx: FxTable) -> tuple[list[Offer], FxTable]:
        return [replace(offer, available_nodes=int(math.floor(
                    (offer.available_nodes if offer.available_nodes is not None else assumed_nodes) * factor)))
                if offer.provider == provider else offer for offer in offers], fx
    return apply


def fx_moved(currency: str, factor: float) -> Scenario:
    """``currency`` weakens (factor > 1: more units per USD) or strengthens against the dollar."""
    def apply(offers: list[Offer], fx: FxTable) -> tuple[list[Offer], FxTable]:
        return offers, fx.with_overrides({currency: fx.rate(currency) * factor},
                                         as_of=f"{fx.as_of}, {currency} x{factor}")
    return apply


@dataclass(frozen=True)
class StressResult:
    summary: pd.DataFrame  # one row per scenario: cost, change, unmet
    moves: pd.DataFrame  # per scenario x workload x supply: nodes before and after
    plans: dict[str, Plan]


def plan_moves(base: Plan, other: Plan) -> pd.DataFrame:
    """Nodes per workload x offer that changed between two plans (0 where absent)."""
    def nodes(result: Plan) -> dict[tuple, int]:
        return {(p.workload, p.provider, p.region, p.instance_type, p.gpu, p.pricing): p.nodes
                for p in result.placements}
    before, after = nodes(base), nodes(other)
    rows = [{"workload": key[0], "provider": key[1], "region": key[2], "instance_type": key[3], "gpu": key[4],
             "pricing": key[5], "nodes_before": before.get(key, 0), "nodes_after": after.get(key, 0)}
            for key in sorted(set(before) | set(after)) if before.get(key, 0) != after.get(key, 0)]
    return pd.DataFrame(rows, columns=["workload", "provider", "region", "instance_type", "gpu", "pricing",
                                       "nodes_before", "nodes_after"])


def stress(workloads: Sequence[Workload], offers: Sequence[Offer], scenarios: Mapping[str, Scenario], *,
           options: PlanOptions = PlanOptions(), fx: FxTable | None = None, base: Plan | None = None) -> StressResult:
    """Re-plan under each scenario and report the cost change and what moved against the base plan
    (planned here unless given)."""
    fx = fx or FxTable()
    base = base or plan(list(workloads), list(offers), options=options, fx=fx)
    plans = {"base": base}
    summary = [_summary_row("base", base, base)]
    moves = []
    for name, scenario in scenarios.items():
        stressed_offers, stressed_fx = scenario(list(offers), fx)
        result = plan(list(workloads), stressed_offers, options=options, fx=stressed_fx, previous=base)
        plans[name] = result
        summary.append(_summary_row(name, result, base))
        moved = plan_moves(base, result)
        if not moved.empty:
            moves.append(moved.assign(scenario=name))
    return StressResult(pd.DataFrame(summary), pd.concat(moves, ignore_index=True) if moves else plan_moves(base, base),
                        plans)


def _summary_row(name: str, result: Plan, base: Plan) -> dict:
    change = result.total_cost - base.total_cost
    return {"scenario": name, "total_cost": round(result.total_cost, 2), "change": round(change, 2),
            "change_pct": round(100 * change / base.total_cost, 2) if base.total_cost else None,
            "unmet_workloads": len(result.unmet), "providers": sorted({p.provider for p in result.placements})}
