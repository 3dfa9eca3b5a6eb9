"""The optimizer's large-model machinery on instances small enough to check: the proven LP bound
when column generation stops early, and the rounding, repair, merge and neighbourhood search that
large fleets use instead of one MIP."""

import random
from collections import defaultdict
from dataclasses import replace
from unittest import mock

import numpy as np
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
        spec = replicas(f"w{index}", rng.randint(3, 20), priority=rng.randint(1, 5),
                        spot=rng.choice(["never", "allowed"]))
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
    with mock.patch.object(optimizer, "MAX_PRICING_ROUNDS", 3), mock.patch.object(optimizer, "COLUMNS_PER_ROUND", 1), \
            mock.patch.object(optimizer, "_initial_positions", lambda *_: [0]), \
            mock.patch.object(optimizer, "LAGRANGIAN_COLUMNS", 0):  # every round takes the Lagrangian's columns
        lagrangian = plan(workloads, offers, options=PlanOptions(explain=False))
    assert 0 < lagrangian.solver.lp_bound <= exact.solver.lp_bound + 1e-6
    check_feasible(lagrangian, workloads, offers)
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


def test_greedy_mix_frees_a_full_supply_at_least_cost_per_node_without_overfilling_another():
    capacity = np.array([2.0, 10.0, 1.0])
    # Option 0 of each workload (the plan that fits) is on supply 1; the options they start on crowd supply 0.
    costs = {0: [20.0, 4.0], 1: [10.0, 3.0], 2: [9.0, 8.0, 2.0]}
    uses = {0: [{1: 2}, {0: 2}], 1: [{1: 1}, {0: 1}], 2: [{1: 1}, {2: 1}, {0: 1}]}
    picks = optimizer._greedy_mix(capacity, costs, uses, start={0: 1, 1: 1, 2: 2})
    # Supply 0 holds 4 of 2. Per node freed: workload 2 to supply 2 costs 6 (which has room), workload 1
    # back to option 0 costs 7, workload 2 back to 0 costs 7, workload 0 back to 0 costs 8. Then 3 of 2:
    # workload 1 (7) before workload 0 (8). Neither then fits a cheaper option.
    assert picks == {0: 1, 1: 0, 2: 1}
    used = np.zeros(3)
    for index, pick in picks.items():
        for supply, nodes in uses[index][pick].items():
            used[supply] += nodes
    assert (used <= capacity).all()


def test_greedy_mix_moves_each_workload_to_a_cheaper_option_that_fits():
    capacity = np.array([1.0, 1.0])
    costs = {0: [5.0, 2.0], 1: [4.0, 1.0]}
    uses = {0: [{0: 1}, {1: 1}], 1: [{1: 1}, {0: 1}]}
    # Starting on option 0 (which fits), neither can move alone: each cheaper option is on the other's supply.
    assert optimizer._greedy_mix(capacity, costs, uses, start={}) == {0: 0, 1: 0}
    assert optimizer._greedy_mix(np.array([2.0, 2.0]), costs, uses, start={}) == {0: 1, 1: 1}


def test_pricing_adds_columns_on_a_supply_for_at_most_twice_its_capacity_most_negative_first():
    positions = np.array([10, 11, 12, 13, 14, 15])
    values = np.array([-1.0, -5.0, -3.0, -2.0, -9.0, -4.0])
    supplies = np.array([0, 0, 0, 0, 1, 2])
    nodes = np.array([1.0, 3.0, 2.0, 1.0, 50.0, 1.0])
    capacity = np.array([2.0, 4.0, np.inf])
    kept = optimizer._within_capacity(positions, values, supplies, nodes, capacity)
    # Supply 0 (room for 4 nodes): 11 (3 nodes), 12 (5 so far), and no more; supply 1's one column is kept
    # however many nodes it could take; unlimited supply 2 keeps everything.
    assert kept.tolist() == [11, 12, 14, 15]


def small_model(workloads, offers, fixed: bool = True):
    """A cost-stage model of these workloads and offers, each held at its full demand (or, not
    ``fixed``, a service-stage model serving up to it)."""
    from pricing.fx import FxTable
    from scheduler.supply import ColumnBuilder, SupplyTable
    from scheduler.throughput import ThroughputModel

    table = SupplyTable(offers, FxTable(), "USD", None)
    builder = ColumnBuilder(table, ThroughputModel())
    columns = [builder.columns(index, workload) for index, workload in enumerate(workloads)]
    model = optimizer._Model(workloads, table, columns, [workload.demand_units for workload in workloads])
    if fixed:
        model.fix_served()
    return model


def service_stage_start():
    """a starts on r5's one node and needs r9's and r11's dearer ones to be served; b is served in
    full on r7, where r2 only saves cost."""
    offers = [make_offer(region=f"r{price}", instance_type=f"t{price}", gpu_count=1, price_per_hour=float(price),
                         available_nodes=nodes) for price, nodes in ((5, 1), (9, 1), (11, 1), (7, None), (2, None))]
    workloads = fleet(replicas("a", 3, regions={"names": ["r5", "r9", "r11"]}),
                      replicas("b", 2, regions={"names": ["r7", "r2"]}))
    model = small_model(workloads, offers, fixed=False)
    for index, region in ((0, "r5"), (1, "r7")):
        model.add(index, column_in(model, index, region))
    model.objective_serve()
    return model, optimizer._Solver(PlanOptions(), 2)


def test_the_service_lp_prices_the_columns_that_serve_more_however_dear_and_only_those():
    # The service stage adds r9 and r11, not r2; the cost stage then adds r2.
    model, solver = service_stage_start()
    solver.generate_columns(model, budget=1.0)
    assert solver.lp_exact and solver.lp_bound == pytest.approx(-2.0)  # both served in full
    assert set(model.x) == {(0, column_in(model, 0, "r5")), (0, column_in(model, 0, "r9")),
                            (0, column_in(model, 0, "r11")), (1, column_in(model, 1, "r7"))}
    model.fix_served()
    model.objective_cost()
    solver.generate_columns(model, budget=1.0)
    assert solver.lp_exact and solver.lp_bound == pytest.approx(5 + 9 + 11 + 2 * 2)
    assert (1, column_in(model, 1, "r2")) in model.x


def test_column_generation_prices_a_column_opening_a_new_spread_group_with_its_flag():
    # Two of aws (4), gcp (6) and azure (1) must each carry half of 4 replicas. From aws and gcp
    # alone the LP costs 20; azure's column brings a new group, and with it the LP costs 10.
    offers = [make_offer(provider=provider, region=region, instance_type=f"t{price}", gpu_count=1,
                         price_per_hour=float(price))
              for provider, region, price in (("aws", "us-east-1", 4), ("gcp", "us-central1", 6),
                                              ("azure", "eastus", 1))]
    model = small_model(fleet(replicas("a", 4, spread={"min_providers": 2})), offers)
    for region in ("us-east-1", "us-central1"):
        model.add(0, column_in(model, 0, region))
    model.objective_cost()
    solver = optimizer._Solver(PlanOptions(), 1)
    with mock.patch.object(optimizer, "MAX_PRICING_ROUNDS", 0):  # one LP, priced for the bound only
        first = solver.generate_columns(model, budget=1.0)
    assert first.objective == pytest.approx(20.0) and not solver.lp_exact and solver.lp_bound <= 10.0 + 1e-6
    assert solver.generate_columns(model, budget=1.0).objective == pytest.approx(10.0) and solver.lp_exact


def test_the_service_mip_runs_to_its_own_gap_and_the_cost_mip_to_the_plans():
    offers = [make_offer(region="only", instance_type="c", gpu_count=1, price_per_hour=1.0, available_nodes=5)]
    workloads = fleet(replicas("a", 3, priority=2), replicas("b", 3))
    solve, gaps = optimizer._solve, []

    def recording(program, solver, params, hint=None):
        if any(variable.integer for variable in program.variables):
            gaps.append(params.relative_gap_tolerance)
        return solve(program, solver, params, hint)

    with mock.patch.object(optimizer, "_solve", recording):
        result = plan(workloads, offers, options=PlanOptions(explain=False, relative_gap=0.01))
    # (a short: the cost stage's LP runs again holding only the service total; its rounding costs no
    # less, so one MIP runs, holding each level)
    assert result.solver.stages == ("pricing-lp", "serve-mip", "cost-lp", "total", "cost-lp", "cost-mip")
    assert gaps == [optimizer.SERVICE_GAP, 0.01]


def test_service_column_generation_stops_once_a_round_adds_less_than_the_gap():
    model, solver = service_stage_start()
    with mock.patch.object(optimizer, "COLUMNS_PER_ROUND", 1):  # a gains a third of its demand a round
        result = solver.generate_columns(model, budget=1.0, gap=0.25)  # the second round adds 0.33 of 1.67
    assert not solver.lp_exact and result.objective == pytest.approx(-1 - 2 / 3)


def column_in(model, index, region):
    """The workload's column on the supply in this region."""
    return next(position for position, supply in enumerate(model.columns[index].supply)
                if model.table.supplies[int(supply)].offer.region == region)


def test_a_displaced_workload_makes_up_from_free_nodes_or_nothing_changes():
    offers = [make_offer(region="cheap", instance_type="c", gpu_count=1, price_per_hour=1.0, available_nodes=1),
              make_offer(region="spare", instance_type="s", gpu_count=1, price_per_hour=2.0, available_nodes=1)]
    for holder_regions, moves in ((["cheap", "spare"], True), (["cheap"], False)):
        workloads = fleet(replicas("short", 1, regions={"names": ["cheap"]}),
                          replicas("holder", 1, regions={"names": holder_regions}))
        model = small_model(workloads, offers)
        cheap = column_in(model, 0, "cheap")
        rounding = optimizer._Rounding.of(model, {(1, column_in(model, 1, "cheap")): 1})
        before = rounding.assignment
        fallback = {0: {cheap: 1}, 1: {column_in(model, 1, "cheap"): 1}}
        assert rounding.displace(0, {cheap: 1}, fallback) is moves
        if moves:  # the holder gives the cheap node up and takes the spare one
            assert rounding.assignment == {(0, cheap): 1, (1, column_in(model, 1, "spare")): 1}
            assert rounding.free.tolist() == [0.0, 0.0]
        else:  # the holder has nowhere to go: both keep what they had
            assert rounding.assignment == before and rounding.free.tolist() == [0.0, 1.0]


def test_rounding_completes_a_workload_left_short_from_nodes_trimmed_after_it():
    from scheduler.optimizer import _Result

    offers = [make_offer(region="only", instance_type="n", gpu_count=1, price_per_hour=1.0, available_nodes=4)]
    # "first" completes before "later"; the LP gave "later" 3 nodes where 2 serve it, so rounding down
    # fills the supply and "first" finds it full; "later" trims its third node back only after that.
    workloads = fleet(replicas("first", 2, priority=9), replicas("later", 2, priority=1))
    model = small_model(workloads, offers)
    for index in range(2):
        model.add(index, 0)
    values = np.zeros(len(model.model.variables))
    values[model.served[0].id] = values[model.served[1].id] = 1.0
    values[model.x[(0, 0)].id], values[model.x[(1, 0)].id] = 1.5, 3.0
    lp = _Result(reason=optimizer.mathopt.TerminationReason.OPTIMAL, feasible=True, objective=4.0, dual_bound=4.0,
                 values=values, duals=np.zeros(0))
    assert optimizer._round_lp(model, lp, {}) == {(0, 0): 2, (1, 0): 2}
    with mock.patch.object(optimizer, "COMPLETION_SWEEPS", 0):
        assert optimizer._round_lp(model, lp, {}) == {(0, 0): 1, (1, 0): 2}


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


def test_large_lps_are_solved_unscaled_first_and_scaled_where_that_fails():
    real, attempts = optimizer._solve, []

    def unscaled_fails(program, solver, params, hint=None):
        if not any(variable.integer for variable in program.variables):
            unscaled = params.highs.int_options.get("simplex_scale_strategy") == optimizer.UNSCALED
            attempts.append(unscaled)
            if unscaled and len(attempts) == 1:
                raise RuntimeError("HighsStatus: kError [INTERNAL]")
        return real(program, solver, params, hint)

    workloads, offers = contested_fleet()
    expected = plan(workloads, offers)
    with mock.patch.object(optimizer, "UNSCALED_COLUMNS", 0), mock.patch.object(optimizer, "_solve", unscaled_fails):
        result = plan(workloads, offers)
    assert attempts[:3] == [True, False, True] and all(attempts[2:])  # the failed LP retried scaled, then on
    assert result.total_cost == pytest.approx(expected.total_cost) and result.solver.lp_exact
    assert result.solver.lp_bound == pytest.approx(expected.solver.lp_bound)
    assert result.solver.stages.count("lp-failed") == 1


def test_top_up_serves_more_from_free_nodes_by_priority_and_spread_workloads_only_whole():
    offers = [make_offer(region="only", instance_type="n", gpu_count=1, price_per_hour=1.0, available_nodes=4)]
    workloads = fleet(replicas("low", 3, priority=1), replicas("high", 2, priority=5),
                      replicas("spread", 1, priority=9, spread={"min_providers": 2}))
    model = small_model(workloads, offers)
    topped = optimizer._top_up(model, {(1, 0): 1}, targets=[3.0, 2.0, 1.0])
    # "spread" cannot have two providers, so stays unserved; "high" completes first, "low" takes the rest.
    assert topped == {(1, 0): 2, (0, 0): 2}


def test_workloads_still_short_share_the_free_nodes_for_the_most_service_then_the_least_cost():
    # "hi" (priority 5) may use a (price 1), c (5) or b (9); "lo" (priority 1) only a; one node each,
    # both unserved. Topping up by priority gives hi the cheapest, a, and leaves lo nothing (service 5).
    # Re-solved together, lo takes a and hi the cheaper of the others, c (service 6, cost 6).
    offers = [make_offer(region=region, instance_type=f"t{region}", gpu_count=1, price_per_hour=price,
                         available_nodes=1) for region, price in (("a", 1.0), ("b", 9.0), ("c", 5.0))]
    workloads = fleet(replicas("hi", 1, priority=5, regions={"names": ["a", "b", "c"]}),
                      replicas("lo", 1, priority=1, regions={"names": ["a"]}))
    model = small_model(workloads, offers, fixed=False)
    solver = optimizer._Solver(PlanOptions(), len(workloads))
    topped = optimizer._top_up(model, {}, model.targets)
    assert topped == {(0, column_in(model, 0, "a")): 1}
    shared = optimizer._serve_short(solver, model, {}, topped)
    assert shared == {(0, column_in(model, 0, "c")): 1, (1, column_in(model, 1, "a")): 1}
    assert optimizer._serve_short(solver, model, shared, shared) == shared  # no one short: unchanged


def test_a_dear_top_up_is_recosted_at_the_raised_service():
    # "hi" may use a (price 1, one node) or c (2); "lo" a or b (20). The cost plan at the decided
    # service (hi 1 replica, lo none) puts hi on a; topping it up gives lo the only free node it can
    # use, b (cost 21). At the raised levels the LP moves hi to c and gives lo a: cost 3, the same
    # service. A top-up that costs no more than RECOST_ABOVE of the plan is not re-costed.
    offers = [make_offer(region=region, instance_type=f"t{region}", gpu_count=1, price_per_hour=price,
                         available_nodes=1) for region, price in (("a", 1.0), ("b", 20.0), ("c", 2.0))]
    workloads = fleet(replicas("hi", 1, priority=5, regions={"names": ["a", "c"]}),
                      replicas("lo", 1, priority=1, regions={"names": ["a", "b"]}))
    model = small_model(workloads, offers, fixed=False)
    for index, regions in ((0, "ac"), (1, "ab")):
        for region in regions:
            model.add(index, column_in(model, index, region))
    model.fix_served([1.0, 0.0])
    model.objective_cost()
    solver = optimizer._Solver(PlanOptions(), len(workloads))
    lp = solver.generate_columns(model, budget=1.0)
    repaired = {(0, column_in(model, 0, "a")): 1}
    assert optimizer._round_lp(model, lp, repaired) == repaired
    topped = optimizer._top_up(model, repaired, model.targets)
    assert topped == {**repaired, (1, column_in(model, 1, "b")): 1}
    assert optimizer._dear_raise(model, repaired, repaired, topped)
    assert not optimizer._dear_raise(model, topped, repaired, topped)  # no more service than the incumbent
    with mock.patch.object(optimizer, "RECOST_ABOVE", 20.0):
        assert not optimizer._dear_raise(model, repaired, repaired, topped)
    raised, relaxed, again, retopped = optimizer._recost(solver, model, lp, repaired, topped)
    assert [raised.level(index) for index in range(2)] == [1.0, 1.0] and relaxed.objective == pytest.approx(3.0)
    assert again == retopped == {(0, column_in(model, 0, "c")): 1, (1, column_in(model, 1, "a")): 1}


def test_a_dear_top_up_of_the_service_stage_leaves_the_cost_stage_time_to_recost():
    # Supply is short (3 nodes for 4 replicas), so service is decided by the service stage and its
    # top-up; where that top-up raised service dearly, the cost stage's column generation takes the
    # smaller share of the time left, for the re-cost its own top-up will likely need.
    offers = [make_offer(region="a", instance_type="ta", gpu_count=1, price_per_hour=1.0, available_nodes=3)]
    workloads = fleet(replicas("x", 2, priority=2), replicas("y", 2))
    generate, budgets = optimizer._Solver.generate_columns, []

    def recorded(self, model, budget, gap=0.0):
        budgets.append(budget)
        return generate(self, model, budget, gap)

    for dear, budget in ((False, optimizer.COST_PRICING_BUDGET), (True, optimizer.RECOST_PRICING_BUDGET)):
        budgets.clear()
        with mock.patch.object(optimizer._Solver, "generate_columns", recorded), \
                mock.patch.object(optimizer, "_dear_raise", lambda *args: dear):
            result = plan(workloads, offers)
        assert budgets == [optimizer.PRICING_BUDGET, budget, budget]  # (the third: holding the total)
        assert sum(p.replicas for p in result.placements if p.workload == "x") == 2
    assert optimizer.RECOST_PRICING_BUDGET < optimizer.COST_PRICING_BUDGET


def test_raised_service_keeps_the_cost_lp_bound_and_moves_it_with_any_level_that_came_down():
    # The cost LP at levels 2 and 2: 3 cheap nodes and one dear, 7. a at 1 and b at 4: at least what
    # a at 1 and b at 2 costs, 3 (a's level priced at its reduced cost, 4 a replica).
    offers = [make_offer(region="cheap", instance_type="c", gpu_count=1, price_per_hour=1.0, available_nodes=3),
              make_offer(region="dear", instance_type="d", gpu_count=1, price_per_hour=4.0)]
    workloads = fleet(replicas("a", 4), replicas("b", 4))
    for nodes, bound in (({"a": 3, "b": 2}, 7.0), ({"a": 1, "b": 4}, 3.0)):
        model = small_model(workloads, offers)
        model.fix_served([2.0, 2.0])
        for index in range(2):
            for region in ("cheap", "dear"):
                model.add(index, column_in(model, index, region))
        model.objective_cost()
        solver = optimizer._Solver(PlanOptions(), len(workloads))
        solver.generate_columns(model, budget=1.0)
        assert solver.lp_exact and solver.lp_bound == pytest.approx(7.0)
        plan_nodes = {(index, column_in(model, index, "dear")): nodes[name] for index, name in enumerate("ab")}
        optimizer._held_at(solver, model, plan_nodes)
        assert solver.lp_bound == pytest.approx(bound) and not solver.lp_exact
        assert [model.level(index) for index in range(2)] == [float(nodes["a"]), float(nodes["b"])]
    assert optimizer._Solver(PlanOptions(), 2).level_bound(np.array([0.25, 0.5])) is None  # no cost LP yet


def test_the_lagrangian_bounds_the_cost_lp_from_the_cover_duals_of_an_lp_cut_short():
    # Levels 2 and 2; 3 cheap nodes at 1 and dear ones at 4: the LP is 7, at a capacity price of 3 on
    # the cheap supply. Cover duals of an LP cut short (100 a unit) price it at 99: every workload then
    # covers its level with dear nodes, and the bound is 16 - 3 x 99. Their cover duals (4 a unit)
    # price it at 3 again, and the bound is the LP's 7.
    offers = [make_offer(region="cheap", instance_type="c", gpu_count=1, price_per_hour=1.0, available_nodes=3),
              make_offer(region="dear", instance_type="d", gpu_count=1, price_per_hour=4.0)]
    model = small_model(fleet(replicas("a", 4), replicas("b", 4)), offers)
    model.fix_served([2.0, 2.0])
    cheap = int(model.columns[0].supply[column_in(model, 0, "cheap")])
    per_unit = np.array([100.0, 100.0]) * model.demand  # cover rows are in fractions of demand
    assert model.scarcity(per_unit)[cheap] == pytest.approx(99.0)
    assert model.priced(model.scarcity(per_unit)).bound == pytest.approx(16.0 - 3 * 99.0)
    with mock.patch.object(optimizer, "LAGRANGIAN_STEPS", 1):
        assert model.lagrangian(per_unit)[0].bound == pytest.approx(16.0 - 3 * 99.0)
    best, prices = model.lagrangian(per_unit)
    assert best.bound == pytest.approx(7.0) and prices[cheap] == pytest.approx(3.0)
    assert list(best.cover / model.demand) == pytest.approx([4.0, 4.0])
    # Its columns: at that price cheap and dear nodes cost the same, and each workload's cheap column
    # alone covers its level (the LP's mix of the two is for the restricted LP to find).
    assert {(int(model.flat.workload[column]), model.table.supplies[int(model.flat.supply[column])].offer.region)
            for column in best.columns} == {(0, "cheap"), (1, "cheap")}
    # Held at a raised level (a at 3), the plan is bounded at the new levels: 3 cheap and 2 dear, 11.
    solver = optimizer._Solver(PlanOptions(), 2)
    solver.lp_bound, solver.capacity_prices = 0.0, prices
    plan_nodes = {(0, column_in(model, 0, "cheap")): 3, (1, column_in(model, 1, "dear")): 2}
    optimizer._held_at(solver, model, plan_nodes)
    assert solver.lp_bound == pytest.approx(11.0)


def test_capacity_prices_are_where_the_nodes_gaining_more_reach_the_capacity_and_always_bound_the_lp():
    workloads, offers = contested_fleet()
    model = small_model(workloads, offers)
    for index, columns in enumerate(model.columns):
        for position in range(len(columns)):
            model.add(index, position)
    solver = optimizer._Solver(PlanOptions(), len(workloads))
    lp = solver.lp(model)
    flat, rng = model.flat, np.random.default_rng(5)
    for cover in [model.cover_duals(lp), *(model.cover_duals(lp) * rng.uniform(0.2, 5.0, len(workloads))
                                           for _ in range(20))]:
        prices = model.scarcity(cover)
        gain = np.minimum(flat.share_units, model.ceilings()[flat.workload]) * cover[flat.workload] - flat.weight
        for supply, capacity in enumerate(model.table.capacity):
            mine = np.flatnonzero((flat.supply == supply) & (gain > 0))
            order = mine[np.argsort(-gain[mine], kind="stable")]
            reach = np.cumsum(model.upper[order])
            full = np.flatnonzero(reach >= capacity)
            assert prices[supply] == pytest.approx(gain[order[full[0]]] if len(full) else 0.0)
        assert model.lagrangian(cover)[0].bound <= lp.objective * (1 + 1e-9)
    # From capacity left free (each workload at its cheapest), the prices raise the bound, though not to
    # the LP, whose share and spread rules the bound drops. The LP's own cover duals, shaped by those
    # rules, stall lower here, which is why generate_columns tries both.
    free = model.priced(np.zeros(len(model.table))).bound
    assert free < model.lagrangian()[0].bound <= lp.objective
    assert model.lagrangian(model.cover_duals(lp))[0].bound < free


def test_repair_trades_service_where_levels_cannot_be_restored_nearby():
    # Supplies s0..s3, one node each. "hi" (priority 5) can only use s0; w1 uses s0 or s1, w2 s1 or s2,
    # w3 s2 or s3, w4 s3 only. The service plan: hi s0, w1 s1, w2 s2, w3 s3 (w4 unserved; total 8).
    # The rounding shifted everyone down a supply and left hi short. The chain is longer than
    # displacement reaches, and the fixed-level repair sees hi alone, so hi takes s0 from w1 (priority
    # 1) in a neighbourhood of two, for the same total.
    offers = [make_offer(region=f"s{number}", instance_type=f"n{number}", gpu_count=1, price_per_hour=1.0,
                         available_nodes=1) for number in range(4)]
    workloads = fleet(replicas("hi", 1, priority=5, regions={"names": ["s0"]}),
                      *[replicas(f"w{number}", 1, regions={"names": [f"s{number - 1}", f"s{min(number, 3)}"]})
                        for number in range(1, 5)])
    model = small_model(workloads, offers, fixed=False)
    for index, columns in enumerate(model.columns):
        for position in range(len(columns)):
            model.add(index, position)

    def one_node(*placed):  # (workload, region) pairs -> assignment
        return {(index, column_in(model, index, region)): 1 for index, region in placed}

    service_plan = one_node((0, "s0"), (1, "s1"), (2, "s2"), (3, "s3"))
    rounded = one_node((1, "s0"), (2, "s1"), (3, "s2"), (4, "s3"))
    model.fix_served([1.0, 1.0, 1.0, 1.0, 0.0])
    solver = optimizer._Solver(PlanOptions(), len(workloads))
    with mock.patch.object(optimizer, "REPAIR_STEPS", ((1, 1.0),)), mock.patch.object(optimizer, "LNS_WORKLOADS", 2):
        repaired = optimizer._repair(solver, model, rounded, service_plan, [rounded])
    assert repaired == one_node((0, "s0"), (2, "s1"), (3, "s2"), (4, "s3"))
    score = optimizer._score
    assert score(model, repaired, model.targets)[0] == score(model, service_plan, model.targets)[0]
    with mock.patch.object(optimizer, "REPAIR_STEPS", ((1, 1.0),)), mock.patch.object(optimizer, "LNS_WORKLOADS", 1):
        assert optimizer._short(model, optimizer._repair(solver, model, rounded, service_plan, [rounded])) == [0]


def test_passes_by_supply_move_capacity_that_passes_by_excess_cannot_reach():
    # One cheap node: a pays 10 elsewhere, b only 3, and the start gives it to b. Re-solved without
    # the workloads holding its LP's supplies, a cannot reach the node; re-solved around the cheap
    # supply (its holder b and its LP user a), the two trade.
    offers = [make_offer(region="cheap", instance_type="c", gpu_count=1, price_per_hour=1.0, available_nodes=1),
              make_offer(region="a-only", instance_type="a", gpu_count=1, price_per_hour=10.0),
              make_offer(region="b-only", instance_type="b", gpu_count=1, price_per_hour=3.0)]
    workloads = fleet(replicas("a", 1, regions={"names": ["cheap", "a-only"]}),
                      replicas("b", 1, regions={"names": ["cheap", "b-only"]}))
    model = small_model(workloads, offers)
    for index, columns in enumerate(model.columns):
        for position in range(len(columns)):
            model.add(index, position)
    model.objective_cost()
    solver = optimizer._Solver(PlanOptions(), len(workloads))
    lp = solver.lp(model)
    start = {(0, column_in(model, 0, "a-only")): 1, (1, column_in(model, 1, "cheap")): 1}
    best = {(0, column_in(model, 0, "cheap")): 1, (1, column_in(model, 1, "b-only")): 1}
    with mock.patch.object(optimizer, "LNS_RELATED", 0):
        assert optimizer._improve(solver, model, lp, start) == best


def test_large_models_raise_service_piecewise_a_workload_with_those_holding_its_supplies():
    # "hi" (priority 5) and "lo" (priority 1) each want both nodes of the one supply; the start gave
    # lo both. Re-solved together for service, hi takes them.
    offers = [make_offer(region="only", instance_type="n", gpu_count=1, price_per_hour=1.0, available_nodes=2)]
    workloads = fleet(replicas("hi", 2, priority=5), replicas("lo", 2, priority=1))
    model = small_model(workloads, offers, fixed=False)
    for index in range(2):
        model.add(index, 0)
    model.objective_serve()
    solver = optimizer._Solver(PlanOptions(), len(workloads))
    assert optimizer._serve_more(solver, model, {(1, 0): 2}) == {(0, 0): 2}
    assert optimizer._serve_more(solver, model, {(0, 0): 2}) == {(0, 0): 2}  # nothing to raise


def test_plans_of_large_models_serve_by_priority_through_the_piecewise_service_stage():
    workloads, offers = contested_fleet(workloads=14)
    offers = [replace(offer, available_nodes=offer.available_nodes or 1) for offer in offers]  # short supply
    small = plan(workloads, offers, options=PlanOptions(explain=False))
    with mock.patch.object(optimizer, "LNS_ABOVE_COLUMNS", 0):
        large = plan(workloads, offers, options=PlanOptions(explain=False))
    assert "serve-mip" in small.solver.stages and "serve-lns" in large.solver.stages
    served = [sum(w.priority * (1 - sum(u.missing_replicas or 0 for u in result.unmet if u.workload == w.name)
                                / w.demand_units) for w in workloads) for result in (small, large)]
    assert served[1] >= served[0] - 1e-6


def single_type_fleet(seed: int):
    """Offers of four GPU types, in three node sizes at two providers (some of them alike but for the
    region), and twelve workloads, some with a spread or an on-demand share."""
    rng = random.Random(seed)
    offers = [make_offer(provider=provider, region=region, gpu=gpu, instance_type=f"{gpu}-{count}", gpu_count=count,
                         gpu_memory_gb=80.0, price_per_hour=round(rng.uniform(0.5, 3.0) * count, 2) if region != "b"
                         else price, available_nodes=rng.choice([None, 1, 2, 3]),
                         pricing=rng.choice([PricingModel.ON_DEMAND, PricingModel.SPOT]))
              for provider in ("aws", "gcp") for gpu in ("H100", "A100-80GB", "L40S", "A10G") for count in (1, 4, 8)
              for region, price in (("a", None), ("b", 1.5 * count))]
    specs = []
    for index in range(12):
        spec = replicas(f"w{index}", rng.randint(1, 30), spot="allowed")
        if index % 4 == 1:
            spec["spread"] = {"min_providers": 2}
        if index % 4 == 2:
            spec["min_on_demand_share"] = 0.5
        specs.append(spec)
    return fleet(*specs), offers


@pytest.mark.parametrize("seed", [5, 6])
def test_best_single_type_skips_types_whose_fractional_bound_cannot_win_and_matches_one_mip_per_type(seed):
    workloads, offers = single_type_fleet(seed)
    model = small_model(workloads, offers)
    pruned, every = [], []
    with mock.patch.object(optimizer, "_best_for_type", wraps=optimizer._best_for_type) as tries:
        for index, workload in enumerate(workloads):
            pruned.append(optimizer._best_single_type(workload, model.columns[index], model.table))
        pruned_tries = tries.call_count
        with mock.patch.object(optimizer, "_fractional_cover", return_value=(0.0, 0.0, None)):  # prune nothing
            for index, workload in enumerate(workloads):
                every.append(optimizer._best_single_type(workload, model.columns[index], model.table))
    assert pruned == every and all(gpu is not None for gpu, _ in pruned)
    assert pruned_tries < (tries.call_count - pruned_tries) / 2
    # The branch and bound, spreads included, agrees with a MIP per type.
    with mock.patch.object(optimizer, "_rule_free_cover", return_value=None):
        by_mip = [optimizer._best_single_type(workload, model.columns[index], model.table)
                  for index, workload in enumerate(workloads)]
    assert [gpu for gpu, _ in by_mip] == [gpu for gpu, _ in pruned]
    assert [cost for _, cost in by_mip] == pytest.approx([cost for _, cost in pruned], rel=1e-4)


def test_whole_node_cover_is_exact_against_a_mip_and_gives_up_past_its_branches():
    import math

    def by_mip(cost, units, nodes, level):
        from ortools.math_opt.python import mathopt

        model = mathopt.Model()
        counts = [model.add_integer_variable(lb=0, ub=float(min(n, math.ceil(level / u))))
                  for u, n in zip(units, nodes)]
        model.add_linear_constraint(sum(float(u) * x for u, x in zip(units, counts)) >= level)
        model.minimize(sum(float(c) * x for c, x in zip(cost, counts)))
        result = mathopt.solve(model, mathopt.SolverType.HIGHS,
                               params=mathopt.SolveParameters(relative_gap_tolerance=0, absolute_gap_tolerance=1e-9))
        return result.objective_value() if result.termination.reason == mathopt.TerminationReason.OPTIMAL else None

    rng = random.Random(2)
    checked = 0
    for _ in range(150):
        units = np.array([rng.choice([1, 2, 4, 8]) * rng.choice([1.0, rng.uniform(0.5, 3)])
                          for _ in range(rng.randint(1, 12))])
        cost = units * np.array([rng.choice([1.0, rng.uniform(0.8, 1.5), 0.0]) for _ in units])  # ties, free nodes
        nodes = np.array([rng.choice([1, 2, 3, 50, math.inf]) for _ in units])
        level = rng.uniform(0.5, 40)
        units = np.minimum(units, level)
        found = optimizer._whole_node_cover(cost, units, nodes, level)
        if found is None:  # ran past the branch limit
            continue
        expected = by_mip(cost, units, nodes, level)
        assert found == (math.inf if expected is None else pytest.approx(expected, rel=1e-9, abs=1e-9))
        checked += 1
    assert checked >= 140
    # For 4 units, 2 nodes of 2 units (4.4) beat the cheaper-per-unit 3-unit column (6.0 for 2, 5.2 with one of 2).
    assert optimizer._whole_node_cover(np.array([3.0, 2.2]), np.array([3.0, 2.0]), np.array([5.0, 5.0]), 4.0) \
        == pytest.approx(4.4)
    assert optimizer._whole_node_cover(np.array([1.0]), np.array([2.0]), np.array([2.0]), 5.0) == math.inf  # too few
    sizes = np.arange(1.0, 7.0) / 7  # all alike per unit: nothing is cut off, so every split is tried
    assert optimizer._whole_node_cover(sizes, sizes, np.ones(6), 2.05) == pytest.approx(15 / 7)
    assert optimizer._whole_node_cover(sizes, sizes, np.ones(6), 2.05, most_branches=5) is None


def test_fractional_cover_fills_cheapest_per_unit_first():
    # One node of the 1.5-a-unit column covers 2 units, then two of the 2-a-unit one; never enough: None.
    ratio, units, nodes = np.array([2.0, 1.5]), np.array([1.0, 2.0]), np.array([5.0, 1.0])
    cost, marginal, used = optimizer._fractional_cover(ratio, units, nodes, 4.0)
    assert (cost, marginal, used.tolist()) == (pytest.approx(7.0), 2.0, [1, 0])
    assert optimizer._fractional_cover(ratio, units, nodes, 8.0) is None


def test_fractional_cover_of_many_columns_matches_a_full_sort_ties_included():
    # Past a few dozen columns only the cheapest are sorted, where they reach the level; the answer is
    # that of sorting them all (ties by position), also where they do not and all are sorted.
    rng = np.random.default_rng(11)
    for _ in range(300):
        size = int(rng.integers(1, 200))
        ratio = rng.integers(1, 12, size).astype(float)  # many ties
        units, nodes = rng.uniform(0.1, 2.0, size), rng.integers(1, 6, size).astype(float)
        level = float(rng.uniform(0.1, 1.1)) * float(units @ nodes)
        order = np.argsort(ratio, kind="stable")
        reach = np.cumsum(units[order] * nodes[order])
        last = int(np.searchsorted(reach, level))
        got = optimizer._fractional_cover(ratio, units, nodes, level)
        if last >= size:
            assert got is None
            continue
        cost, marginal, used = got
        whole = order[:last]
        before = float(reach[last - 1]) if last else 0.0
        marginal_expected = ratio[order[last]]
        expected = float(ratio[whole] * units[whole] @ nodes[whole]) + (level - before) * marginal_expected
        assert (cost, marginal, used.tolist()) == (pytest.approx(expected), marginal_expected,
                                                   order[:last + 1].tolist())


def test_a_rounding_left_short_is_repaired_before_the_cost_mip_starts_from_it():
    # Roomy 100 (benchmark seed 7): the service MIP's plan is dear and the rounded cost LP leaves
    # workloads short of it. With the cost MIP finding nothing (as it did in 9.5 s from that plan),
    # the plan rests on the repaired rounding, near the LP, not on the service stage's plan (1.997x).
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "optimizer.py"
    spec = importlib.util.spec_from_file_location("optimizer_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    workloads, offers = benchmark.scenario(100, "roomy", 7)
    mip, real_repair, repairs = optimizer._Solver.mip, optimizer._repair, []

    def no_cost_mip(self, model, hint, *args, **kwargs):  # (the repair's MIPs are over a few workloads)
        whole = model.costed and len(model.workloads) == len(workloads)
        return None if whole else mip(self, model, hint, *args, **kwargs)

    def repair(*args, **kwargs):
        repairs.append(len(optimizer._short(args[1], args[2])))
        return real_repair(*args, **kwargs)

    with mock.patch.object(optimizer._Solver, "mip", no_cost_mip), mock.patch.object(optimizer, "_repair", repair):
        result = plan(workloads, offers, options=PlanOptions(explain=False, time_limit_s=10))
    assert repairs and repairs[0] > 0  # the rounding left workloads short
    assert "serve-mip" in result.solver.stages and result.solver.lp_exact
    assert result.solver.objective <= 1.05 * result.solver.lp_bound


def test_the_cost_stage_keeps_the_service_total_not_each_workloads_level():
    # Supply is short: "a" (2 replicas) may use the 8-GPU node (price 4) or the dear 1-GPU one (10),
    # "b" (2 replicas) the 8-GPU node or a cheap 1-GPU one (1). At most 1.5 of the two demands are
    # served, either as a 1 and b 2 (the dear node and the big one: 14) or as a 2 and b 1 (5). Held
    # at the first plan's levels nothing is cheaper; held at its total, the second plan is.
    offers = [make_offer(region="big", instance_type="g8", gpu_count=8, price_per_hour=4.0, available_nodes=1),
              make_offer(region="dear", instance_type="d1", gpu_count=1, price_per_hour=10.0, available_nodes=1),
              make_offer(region="cheap", instance_type="c1", gpu_count=1, price_per_hour=1.0, available_nodes=1)]
    workloads = fleet(replicas("a", 2, regions={"names": ["big", "dear"]}),
                      replicas("b", 2, regions={"names": ["big", "cheap"]}))
    dear = {(0, 1): 1, (1, 0): 1}  # a on the dear node, b on the big one (the regions' order below)
    for short, cost, nodes in ((False, 14.0, dear), (True, 5.0, {(0, 0): 1, (1, 1): 1})):
        model = small_model(workloads, offers, fixed=False)
        for index, regions in ((0, ("big", "dear")), (1, ("big", "cheap"))):
            for region in regions:
                model.add(index, column_in(model, index, region))
        expected = {(index, column_in(model, index, ("big", "dear", "big", "cheap")[2 * index + column])): count
                    for (index, column), count in nodes.items()}
        incumbent = {(index, column_in(model, index, ("big", "dear", "big", "cheap")[2 * index + column])): count
                     for (index, column), count in dear.items()}
        model.fix_served([1.0, 2.0])
        model.objective_cost()
        solver = optimizer._Solver(PlanOptions(), len(workloads))
        chosen, result = optimizer._cost_stage(solver, model, incumbent, optimizer.COST_PRICING_BUDGET, short)
        assert chosen == expected and optimizer._score(model, chosen)[1] == pytest.approx(cost)
        assert solver.lp_exact and solver.lp_bound <= cost + 1e-9  # the LP of the service the plan keeps
        assert result is not None and result.objective == pytest.approx(cost)
        served = optimizer._covered(model, chosen)
        assert min(served[0], 2) / 2 + min(served[1], 2) / 2 == pytest.approx(1.5)


def test_a_model_its_cost_column_generation_makes_large_is_improved_piecewise():
    # Whether the cost stage solves one MIP or searches neighbourhoods depends on the columns there
    # are once its LP has priced them, not on those before.
    workloads, offers = contested_fleet()
    generate, sizes = optimizer._Solver.generate_columns, []

    def recorded(self, model, budget, gap=0.0):
        result = generate(self, model, budget, gap)
        sizes.append(len(model.x))
        return result

    with mock.patch.object(optimizer._Solver, "generate_columns", recorded):
        alone = plan(workloads, offers, options=PlanOptions(explain=False))
    assert "cost-mip" in alone.solver.stages and sizes[1] > sizes[0]  # the cost LP added columns
    with mock.patch.object(optimizer, "LNS_ABOVE_COLUMNS", sizes[0]):
        searched = plan(workloads, offers, options=PlanOptions(explain=False))
    assert "cost-lns" in searched.solver.stages and "cost-mip" not in searched.solver.stages
    check_feasible(searched, workloads, offers)


def test_where_the_cost_mip_of_a_small_model_stalls_a_neighbourhood_search_improves_its_plan():
    workloads, offers = contested_fleet()
    mip = optimizer._Solver.mip

    def stalled(self, model, hint, *args, **kwargs):  # the whole fleet's cost MIP finds nothing
        whole = model.costed and len(model.workloads) == len(workloads)
        return None if whole else mip(self, model, hint, *args, **kwargs)

    with mock.patch.object(optimizer._Solver, "mip", stalled):
        searched = plan(workloads, offers, options=PlanOptions(explain=False))
        with mock.patch.object(optimizer, "_improve", lambda solver, model, lp, assignment: assignment):
            rounded = plan(workloads, offers, options=PlanOptions(explain=False))
    assert searched.solver.stages[-1] == "cost-lns" and searched.solver.status == "feasible"
    check_feasible(searched, workloads, offers)
    assert searched.solver.objective < rounded.solver.objective
    assert searched.solver.lp_bound <= searched.solver.objective + 1e-6
