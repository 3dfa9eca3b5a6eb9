"""Python API for notebooks: current offers and cost comparisons as pandas DataFrames.

Same filters, validation and numbers as the CLI (``gpu-supply offers`` / ``compare``); filters
take a string, a comma-separated string or a list. ``db`` defaults to ``GPU_SUPPLY_DB`` or the
user's store, which is seeded from the embedded snapshot on first use.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from gpu_supply import settings
from gpu_supply.offer import Offer
from pricing.comparison import compare as compare_offers
from pricing.comparison import hours_for
from pricing.fx import FxTable, load_fx
from pricing.query import OfferQuery, OfferReader, build_query, offer_row

Names = str | Iterable[str] | None


def _names(value: Names) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _fx(fx: FxTable | Mapping[str, float] | None) -> FxTable:
    if isinstance(fx, FxTable):
        return fx
    return load_fx([f"{code}={rate}" for code, rate in (fx or {}).items()], settings.load_config())


def _select(db: str | None, fx: FxTable, **filters) -> tuple[OfferReader, OfferQuery]:
    reader = OfferReader(db or settings.database_url())
    query = build_query(
        gpus=_names(filters["gpu"]), min_gpu_memory=filters["min_gpu_memory"],
        gpus_per_node=[str(n) for n in _names(filters["gpus_per_node"])], providers=_names(filters["providers"]),
        regions=_names(filters["region"]), geos=_names(filters["geo"]), pricing=_names(filters["pricing"]),
        max_price=filters["max_price"], currency=filters["currency"],
        known_providers=reader.providers() if filters["providers"] else None, fx=fx)
    return reader, query


def offers_frame(gpu: Names = None, *, providers: Names = None, pricing: Names = None, region: Names = None,
                 geo: Names = None, min_gpu_memory: float | None = None, gpus_per_node: Names = None,
                 max_price: float | None = None, currency: str = "USD",
                 fx: FxTable | Mapping[str, float] | None = None, db: str | None = None) -> pd.DataFrame:
    """Current offers, cheapest per GPU-hour first, prices in ``currency``."""
    table = _fx(fx)
    reader, query = _select(db, table, gpu=gpu, providers=providers, pricing=pricing, region=region, geo=geo,
                            min_gpu_memory=min_gpu_memory, gpus_per_node=gpus_per_node, max_price=max_price,
                            currency=currency)
    frame = pd.DataFrame([offer_row(offer, query.currency, table) for offer in reader.offers(query, table)])
    return _sorted(frame)


def current_offers(gpu: Names = None, *, providers: Names = None, pricing: Names = None, region: Names = None,
                   geo: Names = None, min_gpu_memory: float | None = None,
                   db: str | None = None) -> list[Offer]:
    """Current offers as the optimizer takes them (``scheduler.plan(workloads, offers)``), native prices."""
    table = _fx(None)
    reader, query = _select(db, table, gpu=gpu, providers=providers, pricing=pricing, region=region, geo=geo,
                            min_gpu_memory=min_gpu_memory, gpus_per_node=None, max_price=None, currency="USD")
    return list(reader.offers(query, table))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame["observed_at"] = pd.to_datetime(frame["observed_at"], utc=True)
    return frame.sort_values(["price_per_gpu_hour", "provider", "region"], ignore_index=True)


def compare(gpu: Names, gpus: int = 8, *, hours: float | None = None, months: float | None = None,
            providers: Names = None, pricing: Names = None, region: Names = None, geo: Names = None,
            min_gpu_memory: float | None = None, gpus_per_node: Names = None, max_price: float | None = None,
            currency: str = "USD", fx: FxTable | Mapping[str, float] | None = None,
            db: str | None = None) -> pd.DataFrame:
    """Cheapest way to get ``gpus`` GPUs per provider x pricing model; winner first, shortfalls last."""
    table = _fx(fx)
    reader, query = _select(db, table, gpu=gpu, providers=providers, pricing=pricing, region=region, geo=geo,
                            min_gpu_memory=min_gpu_memory, gpus_per_node=gpus_per_node, max_price=max_price,
                            currency=currency)
    result = compare_offers(reader.offers(query, table), gpus, hours_for(hours, months), query.currency, table)
    return pd.DataFrame(result.rows())


def price_history(provider: str, region: str, instance_type: str, pricing: str = "on_demand", *,
                  zone: str | None = None, db: str | None = None) -> pd.DataFrame:
    """Every observation of the offers matching these fields (all GPU counts), oldest first."""
    from pricing.store import open_store

    store = open_store(db or settings.database_url())
    rows = [{**row, "key": key} for key in store.keys_like(provider, region, instance_type, pricing, zone)
            for row in store.history(key)]
    return pd.DataFrame(rows)


def price_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per GPU x provider x pricing model: regions offering it and the cheapest, median and dearest
    price per GPU-hour across them (from ``offers_frame``)."""
    if frame.empty:
        return frame
    grouped = frame.groupby(["gpu", "provider", "pricing"])["price_per_gpu_hour"]
    spread = grouped.agg(cheapest="min", median="median", dearest="max").join(
        frame.groupby(["gpu", "provider", "pricing"])["region"].nunique().rename("regions"))
    spread["dearest_over_cheapest"] = (spread["dearest"] / spread["cheapest"]).round(2)
    return spread.reset_index().sort_values(["gpu", "cheapest"], ignore_index=True)


def cheapest_sources(gpu_types: Names, gpus: int = 8, *, hours: float | None = None, months: float | None = None,
                     pricing: Names = None, currency: str = "USD", fx: FxTable | Mapping[str, float] | None = None,
                     db: str | None = None) -> pd.DataFrame:
    """The cheapest source of ``gpus`` GPUs of each type (``compare``'s winner per type)."""
    rows = []
    for gpu in _names(gpu_types):
        result = compare(gpu, gpus, hours=hours, months=months, pricing=pricing, currency=currency, fx=fx, db=db)
        winners = result[result["winner"]] if not result.empty else result
        if not winners.empty:
            rows.append(winners.iloc[0].drop(labels=["allocations", "winner", "winner_saving",
                                                     "winner_saving_pct"], errors="ignore"))
    return pd.DataFrame(rows).reset_index(drop=True)


def commitment_options(gpu: str, *, reserved_1y_discount: float | None = None, geo: Names = None,
                       currency: str = "USD", fx: FxTable | Mapping[str, float] | None = None,
                       db: str | None = None) -> pd.DataFrame:
    """Cheapest price per GPU-hour of ``gpu`` under each pricing model, with its break-even utilisation
    against the cheapest on-demand price. Where the store holds no 1-year reservation, one at
    ``reserved_1y_discount`` off on-demand is shown, marked ``assumed``."""
    from pricing.economics import break_even_utilisation

    frame = offers_frame(gpu, geo=geo, currency=currency, fx=fx, db=db)
    if frame.empty:
        return frame
    cheapest = frame.loc[frame.groupby("pricing")["price_per_gpu_hour"].idxmin()]
    rows = [{"pricing": row.pricing, "provider": row.provider, "region": row.region,
             "instance_type": row.instance_type, "price_per_gpu_hour": row.price_per_gpu_hour,
             "min_term_hours": row.min_term_hours, "assumed": False} for row in cheapest.itertuples()]
    on_demand = next((row["price_per_gpu_hour"] for row in rows if row["pricing"] == "on_demand"), None)
    if on_demand is None:
        return pd.DataFrame(rows)
    if reserved_1y_discount is not None and not any(row["pricing"] == "reserved_1y" for row in rows):
        base = next(row for row in rows if row["pricing"] == "on_demand")
        rows.append({**base, "pricing": "reserved_1y", "price_per_gpu_hour": round(on_demand * (1 - reserved_1y_discount), 4),
                     "min_term_hours": 8760.0, "assumed": True})
    result = pd.DataFrame(rows)
    result["break_even_utilisation"] = [round(break_even_utilisation(price, on_demand), 4)
                                        for price in result["price_per_gpu_hour"]]
    result["currency"] = currency.upper()
    return result.sort_values("price_per_gpu_hour", ignore_index=True)
