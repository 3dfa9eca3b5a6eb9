"""Offers from a CSV file, so plans can be made against any supply (`gpu-supply plan --offers`).

Columns are the offer model's (`Offer.as_row()`; `gpu-supply offers --format csv` writes them):
required ``provider, region, instance_type, gpu, gpu_count, pricing, price_per_hour, currency``;
optional ``zone, gpu_memory_gb, vcpus, ram_gb, interconnect, min_term_hours, available,
lead_time_days, committed, source, observed_at``. Where ``native_price_per_hour`` and
``native_currency`` are present (a converted export) they are used instead, so exports round-trip.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from gpu_supply import gpus
from gpu_supply.errors import UserError
from gpu_supply.offer import Offer, PricingModel, utcnow

REQUIRED = ("provider", "region", "instance_type", "gpu", "gpu_count", "pricing", "price_per_hour", "currency")


def _optional_float(value: str | None) -> float | None:
    return None if value is None or value.strip() == "" else float(value)


def read_offers_csv(path: Path) -> list[Offer]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise UserError("--offers", f"{path} does not exist", "give a CSV of offers (see docs/workloads.md)") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED if column not in (reader.fieldnames or [])]
        if missing:
            raise UserError("--offers", f"{path} lacks columns {missing}", f"required: {', '.join(REQUIRED)}")
        offers = []
        for line, row in enumerate(reader, start=2):
            try:
                offers.append(_offer(row, path))
            except (ValueError, KeyError) as exc:
                raise UserError("--offers", f"{path} line {line}: {exc}", "fix the row") from None
    if not offers:
        raise UserError("--offers", f"{path} has no offers", "add rows under the header")
    return offers


def _offer(row: dict[str, str], path: Path) -> Offer:
    native = row.get("native_price_per_hour") and row.get("native_currency")
    gpu = gpus.resolve(row["gpu"]) or row["gpu"]
    spec = gpus.spec(gpu)
    memory = _optional_float(row.get("gpu_memory_gb")) or (spec.memory_gb if spec else None)
    if memory is None:
        raise ValueError(f"gpu_memory_gb needed for unregistered GPU {row['gpu']!r}")
    observed = row.get("observed_at", "").strip()
    moment = datetime.fromisoformat(observed) if observed else utcnow()
    available = _optional_float(row.get("available"))
    lead_time = _optional_float(row.get("lead_time_days"))
    return Offer(
        provider=row["provider"].strip().lower(), region=row["region"].strip(), zone=(row.get("zone") or "").strip() or None,
        instance_type=row["instance_type"].strip(), gpu=gpu, gpu_count=int(float(row["gpu_count"])),
        gpu_memory_gb=memory, vcpus=_optional_float(row.get("vcpus")), ram_gb=_optional_float(row.get("ram_gb")),
        interconnect=(row.get("interconnect") or "").strip() or None, pricing=PricingModel(row["pricing"].strip()),
        price_per_hour=float(row["native_price_per_hour"] if native else row["price_per_hour"]),
        currency=(row["native_currency"] if native else row["currency"]).strip().upper(),
        min_term_hours=_optional_float(row.get("min_term_hours")) or 0.0,
        available_nodes=None if available is None else int(available),
        lead_time_days=None if lead_time is None else int(lead_time),
        committed=(row.get("committed") or "").strip().lower() in {"true", "1", "yes"},
        source=(row.get("source") or "").strip() or f"csv:{path.name}",
        observed_at=moment)
