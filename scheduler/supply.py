"""From offers and workloads to the optimizer's columns: which offer can serve which workload, how well.

Identical offers (same everything but the zone) are aggregated into one *supply* with their
capacity summed, so the model has one column per (workload, supply). Feasibility and the
per-node figures are computed with numpy over all supplies at once; only feasible pairs become
columns. Every filter has a name, so a workload left without supply can be told why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from gpu_supply import gpus
from gpu_supply.offer import Offer, PricingModel
from pricing.fx import FxTable
from scheduler.throughput import DTYPE_BYTES, ModelShape, ThroughputModel, estimated_kv_bytes_per_token
from scheduler.workloads import Spread, SpotPolicy, Workload

# Objective weight of spot capacity for `spot: preferred` workloads (reported costs stay real).
SPOT_PREFERENCE = 0.95


@dataclass(frozen=True)
class Supply:
    """Offers that differ only by zone: one decision column per workload."""

    offers: tuple[Offer, ...]
    capacity: float  # nodes; inf when the suppliers don't say (see `unknown_capacity`)
    price_per_hour: float  # per node, in the plan currency

    @property
    def offer(self) -> Offer:
        return self.offers[0]

    @property
    def label(self) -> str:
        offer = self.offer
        return f"{offer.provider}/{offer.region}/{offer.instance_type}/{offer.pricing.value}"


class SupplyTable:
    """All supplies, with their attributes as arrays for vectorised filtering."""

    def __init__(self, offers: list[Offer], fx: FxTable, currency: str, unknown_capacity: int | None) -> None:
        groups: dict[tuple, list[Offer]] = defaultdict(list)
        for offer in sorted(offers, key=lambda offer: offer.key):
            groups[(offer.provider, offer.region, offer.instance_type, offer.gpu, offer.gpu_count,
                    offer.pricing.value, offer.currency, offer.price_per_hour, offer.min_term_hours,
                    offer.committed)].append(offer)
        self.supplies: list[Supply] = []
        for members in groups.values():
            known = [offer.available_nodes for offer in members]
            if None in known:
                capacity = math.inf if unknown_capacity is None else float(unknown_capacity * len(members))
            else:
                capacity = float(sum(known))
            self.supplies.append(Supply(tuple(members), capacity,
                                        fx.convert(members[0].price_per_hour, members[0].currency, currency)))
        offers_ = [supply.offer for supply in self.supplies]
        self.gpu_names = sorted({offer.gpu for offer in offers_})
        gpu_index = {name: index for index, name in enumerate(self.gpu_names)}
        self.providers = sorted({offer.provider for offer in offers_})
        provider_index = {name: index for index, name in enumerate(self.providers)}
        self.gpu = np.array([gpu_index[offer.gpu] for offer in offers_], dtype=np.int32)
        self.gpu_count = np.array([offer.gpu_count for offer in offers_], dtype=np.int32)
        self.memory = np.array([offer.gpu_memory_gb for offer in offers_])
        self.provider = np.array([provider_index[offer.provider] for offer in offers_], dtype=np.int32)
        self.geo_names = sorted({offer.geo for offer in offers_})
        geo_index = {name: index for index, name in enumerate(self.geo_names)}
        self.geo = np.array([geo_index[offer.geo] for offer in offers_], dtype=np.int32)
        self.region = np.array([offer.region for offer in offers_], dtype=object)
        self.spot = np.array([offer.pricing is PricingModel.SPOT for offer in offers_])
        self.committed = np.array([offer.committed for offer in offers_])
        self.price = np.array([supply.price_per_hour for supply in self.supplies])
        self.min_term = np.array([offer.min_term_hours for offer in offers_])
        self.capacity = np.array([supply.capacity for supply in self.supplies])
        self.keys = [supply.offer.key for supply in self.supplies]
        self._spread_groups: dict[bool, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.supplies)

    def spread_groups(self, spread: Spread) -> np.ndarray:
        """Every supply's spread group under this kind of spread (a provider, or a provider's region)."""
        kind = bool(spread.min_providers)
        if kind not in self._spread_groups:
            self._spread_groups[kind] = np.array([spread.group(supply.offer.provider, supply.offer.region)
                                                  for supply in self.supplies], dtype=object)
        return self._spread_groups[kind]


@dataclass(frozen=True)
class Columns:
    """One workload's feasible (workload, supply) pairs, cheapest per unit of demand first."""

    workload: int
    supply: np.ndarray  # supply indices
    units: np.ndarray  # demand units per node: output tokens/s, or replicas
    replicas: np.ndarray  # replicas per node
    tensor_parallel: np.ndarray
    cost: np.ndarray  # per node over the workload's hours (minimum terms in full; committed = 0)
    weight: np.ndarray  # objective coefficient per node (cost, spot preference applied)
    spot: np.ndarray

    def __len__(self) -> int:
        return len(self.supply)


# The filters a workload's candidate supplies pass, in order, by name (used to explain shortfalls).
FILTERS = ("gpu policy", "gpu memory", "model fit (memory or SLO)", "providers", "residency", "spot policy")


def _shape(workload: Workload) -> ModelShape | None:
    model = workload.model
    if model is None:
        return None
    return ModelShape(model.name, model.params_b, DTYPE_BYTES[model.dtype],
                      model.kv_bytes_per_token or estimated_kv_bytes_per_token(model.params_b),
                      workload.demand.input_tokens, workload.demand.output_tokens, workload.slo.tpot_ms)


class ColumnBuilder:
    """Builds each workload's columns against one supply table."""

    def __init__(self, table: SupplyTable, throughput: ThroughputModel) -> None:
        self.table = table
        self.throughput = throughput
        # Fleets repeat model shapes (a tenth as many shapes as workloads at 5,000): each is rated once.
        self._rated: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def per_gpu_type(self, workload: Workload) -> tuple[np.ndarray, np.ndarray]:
        """Per GPU type: (tensor-parallel degree or 0 if the model can't run, output tokens/s per replica);
        read-only arrays, shared by the workloads of one model shape."""
        shape = _shape(workload)
        key = (shape, workload.model.dtype if shape else None, workload.demand.gpus_per_replica)
        if key not in self._rated:
            degrees, rates = self._rate(workload, shape)
            degrees.flags.writeable = rates.flags.writeable = False
            self._rated[key] = degrees, rates
        return self._rated[key]

    def _rate(self, workload: Workload, shape: ModelShape | None) -> tuple[np.ndarray, np.ndarray]:
        fixed_tp = workload.demand.gpus_per_replica
        degrees = np.zeros(len(self.table.gpu_names), dtype=np.int32)
        rates = np.zeros(len(self.table.gpu_names))
        for index, name in enumerate(self.table.gpu_names):
            spec = gpus.spec(name)
            if shape is None:  # fixed replica shape with no model: any GPU type can host it
                degrees[index] = fixed_tp or 1
                continue
            if spec is None:
                continue
            replica = self.throughput.replica(shape, spec, workload.model.dtype, fixed_tp)
            if replica is not None:
                degrees[index], rates[index] = replica.tensor_parallel, replica.tokens_per_s
        return degrees, rates

    def masks(self, workload: Workload, degrees: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each named filter's verdict over all supplies."""
        table = self.table
        if degrees is None:
            degrees, _ = self.per_gpu_type(workload)
        tp = degrees[table.gpu]
        policy = workload.gpus
        by_gpu = [(not policy.allow or name in policy.allow) and name not in policy.deny for name in table.gpu_names]
        gpu_ok = np.array(by_gpu, dtype=bool)[table.gpu]
        memory_ok = table.memory >= (policy.min_memory_gb or 0)
        fit_ok = (tp > 0) & (tp <= table.gpu_count)
        provider_ok = np.ones(len(table), dtype=bool)
        if workload.providers.allow:
            allowed = [table.providers.index(name) for name in workload.providers.allow if name in table.providers]
            provider_ok = np.isin(table.provider, allowed)
        residency_ok = np.ones(len(table), dtype=bool)
        if workload.regions.geo:
            residency_ok = np.array([geo in workload.regions.geo for geo in table.geo_names], dtype=bool)[table.geo]
        elif workload.regions.names:
            residency_ok = np.array([any(region == name or region.startswith(name) for name in workload.regions.names)
                                     for region in table.region])
        spot_ok = ~table.spot if workload.spot is SpotPolicy.NEVER else np.ones(len(table), dtype=bool)
        return dict(zip(FILTERS, (gpu_ok, memory_ok, fit_ok, provider_ok, residency_ok, spot_ok)))

    def columns(self, index: int, workload: Workload) -> Columns:
        table = self.table
        degrees, rates = self.per_gpu_type(workload)
        feasible = np.logical_and.reduce(list(self.masks(workload, degrees).values()))
        supply = np.flatnonzero(feasible)
        tp = degrees[table.gpu[supply]]
        replicas = table.gpu_count[supply] // np.maximum(tp, 1)
        units = replicas * rates[table.gpu[supply]] if workload.serves_tokens else replicas.astype(float)
        keep = units > 0
        supply, tp, replicas, units = supply[keep], tp[keep], replicas[keep], units[keep]
        billed = np.maximum(workload.hours, table.min_term[supply])
        cost = np.where(table.committed[supply], 0.0, table.price[supply] * billed)
        spot = table.spot[supply]
        weight = np.where(spot & (workload.spot is SpotPolicy.PREFERRED), cost * SPOT_PREFERENCE, cost)
        order = np.lexsort((supply, cost / units))  # deterministic: by unit cost, then supply index
        return Columns(index, supply[order], units[order], replicas[order], tp[order], cost[order], weight[order],
                       spot[order])

    def shortfall_reason(self, workload: Workload) -> str:
        """Why no supply at all can serve this workload: the filter that removed the last candidates."""
        remaining = np.ones(len(self.table), dtype=bool)
        for name, mask in self.masks(workload).items():
            if remaining.any() and not (remaining & mask).any():
                return f"no offer passes {name} (after {', '.join(FILTERS[:FILTERS.index(name)]) or 'no other filter'})"
            remaining &= mask
        return "no offer can host a replica"
