from datetime import datetime

import pytest

from conftest import make_offer
from gpu_supply.offer import HOURS_PER_MONTH, PricingModel


def test_derived_price_per_gpu_hour():
    offer = make_offer(price_per_hour=55.04, gpu_count=8)
    assert offer.price_per_gpu_hour == pytest.approx(6.88)


def test_key_separates_what_is_sold():
    base = make_offer()
    assert base.key != make_offer(pricing=PricingModel.SPOT).key
    assert base.key != make_offer(zone="use1-az2").key
    assert base.key != make_offer(gpu_count=4).key
    assert base.key == make_offer(price_per_hour=1.0).key  # a new price is a new observation, not a new offer


def test_geo_is_derived_from_region():
    assert make_offer(region="europe-west4").geo == "eu"


def test_naive_time_is_taken_as_utc():
    assert make_offer(observed_at=datetime(2026, 1, 1)).observed_at.tzinfo is not None


def test_pricing_accepts_plain_strings():
    assert make_offer(pricing="spot").pricing is PricingModel.SPOT


@pytest.mark.parametrize("field, value", [("gpu_count", 0), ("price_per_hour", -1.0), ("available_nodes", -1),
                                          ("min_term_hours", -5.0)])
def test_impossible_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        make_offer(**{field: value})


def test_month_is_a_twelfth_of_a_year():
    assert HOURS_PER_MONTH * 12 == 8760


def test_row_carries_the_json_contract():
    row = make_offer(available_nodes=3).as_row()
    for column in ("provider", "region", "instance_type", "gpu", "gpu_count", "pricing", "price_per_hour",
                   "price_per_gpu_hour", "currency", "available"):
        assert column in row
    assert row["available"] == 3 and row["pricing"] == "on_demand"


def test_price_in_another_currency():
    from pricing.fx import FxTable

    offer = make_offer(price_per_hour=71.0, gpu_count=8, currency="CNY")
    assert offer.price_per_hour_in("USD", FxTable()) == pytest.approx(10.0)
    assert offer.price_per_gpu_hour_in("USD", FxTable()) == pytest.approx(1.25)
    assert offer.price_per_hour_in("CNY", FxTable()) == 71.0
