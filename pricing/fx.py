"""Currency conversion for comparisons. Offers keep their native currency; only views convert.

Rates are units of a currency per 1 USD. The built-in table is dated and indicative; a user's
config (``[fx]`` in config.toml) and ``--fx CNY=7.1`` override it, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from gpu_supply.errors import UserError

DEFAULT_RATES_AS_OF = "2026-11-01"
DEFAULT_RATES: Mapping[str, float] = MappingProxyType({
    "USD": 1.0,
    "CNY": 7.10,
    "EUR": 0.86,
    "GBP": 0.76,
    "JPY": 152.0,
    "SGD": 1.30,
    "HKD": 7.78,
    "INR": 88.0,
    "KRW": 1400.0,
    "CAD": 1.39,
    "AUD": 1.53,
})


@dataclass(frozen=True)
class FxTable:
    rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    as_of: str = DEFAULT_RATES_AS_OF

    def rate(self, currency: str) -> float:
        code = currency.upper()
        if code not in self.rates:
            raise UserError("currency", f"no exchange rate for {code!r}",
                            f"known: {', '.join(sorted(self.rates))}; add one with --fx {code}=RATE")
        return self.rates[code]

    def convert(self, amount: float, from_currency: str, to_currency: str) -> float:
        if from_currency.upper() == to_currency.upper():
            return amount
        return amount / self.rate(from_currency) * self.rate(to_currency)

    def with_overrides(self, overrides: Mapping[str, float], as_of: str | None = None) -> FxTable:
        if not overrides:
            return self
        merged = {**self.rates, **{code.upper(): rate for code, rate in overrides.items()}}
        return FxTable(merged, as_of or f"{self.as_of} + overrides")


def parse_overrides(items: list[str] | None) -> dict[str, float]:
    """Parse ``["CNY=7.1", "EUR=0.9"]`` (each item may also hold comma-separated pairs)."""
    rates: dict[str, float] = {}
    for item in items or []:
        for pair in filter(None, (part.strip() for part in item.split(","))):
            code, sep, value = pair.partition("=")
            code = code.strip().upper()
            if not sep or not code.isalpha() or len(code) != 3:
                raise UserError("--fx", f"{pair!r} is not CODE=RATE", "write e.g. --fx CNY=7.1")
            rates[code] = _positive_rate(value, f"--fx {code}")
    if rates.get("USD", 1.0) != 1.0:
        raise UserError("--fx", "USD is the base currency and must stay 1.0", "give other currencies per 1 USD")
    return rates


def _positive_rate(value: object, field_name: str) -> float:
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(field_name, f"{value!r} is not a number", "write a rate per 1 USD, e.g. 7.1") from None
    if not rate > 0 or rate == float("inf"):
        raise UserError(field_name, f"rate must be a positive number, got {value!r}", "write a rate per 1 USD")
    return rate


def load_fx(cli_overrides: list[str] | None = None, config: Mapping | None = None) -> FxTable:
    """Built-in table, then the config file's ``[fx]``, then ``--fx`` overrides."""
    table = FxTable()
    config_rates = (config or {}).get("fx") or {}
    if not isinstance(config_rates, Mapping):
        raise UserError("config [fx]", "must be a table of CODE = rate", "write e.g. [fx] CNY = 7.1")
    table = table.with_overrides({code.upper(): _positive_rate(rate, f"config fx.{code}")
                                  for code, rate in config_rates.items()}, "config")
    return table.with_overrides(parse_overrides(cli_overrides), "--fx")
