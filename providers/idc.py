"""Independent data centres (IDCs): term deals published as YAML or CSV files.

IDC capacity is sold as whole servers on monthly contracts, often priced in CNY. The format
(documented in docs/idc-format.md) is one row per server configuration at a site; YAML files
wrap the rows with a header::

    format: gpu-supply-idc/1
    source: my-brokers            # names this feed in the store (default: the file name)
    observed_at: 2026-11-01       # when these prices were quoted (default: now)
    offers:
      - {site: sh-pudong-1, city: Shanghai, region: cn-shanghai, gpu: H100, gpus_per_node: 8,
         nodes_available: 12, price_per_node_month: 75000, currency: CNY, min_term_months: 3,
         lead_time_days: 14}

CSV files carry the same fields as columns (plus optional ``source``/``observed_at``).
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpu_supply import gpus
from gpu_supply.errors import UserError
from gpu_supply.offer import HOURS_PER_MONTH, Offer, PricingModel, as_utc, utcnow
from pricing.query import Scope
from providers.base import MissingCredentials, RegionFetch, retrying

FORMAT = "gpu-supply-idc/1"


class IdcOfferRow(BaseModel):
    """One server configuration at one IDC site (the file format's row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    site: str = Field(min_length=1)
    city: str = Field(min_length=1)
    region: str = Field(min_length=1, description="e.g. cn-shanghai; drives --geo")
    gpu: str = Field(min_length=1)
    gpus_per_node: int = Field(ge=1, le=64)
    nodes_available: int | None = Field(default=None, ge=0)
    price_per_node_month: float | None = Field(default=None, gt=0)
    price_per_gpu_month: float | None = Field(default=None, gt=0)
    currency: str = Field(default="CNY", pattern=r"^[A-Za-z]{3}$")
    min_term_months: float = Field(default=1, ge=0)
    lead_time_days: int | None = Field(default=None, ge=0)
    provider: str = Field(default="idc", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    instance_type: str | None = None
    gpu_memory_gb: float | None = Field(default=None, gt=0)
    vcpus: float | None = Field(default=None, gt=0)
    ram_gb: float | None = Field(default=None, gt=0)
    interconnect: str | None = None
    committed: bool = False

    @model_validator(mode="after")
    def _one_price(self) -> IdcOfferRow:
        if (self.price_per_node_month is None) == (self.price_per_gpu_month is None):
            raise ValueError("give exactly one of price_per_node_month or price_per_gpu_month")
        return self

    def node_month_price(self) -> float:
        if self.price_per_node_month is not None:
            return self.price_per_node_month
        return self.price_per_gpu_month * self.gpus_per_node  # type: ignore[operator]


def _to_offer(row: IdcOfferRow, source: str, observed_at: datetime, where: str) -> Offer:
    canonical = gpus.resolve(row.gpu, row.gpu_memory_gb)
    if canonical is None:
        close = gpus.suggest(row.gpu)
        raise UserError(f"{where}.gpu", f"unknown GPU {row.gpu!r}",
                        f"did you mean {', '.join(close)}?" if close else "see `gpu-supply gpus`")
    spec = gpus.spec(canonical)
    return Offer(
        provider=row.provider,
        region=row.region,
        zone=row.site,
        instance_type=row.instance_type or f"{row.gpus_per_node}x{canonical}",
        gpu=canonical,
        gpu_count=row.gpus_per_node,
        gpu_memory_gb=row.gpu_memory_gb or spec.memory_gb,
        vcpus=row.vcpus,
        ram_gb=row.ram_gb,
        interconnect=row.interconnect or (spec.interconnect if row.gpus_per_node > 1 else None),
        pricing=PricingModel.CONTRACT,
        price_per_hour=row.node_month_price() / HOURS_PER_MONTH,
        currency=row.currency.upper(),
        min_term_hours=row.min_term_months * HOURS_PER_MONTH,
        available_nodes=row.nodes_available,
        lead_time_days=row.lead_time_days,
        committed=row.committed,
        source=source,
        observed_at=observed_at,
    )


def _observed_at(value: Any, where: str) -> datetime:
    if value is None or value == "":
        return utcnow()
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime.combine(value, time(), timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise UserError(f"{where}.observed_at", f"{value!r} is not a date", "write YYYY-MM-DD") from None
    return as_utc(parsed)


def _validate(raw: dict[str, Any], where: str) -> IdcOfferRow:
    try:
        return IdcOfferRow.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        field = f"{where}.{loc}" if loc else where
        raise UserError(field, first["msg"].removeprefix("Value error, "),
                        "see docs/idc-format.md for the fields") from None


def parse_idc_text(text: str, name: str, default_source: str) -> list[Offer]:
    """Parse one IDC document (YAML or CSV, told apart by ``name``'s suffix)."""
    if name.lower().endswith(".csv"):
        records = list(csv.DictReader(io.StringIO(text)))
        header: dict[str, Any] = {}
    else:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(name, f"not valid YAML: {str(exc).splitlines()[0]}", "fix the file") from None
        if not isinstance(document, dict) or not isinstance(document.get("offers"), list):
            raise UserError(name, "expected a mapping with an 'offers' list", "see docs/idc-format.md")
        if document.get("format", FORMAT) != FORMAT:
            raise UserError(f"{name}.format", f"unsupported format {document['format']!r}", f"use {FORMAT!r}")
        unknown = set(document) - {"format", "source", "observed_at", "offers"}
        if unknown:
            raise UserError(name, f"unknown top-level field(s) {sorted(unknown)}", "allowed: format, source, observed_at, offers")
        header, records = document, document["offers"]
    offers = []
    for index, record in enumerate(records):
        where = f"{name} offers[{index}]"
        if not isinstance(record, dict):
            raise UserError(where, "each offer must be a mapping of fields", "see docs/idc-format.md")
        fields = {key: value for key, value in record.items() if value not in ("", None)}
        source = str(fields.pop("source", header.get("source") or default_source))
        observed = _observed_at(fields.pop("observed_at", header.get("observed_at")), where)
        offers.append(_to_offer(_validate(fields, where), source, observed, where))
    if not offers:
        raise UserError(name, "no offers in file", "add at least one row")
    return offers


def read_idc_files(paths: Iterable[Path]) -> list[Offer]:
    """Offers from IDC files and directories of them (``*.yaml``, ``*.yml``, ``*.csv``)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in {".yaml", ".yml", ".csv"}))
        elif path.exists():
            files.append(path)
        else:
            raise UserError("path", f"{path} does not exist", "give an IDC offer file or a directory of them")
    if not files:
        raise UserError("path", "no IDC offer files found", "give *.yaml, *.yml or *.csv files")
    offers: list[Offer] = []
    for file in files:
        offers.extend(parse_idc_text(file.read_text(encoding="utf-8"), str(file), default_source=f"idc:{file.stem}"))
    return offers


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _feed_name_and_source(location: str) -> tuple[str, str]:
    """The name a feed's format is told by (its file name) and its default offer source."""
    if _is_url(location):
        parsed = urlparse(location)
        host = parsed.hostname + (f":{parsed.port}" if parsed.port else "")  # never the user:password part
        return parsed.path or "/feed.yaml", f"idc:{host}/{PurePosixPath(parsed.path).stem}"
    return location, f"idc:{Path(location).stem}"


def _transient(error: BaseException) -> bool:
    import httpx

    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code == 429 or error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)  # timeouts, refused or dropped connections


class IdcFeeds:
    """IDC feeds as a refresh adapter: files, directories of them and http(s) URLs, several sites at
    once. Each feed is one unit: a feed that cannot be read or has a malformed row keeps its last
    good offers (it speaks for its own offer source only)."""

    name = "idc"

    def __init__(self, locations: Iterable[str], *, timeout_s: float = 10.0, transport=None, sleep=None) -> None:
        self.locations = [str(location) for location in locations]
        self.timeout_s = timeout_s
        self._transport = transport  # tests: an httpx transport; default: the network
        self._sleep = sleep

    def regions(self, wanted: Iterable[str] | None) -> list[str]:
        if not self.locations:
            raise MissingCredentials("no IDC feeds configured (give --idc PATH|URL, or [idc] feeds in the config)")
        units: list[str] = []
        for location in self.locations:
            path = Path(location)
            if not _is_url(location) and path.is_dir():
                units.extend(str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in {".yaml", ".yml", ".csv"})
            else:
                units.append(location)  # a missing file fails its own fetch (stale), not the refresh
        return units

    def scopes(self, unit: str) -> tuple[Scope, ...]:
        return ((self.name, None, _feed_name_and_source(unit)[1]),)

    def _read(self, unit: str) -> str:
        if not _is_url(unit):
            return Path(unit).read_text(encoding="utf-8")
        import httpx

        with httpx.Client(timeout=self.timeout_s, transport=self._transport, follow_redirects=True) as client:
            response = client.get(unit)
            response.raise_for_status()
            return response.text

    def fetch(self, unit: str):
        extra = {"sleep": self._sleep} if self._sleep else {}
        text, attempts = retrying(lambda: self._read(unit), is_transient=_transient, **extra)
        name, source = _feed_name_and_source(unit)
        offers = parse_idc_text(text, name, default_source=source)
        scopes = tuple(sorted({(offer.provider, None, offer.source) for offer in offers}))
        return RegionFetch(self.name, unit, scopes, tuple(offers), attempts=attempts)
