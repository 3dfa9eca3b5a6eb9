"""Store: seeding, append-only history, withdrawal, transactional rollback, and both read paths."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from conftest import make_offer
from pricing.fx import FxTable
from pricing.query import OfferQuery, OfferReader
from pricing.snapshot import load_snapshot
from pricing.store import CatalogImport, OfferRecord, PriceObservation, Store, open_store

T1 = datetime(2026, 11, 1, tzinfo=timezone.utc)
T2 = datetime(2026, 11, 8, tzinfo=timezone.utc)


def _counts(store: Store) -> tuple[int, int, int]:
    with store.engine.connect() as connection:
        return tuple(connection.execute(select(func.count()).select_from(table)).scalar_one()
                     for table in (OfferRecord, PriceObservation, CatalogImport))


def _offer(**overrides):
    """Offers of a provider the snapshot does not have, so these tests see only their own."""
    return make_offer(**{"provider": "testcloud", **overrides})


def _current(url: str) -> dict[str, float]:
    query = OfferQuery(providers=("testcloud",))
    return {o.key: o.price_per_hour for o in OfferReader(url).offers(query, FxTable())}


def test_first_use_seeds_from_the_snapshot_once(empty_db):
    store = open_store(empty_db)
    snapshot = load_snapshot()
    assert _counts(store)[0] == len(snapshot.offers)
    open_store(empty_db)
    assert [row["kind"] for row in OfferReader(empty_db).imports()] == ["snapshot"]


def test_reader_seeds_an_empty_store(empty_db):
    reader = OfferReader(empty_db)
    assert reader.seeded is not None and reader.seeded.new == len(load_snapshot().offers)
    assert OfferReader(empty_db).seeded is None


def test_new_prices_append_history_and_become_current(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = open_store(url)
    first = store.import_offers([_offer(price_per_hour=80.0, observed_at=T1)], "feed", "test")
    second = store.import_offers([_offer(price_per_hour=72.0, observed_at=T2)], "feed", "test")
    third = store.import_offers([_offer(price_per_hour=72.0, observed_at=T2)], "feed", "test")
    assert (first.new, second.changed, third.unchanged) == (1, 1, 1)
    history = store.history(_offer().key)
    assert [row["price_per_hour"] for row in history] == [80.0, 72.0, 72.0]
    assert _current(url) == {_offer().key: 72.0}


def test_older_data_never_overrides_newer(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = open_store(url)
    store.import_offers([_offer(price_per_hour=72.0, observed_at=T2)], "live", "test")
    store.import_offers([_offer(price_per_hour=80.0, observed_at=T1)], "old-catalog", "test")
    assert _current(url) == {_offer().key: 72.0}


def test_offers_missing_from_a_later_import_of_the_same_source_are_withdrawn(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = open_store(url)
    kept, dropped = _offer(observed_at=T1), _offer(region="us-west-2", observed_at=T1)
    other_source = _offer(region="eu-west-1", observed_at=T1, source="other-feed")
    store.import_offers([kept, dropped, other_source], "feeds", "test")
    summary = store.import_offers([_offer(observed_at=T2)], "feed", "test")
    assert summary.withdrawn == 1
    assert set(_current(url)) == {kept.key, other_source.key}
    assert store.history(dropped.key)[-1]["price_per_hour"] is None


def test_failed_import_leaves_previous_data_intact(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(url)
    store.import_offers([_offer(observed_at=T1)], "feed", "test")
    before = _counts(store)

    def explode(*args, **kwargs):
        raise RuntimeError("connection lost mid-import")

    monkeypatch.setattr(Store, "_current_by_offer_id", staticmethod(explode))
    with pytest.raises(RuntimeError):
        store.import_offers([_offer(region="us-west-2", observed_at=T2), _offer(price_per_hour=1.0,
                                                                                      observed_at=T2)], "feed", "test")
    assert _counts(store) == before
    assert _current(url) == {_offer().key: 80.0}


def test_sqlite_fast_path_and_sqlalchemy_path_agree(seeded_db):
    from sqlalchemy import create_engine

    query = OfferQuery(gpus=("H100", "A100-80GB"), pricing=(), geos=("eu",))
    fast = OfferReader(seeded_db).offers(query, FxTable())
    slow_reader = OfferReader.__new__(OfferReader)
    slow_reader.url, slow_reader._path, slow_reader.seeded = seeded_db, None, None
    slow_reader._store = Store(seeded_db, engine=create_engine(seeded_db))
    slow = slow_reader.offers(query, FxTable())
    assert fast and sorted(fast, key=lambda o: o.key) == sorted(slow, key=lambda o: o.key)


def test_in_memory_url_uses_the_orm_path():
    reader = OfferReader("sqlite://")
    assert reader.seeded is not None
    assert reader.offers(OfferQuery(gpus=("H100",), providers=("aws",)), FxTable())
