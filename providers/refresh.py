"""`gpu-supply refresh`: fetch every adapter's regions in parallel and record them in the store.

Regions are fetched with bounded concurrency; each fetch retries throttling and transient errors
(``providers.base.retrying``). A provider's results go into the store in one transaction that
speaks only for the regions that succeeded: a region that failed keeps its last good offers,
recorded as stale with the error in ``refresh_status``. A provider whose credentials are missing
is skipped with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from providers.base import Adapter, MissingCredentials, RegionFetch, describe, redact
from pricing.store import Store, UnitOutcome

DEFAULT_CONCURRENCY = 8


@dataclass
class RegionReport:
    provider: str
    region: str
    offers: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    attempts: int = 1
    stale: bool = False
    error: str | None = None
    unknown_gpus: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # rows skipped; their offers kept their last price


@dataclass
class RefreshReport:
    regions: list[RegionReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # provider -> why (no credentials, nothing configured)
    unknown_gpus: dict[str, list[str]] = field(default_factory=dict)  # provider -> raw GPU names kept

    @property
    def failed(self) -> bool:
        return any(region.error for region in self.regions)

    def rows(self) -> list[dict]:
        return [{"provider": r.provider, "region": r.region, "offers": r.offers, "new": r.new, "changed": r.changed,
                 "removed": r.removed, "attempts": r.attempts, "stale": r.stale, "error": r.error or "",
                 "malformed": r.malformed}
                for r in self.regions]

    def to_dict(self) -> dict:
        return {"regions": self.rows(), "skipped": self.skipped, "unknown_gpus": self.unknown_gpus,
                "failed": self.failed}


def _fetch(adapter: Adapter, region: str) -> RegionFetch:
    try:
        return adapter.fetch(region)
    except Exception as error:  # noqa: BLE001 - any supplier fault marks this region stale, never the run
        return RegionFetch(adapter.name, region, adapter.scopes(region), error=describe(error),
                           attempts=getattr(error, "attempts", 1))


def refresh(adapters: Sequence[Adapter], store: Store, *, regions: Sequence[str] | None = None,
            concurrency: int = DEFAULT_CONCURRENCY,
            on_progress: Callable[[str, int, int], None] | None = None) -> RefreshReport:
    """Refresh each adapter; ``on_progress(provider, done, total)`` is called as regions finish."""
    report = RefreshReport()
    for adapter in adapters:
        try:
            names = adapter.regions(regions)
        except MissingCredentials as missing:
            report.skipped[adapter.name] = str(missing)
            continue
        fetches: list[RegionFetch] = []
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(names) or 1))) as pool:
            for fetch in pool.map(lambda name: _fetch(adapter, name), names):
                fetches.append(fetch)
                if on_progress:
                    on_progress(adapter.name, len(fetches), len(names))
        _record(adapter, store, fetches, report)
    return report


def _record(adapter: Adapter, store: Store, fetches: list[RegionFetch], report: RefreshReport) -> None:
    """One transaction for the provider: the successful regions' offers, scoped to those regions."""
    good = [fetch for fetch in fetches if fetch.ok]
    outcomes = [UnitOutcome(adapter.name, redact(fetch.unit), fetch.scopes, fetch.error) for fetch in fetches]
    scopes = [scope for fetch in good for scope in fetch.scopes]
    offers = [offer for fetch in good for offer in fetch.offers]
    summary = store.import_offers(offers, source=f"refresh:{adapter.name}", kind="refresh",
                                  report={"regions": [redact(fetch.unit) for fetch in good],
                                          "errors": {redact(fetch.unit): fetch.error for fetch in fetches
                                                     if not fetch.ok}},
                                  scopes=scopes, outcomes=outcomes,
                                  protected=[(adapter.name, fetch.unit, instance_type, pricing) for fetch in good
                                             for instance_type, pricing in fetch.protected])
    unknown = sorted({name for fetch in fetches for name in fetch.unknown_gpus})
    if unknown:
        report.unknown_gpus[adapter.name] = unknown
    for fetch in fetches:
        row = RegionReport(adapter.name, redact(fetch.unit), attempts=fetch.attempts, stale=not fetch.ok, error=fetch.error,
                           unknown_gpus=list(fetch.unknown_gpus), malformed=list(fetch.malformed))
        for scope in fetch.scopes if fetch.ok else ():
            counts = summary.by_scope.get(scope, {})
            row.offers += counts.get("offers", 0)
            row.new += counts.get("new", 0)
            row.changed += counts.get("changed", 0)
            row.removed += counts.get("withdrawn", 0)
        report.regions.append(row)
