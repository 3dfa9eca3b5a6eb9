"""Property tests: whatever the fleet and supply, every plan respects every constraint."""

from collections import defaultdict
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_offer
from gpu_supply import gpus
from gpu_supply.offer import PricingModel
from pricing.fx import FxTable
from scheduler import baselines
from scheduler import optimizer
from scheduler.optimizer import plan
from scheduler.supply import ColumnBuilder, SupplyTable
from scheduler.throughput import ThroughputModel
from scheduler.workloads import parse_workloads

PROVIDERS = ["aws", "gcp", "lambda"]
REGIONS = {"us-east-1": "us", "eu-west-1": "eu"}

offer_strategy = st.builds(
    lambda provider, region, gpu, count, price, spot, capacity: make_offer(
        provider=provider, region=region, instance_type=f"{gpu}x{count}", gpu=gpu,
        gpu_memory_gb=gpus.spec(gpu).memory_gb, gpu_count=count, price_per_hour=float(price),
        pricing=PricingModel.SPOT if spot else PricingModel.ON_DEMAND, available_nodes=capacity),
    provider=st.sampled_from(PROVIDERS), region=st.sampled_from(sorted(REGIONS)), gpu=st.sampled_from(["H100", "L4"]),
    count=st.sampled_from([1, 2, 8]), price=st.integers(1, 20), spot=st.booleans(),
    capacity=st.one_of(st.none(), st.integers(0, 4)))

workload_strategy = st.fixed_dictionaries(
    {"demand": st.fixed_dictionaries({"replicas": st.integers(1, 6), "gpus_per_replica": st.sampled_from([1, 2])}),
     "priority": st.integers(1, 10), "hours": st.just(10)},
    optional={"spot": st.sampled_from(["never", "allowed", "preferred"]),
              "regions": st.builds(lambda geos: {"geo": geos}, st.lists(st.sampled_from(["us", "eu"]), min_size=1,
                                                                       max_size=2, unique=True)),
              "providers": st.builds(lambda names: {"allow": names}, st.lists(st.sampled_from(PROVIDERS), min_size=1,
                                                                             max_size=3, unique=True)),
              "gpus": st.builds(lambda names: {"deny": names}, st.lists(st.just("L4"), max_size=1)),
              "min_on_demand_share": st.sampled_from([0.0, 0.5]),
              "spread": st.just({"min_providers": 2})})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offers=st.lists(offer_strategy, min_size=1, max_size=6, unique_by=lambda offer: offer.key),
       specs=st.lists(workload_strategy, min_size=1, max_size=3))
def test_every_plan_respects_every_constraint(offers, specs):
    check_plan(offers, specs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offers=st.lists(offer_strategy, min_size=1, max_size=6, unique_by=lambda offer: offer.key),
       specs=st.lists(workload_strategy, min_size=1, max_size=3))
def test_every_plan_of_the_large_model_path_respects_every_constraint(offers, specs):
    """The same, through the rounding, repair, merge and neighbourhood search large fleets use."""
    with mock.patch.object(optimizer, "LNS_ABOVE_COLUMNS", 0):
        check_plan(offers, specs)


def check_plan(offers, specs):
    for index, spec in enumerate(specs):
        spec["name"] = f"w{index}"
        if spec.get("spot") == "never" and spec.get("min_on_demand_share"):
            spec["min_on_demand_share"] = 0.0
    workloads = parse_workloads({"workloads": specs})
    result = plan(workloads, offers)
    by_key = {offer.key: offer for offer in offers}
    used = defaultdict(int)
    served = defaultdict(float)
    on_demand = defaultdict(float)
    by_provider = defaultdict(lambda: defaultdict(float))
    for placement in result.placements:
        workload = next(w for w in workloads if w.name == placement.workload)
        members = [by_key[key] for key in placement.offer_keys]
        offer = members[0]
        used[placement.offer_keys] += placement.nodes
        served[workload.name] += placement.replicas
        if offer.pricing is not PricingModel.SPOT:
            on_demand[workload.name] += placement.replicas
        by_provider[workload.name][offer.provider] += placement.replicas
        assert placement.replicas == placement.nodes * (offer.gpu_count // workload.demand.gpus_per_replica)
        if workload.spot.value == "never":
            assert offer.pricing is not PricingModel.SPOT
        if workload.regions.geo:
            assert offer.geo in workload.regions.geo
        if workload.providers.allow:
            assert offer.provider in workload.providers.allow
        assert offer.gpu not in workload.gpus.deny
    for keys, nodes in used.items():  # shared capacity
        known = [by_key[key].available_nodes for key in keys]
        if None not in known:
            assert nodes <= sum(known)
    unmet = {u.workload: u.missing_replicas for u in result.unmet}
    for workload in workloads:
        demand = workload.demand.replicas
        assert served[workload.name] + unmet.get(workload.name, 0.0) >= demand - 1e-6
        if workload.name not in unmet:
            assert served[workload.name] >= demand
        if served[workload.name] and workload.min_on_demand_share:
            assert on_demand[workload.name] >= workload.min_on_demand_share * served[workload.name] - 1e-6
        if served[workload.name] and workload.spread.min_providers:
            carrying = [p for p, amount in by_provider[workload.name].items()
                        if amount >= demand / workload.spread.min_providers - 1e-6]
            assert len(carrying) >= workload.spread.min_providers
    # Never worse than the greedy baseline: at least its priority-weighted service, and no dearer at equal service.
    table = SupplyTable(offers, FxTable(), "USD", None)
    builder = ColumnBuilder(table, ThroughputModel())
    greedy = baselines.greedy(workloads, [builder.columns(i, w) for i, w in enumerate(workloads)], table)
    mine = sum(w.priority * min(1.0, served[w.name] / w.demand.replicas) for w in workloads)
    assert mine >= greedy.served_priority - 1e-6
    if abs(mine - greedy.served_priority) <= 1e-6 and all(w.spot.value != "preferred" for w in workloads):
        assert result.total_cost <= greedy.cost * (1 + 1e-6) + 1e-6  # (preferred spot may cost more, by design)
    if result.solver.lp_bound is not None and not result.unmet:
        assert result.solver.lp_bound <= result.solver.objective + 1e-6 * max(1.0, abs(result.solver.objective))
