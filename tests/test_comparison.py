"""Comparison maths on hand-checkable cases, plus a brute-force check of the exact DP."""

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_offer
from gpu_supply.errors import UserError
from gpu_supply.offer import HOURS_PER_MONTH, PricingModel
from pricing.comparison import UNIFORM_FLEET_TOLERANCE, cheapest_allocation, compare, hours_for
from pricing.fx import FxTable

FX = FxTable()


def _costs(allocations):
    return sum(a.cost for a in allocations)


def test_whole_nodes_are_billed():
    (option,) = compare([make_offer(price_per_hour=16.0)], gpus=4, hours=10, currency="USD", fx=FX).options
    assert (option.nodes, option.gpus_provisioned, option.total_cost) == (1, 8, 160.0)
    assert option.list_price_per_gpu_hour == 2.0
    assert option.price_per_gpu_hour == 4.0  # paid for 8, asked for 4


def test_cheapest_mix_of_node_shapes():
    eight = make_offer(instance_type="big", gpu_count=8, price_per_hour=16.0)
    one = make_offer(instance_type="small", gpu_count=1, price_per_hour=2.5)
    allocations, short = cheapest_allocation([eight, one], 10, 1.0, "USD", FX)
    assert short is None
    assert {a.offer.instance_type: a.nodes for a in allocations} == {"big": 1, "small": 2}
    assert _costs(allocations) == pytest.approx(21.0)  # beats 2 x big (32) and 10 x small (25)


def test_known_capacity_is_respected():
    cheap = make_offer(region="a", price_per_hour=10.0, available_nodes=1)
    dear = make_offer(region="b", price_per_hour=20.0)
    allocations, _ = cheapest_allocation([cheap, dear], 16, 1.0, "USD", FX)
    assert {a.offer.region: a.nodes for a in allocations} == {"a": 1, "b": 1}


def test_short_supply_reports_the_maximum():
    (option,) = compare([make_offer(available_nodes=2)], gpus=24, hours=1, currency="USD", fx=FX).options
    assert not option.feasible and option.max_gpus == 16 and option.gpus_provisioned == 16


def test_minimum_terms_are_charged_in_full():
    contract = make_offer(provider="idc", pricing=PricingModel.CONTRACT, price_per_hour=10.0,
                          min_term_hours=3 * HOURS_PER_MONTH)
    on_demand = make_offer(price_per_hour=20.0)
    result = compare([contract, on_demand], gpus=8, hours=HOURS_PER_MONTH, currency="USD", fx=FX)
    by_provider = {o.provider: o for o in result.options}
    assert by_provider["idc"].total_cost == pytest.approx(10.0 * 3 * HOURS_PER_MONTH)
    assert by_provider["aws"].total_cost == pytest.approx(20.0 * HOURS_PER_MONTH)
    assert result.winner.provider == "aws"  # cheaper per hour, dearer for one month
    long = compare([contract, on_demand], gpus=8, hours=3 * HOURS_PER_MONTH, currency="USD", fx=FX)
    assert long.winner.provider == "idc"


def test_currency_conversion_and_winner_saving():
    cny = make_offer(provider="idc", pricing=PricingModel.CONTRACT, price_per_hour=71.0, currency="CNY")
    usd = make_offer(price_per_hour=15.0)
    result = compare([cny, usd], gpus=8, hours=1, currency="USD", fx=FX)
    assert [o.provider for o in result.options] == ["idc", "aws"]
    assert result.options[0].total_cost == pytest.approx(10.0)
    assert result.winner_saving(result.options[1]) == pytest.approx(5.0)
    in_cny = compare([cny, usd], gpus=8, hours=1, currency="CNY", fx=FX)
    assert in_cny.options[0].total_cost == pytest.approx(71.0)


def test_groups_are_provider_by_pricing_and_infeasible_come_last():
    offers = [make_offer(price_per_hour=50.0), make_offer(pricing=PricingModel.SPOT, price_per_hour=20.0),
              make_offer(provider="gcp", price_per_hour=40.0, available_nodes=0)]
    result = compare(offers, gpus=8, hours=1, currency="USD", fx=FX)
    assert [(o.provider, o.pricing, o.feasible) for o in result.options] == [
        ("aws", "spot", True), ("aws", "on_demand", True), ("gcp", "on_demand", False)]


@pytest.mark.parametrize("hours, months, expected", [(None, None, 720.0), (100.0, None, 100.0),
                                                     (None, 3.0, 3 * HOURS_PER_MONTH)])
def test_duration(hours, months, expected):
    assert hours_for(hours, months) == expected


@pytest.mark.parametrize("hours, months", [(10.0, 1.0), (-1.0, None), (None, 0.0)])
def test_bad_duration_is_a_clear_error(hours, months):
    with pytest.raises(UserError):
        hours_for(hours, months)


def test_zero_gpus_is_an_error():
    with pytest.raises(UserError, match="--gpus"):
        compare([make_offer()], gpus=0, hours=1, currency="USD", fx=FX)


def test_large_requests_stay_close_to_the_per_gpu_lower_bound():
    offers = [make_offer(region=f"r{i}", gpu_count=size, price_per_hour=size * (2.0 + i / 10), available_nodes=400)
              for i, size in enumerate([1, 2, 4, 8, 1, 8])]
    allocations, short = cheapest_allocation(offers, 5000, 1.0, "USD", FX)
    assert short is None and sum(a.gpus for a in allocations) >= 5000
    lower_bound = 2.0 * 400 + 2.1 * 800 + 2.2 * 1600 + 2.3 * 2200  # the cheapest 5,000 GPUs, fractionally
    assert lower_bound <= _costs(allocations) <= lower_bound * 1.01


offer_strategy = st.builds(
    lambda size, price, cap, term: make_offer(region=f"r{size}-{price}-{cap}-{term}", gpu_count=size,
                                              price_per_hour=float(price), available_nodes=cap,
                                              min_term_hours=float(term)),
    size=st.sampled_from([1, 2, 4, 8]), price=st.integers(1, 50), cap=st.one_of(st.none(), st.integers(0, 3)),
    term=st.sampled_from([0, 5, 20]))


@settings(max_examples=150, deadline=None)
@given(offers=st.lists(offer_strategy, min_size=1, max_size=4, unique_by=lambda o: o.key),
       gpus=st.integers(1, 12), hours=st.sampled_from([1.0, 10.0]))
def test_dp_matches_brute_force(offers, gpus, hours):
    allocations, short = cheapest_allocation(offers, gpus, hours, "USD", FX)
    node_costs = [o.price_per_hour * max(hours, o.min_term_hours) for o in offers]
    limits = [o.available_nodes if o.available_nodes is not None else math.ceil(gpus / o.gpu_count) for o in offers]
    best = math.inf
    for counts in itertools.product(*(range(limit + 1) for limit in limits)):
        if sum(c * o.gpu_count for c, o in zip(counts, offers)) >= gpus:
            best = min(best, sum(c * cost for c, cost in zip(counts, node_costs)))
    if math.isinf(best):
        assert short is not None and short < gpus
    else:
        assert short is None
        assert best - 1e-6 <= _costs(allocations) <= best * (1 + UNIFORM_FLEET_TOLERANCE) + 1e-6
        assert sum(a.gpus for a in allocations) >= gpus
        for allocation in allocations:
            assert allocation.offer.available_nodes is None or allocation.nodes <= allocation.offer.available_nodes


def test_equal_cost_prefers_fewer_nodes():
    one_gpu = make_offer(instance_type="p5.4xlarge", gpu_count=1, price_per_hour=6.88)
    eight_gpu = make_offer(instance_type="p5.48xlarge", gpu_count=8, price_per_hour=55.04)
    allocations, _ = cheapest_allocation([one_gpu, eight_gpu], 8, 1.0, "USD", FX)
    assert [(a.offer.instance_type, a.nodes) for a in allocations] == [("p5.48xlarge", 1)]


def test_a_single_offer_wins_over_a_mix_that_saves_almost_nothing():
    small = make_offer(region="a", instance_type="a3-highgpu-1g", gpu_count=1, price_per_hour=10.0)
    large = make_offer(region="b", instance_type="a3-highgpu-8g", gpu_count=8, price_per_hour=80.04)
    allocations, _ = cheapest_allocation([small, large], 9, 1.0, "USD", FX)
    assert [(a.offer.instance_type, a.nodes) for a in allocations] == [("a3-highgpu-1g", 9)]  # 90.00 vs 90.04 mix
    dear_large = make_offer(region="b", instance_type="a3-highgpu-8g", gpu_count=8, price_per_hour=72.0)
    allocations, _ = cheapest_allocation([small, dear_large], 9, 1.0, "USD", FX)
    assert sorted((a.offer.instance_type, a.nodes) for a in allocations) == [("a3-highgpu-1g", 1),
                                                                             ("a3-highgpu-8g", 1)]  # 82 vs 90
