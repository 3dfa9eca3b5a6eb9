"""Importer for SkyPilot-format catalogs (``<dir>/<cloud>/vms.csv``), a format ops teams already have.

Real catalogs are messy, so every row is accounted for: it either becomes offers or is skipped
with a named reason, and known-wrong values are fixed and counted. The report's invariant is
``rows_read == rows_used + sum(skipped)``. The traits handled (see docs/catalog.md):

- columns are read by header name, as each cloud orders them differently;
- Azure rows with an unquoted ``V1,V2`` Generation (one field more than the header) are re-joined;
- GCP prices accelerators on their own rows: a node's price is its host VM plus its accelerators;
- spot prices that are missing, zero or equal to on-demand mean "no spot market";
- GPU counts known to be wrong or missing (e.g. ``Standard_ND96isr_H100_v5`` listed with 12) are
  corrected from the vendors' published shapes; fractional GPUs (vGPU slices) are not whole GPUs;
- prices below a physical plausibility floor (auction bid floors listed as prices) are rejected;
- region names with an empty part (Vast's ``", US, NA"``) lose it.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

from gpu_supply import gpus
from gpu_supply.errors import UserError
from gpu_supply.offer import Offer, PricingModel

SOURCE = "skypilot-catalog"

# Cheapest believable price: USD per dense-BF16 PFLOPS per GPU-hour. An H100 (0.99 PF) floors at
# about $0.15/h and an A100 at $0.05/h, well under any real market price, spot included.
MIN_PLAUSIBLE_USD_PER_PFLOPS_HOUR = 0.15

# GPUs per node as the vendors publish them, where catalogs have the count wrong or missing.
KNOWN_GPU_COUNTS: dict[str, int] = {
    "Standard_ND96isr_H100_v5": 8,
    "Standard_ND96isr_H200_v5": 8,
    "Standard_ND96is_MI300X_v5": 8,
    "Standard_ND96isr_MI300X_v5": 8,
    "Standard_ND128isr_NDR_GB200_v6": 4,
}

# GCP machine families with built-in accelerators: machine type pattern -> catalog accelerator name.
_GCP_BUILT_IN = (
    (re.compile(r"a2-(?:highgpu|megagpu)-(\d+)g$"), "A100"),
    (re.compile(r"a2-ultragpu-(\d+)g$"), "A100-80GB"),
    (re.compile(r"a3-(?:highgpu|edgegpu)-(\d+)g(?:-nolssd)?$"), "H100"),
    (re.compile(r"a3-megagpu-(\d+)g$"), "H100-MEGA"),
    (re.compile(r"a3-ultragpu-(\d+)g(?:-nolssd)?$"), "H200"),
    (re.compile(r"a4-highgpu-(\d+)g$"), "B200"),
)
# Azure's GPU VM families all start with N (NC, ND, NG, NV); rows there without a GPU are reported apart.
_GPU_FAMILY = re.compile(r"Standard_N[CDGV]")
_GCP_G2_L4S = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}
# Attachable GPUs ride on an N1 host; we price them on n1-standard with 8 vCPUs per GPU.
_GCP_ATTACHABLE = {"T4", "P4", "P100", "V100"}
N1_VCPUS_PER_GPU = 8


@dataclass
class ImportReport:
    """What one catalog file gave: rows read, offers made, and every skip and fix by reason."""

    cloud: str
    path: str
    rows_read: int = 0
    rows_used: int = 0
    offers: Counter = field(default_factory=Counter)  # pricing model -> offers made
    composed: int = 0  # GCP nodes priced as host + accelerators
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    no_spot: Counter = field(default_factory=Counter)  # reason -> rows with on-demand but no spot offer
    fixed: Counter = field(default_factory=Counter)  # fix -> rows
    unknown_gpus: Counter = field(default_factory=Counter)  # raw name -> offers kept under it

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_used + sum(self.skipped.values())

    def summary_lines(self) -> list[str]:
        made = sum(self.offers.values())
        by_pricing = ", ".join(f"{count} {pricing}" for pricing, count in sorted(self.offers.items()))
        lines = [f"{self.cloud}: read {self.rows_read} rows from {self.path}; used {self.rows_used}, "
                 f"made {made} offers ({by_pricing or 'none'})"
                 + (f", {self.composed} composed host+accelerator" if self.composed else "")]
        for title, counter in (("skipped", self.skipped), ("no spot offer", self.no_spot), ("fixed", self.fixed)):
            for reason, count in counter.most_common():
                lines.append(f"  {title}: {count} rows: {reason}")
        for name, count in self.unknown_gpus.most_common():
            lines.append(f"  kept {count} offers under unregistered GPU name {name!r}")
        return lines

    def as_dict(self) -> dict:
        return {"cloud": self.cloud, "path": self.path, "rows_read": self.rows_read, "rows_used": self.rows_used,
                "offers": dict(self.offers), "composed": self.composed, "skipped": dict(self.skipped),
                "no_spot": dict(self.no_spot), "fixed": dict(self.fixed), "unknown_gpus": dict(self.unknown_gpus)}


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _region(name: str) -> str:
    """A region name without empty parts: Vast lists hosts with no known state as ``", US, NA"``."""
    return ", ".join(part.strip() for part in name.split(",") if part.strip())


def _read_rows(path: Path, report: ImportReport) -> Iterator[dict[str, str]]:
    """Rows as dicts by header name; re-joins Azure's unquoted ``V1,V2`` and skips malformed rows."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise UserError("catalog", f"{path} is empty", "give a SkyPilot vms.csv with a header row")
        width = len(header)
        for row in reader:
            if not row:
                continue
            report.rows_read += 1
            if len(row) == width + 1 and header[-1] == "Generation":
                row = row[:width - 1] + [",".join(row[width - 1:])]
                report.fixed["unquoted Generation field (V1,V2) re-joined"] += 1
            if len(row) != width:
                report.skipped[f"malformed row ({len(row)} fields, header has {width})"] += 1
                continue
            yield dict(zip(header, row))


def _gpu_info(text: str) -> dict:
    if not text or not text.startswith("{"):
        return {}
    try:
        return json.loads(text) if '"' in text[:3] else ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}


def _memory_hint(info: dict, count: float, report: ImportReport) -> list[float]:
    """Candidate per-GPU memory (GB) from GpuInfo: catalogs disagree on per-GPU vs per-node figures."""
    listed = (info.get("Gpus") or [{}])[0].get("MemoryInfo", {}).get("SizeInMiB") or info.get("TotalGpuMemoryInMiB")
    try:
        mib = float(listed)
    except (TypeError, ValueError):
        return []
    if 0 < mib < 1024:  # RunPod writes GB in the MiB field
        report.fixed["GPU memory given in GB under SizeInMiB"] += 1
        gb = mib
    else:
        gb = mib / 1024
    return [gb, gb / count] if count > 1 else [gb]


def _resolve_gpu(name: str, memory_hints: list[float]) -> str | None:
    """Canonical name; the memory hint that matches a registered size decides between variants."""
    fallback = None
    for hint in memory_hints or [None]:
        canonical = gpus.resolve(name, hint)
        spec = gpus.spec(canonical) if canonical else None
        if spec and hint and abs(spec.memory_gb - hint) <= 8:
            return canonical
        fallback = fallback or canonical
    return fallback


class _CatalogReader:
    """Turns one cloud's rows into offers, recording every decision in the report."""

    def __init__(self, cloud: str, observed_at: datetime, report: ImportReport) -> None:
        self.cloud = cloud
        self.observed_at = observed_at
        self.report = report
        self.offers: dict[str, Offer] = {}

    def gpu_of(self, row: dict[str, str]) -> tuple[str, int, float] | str:
        """(gpu, count, memory per GPU) or the reason this row is not a whole-GPU node."""
        instance_type = row.get("InstanceType", "")
        name = (row.get("AcceleratorName") or "").strip()
        count = _number(row.get("AcceleratorCount"))
        if name.lower().startswith("tpu"):
            return "TPU, not a GPU"
        if not name:
            name = gpus.resolve_from_instance_type(instance_type) or ""
            if name:
                self.report.fixed["GPU name missing, taken from instance type"] += 1
        if not name:
            if count:
                return "accelerator with no name (not a GPU)"
            if _GPU_FAMILY.match(instance_type):
                return "GPU family row with neither GPU name nor count"
            return "no GPU (CPU-only or non-GPU accelerator)"
        known = KNOWN_GPU_COUNTS.get(instance_type)
        if known is not None and count != known:
            self.report.fixed[f"GPU count {'missing' if count is None else f'{count:g}'} -> {known} "
                              f"for {instance_type}"] += 1
            count = known
        if count is None or count <= 0:
            return "GPU count missing"
        if count != int(count):
            return "fractional GPU (a slice of one GPU, not a whole GPU)"
        hints = _memory_hint(_gpu_info(row.get("GpuInfo", "")), count, self.report)
        if "pcie" in instance_type.lower() and "pcie" not in name.lower():
            name = f"{name} PCIe"  # e.g. Lambda's gpu_1x_h100_pcie is listed as plain "H100"
        canonical = _resolve_gpu(name, hints)
        if canonical is None:
            canonical = name
            self.report.unknown_gpus[name] += 1
        spec = gpus.spec(canonical)
        memory = spec.memory_gb if spec else (hints[-1] if hints else 0.0)
        return canonical, int(count), memory

    def add(self, row: dict[str, str], gpu: tuple[str, int, float], price: float | None, spot: float | None,
            vcpus: float | None = None, ram: float | None = None) -> bool:
        """Add the on-demand and spot offers of one node shape; False when neither price is usable."""
        name, count, memory = gpu
        region = _region(row["Region"])
        if region != row["Region"]:
            self.report.fixed["region name with an empty part tidied (Vast's ', US, NA')"] += 1
        spec = gpus.spec(name)
        floor = MIN_PLAUSIBLE_USD_PER_PFLOPS_HOUR * spec.bf16_tflops / 1000 * count if spec else 0.0
        made = False
        for pricing, value in ((PricingModel.ON_DEMAND, price), (PricingModel.SPOT, spot)):
            if value is None:
                continue
            if value < floor:
                self.report.fixed[f"{pricing} price below the plausibility floor dropped (bid floor, not a price)"] += 1
                continue
            offer = Offer(
                provider=self.cloud, region=region, zone=row.get("AvailabilityZone") or None,
                instance_type=row["InstanceType"], gpu=name, gpu_count=count, gpu_memory_gb=memory,
                vcpus=vcpus if vcpus is not None else _number(row.get("vCPUs")),
                ram_gb=ram if ram is not None else _number(row.get("MemoryGiB")),
                interconnect=(spec.interconnect if count > 1 else None) if spec else None,
                pricing=pricing, price_per_hour=value, currency="USD", source=SOURCE, observed_at=self.observed_at)
            previous = self.offers.get(offer.key)
            if previous is not None:
                self.report.fixed["duplicate offer key, kept the lower price"] += 1
                if previous.price_per_hour <= offer.price_per_hour:
                    made = True
                    continue
                self.report.offers[pricing.value] -= 1
            self.offers[offer.key] = offer
            self.report.offers[pricing.value] += 1
            made = True
        return made

    def prices(self, row: dict[str, str]) -> tuple[float | None, float | None]:
        """On-demand and spot price, with spot set to None (and the reason counted) where no market exists."""
        price = _number(row.get("Price"))
        if price is not None and price <= 0:
            price = None
        spot = _number(row.get("SpotPrice"))
        reason = None
        if spot is None:
            reason = "spot price missing"
        elif spot <= 0:
            reason = "spot price zero (no spot market)"
        elif price is not None and spot == price:
            reason = "spot equals on-demand (no spot market)"
        if reason:
            spot = None
            if price is not None:
                self.report.no_spot[reason] += 1
        return price, spot

    def read_simple(self, rows: Iterator[dict[str, str]]) -> None:
        for row in rows:
            gpu = self.gpu_of(row)
            if isinstance(gpu, str):
                self.report.skipped[gpu] += 1
                continue
            price, spot = self.prices(row)
            if price is None and spot is None:
                self.report.skipped["no usable price (empty or zero)"] += 1
            elif self.add(row, gpu, price, spot):
                self.report.rows_used += 1
            else:
                self.report.skipped["every price below plausibility floor"] += 1

    def read_gcp(self, rows: Iterator[dict[str, str]]) -> None:
        """Compose GCP nodes: a host VM row plus the accelerator row of its GPU and count, in its zone."""
        accelerators: dict[tuple[str, int, str], dict[str, str]] = {}
        hosts: list[dict[str, str]] = []
        for row in rows:
            if row["InstanceType"]:
                hosts.append(row)
            elif row["AcceleratorName"].lower().startswith("tpu"):
                self.report.skipped["TPU, not a GPU"] += 1
            else:
                count = int(_number(row["AcceleratorCount"]) or 0)
                accelerators[(row["AcceleratorName"], count, row["AvailabilityZone"])] = row
        n1_hosts = {(row["InstanceType"], row["AvailabilityZone"]): row
                    for row in hosts if row["InstanceType"].startswith("n1-standard-")}
        shapes = [(host, (*built_in, host["AvailabilityZone"]))
                  for host in hosts if (built_in := _gcp_built_in(host["InstanceType"]))]
        for name, count, zone in accelerators:
            host = n1_hosts.get((f"n1-standard-{N1_VCPUS_PER_GPU * count}", zone))
            if name in _GCP_ATTACHABLE and host is not None:
                shapes.append((host, (name, count, zone)))
        used_hosts: set[int] = set()
        used_accelerators: set[tuple[str, int, str]] = set()
        for host, key in shapes:
            accelerator = accelerators.get(key)
            if accelerator is None:
                continue
            node = {**accelerator, "InstanceType": host["InstanceType"]}
            gpu = self.gpu_of(node)
            if isinstance(gpu, str):
                continue
            host_price, host_spot = self.prices(host)
            accel_price, accel_spot = self.prices(accelerator)
            price = host_price + accel_price if host_price is not None and accel_price is not None else None
            spot = host_spot + accel_spot if host_spot is not None and accel_spot is not None else None
            if self.add(node, gpu, price, spot, vcpus=_number(host["vCPUs"]), ram=_number(host["MemoryGiB"])):
                self.report.composed += 1
                used_hosts.add(id(host))
                used_accelerators.add(key)
        for host in hosts:
            built_in = _gcp_built_in(host["InstanceType"])
            if id(host) in used_hosts:
                self.report.rows_used += 1
            elif built_in is None:
                self.report.skipped["no GPU (CPU-only or non-GPU accelerator)"] += 1
            elif (*built_in, host["AvailabilityZone"]) not in accelerators:
                self.report.skipped["GPU host with no accelerator price in its zone"] += 1
            else:
                self.report.skipped["GPU host priced 0.0 or empty: node price unknown"] += 1
        for key in accelerators:
            if key in used_accelerators:
                self.report.rows_used += 1
            else:
                self.report.skipped["accelerator price with no host machine type in its zone"] += 1


def _gcp_built_in(machine_type: str) -> tuple[str, int] | None:
    for pattern, accelerator in _GCP_BUILT_IN:
        match = pattern.match(machine_type)
        if match:
            return accelerator, int(match.group(1))
    match = re.match(r"g2-standard-(\d+)$", machine_type)
    if match and int(match.group(1)) in _GCP_G2_L4S:
        return "L4", _GCP_G2_L4S[int(match.group(1))]
    return None


def import_catalog_file(path: Path, cloud: str, observed_at: datetime) -> tuple[list[Offer], ImportReport]:
    """Offers from one cloud's ``vms.csv`` and the report of how every row was used."""
    report = ImportReport(cloud=cloud, path=str(path))
    reader = _CatalogReader(cloud, observed_at, report)
    rows = _read_rows(path, report)
    if cloud == "gcp":
        reader.read_gcp(rows)
    else:
        reader.read_simple(rows)
    return list(reader.offers.values()), report


def catalog_files(directory: Path, clouds: list[str] | None) -> list[tuple[str, Path]]:
    """``(cloud, vms.csv)`` pairs under a SkyPilot catalog directory (``<dir>/<cloud>/vms*.csv``)."""
    if not directory.is_dir():
        raise UserError("DIR", f"{directory} is not a directory", "give a SkyPilot catalog root, e.g. ~/.sky/catalogs/v8")
    available = {child.name: sorted(child.glob("vms*.csv")) for child in sorted(directory.iterdir()) if child.is_dir()}
    available = {cloud: files for cloud, files in available.items() if files}
    wanted = clouds or sorted(available)
    missing = [cloud for cloud in wanted if cloud not in available]
    if missing:
        raise UserError("--cloud", f"no vms.csv for {', '.join(missing)} under {directory}",
                        f"clouds found: {', '.join(sorted(available)) or 'none'}")
    return [(cloud, file) for cloud in wanted for file in available[cloud]]


def import_catalog_dir(directory: Path, clouds: list[str] | None, observed_at: datetime
                       ) -> tuple[list[Offer], list[ImportReport]]:
    offers: list[Offer] = []
    reports: list[ImportReport] = []
    for cloud, path in catalog_files(directory, clouds):
        cloud_offers, report = import_catalog_file(path, cloud, observed_at)
        offers.extend(cloud_offers)
        reports.append(report)
    merged: dict[str, Offer] = {}
    for offer in offers:  # two files of one cloud (e.g. vms.csv + vms-g-p3.csv) may overlap
        if offer.key not in merged or offer.price_per_hour < merged[offer.key].price_per_hour:
            merged[offer.key] = offer
    return list(merged.values()), reports
