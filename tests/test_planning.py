"""Planning API behind the notebooks: commit-vs-on-demand maths, token costs, monthly plans, what-if."""

import pytest

from conftest import fleet, make_offer, replicas
from gpu_supply.errors import UserError
from gpu_supply.offer import PricingModel
from pricing import api, economics
from pricing.fx import FxTable
from scheduler import planning
from scheduler.optimizer import PlanOptions



def test_break_even_is_the_price_ratio():
    assert economics.break_even_utilisation(1.3, 2.0) == pytest.approx(0.65)
    with pytest.raises(UserError, match="on_demand_per_gpu_hour"):
        economics.break_even_utilisation(1.0, 0.0)


def test_best_commit_by_hand():
    # Demand 10, 20, 30 GPUs over three months of 100 h; commit 1/h, on-demand 2/h (break-even 50 %).
    # Commit 0: 60 GPU-months on-demand = 12,000. Commit 10: 3,000 + (10+20) x 200 = 9,000.
    # Commit 20: 6,000 + 10 x 200 = 8,000 (best: the last committed GPU is busy 2 of 3 months > 50 %).
    # Commit 30: 9,000.
    best = economics.best_commit([10, 20, 30], 1.0, 2.0, 100)
    assert best.committed_gpus == 20 and best.total_cost == pytest.approx(8_000)
    assert best.utilisation == pytest.approx(50 / 60) and best.break_even == pytest.approx(0.5)
    assert economics.commit_cost([10, 20, 30], 30, 1.0, 2.0, 100).total_cost == pytest.approx(9_000)
    # Commitment dearer than on-demand: never commit.
    assert economics.best_commit([10, 20, 30], 2.5, 2.0, 100).committed_gpus == 0


def test_spend_by_strategy_sums_to_the_plans():
    rows = economics.spend_by_strategy([10, 20, 30], 2.0, {"idc": 1.0}, 100)
    totals = {}
    for row in rows:
        totals[row["strategy"]] = totals.get(row["strategy"], 0) + row["spend"]
    assert totals == {"on-demand only": pytest.approx(12_000), "idc: commit to peak": pytest.approx(9_000),
                      "idc: best commit + on-demand": pytest.approx(8_000)}


def test_bad_forecast_names_the_field():
    with pytest.raises(UserError, match="demand"):
        economics.best_commit([], 1.0, 2.0, 100)
    with pytest.raises(UserError, match="demand"):
        economics.best_commit([10, -1], 1.0, 2.0, 100)


def test_token_cost_is_price_times_gpus_over_tokens_per_hour():
    workloads = fleet({"name": "chat", "model": {"name": "llama-3-8b", "params_b": 8, "dtype": "bf16"},
                       "demand": {"tokens_per_s": 1000}, "hours": 1})
    offers = [make_offer(gpu="H100", gpu_count=8, price_per_hour=16.0),
              make_offer(region="us-west-2", gpu="H100", gpu_count=8, price_per_hour=24.0),
              make_offer(gpu="H100", gpu_count=8, price_per_hour=1.0, pricing=PricingModel.SPOT)]
    frame = planning.token_costs(workloads, offers)
    (row,) = frame.to_dict("records")
    assert row["gpu"] == "H100" and row["price_per_gpu_hour"] == pytest.approx(2.0)  # cheapest on-demand
    expected = 2.0 * row["tensor_parallel"] / (row["tokens_per_s_per_replica"] * 3600) * 1e6
    assert row["cost_per_million_tokens"] == pytest.approx(expected, rel=1e-3)


def test_monthly_plans_follow_the_growth():
    offers = [make_offer(instance_type="one", gpu_count=1, price_per_hour=1.0)]
    summary, placements = planning.monthly_plans(fleet(replicas("w", 10)), offers, growth=0.5, months=3)
    assert summary["gpus"].tolist() == [10, 15, 23]  # 10, 15, ceil(22.5)
    assert summary["spend"].tolist() == pytest.approx([7_300, 10_950, 16_790])  # 730 h a month at 1/h
    assert set(placements["month"]) == {1, 2, 3}
    with pytest.raises(UserError, match="months"):
        planning.monthly_plans(fleet(replicas("w", 1)), offers, growth=0.1, months=0)


def test_stress_scenarios_move_the_plan():
    offers = [make_offer(provider="aws", region="us-east-1", instance_type="a", gpu_count=1, price_per_hour=1.0),
              make_offer(provider="gcp", region="us-central1", instance_type="b", gpu_count=1, price_per_hour=1.5),
              make_offer(provider="aws", region="us-east-1", instance_type="a", gpu_count=1, price_per_hour=0.5,
                         pricing=PricingModel.SPOT),
              make_offer(provider="idc", region="cn-beijing", instance_type="c", gpu_count=1, price_per_hour=8.58,
                         currency="CNY", available_nodes=2)]  # 1.10 USD
    workloads = fleet(replicas("w", 4, spot="allowed"))
    result = planning.stress(workloads, offers, {
        "aws us-east-1 lost": planning.region_lost("aws", "us-east-1"),
        "spot x3": planning.spot_prices(3.0),
        "aws capacity halved": planning.capacity_scaled("aws", 0.5, assumed_nodes=4),
        "CNY +30%": planning.fx_moved("CNY", 1.3),
    }, fx=FxTable({"USD": 1.0, "CNY": 7.8}), options=PlanOptions(time_limit_s=5))
    costs = dict(zip(result.summary["scenario"], result.summary["total_cost"]))
    assert costs["base"] == pytest.approx(2.0)  # 4 spot nodes at 0.5
    assert costs["aws us-east-1 lost"] == pytest.approx(2 * 1.1 + 2 * 1.5)  # the 2 IDC nodes, then gcp
    assert costs["spot x3"] == pytest.approx(4.0)  # on-demand at 1.0 now beats spot at 1.5
    assert costs["aws capacity halved"] == pytest.approx(2 * 0.5 + 2 * 1.0)  # 2 nodes left of each aws offer
    assert costs["CNY +30%"] == pytest.approx(2.0)  # IDC now 0.85 USD, still dearer than spot: nothing moves
    moved = result.moves[result.moves["scenario"] == "spot x3"]
    assert set(zip(moved["pricing"], moved["nodes_before"], moved["nodes_after"])) == {("spot", 4, 0),
                                                                                         ("on_demand", 0, 4)}


def test_price_spread_and_commitment_options(seeded_db):
    spread = api.price_spread(api.offers_frame("H100", db=seeded_db))
    assert (spread["cheapest"] <= spread["median"]).all() and (spread["median"] <= spread["dearest"]).all()
    options = api.commitment_options("H100", reserved_1y_discount=0.35, db=seeded_db)
    by_pricing = options.set_index("pricing")
    assert by_pricing.loc["on_demand", "break_even_utilisation"] == pytest.approx(1.0)
    reserved = by_pricing.loc["reserved_1y"]
    assert bool(reserved["assumed"]) and reserved["break_even_utilisation"] == pytest.approx(0.65, abs=1e-3)
    sources = api.cheapest_sources(["H100", "L4"], gpus=8, months=1, db=seeded_db)
    assert sources["gpu"].tolist() == ["H100", "L4"] and (sources["gpus"] >= 8).all()
