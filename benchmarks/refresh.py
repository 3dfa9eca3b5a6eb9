"""Local work of a full refresh, network excluded: parse-and-normalise throughput per cloud on
synthetic payloads shaped like the real APIs', and the store write.

- Azure: 100,000 Retail Prices API items (``retail_prices``);
- AWS: 20 regions x 2,000 spot price history rows (``latest_spot_prices``) and 20 regions x 800
  Pricing API PriceList JSON strings (``parse_price_list``);
- GCP: 5,000 Cloud Billing Catalog SKUs (``catalog_rates``, from the client's Sku messages);
- the store: one refresh transaction of the offers such a refresh yields.

Each line prints rows per second (best of three runs) and the ratio to ``json.loads`` of the same
payload (the bare cost of reading it, measured in this run). Target: the whole local work under 5 s.

    .venv/bin/python benchmarks/refresh.py
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_supply.offer import Offer, PricingModel  # noqa: E402
from pricing.store import Store  # noqa: E402
from providers.aws import latest_spot_prices, parse_price_list  # noqa: E402
from providers.azure import retail_prices  # noqa: E402
from providers.gcp import catalog_rates  # noqa: E402

RNG = random.Random(11)
TYPES = [f"{family}.{size}" for family in ("p5", "p4d", "p5e", "g6e", "g6", "g5", "g4dn", "p3")
         for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "24xlarge", "48xlarge")]


def azure_items(count: int) -> list[dict]:
    items = []
    for index in range(count):
        meter = RNG.choice(["", " Spot", " Low Priority"])
        items.append({"currencyCode": "USD", "retailPrice": round(RNG.uniform(0.1, 120), 4), "unitPrice": 1.0,
                      "armRegionName": f"region{index % 60}", "location": "US East",
                      "meterName": f"NC{index % 500} v5{meter}",
                      "productName": "Virtual Machines NC Series" + (" Windows" if index % 4 == 0 else ""),
                      "skuName": f"NC{index % 500} v5{meter}", "armSkuName": f"Standard_NC{index % 500}_v5",
                      "serviceName": "Virtual Machines", "unitOfMeasure": "1 Hour", "type": "Consumption",
                      "isPrimaryMeterRegion": True, "effectiveStartDate": "2026-11-01T00:00:00Z"})
    return items


def aws_spot_rows(regions: int, per_region: int) -> list[dict]:
    start = datetime(2026, 11, 23, tzinfo=timezone.utc)
    return [{"AvailabilityZone": f"r{region}{'abcdef'[index % 6]}", "InstanceType": TYPES[index % len(TYPES)],
             "ProductDescription": "Linux/UNIX", "SpotPrice": f"{RNG.uniform(0.2, 60):.6f}",
             "Timestamp": start - timedelta(minutes=index)}
            for region in range(regions) for index in range(per_region)]


def aws_price_list(regions: int, per_region: int) -> list[str]:
    items = []
    for region in range(regions):
        for index in range(per_region):
            instance_type = f"{TYPES[index % len(TYPES)]}-{index}"
            items.append(json.dumps({
                "product": {"productFamily": "Compute Instance", "sku": f"S{region}{index}", "attributes": {
                    "instanceType": instance_type, "regionCode": f"region-{region}", "operatingSystem": "Linux",
                    "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
                    "marketoption": "CapacityBlock" if index % 20 == 0 else "OnDemand", "vcpu": "192",
                    "memory": "2048 GiB", "gpu": "8", "networkPerformance": "3200 Gigabit"}},
                "serviceCode": "AmazonEC2",
                "terms": {"OnDemand": {f"S{region}{index}.JRTCKXETXF": {"priceDimensions": {
                    f"S{region}{index}.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {
                        "USD": f"{RNG.uniform(0.5, 100):.10f}"}, "description": "per On Demand Linux hour"}}}}},
                "version": "20261101", "publicationDate": "2026-11-01T00:00:00Z"}))
    return items


def gcp_skus(count: int) -> list[dict]:
    gpus = ["H100 80GB", "A100 80GB", "L4", "H200 141GB", "B200", "Tesla T4"]
    skus = []
    for index in range(count):
        kind = index % 3
        spot = "Spot Preemptible " if index % 2 else ""
        description = (f"{spot}Nvidia {gpus[index % len(gpus)]} GPU running in Region {index}" if kind == 0 else
                       f"{spot}A{index % 4 + 2} Instance {'Core' if kind == 1 else 'Ram'} running in Region {index}")
        units = RNG.uniform(0.001, 10)
        skus.append({"name": f"services/6F81-5844-456A/skus/{index:08d}", "description": description,
                     "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute",
                                  "resourceGroup": ["GPU", "CPU", "RAM"][kind],
                                  "usageType": "Preemptible" if spot else "OnDemand"},
                     "serviceRegions": [f"region-{index % 40}", f"region-{(index + 1) % 40}"],
                     "pricingInfo": [{"pricingExpression": {"usageUnit": "h", "tieredRates": [
                         {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": str(int(units)),
                                                               "nanos": int((units % 1) * 1e9)}}]}}]})
    return skus


def offers(count: int) -> list[Offer]:
    now = datetime.now(timezone.utc)
    return [Offer(provider=["aws", "gcp", "azure"][index % 3], region=f"region-{index % 40}",
                  instance_type=f"type-{index}", gpu="H100", gpu_count=8, gpu_memory_gb=80.0,
                  pricing=PricingModel.SPOT if index % 2 else PricingModel.ON_DEMAND,
                  price_per_hour=RNG.uniform(5, 100), currency="USD", source="bench", observed_at=now)
            for index in range(count)]


def _decode_each(items: list[str]) -> None:
    for item in items:
        json.loads(item)


def timed(function, *args, repeat: int = 3) -> tuple[float, object]:
    """Best of ``repeat`` runs (seconds) and the result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> int:
    from google.cloud.billing_v1 import Sku

    rows = []
    azure = azure_items(100_000)
    azure_json = json.dumps({"Items": azure})
    base, _ = timed(json.loads, azure_json)
    seconds, _ = timed(lambda text: retail_prices(json.loads(text)["Items"]), azure_json)
    rows.append(("azure retail prices (decode + normalise)", len(azure), seconds, base))

    spot = aws_spot_rows(20, 2_000)
    spot_json = json.dumps(spot, default=str)
    base, _ = timed(json.loads, spot_json)
    seconds, _ = timed(lambda text: latest_spot_prices(
        {**row, "Timestamp": datetime.fromisoformat(row["Timestamp"])} for row in json.loads(text)), spot_json)
    rows.append(("aws spot history (decode + latest per zone)", len(spot), seconds, base))

    price_list = aws_price_list(20, 800)
    base, _ = timed(_decode_each, price_list)
    seconds, _ = timed(parse_price_list, price_list)
    rows.append(("aws pricing PriceList (decode + on-demand)", len(price_list), seconds, base))

    skus_json = [json.dumps(item) for item in gcp_skus(5_000)]
    base, _ = timed(_decode_each, skus_json)
    parse_seconds, messages = timed(lambda items: [Sku.from_json(item) for item in items], skus_json)
    seconds, _ = timed(catalog_rates, messages)
    rows.append(("gcp catalog SKUs (client parse + rates)", len(skus_json), parse_seconds + seconds, base))

    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{folder}/bench.db")
        fresh = offers(3_000)
        base, _ = timed(lambda: json.loads(json.dumps([offer.as_row() for offer in fresh], default=str)))
        seconds, _ = timed(lambda: store.import_offers(fresh, "bench", "refresh",
                                                       scopes=[(p, f"region-{r}", None) for p in ("aws", "gcp", "azure")
                                                               for r in range(40)]), repeat=1)
        rows.append(("store write (one refresh transaction)", len(fresh), seconds, base))

    print(f"{'step':<42} {'rows':>9} {'seconds':>8} {'rows/s':>11} {'x json.loads':>13}")
    for name, count, seconds, base in rows:
        print(f"{name:<42} {count:>9,} {seconds:>8.3f} {count / seconds:>11,.0f} {seconds / base:>13.1f}")
    total = sum(seconds for _, _, seconds, _ in rows)
    print(f"{'full three-cloud refresh, local work':<42} {'':>9} {total:>8.3f}   (target < 5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
