"""The offer: one way to rent GPU nodes. One definition, used by every part of the system.

Prices are per node-hour in the supplier's own currency; everything per-GPU or in another
currency is derived, so the stored figure is always what the supplier quoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Protocol

from gpu_supply.geo import geo_of

# A billing month, as the clouds define it (8,760 h / 12). Monthly IDC prices and `--months`
# convert through this one constant.
HOURS_PER_MONTH = 730.0


class CurrencyConverter(Protocol):
    """What an offer needs to show its price in another currency (``pricing.fx.FxTable``)."""

    def convert(self, amount: float, from_currency: str, to_currency: str) -> float: ...


class PricingModel(StrEnum):
    ON_DEMAND = "on_demand"
    SPOT = "spot"
    RESERVED_1Y = "reserved_1y"
    RESERVED_3Y = "reserved_3y"
    CONTRACT = "contract"


@dataclass(frozen=True, slots=True)
class Offer:
    provider: str
    region: str
    instance_type: str
    gpu: str  # canonical name, or the supplier's raw name when the registry does not know it
    gpu_count: int  # GPUs per node
    gpu_memory_gb: float  # per GPU
    pricing: PricingModel
    price_per_hour: float  # per node-hour, in `currency`
    currency: str
    observed_at: datetime
    source: str
    zone: str | None = None
    vcpus: float | None = None
    ram_gb: float | None = None
    interconnect: str | None = None
    min_term_hours: float = 0.0
    available_nodes: int | None = None  # capacity or quota; None = unknown
    lead_time_days: int | None = None
    committed: bool = False  # capacity the company already holds (zero marginal cost to the optimizer)
    geo: str = field(init=False)

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise ValueError(f"gpu_count must be >= 1, got {self.gpu_count}")
        if self.price_per_hour < 0:
            raise ValueError(f"price_per_hour must be >= 0, got {self.price_per_hour}")
        if self.available_nodes is not None and self.available_nodes < 0:
            raise ValueError(f"available_nodes must be >= 0, got {self.available_nodes}")
        if self.min_term_hours < 0:
            raise ValueError(f"min_term_hours must be >= 0, got {self.min_term_hours}")
        object.__setattr__(self, "observed_at", as_utc(self.observed_at))
        object.__setattr__(self, "pricing", PricingModel(self.pricing))
        object.__setattr__(self, "geo", geo_of(self.region))

    @property
    def key(self) -> str:
        """Identity across observations: the same offer seen again gets a new price, not a new row."""
        return "|".join((self.provider, self.region, self.zone or "", self.instance_type, self.gpu,
                         str(self.gpu_count), self.pricing.value))

    @property
    def price_per_gpu_hour(self) -> float:
        return self.price_per_hour / self.gpu_count

    def price_per_hour_in(self, currency: str, fx: CurrencyConverter) -> float:
        return fx.convert(self.price_per_hour, self.currency, currency)

    def price_per_gpu_hour_in(self, currency: str, fx: CurrencyConverter) -> float:
        return fx.convert(self.price_per_gpu_hour, self.currency, currency)

    def as_row(self) -> dict[str, object]:
        """Flat, JSON-friendly form (the column contract of exports and `--format json`)."""
        return {
            "provider": self.provider,
            "region": self.region,
            "zone": self.zone,
            "geo": self.geo,
            "instance_type": self.instance_type,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "gpu_memory_gb": self.gpu_memory_gb,
            "vcpus": self.vcpus,
            "ram_gb": self.ram_gb,
            "interconnect": self.interconnect,
            "pricing": self.pricing.value,
            "price_per_hour": self.price_per_hour,
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "currency": self.currency,
            "min_term_hours": self.min_term_hours,
            "available": self.available_nodes,
            "lead_time_days": self.lead_time_days,
            "committed": self.committed,
            "source": self.source,
            "observed_at": self.observed_at.isoformat(),
        }


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC: a naive moment is taken as UTC (SQLite hands datetimes back naive), an aware one
    is converted (databases store what they are given, offset or not)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
