"""The optimizer's large-model machinery on instances small enough to check: the proven LP bound
when column generation stops early, and the rounding, repair, merge and neighbourhood search that
large fleets use instead of one MIP."""

import random
from collections import defaultdict
from unittest import mock

import pytest

from conftest import fleet, make_offer, replicas
from gpu_supply.offer import PricingModel
from scheduler import optimizer
from scheduler.optimizer import PlanOptions, plan


def contested_fleet(seed: int = 3, workloads: int = 14):
    """Cheap offers with a few nodes each that every workload wants, and dear unlimited fallbacks, so
    every workload is served in full and the cheap capacity is fought over."""
    rng = random.Random(seed)
    offers = [make_offer(provider=provider, region=region, instance_type=f"n{count}-{index}", gpu_count=count,
                         price_per_hour=round(rng.uniform(0.8, 2.0) * count, 2), available_nodes=rng.randint(1, 4),
                         pricing=rng.choice([PricingModel.ON_DEMAND, PricingModel.SPOT]))
              for index, (provider, region) in enumerate([("aws", "us-east-1"), ("gcp", "us-central1"),
                                                          ("azure", "eastus")] * 4)
              for count in (1, 2, 8)]
    offers += [make_offer(provider=provider, region=region, instance_type=f"dear-{count}", gpu_count=count,
                          price_per_hour=3.0 * count)
               for provider, region in [("aws", "us-east-1"), ("gcp", "us-central1")] for count in (1, 8)]
    specs = []
    for index in range(workloads):
        spec = replicas(f"w{index}", rng.randint(3, 20), priority=rng.randint(1, 5), spot=rng.choice(["never", "allowed"]))
        if index % 5 == 1:
            spec["spread"] = {"min_providers": 2}
        if index % 4 == 2 and spec["spot"] == "allowed":
            spec["min_on_demand_share"] = 0.5
        specs.append(spec)
    return fleet(*specs), offers


def check_feasible(result, workloads, offers):
    capacity = {offer.key: offer.available_nodes for offer in offers}
    used = defaultdict(int)
    for placement in result.placements:
        used[placement.offer_keys[0]] += placement.nodes
    assert all(capacity[key] is None or nodes <= capacity[key] for key, nodes in used.items())
    assert not result.unmet


def test_lp_bound_is_proven_when_column_generation_stops_early():
    workloads, offers = contested_fleet()
    exact = plan(workloads, offers, options=PlanOptions(explain=False))
    assert exact.solver.lp_exact and exact.solver.lp_bound <= exact.solver.objective + 1e-6
    with mock.patch.object(optimizer, "MAX_PRICING_ROUNDS", 1), mock.patch.object(optimizer, "COLUMNS_PER_ROUND", 1), \
            mock.patch.object(optimizer, "_initial_positions", lambda *_: [0]):
        early = plan(workloads, offers, options=PlanOptions(explain=False))
    assert not early.solver.lp_exact
    assert 0 <= early.solver.lp_bound <= exact.solver.lp_bound + 1e-6  # a bound under the LP, never above it
    check_feasible(early, workloads, offers)


def test_neighbourhood_search_path_serves_everyone_within_capacity_near_the_mip():
    workloads, offers = contested_fleet()
    mip = plan(workloads, offers, options=PlanOptions(explain=False))
    with mock.patch.object(optimizer, "LNS_ABOVE_COLUMNS", 0):
        searched = plan(workloads, offers, options=PlanOptions(explain=False, time_limit_s=20))
    assert "cost-lns" in searched.solver.stages
    check_feasible(searched, workloads, offers)
    assert searched.solver.objective >= mip.solver.bound - 1e-6  # nothing beats the MIP's proven bound
    assert searched.solver.objective <= mip.solver.objective * 1.05
    assert searched.solver.lp_bound <= searched.solver.objective + 1e-6


def test_rounding_lets_workloads_it_left_short_pick_first():
    # One node of the cheap offer: the rounding of an LP that splits it gives it to the first in line.
    offers = [make_offer(region="cheap", instance_type="c", gpu_count=1, price_per_hour=1.0, available_nodes=3),
              make_offer(region="dear", instance_type="d", gpu_count=1, price_per_hour=5.0, available_nodes=1)]
    workloads = fleet(replicas("a", 2, priority=9, regions={"names": ["cheap", "dear"]}),
                      replicas("b", 2, priority=1, regions={"names": ["cheap"]}))
    with mock.patch.object(optimizer, "LNS_ABOVE_COLUMNS", 0):
        result = plan(workloads, offers, options=PlanOptions(explain=False))
    check_feasible(result, workloads, offers)
    served = {(p.workload, p.region): p.nodes for p in result.placements}
    assert served == {("a", "cheap"): 1, ("a", "dear"): 1, ("b", "cheap"): 2}
    assert result.total_cost == pytest.approx(3 * 1.0 + 5.0)


def test_pricing_picks_each_workloads_most_negative_columns_as_a_sort_would():
    import numpy as np

    rng = np.random.default_rng(5)
    for _ in range(200):
        size = int(rng.integers(0, 60))
        owners = np.sort(rng.integers(0, 6, size))
        positions = np.arange(size) * 3 + 1
        values = rng.integers(-5, 0, size).astype(float)  # many ties: the earlier position wins
        count = int(rng.integers(1, 4))
        order = np.lexsort((values, owners))
        rank = np.array([int((owners[order[:i]] == owners[order[i]]).sum()) for i in range(size)], dtype=int)
        expected = np.sort(positions[order][rank < count])
        assert np.array_equal(optimizer._most_negative(positions, values, owners, count), expected)


def test_greedy_mix_sends_back_whoever_frees_a_full_supply_at_least_cost_per_node():
    import numpy as np

    capacity = np.array([2.0, 10.0, 1.0])
    # Option 0 of each workload (the plan that fits) is on supply 1; their cheaper options crowd supply 0.
    costs = {0: [20.0, 4.0], 1: [10.0, 3.0], 2: [9.0, 8.0, 2.0]}
    uses = {0: [{1: 2}, {0: 2}], 1: [{1: 1}, {0: 1}], 2: [{1: 1}, {2: 1}, {0: 1}]}
    picks = optimizer._greedy_mix(capacity, costs, uses)
    # Supply 0 holds 4 of 2: workload 1 frees a node for 7 and workload 2 for 7 too (the lower index
    # goes first), then 3 of 2 still: workload 2 (7 per node) before workload 0 (8 per node).
    assert picks == {0: 1, 1: 0, 2: 0}
    used = np.zeros(3)
    for index, pick in picks.items():
        for supply, nodes in uses[index][pick].items():
            used[supply] += nodes
    assert (used <= capacity).all()


def test_an_lp_the_dual_simplex_fails_on_is_solved_by_the_primal():
    from ortools.math_opt.python import mathopt

    real, algorithms = optimizer._solve, []

    def dual_simplex_fails(program, solver, params, hint=None):
        if not any(variable.integer for variable in program.variables):
            algorithms.append(params.lp_algorithm)
            if params.lp_algorithm is None:
                raise RuntimeError("HighsStatus: kError [INTERNAL]")
        return real(program, solver, params, hint)

    offers = [make_offer(region="r", instance_type="big", gpu_count=8, price_per_hour=8.0),
              make_offer(region="r", instance_type="small", gpu_count=1, price_per_hour=1.5)]
    with mock.patch.object(optimizer, "_solve", dual_simplex_fails):
        result = plan(fleet(replicas("w", 10)), offers)
    assert algorithms and set(algorithms) == {None, mathopt.LPAlgorithm.PRIMAL_SIMPLEX}
    assert result.total_cost == pytest.approx(11.0) and result.solver.lp_exact
    assert "lp-failed" in result.solver.stages
