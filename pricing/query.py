"""Reading current offers: the filter value object and the store's read path.

The read path is one SQL text run either through the stdlib ``sqlite3`` driver (SQLite files,
the default) or through SQLAlchemy (any other URL). Importing SQLAlchemy costs about 0.3 s,
more than the CLI's whole start-up budget, so read-only commands on the default store skip it;
the tables themselves are defined once, by the sqlmodel models in ``pricing.store``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpu_supply import gpus
from gpu_supply.errors import UserError
from gpu_supply.geo import GEOS
from gpu_supply.offer import Offer, PricingModel, as_utc
from pricing.fx import FxTable


@dataclass(frozen=True)
class OfferQuery:
    """Which offers a command looks at. Empty tuples mean "any"."""

    gpus: tuple[str, ...] = ()  # canonical names
    min_gpu_memory_gb: float | None = None
    gpus_per_node: tuple[int, ...] = ()
    providers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()  # exact names or prefixes
    geos: tuple[str, ...] = ()
    pricing: tuple[PricingModel, ...] = ()
    max_price_per_gpu_hour: float | None = None  # in `currency`
    currency: str = "USD"

    def matches(self, offer: Offer, fx: FxTable) -> bool:
        """Everything not already filtered in SQL."""
        if self.min_gpu_memory_gb is not None and offer.gpu_memory_gb < self.min_gpu_memory_gb:
            return False
        if self.gpus_per_node and offer.gpu_count not in self.gpus_per_node:
            return False
        if self.regions and not any(offer.region == region or offer.region.startswith(region)
                                    for region in self.regions):
            return False
        if self.geos and offer.geo not in self.geos:
            return False
        if self.max_price_per_gpu_hour is not None:
            if offer.price_per_gpu_hour_in(self.currency, fx) > self.max_price_per_gpu_hour:
                return False
        return True


def build_query(*, gpus: list[str] = (), min_gpu_memory: float | None = None, gpus_per_node: list = (),
                providers: list[str] = (), regions: list[str] = (), geos: list[str] = (), pricing: list[str] = (),
                max_price: float | None = None, currency: str = "USD", known_providers: list[str] | None = None,
                fx: FxTable | None = None) -> OfferQuery:
    """Validate user-given filters (names as typed) into an OfferQuery; errors name the option."""
    if min_gpu_memory is not None and min_gpu_memory < 0:
        raise UserError("--min-gpu-memory", f"must be >= 0, got {min_gpu_memory:g}", "e.g. --min-gpu-memory 80")
    if max_price is not None and max_price < 0:
        raise UserError("--max-price", f"must be >= 0, got {max_price:g}", "give a price per GPU-hour")
    per_node = []
    for value in gpus_per_node:
        if not str(value).strip().isdigit() or int(value) < 1:
            raise UserError("--gpus-per-node", f"{value!r} is not a positive whole number", "e.g. --gpus-per-node 8")
        per_node.append(int(value))
    names = [name.strip().lower() for name in providers]
    if known_providers is not None:
        unknown = [name for name in names if name not in known_providers]
        if unknown:
            raise UserError("--provider", f"unknown provider {', '.join(map(repr, unknown))}",
                            f"known: {', '.join(known_providers)}")
    code = currency.strip().upper()
    (fx or FxTable()).rate(code)  # an unknown currency fails here, with the fix
    return OfferQuery(
        gpus=tuple(dict.fromkeys(parse_gpu(name) for name in gpus)),
        min_gpu_memory_gb=min_gpu_memory,
        gpus_per_node=tuple(per_node),
        providers=tuple(names),
        regions=tuple(region.strip() for region in regions),
        geos=tuple(parse_geo(name) for name in geos),
        pricing=tuple(parse_pricing(name) for name in pricing),
        max_price_per_gpu_hour=max_price,
        currency=code,
    )


def offer_row(offer: Offer, currency: str, fx: FxTable) -> dict[str, object]:
    """An offer's row with prices in ``currency``; the supplier's own figure stays alongside."""
    return {**offer.as_row(), "price_per_hour": offer.price_per_hour_in(currency, fx),
            "price_per_gpu_hour": offer.price_per_gpu_hour_in(currency, fx), "currency": currency,
            "native_price_per_hour": offer.price_per_hour, "native_currency": offer.currency,
            "age_hours": round(age_of(offer).total_seconds() / 3600, 2)}


def age_of(offer: Offer, now: datetime | None = None) -> timedelta:
    return max(timedelta(0), (now or datetime.now(timezone.utc)) - offer.observed_at)


_AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_max_age(raw: str) -> timedelta:
    """``90m``, ``6h``, ``7d`` or ``2w``."""
    text = raw.strip().lower()
    number, unit = text[:-1], text[-1:]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _AGE_UNITS or value <= 0:
        raise UserError("--max-age", f"{raw!r} is not a duration", "write e.g. 90m, 6h, 7d or 2w")
    return timedelta(seconds=value * _AGE_UNITS[unit])


def within_max_age(offers: list[Offer], max_age: timedelta | None) -> tuple[list[Offer], int]:
    """Offers no older than ``max_age`` and how many were older; refuses when none is fresh enough."""
    if max_age is None or not offers:
        return offers, 0
    now = datetime.now(timezone.utc)
    fresh = [offer for offer in offers if age_of(offer, now) <= max_age]
    if not fresh:
        newest = min(age_of(offer, now) for offer in offers)
        raise UserError("--max-age", f"no matching offer is newer than {age_text(max_age)} "
                        f"(the newest is {age_text(newest)} old)", "run `gpu-supply refresh`, or raise --max-age")
    return fresh, len(offers) - len(fresh)


def age_text(age: timedelta) -> str:
    """An age as ops read it: 45m, 6h, 3d, 2w."""
    seconds = age.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0) / 60:.0f}m"



def parse_gpu(raw: str) -> str:
    """Canonical name for user input, or an error that suggests the closest known names."""
    canonical = gpus.resolve(raw)
    if canonical is None:
        close = gpus.suggest(raw)
        raise UserError("--gpu", f"unknown GPU {raw!r}",
                        f"did you mean {', '.join(close)}?" if close else "run `gpu-supply gpus` for the list")
    return canonical


def parse_geo(raw: str) -> str:
    geo = raw.strip().lower()
    if geo not in GEOS:
        raise UserError("--geo", f"unknown geo {raw!r}", f"use one of {', '.join(GEOS)}")
    return geo


def parse_pricing(raw: str) -> PricingModel:
    try:
        return PricingModel(raw.strip().lower().replace("-", "_"))
    except ValueError:
        raise UserError("--pricing", f"unknown pricing model {raw!r}",
                        f"use one of {', '.join(model.value for model in PricingModel)}") from None


# What an import or a refresh unit speaks for: (provider, region or None, offer source or None).
Scope = tuple[str, "str | None", "str | None"]


def in_scope(scope: Scope, provider: str, region: str, source: str) -> bool:
    return scope[0] == provider and scope[1] in (None, region) and scope[2] in (None, source)


_CURRENT_OFFERS_SQL = """
SELECT o.provider, o.region, o.zone, o.instance_type, o.gpu, o.gpu_count, o.gpu_memory_gb, o.vcpus, o.ram_gb,
       o.interconnect, o.pricing, p.price_per_hour, o.currency, o.min_term_hours, p.available_nodes,
       o.lead_time_days, o.committed, p.source, p.observed_at
FROM offer o JOIN price_observation p ON p.id = (
    SELECT q.id FROM price_observation q WHERE q.offer_id = o.id ORDER BY q.observed_at DESC, q.id DESC LIMIT 1)
WHERE p.price_per_hour IS NOT NULL
"""


def _sql_with_filters(query: OfferQuery) -> tuple[str, dict[str, object]]:
    sql, params = _CURRENT_OFFERS_SQL, {}
    for column, values in (("gpu", query.gpus), ("provider", query.providers),
                           ("pricing", tuple(model.value for model in query.pricing))):
        if values:
            names = [f"{column}_{index}" for index in range(len(values))]
            sql += f" AND o.{column} IN ({', '.join(':' + name for name in names)})"
            params.update(zip(names, values))
    return sql, params


def _as_utc(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return as_utc(moment)


def _to_offer(row) -> Offer:
    (provider, region, zone, instance_type, gpu, gpu_count, memory, vcpus, ram, interconnect, pricing, price,
     currency, min_term, available, lead_time, committed, source, observed_at) = row
    return Offer(provider=provider, region=region, zone=zone, instance_type=instance_type, gpu=gpu,
                 gpu_count=gpu_count, gpu_memory_gb=memory, vcpus=vcpus, ram_gb=ram, interconnect=interconnect,
                 pricing=PricingModel(pricing), price_per_hour=price, currency=currency, min_term_hours=min_term,
                 available_nodes=available, lead_time_days=lead_time, committed=bool(committed), source=source,
                 observed_at=_as_utc(observed_at))


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for in-memory or non-SQLite URLs."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix):].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


class OfferReader:
    """Current offers from the store at ``url``, seeding it from the embedded snapshot on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._path = sqlite_path(url)
        self.seeded = None  # the ImportSummary when this reader seeded the store
        if self._path is None or not self._is_seeded():
            from pricing.snapshot import load_snapshot
            from pricing.store import Store  # first use, or a server database: the full ORM

            self._store = Store(url)
            self.seeded = self._store.import_snapshot(load_snapshot())

    def _is_seeded(self) -> bool:
        from pricing.snapshot import embedded_snapshot_id

        try:
            rows = self._sqlite_rows("SELECT 1 FROM catalog_import WHERE source = :source LIMIT 1",
                                     {"source": embedded_snapshot_id()})
        except sqlite3.OperationalError:  # no file or no tables yet
            return False
        return bool(rows)

    def _sqlite_rows(self, sql: str, params: dict[str, object]) -> list[tuple]:
        if not self._path.exists():
            raise sqlite3.OperationalError("no database file yet")
        connection = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def _rows(self, sql: str, params: dict[str, object]) -> list[tuple]:
        if self._path is not None:
            return self._sqlite_rows(sql, params)
        from sqlalchemy import text

        with self._store.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]

    def offers(self, query: OfferQuery, fx: FxTable) -> list[Offer]:
        sql, params = _sql_with_filters(query)
        return [offer for offer in map(_to_offer, self._rows(sql, params)) if query.matches(offer, fx)]

    def imports(self) -> list[dict[str, object]]:
        """The import log, oldest first."""
        columns = ("source", "kind", "imported_at", "data_date", "offers")
        rows = self._rows(f"SELECT {', '.join(columns)} FROM catalog_import ORDER BY id", {})
        return [dict(zip(columns, row)) for row in rows]

    def stale_units(self) -> list[tuple[str, str | None, str | None, str]]:
        """(provider, region, source, error) of every refresh unit whose latest attempt failed."""
        try:
            rows = self._rows("SELECT provider, region, source, error FROM refresh_status WHERE error IS NOT NULL", {})
        except Exception:  # noqa: BLE001 - a store that was never refreshed has no such table yet
            return []
        return [tuple(row) for row in rows]

    def stale_reasons(self, offers: list[Offer]) -> dict[str, str]:
        """Offer key -> why, for offers whose last refresh failed (they keep their last good price)."""
        units = self.stale_units()
        return {offer.key: f"{provider} {region or source}: {error}" for offer in offers
                for provider, region, source, error in units
                if in_scope((provider, region, source), offer.provider, offer.region, offer.source)}

    def providers(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT DISTINCT provider FROM offer ORDER BY provider", {})]
