"""The embedded catalog snapshot: offers that ship with the package so everything works offline.

Format ``gpu-supply-snapshot/1``: gzip-compressed JSON with a header (build time, sources with
their dates, notes and import reports) and the offers as rows under a column list. Only this
project's importers write it (``make snapshot`` runs ``python -m pricing.snapshot build``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gpu_supply.errors import UserError
from gpu_supply.offer import Offer, PricingModel, utcnow

FORMAT = "gpu-supply-snapshot/1"
EMBEDDED_PATH = Path(__file__).with_name("data") / "snapshot.json.gz"
COLUMNS = ("provider", "region", "zone", "instance_type", "gpu", "gpu_count", "gpu_memory_gb", "vcpus", "ram_gb",
           "interconnect", "pricing", "price_per_hour", "currency", "min_term_hours", "available_nodes",
           "lead_time_days", "committed", "source", "observed_at")


@dataclass(frozen=True)
class Snapshot:
    header: dict
    offers: list[Offer]
    digest: str  # hash of the file: identifies this snapshot in the store's import log

    @property
    def source_id(self) -> str:
        return _source_id(self.header["data_date"], self.digest)


def _source_id(data_date: str, digest: str) -> str:
    return f"snapshot:{data_date}:{digest[:12]}"


def embedded_snapshot_id(path: Path = EMBEDDED_PATH) -> str:
    """The embedded snapshot's import id without parsing it (the CLI checks this on every run)."""
    raw = path.read_bytes()
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
        head = handle.read(4096).decode("utf-8", "replace")
    match = re.search(r'"data_date":"([0-9-]+)"', head)
    if match is None:
        raise UserError("snapshot", f"{path} has no data_date in its header", "rebuild it with `make snapshot`")
    return _source_id(match.group(1), hashlib.sha256(raw).hexdigest())


def _offer_to_row(offer: Offer) -> list:
    return [offer.observed_at.isoformat() if column == "observed_at"
            else offer.pricing.value if column == "pricing"
            else getattr(offer, column) for column in COLUMNS]


def _row_to_offer(row: list, columns: list[str]) -> Offer:
    fields = dict(zip(columns, row))
    fields["observed_at"] = datetime.fromisoformat(fields["observed_at"])
    fields["pricing"] = PricingModel(fields["pricing"])
    return Offer(**fields)


def write_snapshot(path: Path, offers: list[Offer], sources: list[dict]) -> Snapshot:
    """Write atomically (temp file + rename), so a failed build never leaves half a snapshot."""
    ordered = sorted(offers, key=lambda offer: offer.key)
    header = {
        "format": FORMAT,
        "built_at": utcnow().isoformat(timespec="seconds"),
        "data_date": max(offer.observed_at for offer in ordered).date().isoformat(),
        "offers": len(ordered),
        "sources": sources,
    }
    document = {**header, "columns": list(COLUMNS), "rows": [_offer_to_row(offer) for offer in ordered]}
    payload = json.dumps(document, separators=(",", ":")).encode()
    temporary = path.with_suffix(".tmp")
    with gzip.GzipFile(temporary, "wb", mtime=0) as handle:
        handle.write(payload)
    temporary.replace(path)
    return Snapshot(header, ordered, hashlib.sha256(path.read_bytes()).hexdigest())


def load_snapshot(path: Path = EMBEDDED_PATH) -> Snapshot:
    try:
        raw = path.read_bytes()
        document = json.loads(gzip.decompress(raw))
    except FileNotFoundError:
        raise UserError("snapshot", f"{path} is missing", "reinstall gpu-supply or run `make snapshot`") from None
    except (OSError, ValueError) as exc:
        raise UserError("snapshot", f"{path} is unreadable: {exc}", "rebuild it with `make snapshot`") from None
    if document.get("format") != FORMAT:
        raise UserError("snapshot", f"{path} has format {document.get('format')!r}", f"expected {FORMAT}")
    columns = document.pop("columns")
    offers = [_row_to_offer(row, columns) for row in document.pop("rows")]
    return Snapshot(document, offers, hashlib.sha256(raw).hexdigest())


# What the shipped snapshot is built from: (folder under the reference root, clouds, data date, note).
# ../shared/reference/README.md says which folder is newest for which cloud.
BUILD_PLAN = (
    ("anycloud-catalog-2026-05-20", ["azure", "gcp", "lambda", "vast"], "2026-05-20",
     "daily mirror of SkyPilot catalog data, dated 2026-05-20"),
    ("skypilot-catalog", ["aws", "runpod", "nebius", "cudo", "verda", "hyperbolic", "fluidstack", "paperspace", "do"],
     "2025-12-01", "SkyPilot catalog v8 (late 2025-2026; exact commit dates unavailable, date approximate). "
                   "AWS and RunPod are excerpts (p3/p4/p5/p6, g4-g6 families; RunPod A100-80GB). "
                   "Mithril left out: its catalog lists auction bid floors as prices"),
)


def build(reference: Path, idc_files: list[Path], out: Path) -> Snapshot:
    from pricing.skypilot import import_catalog_dir
    from providers.idc import read_idc_files

    offers: list[Offer] = []
    sources: list[dict] = []
    for folder, clouds, data_date, note in BUILD_PLAN:
        observed_at = datetime.fromisoformat(data_date).replace(tzinfo=timezone.utc)
        folder_offers, reports = import_catalog_dir(reference / folder, clouds, observed_at)
        for report in reports:
            print("\n".join(report.summary_lines()))
            if not report.balanced:
                raise SystemExit(f"importer lost rows in {report.path}; refusing to write a snapshot")
        offers.extend(folder_offers)
        sources.append({"name": folder, "kind": "skypilot-catalog", "clouds": clouds, "data_date": data_date,
                        "note": note, "reports": [report.as_dict() for report in reports]})
    idc_offers = read_idc_files(idc_files)
    offers.extend(idc_offers)
    sources.append({"name": ", ".join(path.name for path in idc_files), "kind": "idc", "clouds": ["idc"],
                    "data_date": max(o.observed_at for o in idc_offers).date().isoformat(),
                    "note": "illustrative IDC contract offers (examples/idc-offers.yaml)", "offers": len(idc_offers)})
    snapshot = write_snapshot(out, offers, sources)
    print(f"wrote {out}: {len(snapshot.offers)} offers, data date {snapshot.header['data_date']}, "
          f"{out.stat().st_size / 1024:.0f} KiB")
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pricing.snapshot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="rebuild the embedded snapshot from reference catalogs")
    build_parser.add_argument("--reference", type=Path, required=True, help="folder holding the reference catalogs")
    build_parser.add_argument("--idc", type=Path, action="append", default=[], help="IDC offer file(s)")
    build_parser.add_argument("--out", type=Path, default=EMBEDDED_PATH)
    args = parser.parse_args(argv)
    try:
        build(args.reference, args.idc, args.out)
    except UserError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
