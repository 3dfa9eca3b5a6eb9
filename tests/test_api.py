"""The notebook API returns the CLI's numbers as DataFrames."""

import pandas as pd
import pytest

import pricing
from gpu_supply.errors import UserError
from pricing.store import open_store
from conftest import make_offer


def test_offers_frame_filters_and_sorts(seeded_db):
    frame = pricing.offers_frame(gpu="H100", geo=["eu", "us"], pricing="on_demand")
    assert isinstance(frame, pd.DataFrame) and len(frame) > 10
    assert set(frame["gpu"]) == {"H100"} and set(frame["geo"]) <= {"eu", "us"}
    assert frame["price_per_gpu_hour"].is_monotonic_increasing
    assert str(frame["observed_at"].dtype).startswith("datetime64")


def test_offers_frame_converts_currency(seeded_db):
    usd = pricing.offers_frame(providers="idc", currency="USD", fx={"CNY": 7.0})
    row = usd[(usd["zone"] == "sh-pudong-1") & (usd["gpu"] == "H100")].iloc[0]
    assert row["price_per_hour"] == pytest.approx(row["native_price_per_hour"] / 7.0)


def test_compare_frame_matches_the_cli_contract(seeded_db):
    frame = pricing.compare("H100", gpus=16, months=1, geo="cn")
    assert list(frame["provider"]) and frame.iloc[0]["winner"]
    assert {"nodes", "total_cost", "price_per_gpu_hour", "winner_saving"} <= set(frame.columns)


def test_api_errors_are_user_errors(seeded_db):
    with pytest.raises(UserError, match="did you mean"):
        pricing.offers_frame(gpu="H1OO")
    with pytest.raises(UserError, match="--provider"):
        pricing.compare("H100", providers="awz")


def test_price_history(seeded_db):
    store = open_store(seeded_db)
    offer = make_offer(provider="testcloud", zone="z1", price_per_hour=9.0)
    store.import_offers([offer], "feed", "test")
    store.import_offers([make_offer(provider="testcloud", zone="z1", price_per_hour=8.0,
                                    observed_at=pd.Timestamp("2026-11-02", tz="UTC").to_pydatetime())], "feed", "test")
    history = pricing.price_history("testcloud", "us-east-1", "p5.48xlarge")
    assert list(history["price_per_hour"]) == [9.0, 8.0]


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        pricing.nothing_here  # noqa: B018
