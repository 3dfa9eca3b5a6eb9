"""The placement optimizer on hand-checkable cases with known optima."""

import math
from dataclasses import replace

import pytest

from conftest import fleet, make_offer, replicas
from gpu_supply.errors import UserError
from gpu_supply.offer import HOURS_PER_MONTH, PricingModel
from scheduler.optimizer import PlanOptions, plan



def nodes_by(result):
    out = {}
    for placement in result.placements:
        out[(placement.workload, placement.region, placement.instance_type, placement.pricing)] = placement.nodes
    return out


def test_cheapest_mix_of_node_shapes():
    offers = [make_offer(region="r", instance_type="big", gpu_count=8, price_per_hour=8.0),
              make_offer(region="r", instance_type="small", gpu_count=1, price_per_hour=1.5)]
    result = plan(fleet(replicas("w", 10)), offers)
    assert nodes_by(result) == {("w", "r", "big", "on_demand"): 1, ("w", "r", "small", "on_demand"): 2}
    assert result.total_cost == pytest.approx(11.0)  # beats 2 x big (16) and 10 x small (15)
    assert result.solver.status == "optimal" and result.solver.lp_bound <= result.total_cost + 1e-6
    assert not result.unmet


def test_lp_bound_counts_a_node_needed_whole():
    """One node covers the demand at most once, so the LP cannot buy an eighth of the big node (1.0)
    where a small one (1.5) is what whole nodes can do: the bound is the optimum itself."""
    offers = [make_offer(region="r", instance_type="big", gpu_count=8, price_per_hour=8.0),
              make_offer(region="r", instance_type="small", gpu_count=1, price_per_hour=1.5)]
    result = plan(fleet(replicas("w", 1)), offers)
    assert nodes_by(result) == {("w", "r", "small", "on_demand"): 1}
    assert result.solver.lp_exact and result.solver.lp_bound == pytest.approx(1.5)


def test_lp_bound_counts_the_on_demand_share_in_whole_nodes():
    """Half of 2 replicas must be on demand, and the only on-demand node is 8 GPUs: whole nodes pay 8.
    Without the on-demand cut the LP would take a quarter of it beside spot nodes (2.8)."""
    offers = [make_offer(region="r", instance_type="od8", gpu_count=8, price_per_hour=8.0),
              make_offer(region="r", instance_type="spot1", gpu_count=1, price_per_hour=0.4,
                         pricing=PricingModel.SPOT)]
    result = plan(fleet(replicas("w", 2, spot="allowed", min_on_demand_share=0.5)), offers)
    assert nodes_by(result) == {("w", "r", "od8", "on_demand"): 1}
    assert result.solver.lp_exact and result.solver.lp_bound == pytest.approx(8.0)


def test_short_supply_serves_priority_first_and_names_the_binding_capacity():
    offers = [make_offer(instance_type="only", gpu_count=1, price_per_hour=1.0, available_nodes=4)]
    result = plan(fleet(replicas("high", 3, priority=10), replicas("low", 3, priority=1)), offers)
    served = {p.workload: p.nodes for p in result.placements}
    assert served == {"high": 3, "low": 1}
    (unmet,) = result.unmet
    assert unmet.workload == "low" and unmet.missing_replicas == pytest.approx(2)
    assert "capacity of aws/us-east-1/only/on_demand (4 nodes; taken by high 3)" in unmet.reason
    assert result.solver.stages[:2] == ("pricing-lp", "serve-mip")


def test_capacity_is_shared_across_workloads():
    offers = [make_offer(region="cheap", gpu_count=1, price_per_hour=1.0, available_nodes=5),
              make_offer(region="dear", gpu_count=1, price_per_hour=2.0)]
    result = plan(fleet(replicas("a", 4), replicas("b", 4)), offers)
    used = {}
    for p in result.placements:
        used[p.region] = used.get(p.region, 0) + p.nodes
    assert used == {"cheap": 5, "dear": 3}
    assert result.total_cost == pytest.approx(5 * 1.0 + 3 * 2.0)


def test_spread_needs_each_provider_to_carry_its_share():
    offers = [make_offer(provider="aws", gpu_count=1, price_per_hour=1.0),
              make_offer(provider="gcp", region="us-central1", gpu_count=1, price_per_hour=3.0)]
    result = plan(fleet(replicas("w", 4, spread={"min_providers": 2})), offers)
    by_provider = {p.provider: p.nodes for p in result.placements}
    assert by_provider == {"aws": 2, "gcp": 2}


def test_residency_by_geo_and_by_region_name():
    offers = [make_offer(region="us-east-1", gpu_count=1, price_per_hour=1.0),
              make_offer(region="eu-west-1", gpu_count=1, price_per_hour=2.0),
              make_offer(region="eu-central-1", gpu_count=1, price_per_hour=3.0)]
    eu = plan(fleet(replicas("w", 2, regions={"geo": ["eu"]})), offers)
    assert {p.region for p in eu.placements} == {"eu-west-1"}
    named = plan(fleet(replicas("w", 2, regions={"names": ["eu-central-1"]})), offers)
    assert {p.region for p in named.placements} == {"eu-central-1"}


def test_minimum_terms_are_charged_in_full():
    contract = make_offer(provider="idc", region="cn-shanghai", pricing=PricingModel.CONTRACT, gpu_count=1,
                          price_per_hour=1.0, min_term_hours=12 * HOURS_PER_MONTH)
    cloud = make_offer(region="us-east-1", gpu_count=1, price_per_hour=2.0)
    short = plan(fleet({**replicas("w", 1), "hours": 720}), [contract, cloud])
    assert [p.provider for p in short.placements] == ["aws"]
    long = plan(fleet({**replicas("w", 1), "hours": 12 * HOURS_PER_MONTH}), [contract, cloud])
    assert [p.provider for p in long.placements] == ["idc"]
    assert long.total_cost == pytest.approx(12 * HOURS_PER_MONTH)


def test_committed_capacity_is_used_first_at_no_cost():
    held = make_offer(provider="idc", region="cn-beijing", pricing=PricingModel.CONTRACT, gpu_count=1,
                      price_per_hour=5.0, available_nodes=2, committed=True)
    market = make_offer(gpu_count=1, price_per_hour=1.0)
    result = plan(fleet(replicas("w", 3)), [held, market])
    assert nodes_by(result) == {("w", "cn-beijing", "p5.48xlarge", "contract"): 2, ("w", "us-east-1", "p5.48xlarge", "on_demand"): 1}
    assert result.total_cost == pytest.approx(1.0)
    assert any(p.committed and p.cost_per_hour == 0 for p in result.placements)


def test_spot_policy_and_on_demand_share():
    spot = make_offer(pricing=PricingModel.SPOT, gpu_count=1, price_per_hour=0.5)
    on_demand = make_offer(gpu_count=1, price_per_hour=2.0)
    never = plan(fleet(replicas("w", 4, spot="never")), [spot, on_demand])
    assert {p.pricing for p in never.placements} == {"on_demand"}
    half = plan(fleet(replicas("w", 4, min_on_demand_share=0.5)), [spot, on_demand])
    assert {p.pricing: p.nodes for p in half.placements} == {"spot": 2, "on_demand": 2}
    free = plan(fleet(replicas("w", 4)), [spot, on_demand])
    assert {p.pricing: p.nodes for p in free.placements} == {"spot": 4}


def test_gpu_policy_and_memory():
    offers = [make_offer(gpu="L4", gpu_memory_gb=24, gpu_count=1, price_per_hour=0.5, instance_type="g6"),
              make_offer(gpu="H100", gpu_count=1, price_per_hour=4.0, instance_type="p5")]
    assert {p.gpu for p in plan(fleet(replicas("w", 1, gpus={"deny": ["L4"]})), offers).placements} == {"H100"}
    assert {p.gpu for p in plan(fleet(replicas("w", 1, gpus={"min_memory_gb": 40})), offers).placements} == {"H100"}
    assert {p.gpu for p in plan(fleet(replicas("w", 1, gpus={"allow": ["l4"]})), offers).placements} == {"L4"}


def test_no_supply_reason_names_the_filter():
    result = plan(fleet(replicas("w", 1, regions={"geo": ["africa"]})), [make_offer(gpu_count=1)])
    (unmet,) = result.unmet
    assert "residency" in unmet.reason and not result.placements


def test_token_demand_uses_the_throughput_model():
    offers = [make_offer(gpu="H100", gpu_count=8, price_per_hour=40.0)]
    workload = {"name": "chat", "model": {"name": "llama-3-8b", "params_b": 8}, "hours": 1,
                "demand": {"tokens_per_s": 100000, "input_tokens": 512, "output_tokens": 256}, "slo": {"tpot_ms": 50}}
    result = plan(fleet(workload), offers)
    (placement,) = result.placements
    per_node = placement.tokens_per_s / placement.nodes
    assert placement.replicas == 8 * placement.nodes and placement.tensor_parallel == 1
    assert placement.tokens_per_s >= 100000 and (placement.nodes - 1) * per_node < 100000


def test_model_that_needs_more_gpus_than_a_node_has_is_not_placed():
    offers = [make_offer(gpu="L4", gpu_memory_gb=24, gpu_count=8, price_per_hour=8.0)]
    workload = {"name": "big", "model": {"name": "llama-405b", "params_b": 405}, "demand": {"tokens_per_s": 1000}}
    (unmet,) = plan(fleet(workload), offers).unmet
    assert "model fit" in unmet.reason


def test_plans_are_deterministic_and_warm_start_keeps_them():
    offers = [make_offer(region=f"r{i}", gpu_count=1, price_per_hour=1.0) for i in range(4)]
    first = plan(fleet(replicas("w", 3)), offers)
    again = plan(fleet(replicas("w", 3)), offers, previous=first)
    assert first.assignment == again.assignment == plan(fleet(replicas("w", 3)), offers).assignment


def test_warm_start_from_a_plan_whose_supply_has_shrunk_keeps_capacity():
    cheap = make_offer(instance_type="cheap", gpu_count=1, price_per_hour=1.0)
    dear = make_offer(instance_type="dear", gpu_count=1, price_per_hour=2.0)
    first = plan(fleet(replicas("w", 4)), [cheap, dear])
    shrunk = replace(cheap, available_nodes=1)
    again = plan(fleet(replicas("w", 4)), [shrunk, dear], previous=first)
    assert nodes_by(again) == {("w", "us-east-1", "cheap", "on_demand"): 1, ("w", "us-east-1", "dear", "on_demand"): 3}


def test_explanations_name_rejections_and_single_type_saving():
    offers = [make_offer(gpu="L4", gpu_memory_gb=24, instance_type="g6", gpu_count=1, price_per_hour=1.0,
                         available_nodes=1),
              make_offer(gpu="A10G", gpu_memory_gb=24, instance_type="g5", gpu_count=1, price_per_hour=1.2),
              make_offer(gpu="T4", gpu_memory_gb=16, instance_type="g4", gpu_count=1, price_per_hour=0.1,
                         pricing=PricingModel.SPOT)]
    result = plan(fleet(replicas("a", 1, priority=9), replicas("b", 3, spot="never")), offers)
    b = next(e for e in result.explanations if e.workload == "b")
    assert b.cheapest_rejected == "aws/us-east-1/g4/spot" and b.rejected_because == "excluded by spot policy"
    a = next(e for e in result.explanations if e.workload == "a")
    assert a.single_type_gpu == "T4" and a.saving_vs_single_type == pytest.approx(0.0)
    # b mixes the one L4 (1.0) with two A10G (2.4): 0.2 cheaper than the best single type (3 x A10G)
    assert b.single_type_gpu == "A10G" and b.single_type_cost == pytest.approx(3.6)
    assert b.saving_vs_single_type == pytest.approx(0.2)


def test_solver_report_and_json_contract():
    result = plan(fleet(replicas("w", 2)), [make_offer(gpu_count=1, price_per_hour=1.0)],
                  options=PlanOptions(solver="scip"))
    document = result.to_dict()
    assert set(document) >= {"placements", "unmet", "total_cost_per_hour", "total_cost", "solver"}
    assert set(document["solver"]) >= {"status", "objective", "bound", "gap", "seconds", "lp_bound"}
    assert set(document["placements"][0]) >= {"workload", "provider", "region", "instance_type", "gpu", "pricing",
                                              "nodes", "replicas", "tokens_per_s", "cost_per_hour"}
    assert list(result.to_frame()["nodes"]) == [2]


def test_unknown_solver_is_a_user_error():
    with pytest.raises(UserError, match="--solver"):
        plan(fleet(replicas("w", 1)), [make_offer()], options=PlanOptions(solver="gurobi"))


def test_unknown_capacity_assumption_is_overridable():
    offers = [make_offer(region="cheap", gpu_count=1, price_per_hour=1.0),
              make_offer(region="dear", gpu_count=1, price_per_hour=2.0, available_nodes=10)]
    capped = plan(fleet(replicas("w", 4)), offers, options=PlanOptions(unknown_capacity=1))
    assert {p.region: p.nodes for p in capped.placements} == {"cheap": 1, "dear": 3}
    assert math.isclose(plan(fleet(replicas("w", 4)), offers).total_cost, 4.0)


def test_greedy_baseline_assignments_are_feasible_for_the_model():
    from pricing.fx import FxTable
    from scheduler.baselines import greedy_assignment
    from scheduler.optimizer import _Model
    from scheduler.supply import ColumnBuilder, SupplyTable
    from scheduler.throughput import ThroughputModel

    offers = [make_offer(provider="aws", gpu_count=1, price_per_hour=1.0, pricing=PricingModel.SPOT),
              make_offer(provider="aws", gpu_count=1, price_per_hour=2.0, available_nodes=1),
              make_offer(provider="gcp", region="us-central1", gpu_count=1, price_per_hour=3.0, available_nodes=1)]
    workloads = fleet(replicas("share", 4, min_on_demand_share=0.5), replicas("spread", 4, spread={"min_providers": 2}))
    table = SupplyTable(offers, FxTable(), "USD", None)
    builder = ColumnBuilder(table, ThroughputModel())
    columns = [builder.columns(index, workload) for index, workload in enumerate(workloads)]
    assignment, outcomes = greedy_assignment(workloads, columns, table)
    model = _Model(workloads, table, columns, [4.0, 4.0])
    assert model.satisfies(assignment)
    assert outcomes[0][1] == 4  # two on-demand nodes (aws, gcp) let two spot nodes in at share 0.5
    assert outcomes[1] == (0.0, 0.0)  # gcp is then full: the spread workload gets nothing rather than half
