"""The offer store: offers and their append-only price history in any SQLAlchemy database.

Tables (sqlmodel): ``offer`` (what is sold: identity and shape), ``price_observation`` (what it
cost and how many nodes were available, when, from which source; a NULL price records that the
offer was withdrawn), ``catalog_import`` (one row per import, with its report) and
``refresh_status`` (per supplier region or feed: last success, and the error while it is stale).
The current price of an offer is its latest observation.

Every import runs in one transaction: an import that fails half-way leaves the previous data
exactly as it was. The first use of a store seeds it from the embedded snapshot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import Index, bindparam, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, create_engine

from gpu_supply.offer import Offer, as_utc, utcnow
from pricing.query import Scope, in_scope
from pricing.snapshot import Snapshot, load_snapshot


class OfferRecord(SQLModel, table=True):
    __tablename__ = "offer"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True)
    provider: str = Field(index=True)
    region: str
    zone: str | None = None
    instance_type: str
    gpu: str = Field(index=True)
    gpu_count: int
    gpu_memory_gb: float
    vcpus: float | None = None
    ram_gb: float | None = None
    interconnect: str | None = None
    pricing: str
    currency: str
    min_term_hours: float = 0.0
    lead_time_days: int | None = None
    committed: bool = False
    first_seen: datetime


class CatalogImport(SQLModel, table=True):
    __tablename__ = "catalog_import"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(index=True)
    kind: str
    imported_at: datetime
    data_date: str | None = None
    offers: int = 0
    report: str = "{}"  # JSON: what the importer read, skipped and fixed


class RefreshStatus(SQLModel, table=True):
    """The latest refresh of one unit of a supplier (a cloud region, an IDC feed): when it last
    succeeded and, while its latest attempt failed, the error (its offers are then stale)."""

    __tablename__ = "refresh_status"

    provider: str = Field(primary_key=True)
    unit: str = Field(primary_key=True)  # region name, or the IDC feed's location
    region: str | None = None  # the offers it speaks for: this region...
    source: str | None = None  # ...or this offer source
    refreshed_at: datetime | None = None
    attempted_at: datetime
    error: str | None = None


class PriceObservation(SQLModel, table=True):
    __tablename__ = "price_observation"
    __table_args__ = (Index("ix_observation_latest", "offer_id", "observed_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    offer_id: int = Field(foreign_key="offer.id")
    import_id: int = Field(foreign_key="catalog_import.id")
    observed_at: datetime
    price_per_hour: float | None = None  # None: withdrawn
    available_nodes: int | None = None
    source: str


_DESCRIPTIVE = ("region", "zone", "instance_type", "gpu_memory_gb", "vcpus", "ram_gb", "interconnect", "currency",
                "min_term_hours", "lead_time_days", "committed")




@dataclass(frozen=True)
class UnitOutcome:
    """A refresh unit's result, recorded in ``refresh_status`` with the import."""

    provider: str
    unit: str
    scopes: tuple[Scope, ...]
    error: str | None = None


@dataclass(frozen=True)
class ImportSummary:
    import_id: int
    source: str
    offers: int
    new: int
    changed: int
    unchanged: int
    withdrawn: int
    by_scope: dict | None = None  # Scope -> {"offers", "new", "changed", "withdrawn"} when scopes were given


class Store:
    """Write side of the store (and the place that creates the schema)."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or create_engine(url)
        SQLModel.metadata.create_all(self.engine)

    def import_offers(self, offers: Iterable[Offer], source: str, kind: str, report: dict | None = None,
                      data_date: str | None = None, scopes: Iterable[Scope] | None = None,
                      outcomes: Iterable[UnitOutcome] = (),
                      protected: Iterable[tuple[str, str, str, str]] = ()) -> ImportSummary:
        """Record one observation per offer, in one transaction.

        An import speaks for ``scopes`` (default: the (provider, offer source) pairs it contains):
        current offers in those scopes but absent from this import are recorded as withdrawn;
        offers outside them (a region whose refresh failed) keep their last observation, and so do
        ``protected`` ones, (provider, region, instance type, pricing) whose rows were malformed.
        ``outcomes`` update ``refresh_status`` in the same transaction.
        """
        offers = list({offer.key: offer for offer in offers}.values())
        explicit = scopes is not None
        scopes = set(scopes) if explicit else {(offer.provider, None, offer.source) for offer in offers}
        protected = set(protected)
        observed_max = max((offer.observed_at for offer in offers), default=utcnow())
        with self.engine.begin() as connection:
            import_id = connection.execute(insert(CatalogImport).values(
                source=source, kind=kind, imported_at=utcnow(), data_date=data_date,
                offers=len(offers), report=json.dumps(report or {}))).inserted_primary_key[0]
            offer_table = OfferRecord.__table__
            keys = [offer.key for offer in offers]
            existing: dict[str, dict] = {}
            for chunk_start in range(0, len(keys), 500):
                chunk = keys[chunk_start:chunk_start + 500]
                for row in connection.execute(select(offer_table).where(offer_table.c.key.in_(chunk))).mappings():
                    existing[row["key"]] = dict(row)
            fresh = [offer for offer in offers if offer.key not in existing]
            if fresh:
                connection.execute(insert(offer_table), [
                    {"key": offer.key, "provider": offer.provider, "gpu": offer.gpu, "gpu_count": offer.gpu_count,
                     "pricing": offer.pricing.value, "first_seen": offer.observed_at,
                     **{name: getattr(offer, name) for name in _DESCRIPTIVE}} for offer in fresh])
                for chunk_start in range(0, len(fresh), 500):
                    chunk = [offer.key for offer in fresh[chunk_start:chunk_start + 500]]
                    for row in connection.execute(select(offer_table).where(offer_table.c.key.in_(chunk))).mappings():
                        existing[row["key"]] = dict(row)
            fresh_keys = {offer.key for offer in fresh}
            changed_shape = [{"record_id": existing[offer.key]["id"], **{name: getattr(offer, name) for name in _DESCRIPTIVE}}
                             for offer in offers if offer.key not in fresh_keys
                             and any(existing[offer.key][name] != getattr(offer, name) for name in _DESCRIPTIVE)]
            if changed_shape:
                connection.execute(update(offer_table).where(offer_table.c.id == bindparam("record_id"))
                                   .values({name: bindparam(name) for name in _DESCRIPTIVE}), changed_shape)
            current = self._current_by_offer_id(
                connection, providers={offer.provider for offer in offers} | {scope[0] for scope in scopes})
            observations = []
            counts = {scope: {"offers": 0, "new": 0, "changed": 0, "withdrawn": 0} for scope in scopes}
            new = changed = unchanged = 0
            for offer in offers:
                offer_id = existing[offer.key]["id"]
                previous = current.get(offer_id)
                if previous is None or previous["price_per_hour"] is None:
                    new += 1
                    kind_of_change = "new"
                elif (previous["price_per_hour"], previous["available_nodes"]) != (offer.price_per_hour,
                                                                                   offer.available_nodes):
                    changed += 1
                    kind_of_change = "changed"
                else:
                    unchanged += 1
                    kind_of_change = None
                for scope in scopes:
                    if in_scope(scope, offer.provider, offer.region, offer.source):
                        counts[scope]["offers"] += 1
                        if kind_of_change:
                            counts[scope][kind_of_change] += 1
                observations.append({"offer_id": offer_id, "import_id": import_id,
                                     "observed_at": offer.observed_at,
                                     "price_per_hour": offer.price_per_hour,
                                     "available_nodes": offer.available_nodes, "source": offer.source})
            seen_ids = {existing[offer.key]["id"] for offer in offers}
            withdrawn = [{"offer_id": offer_id, "import_id": import_id, "observed_at": observed_max,
                          "price_per_hour": None, "available_nodes": None, "source": row["source"]}
                         for offer_id, row in current.items()
                         if offer_id not in seen_ids and row["price_per_hour"] is not None
                         and any(in_scope(scope, row["provider"], row["region"], row["source"]) for scope in scopes)
                         and (row["provider"], row["region"], row["instance_type"], row["pricing"]) not in protected
                         and as_utc(row["observed_at"]) <= observed_max]
            for entry in withdrawn:
                row = current[entry["offer_id"]]
                for scope in scopes:
                    if in_scope(scope, row["provider"], row["region"], row["source"]):
                        counts[scope]["withdrawn"] += 1
            if observations or withdrawn:
                connection.execute(insert(PriceObservation), observations + withdrawn)
            self._record_outcomes(connection, outcomes)
        return ImportSummary(import_id, source, len(offers), new, changed, unchanged, len(withdrawn),
                             counts if explicit else None)

    @staticmethod
    def _record_outcomes(connection, outcomes: Iterable[UnitOutcome]) -> None:
        table = RefreshStatus.__table__
        now = utcnow()
        for outcome in outcomes:
            region = next((scope[1] for scope in outcome.scopes if scope[1]), None)
            source = next((scope[2] for scope in outcome.scopes if scope[2]), None)
            key = (table.c.provider == outcome.provider) & (table.c.unit == outcome.unit)
            previous = connection.execute(select(table.c.refreshed_at, table.c.region, table.c.source)
                                          .where(key)).first()
            if outcome.error is not None and previous is not None:  # a failure speaks for what last succeeded
                region, source = previous[1], previous[2]
            values = {"region": region, "source": source, "attempted_at": now, "error": outcome.error,
                      "refreshed_at": now if outcome.error is None else (previous[0] if previous else None)}
            if previous is None:
                connection.execute(insert(table).values(provider=outcome.provider, unit=outcome.unit, **values))
            else:
                connection.execute(update(table).where(key).values(**values))

    @staticmethod
    def _current_by_offer_id(connection, providers: set[str]) -> dict[int, dict]:
        """Latest observation of every offer of these providers."""
        observation = PriceObservation.__table__
        offer_table = OfferRecord.__table__
        latest = (select(observation.c.offer_id, func.max(observation.c.observed_at).label("observed_at"))
                  .group_by(observation.c.offer_id).subquery())
        rows = connection.execute(
            select(observation.c.offer_id, observation.c.id, observation.c.price_per_hour,
                   observation.c.available_nodes, observation.c.source, observation.c.observed_at,
                   offer_table.c.provider, offer_table.c.region, offer_table.c.instance_type,
                   offer_table.c.pricing)
            .join(latest, (latest.c.offer_id == observation.c.offer_id)
                  & (latest.c.observed_at == observation.c.observed_at))
            .join(offer_table, offer_table.c.id == observation.c.offer_id)
            .where(offer_table.c.provider.in_(sorted(providers)))).mappings()
        current: dict[int, dict] = {}
        for row in rows:  # ties on observed_at: the later row wins
            if row["offer_id"] not in current or row["id"] > current[row["offer_id"]]["id"]:
                current[row["offer_id"]] = dict(row)
        return current

    def import_snapshot(self, snapshot: Snapshot) -> ImportSummary | None:
        """Seed from a snapshot once; later calls with the same snapshot do nothing."""
        with self.engine.connect() as connection:
            done = connection.execute(select(func.count()).select_from(CatalogImport)
                                      .where(CatalogImport.source == snapshot.source_id)).scalar_one()
        if done:
            return None
        return self.import_offers(snapshot.offers, snapshot.source_id, kind="snapshot",
                                  report={"sources": snapshot.header["sources"]},
                                  data_date=snapshot.header["data_date"])

    def keys_like(self, provider: str, region: str, instance_type: str, pricing: str, zone: str | None) -> list[str]:
        """Keys of the offers with these fields (any zone when ``zone`` is None)."""
        offer_table = OfferRecord.__table__
        condition = ((offer_table.c.provider == provider) & (offer_table.c.region == region)
                     & (offer_table.c.instance_type == instance_type) & (offer_table.c.pricing == pricing))
        if zone is not None:
            condition &= offer_table.c.zone == zone
        with self.engine.connect() as connection:
            return list(connection.execute(select(offer_table.c.key).where(condition).order_by(offer_table.c.key))
                        .scalars())

    def history(self, key: str) -> list[dict]:
        """Every observation of one offer, oldest first."""
        observation = PriceObservation.__table__
        offer_table = OfferRecord.__table__
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(observation.c.observed_at, observation.c.price_per_hour, observation.c.available_nodes,
                       observation.c.source)
                .join(offer_table, offer_table.c.id == observation.c.offer_id)
                .where(offer_table.c.key == key).order_by(observation.c.observed_at, observation.c.id)).mappings()
            return [dict(row) for row in rows]


def open_store(url: str) -> Store:
    """A store with the schema in place and the embedded snapshot imported."""
    store = Store(url)
    store.import_snapshot(load_snapshot())
    return store
