"""Cost comparison: the cheapest way to get N GPUs for H hours from each provider x pricing model.

Pure functions over offers. Nodes are whole (asking for 4 GPUs on 8-GPU nodes pays for 8),
available nodes cap what an offer can supply where the supplier says so, and a minimum term is
charged in full (a 3-month contract used for 1 month costs 3 months). Within a group the
cheapest mix of node shapes is found exactly, by dynamic programming over the GPU count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from gpu_supply.errors import UserError
from gpu_supply.offer import HOURS_PER_MONTH, Offer
from pricing.fx import FxTable

# Above this many DP steps (GPUs x candidate node counts) the bulk of a large request is filled
# greedily by effective price per GPU and only the last GREEDY_TAIL_GPUS are solved exactly.
DP_STEP_LIMIT = 2_000_000
GREEDY_TAIL_GPUS = 256
# A fleet from one offer (one zone, one node shape) is far simpler to run than a mix; it wins
# over the exact optimum when it costs at most this much more.
UNIFORM_FLEET_TOLERANCE = 0.001


@dataclass(frozen=True, slots=True)
class Allocation:
    offer: Offer
    nodes: int
    billed_hours: float
    cost: float  # in the comparison currency

    @property
    def gpus(self) -> int:
        return self.nodes * self.offer.gpu_count


@dataclass(frozen=True, slots=True)
class Option:
    """The cheapest way one provider x pricing model supplies the request (or how far it falls short)."""

    provider: str
    pricing: str
    gpus_requested: int
    hours: float
    currency: str
    allocations: tuple[Allocation, ...]
    max_gpus: int | None  # what the group can supply at most, when capacity is known and short

    @property
    def feasible(self) -> bool:
        return self.gpus_provisioned >= self.gpus_requested

    @property
    def gpus_provisioned(self) -> int:
        return sum(allocation.gpus for allocation in self.allocations)

    @property
    def nodes(self) -> int:
        return sum(allocation.nodes for allocation in self.allocations)

    @property
    def total_cost(self) -> float:
        return sum(allocation.cost for allocation in self.allocations)

    @property
    def price_per_gpu_hour(self) -> float:
        """Effective price: total cost over the GPU-hours asked for (overshoot and terms included)."""
        return self.total_cost / (self.gpus_requested * self.hours)

    @property
    def list_price_per_gpu_hour(self) -> float:
        """The quoted rate of the provisioned GPUs, before overshoot and minimum terms."""
        hourly = sum(allocation.cost / allocation.billed_hours for allocation in self.allocations)
        return hourly / self.gpus_provisioned if self.allocations else math.nan

    @property
    def main(self) -> Allocation:
        return max(self.allocations, key=lambda allocation: (allocation.gpus, -allocation.cost))


@dataclass(frozen=True)
class Comparison:
    gpus: int
    hours: float
    currency: str
    options: tuple[Option, ...]  # feasible by total cost, then the ones that fall short

    @property
    def winner(self) -> Option | None:
        return self.options[0] if self.options and self.options[0].feasible else None

    def winner_saving(self, option: Option) -> float | None:
        """How much the winner saves against this option (None where the option can't supply)."""
        winner = self.winner
        return option.total_cost - winner.total_cost if winner and option.feasible else None

    def rows(self) -> list[dict]:
        """One flat row per option: the JSON/CSV/DataFrame contract of a comparison."""
        return [self._row(option) for option in self.options]

    def _row(self, option: Option) -> dict:
        main = option.main.offer if option.allocations else None
        saving = self.winner_saving(option)
        available = [allocation.offer.available_nodes for allocation in option.allocations]
        return {
            "provider": option.provider,
            "pricing": option.pricing,
            "region": main.region if main else None,
            "regions": sorted({allocation.offer.region for allocation in option.allocations}),
            "instance_type": main.instance_type if main else None,
            "gpu": main.gpu if main else None,
            "gpu_count": main.gpu_count if main else None,
            "nodes": option.nodes,
            "gpus": option.gpus_provisioned,
            "hours": option.hours,
            "billed_hours": max((allocation.billed_hours for allocation in option.allocations), default=0.0),
            "total_cost": round(option.total_cost, 2),
            "price_per_gpu_hour": round(option.price_per_gpu_hour, 4),
            "list_price_per_gpu_hour": round(option.list_price_per_gpu_hour, 4),
            "currency": option.currency,
            "available": None if None in available or not available else sum(available),
            "feasible": option.feasible,
            "max_gpus": option.max_gpus,
            "winner": option is self.winner,
            "winner_saving": None if saving is None else round(saving, 2),
            "winner_saving_pct": None if saving is None or not option.total_cost
            else round(100 * saving / option.total_cost, 1),
            "allocations": [{"region": a.offer.region, "zone": a.offer.zone, "instance_type": a.offer.instance_type,
                             "gpu_count": a.offer.gpu_count, "nodes": a.nodes, "billed_hours": a.billed_hours,
                             "cost": round(a.cost, 2), "native_price_per_hour": a.offer.price_per_hour,
                             "native_currency": a.offer.currency, "observed_at": a.offer.observed_at.isoformat()}
                            for a in option.allocations],
        }


def hours_for(hours: float | None, months: float | None) -> float:
    """The request's duration from ``--hours`` or ``--months`` (730 h each)."""
    if hours is not None and months is not None:
        raise UserError("--hours/--months", "give one of them, not both", "e.g. --hours 720 or --months 3")
    duration = hours if hours is not None else (months * HOURS_PER_MONTH if months is not None else 720.0)
    if not duration > 0 or math.isinf(duration):
        raise UserError("--hours" if hours is not None else "--months", f"must be positive, got {duration:g}",
                        "e.g. --hours 720")
    return duration


def _node_cost(offer: Offer, hours: float, currency: str, fx: FxTable) -> tuple[float, float]:
    billed = max(hours, offer.min_term_hours)
    return fx.convert(offer.price_per_hour, offer.currency, currency) * billed, billed


def cheapest_allocation(offers: Sequence[Offer], gpus: int, hours: float, currency: str, fx: FxTable
                        ) -> tuple[tuple[Allocation, ...], int | None]:
    """Cheapest whole-node mix of these offers giving at least ``gpus`` GPUs.

    Returns the allocations and, when known capacity cannot reach ``gpus``, the most it can give
    (the allocations then take all of it).
    """
    by_size: dict[int, list[tuple[float, float, Offer]]] = defaultdict(list)
    for offer in offers:
        cost, billed = _node_cost(offer, hours, currency, fx)
        by_size[offer.gpu_count].append((cost, billed, offer))
    capacity = 0
    unbounded = False
    # Per node size: the nodes on offer, cheapest first (an offer with unknown capacity can
    # fill the whole request), as (cost, billed, offer) per node, and their cost prefix sums.
    ladders: dict[int, list[tuple[float, float, Offer]]] = {}
    for size, entries in by_size.items():
        entries.sort(key=lambda entry: (entry[0], entry[2].key))
        needed = math.ceil(gpus / size)
        ladder: list[tuple[float, float, Offer]] = []
        for cost, billed, offer in entries:
            take = needed - len(ladder) if offer.available_nodes is None else min(offer.available_nodes,
                                                                                  needed - len(ladder))
            ladder.extend([(cost, billed, offer)] * take)
            if offer.available_nodes is None:
                unbounded = True
            else:
                capacity += offer.available_nodes * size
            if len(ladder) >= needed:
                break
        ladders[size] = ladder
    if not unbounded and capacity < gpus:
        return _take_counts(ladders, {size: len(ladder) for size, ladder in ladders.items()}), capacity
    best = _take_counts(ladders, _cover(ladders, gpus))
    uniform = _cheapest_uniform_fleet(by_size, gpus)
    if uniform is not None and uniform.cost <= sum(a.cost for a in best) * (1 + UNIFORM_FLEET_TOLERANCE):
        return (uniform,), None
    return best, None


def _cheapest_uniform_fleet(by_size: dict[int, list[tuple[float, float, Offer]]], gpus: int) -> Allocation | None:
    """The cheapest way to cover the request from a single offer, where one has the capacity."""
    candidates = []
    for size, entries in by_size.items():
        nodes = math.ceil(gpus / size)
        for cost, billed, offer in entries:
            if offer.available_nodes is None or offer.available_nodes >= nodes:
                candidates.append(Allocation(offer, nodes, billed, cost * nodes))
    return min(candidates, key=lambda allocation: (allocation.cost, allocation.nodes, allocation.offer.key),
               default=None)


def _cover(ladders: dict[int, list[tuple[float, float, Offer]]], gpus: int) -> dict[int, int]:
    """Nodes per size minimising total cost subject to covering ``gpus`` (exact DP, greedy head if huge)."""
    sizes = sorted(ladders)
    steps = sum(gpus * len(ladders[size]) for size in sizes)
    fixed: dict[int, int] = defaultdict(int)
    remaining = gpus
    if steps > DP_STEP_LIMIT:
        # Fill the bulk with the cheapest nodes per GPU, leaving a tail for the exact DP.
        pool = sorted(((entry[0] / size, size, index) for size in sizes
                       for index, entry in enumerate(ladders[size])))
        for _, size, _ in pool:  # each size's nodes come in ladder order, cheapest first
            if remaining <= GREEDY_TAIL_GPUS:
                break
            fixed[size] += 1
            remaining -= size
    if remaining <= 0:
        return dict(fixed)
    prefix = {size: [0.0] for size in sizes}
    for size in sizes:
        for cost, _, _ in ladders[size][fixed[size]:]:
            prefix[size].append(prefix[size][-1] + cost)
    infinity = (math.inf, math.inf)
    # best[k]: (cost, nodes) of the cheapest cover of at least k GPUs; equal costs prefer fewer nodes.
    best = [(0.0, 0)] + [infinity] * remaining
    choices: list[list[int]] = []
    for size in sizes:
        costs = prefix[size]
        new_best = [infinity] * (remaining + 1)
        choice = [0] * (remaining + 1)
        for covered in range(remaining + 1):
            for count in range(len(costs)):
                before = covered - count * size
                base_cost, base_nodes = best[before] if before > 0 else (0.0, 0)
                value = (round(base_cost + costs[count], 9), base_nodes + count)
                if value < new_best[covered]:
                    new_best[covered], choice[covered] = value, count
                if before <= 0:
                    break
        best = new_best
        choices.append(choice)
    counts = dict(fixed)
    covered = remaining
    for size, choice in zip(reversed(sizes), reversed(choices)):
        count = choice[covered]
        counts[size] = counts.get(size, 0) + count
        covered = max(0, covered - count * size)
    return counts


def _take_counts(ladders: dict[int, list[tuple[float, float, Offer]]], counts: dict[int, int]
                 ) -> tuple[Allocation, ...]:
    merged: dict[str, list] = {}
    for size, count in counts.items():
        for cost, billed, offer in ladders[size][:count]:
            entry = merged.setdefault(offer.key, [offer, 0, billed, 0.0])
            entry[1] += 1
            entry[3] += cost
    allocations = [Allocation(offer, nodes, billed, cost) for offer, nodes, billed, cost in merged.values() if nodes]
    return tuple(sorted(allocations, key=lambda allocation: (-allocation.gpus, allocation.cost)))


def compare(offers: Iterable[Offer], gpus: int, hours: float, currency: str, fx: FxTable) -> Comparison:
    """For every provider x pricing model in ``offers``, its cheapest way to supply the request."""
    if gpus < 1:
        raise UserError("--gpus", f"must be at least 1, got {gpus}", "e.g. --gpus 8")
    groups: dict[tuple[str, str], list[Offer]] = defaultdict(list)
    for offer in offers:
        groups[(offer.provider, offer.pricing.value)].append(offer)
    options = []
    for (provider, pricing), members in groups.items():
        allocations, max_gpus = cheapest_allocation(members, gpus, hours, currency, fx)
        options.append(Option(provider, pricing, gpus, hours, currency, allocations, max_gpus))
    options.sort(key=lambda option: (not option.feasible, option.total_cost if option.feasible
                                     else -option.gpus_provisioned, option.provider, option.pricing))
    return Comparison(gpus, hours, currency, tuple(options))
