"""GCP adapter through the real google-cloud-compute and google-cloud-billing REST clients, their
HTTP session faked, answering in the APIs' JSON shapes (paging, throttling, a failing region)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import billing_v1, compute_v1

from conftest import FakeHttpAdapter
from pricing.store import open_store
from providers import base
from providers.gcp import GcpAdapter, catalog_rates, quota_metric
from providers.refresh import refresh

PROJECT = "ops-project"


def machine(name: str, cpus: int, memory_gb: int, accelerator: str, count: int, zone: str) -> dict:
    return {"kind": "compute#machineType", "name": name, "guestCpus": cpus, "memoryMb": memory_gb * 1024, "zone": zone,
            "accelerators": [{"guestAcceleratorType": accelerator, "guestAcceleratorCount": count}]}


def money(usd: float) -> dict:
    units = int(usd)
    return {"currencyCode": "USD", "units": str(units), "nanos": round((usd - units) * 1e9)}


def sku(description: str, group: str, usage: str, usd: float, regions=("us-central1",), unit: str = "h") -> dict:
    return {"name": f"services/6F81-5844-456A/skus/{abs(hash(description)) % 10**8:08d}", "description": description,
            "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute", "resourceGroup": group,
                         "usageType": usage},
            "serviceRegions": list(regions),
            "pricingInfo": [{"pricingExpression": {"usageUnit": unit, "tieredRates": [
                {"startUsageAmount": 0, "unitPrice": money(usd)}]}}]}


SKUS = [sku("Nvidia H100 80GB GPU running in Americas", "GPU", "OnDemand", 9.79655),
        sku("Nvidia H100 80GB GPU attached to Spot Preemptible VMs running in Americas", "GPU", "Preemptible", 2.25),
        sku("A3 Instance Core running in Americas", "CPU", "OnDemand", 0.0291),
        sku("A3 Instance Ram running in Americas", "RAM", "OnDemand", 0.0025, unit="GiBy.h"),
        sku("Spot Preemptible A3 Instance Core running in Americas", "CPU", "Preemptible", 0.0087),
        sku("Spot Preemptible A3 Instance Ram running in Americas", "RAM", "Preemptible", 0.00073, unit="GiBy.h"),
        sku("Nvidia L4 GPU running in Americas", "GPU", "OnDemand", 0.56),
        sku("G2 Instance Core running in Americas", "CPU", "OnDemand", 0.0254),
        sku("G2 Instance Ram running in Americas", "RAM", "OnDemand", 0.003, unit="GiBy.h"),
        sku("Commitment v1: Nvidia H100 80GB GPU in Americas for 1 Year", "GPU", "Commit1Yr", 6.0)]


class FakeGoogle(FakeHttpAdapter, requests.adapters.BaseAdapter):
    """compute.googleapis.com and cloudbilling.googleapis.com at the HTTP edge."""

    def __init__(self, regions: dict[str, dict], machines: dict[str, list[dict]], skus: list[dict],
                 throttle_catalog: bool = False) -> None:
        super().__init__()
        self.regions, self.machines, self.skus = regions, machines, skus
        self.throttle_catalog = throttle_catalog
        self.paths: list[str] = []

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        self.paths.append(url.path)
        token = parse_qs(url.query).get("pageToken", [""])[0]
        parts = url.path.split("/")
        if url.netloc == "cloudbilling.googleapis.com":
            if self.throttle_catalog:
                self.throttle_catalog = False
                return self.json_response(request, 429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                                               "message": "Quota exceeded"}})
            half = len(self.skus) // 2
            body = {"skus": self.skus[half:], "nextPageToken": ""} if token else {"skus": self.skus[:half],
                                                                                   "nextPageToken": "p2"}
            return self.json_response(request, 200, body)
        if "machineTypes" in parts:
            zone = parts[parts.index("zones") + 1]
            return self.json_response(request, 200, {"kind": "compute#machineTypeList", "items": self.machines.get(zone, [])})
        if parts[-2] == "regions":
            region = self.regions.get(parts[-1])
            if region is None:
                return self.json_response(request, 503, {"error": {"code": 503, "message": "Backend unavailable"}})
            return self.json_response(request, 200, region)
        return self.json_response(request, 404, {"error": {"code": 404, "message": url.path}})


def clients(fake: FakeGoogle) -> dict:
    made = {"regions": compute_v1.RegionsClient(credentials=AnonymousCredentials()),
            "machine_types": compute_v1.MachineTypesClient(credentials=AnonymousCredentials()),
            "catalog": billing_v1.CloudCatalogClient(credentials=AnonymousCredentials(), transport="rest")}
    for client in made.values():
        client._transport._session.mount("https://", fake)  # the clients' own REST session, faked at the edge
    return made


def region(name: str, quotas: list[dict]) -> dict:
    return {"kind": "compute#region", "name": name, "status": "UP", "quotas": quotas,
            "zones": [f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{name}-{z}" for z in "ab"]}


REGIONS = {"us-central1": region("us-central1", [{"metric": "NVIDIA_H100_GPUS", "limit": 32, "usage": 8},
                                                 {"metric": "PREEMPTIBLE_NVIDIA_H100_GPUS", "limit": 64, "usage": 0},
                                                 {"metric": "CPUS", "limit": 2400, "usage": 100}])}
MACHINES = {"us-central1-a": [machine("a3-highgpu-8g", 208, 1872, "nvidia-h100-80gb", 8, "us-central1-a"),
                              {"kind": "compute#machineType", "name": "n2-standard-8", "guestCpus": 8, "memoryMb": 32768}],
            "us-central1-b": [machine("a3-highgpu-8g", 208, 1872, "nvidia-h100-80gb", 8, "us-central1-b"),
                              machine("g2-standard-4", 4, 16, "nvidia-l4", 1, "us-central1-b"),
                              machine("x9-quantum-1g", 12, 85, "nvidia-quasar-q9", 1, "us-central1-b")]}


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(base.time, "sleep", lambda seconds: None)


def test_quota_metric_names():
    assert quota_metric("nvidia-h100-80gb") == "NVIDIA_H100_GPUS"
    assert quota_metric("nvidia-a100-80gb") == "NVIDIA_A100_80GB_GPUS"
    assert quota_metric("nvidia-tesla-a100") == "NVIDIA_A100_GPUS"
    assert quota_metric("nvidia-h100-mega-80gb") == "NVIDIA_H100_MEGA_GPUS"
    assert quota_metric("nvidia-l4") == "NVIDIA_L4_GPUS"


def test_region_fetch_composes_node_prices_from_the_catalog():
    fake = FakeGoogle(REGIONS, MACHINES, SKUS, throttle_catalog=True)
    fetch = GcpAdapter(PROJECT, clients(fake)).fetch("us-central1")
    offers = {(offer.instance_type, offer.pricing.value): offer for offer in fetch.offers}
    a3 = offers[("a3-highgpu-8g", "on_demand")]
    assert a3.price_per_hour == pytest.approx(8 * 9.79655 + 208 * 0.0291 + 1872 * 0.0025)
    assert (a3.gpu, a3.gpu_count, a3.available_nodes) == ("H100", 8, 3)  # (32 - 8) GPUs free / 8
    spot = offers[("a3-highgpu-8g", "spot")]
    assert spot.price_per_hour == pytest.approx(8 * 2.25 + 208 * 0.0087 + 1872 * 0.00073)
    assert spot.available_nodes == 8
    l4 = offers[("g2-standard-4", "on_demand")]
    assert l4.price_per_hour == pytest.approx(0.56 + 4 * 0.0254 + 16 * 0.003)
    assert l4.available_nodes is None  # no L4 quota metric reported: unknown, not zero
    assert ("g2-standard-4", "spot") not in offers  # no spot rates in the catalog for G2 here
    assert fetch.unknown_gpus == ("nvidia-quasar-q9",)
    assert sum("skus" in path for path in fake.paths) == 3  # throttled once, then two pages


def test_catalog_rates_skip_commitments():
    from google.cloud.billing_v1 import Sku

    rates = catalog_rates([Sku.from_json(json.dumps(item)) for item in SKUS])
    assert not any(value == 6.0 for value in rates.values())


def test_a_region_that_stays_down_keeps_its_offers(seeded_db):
    store = open_store(seeded_db)
    fake = FakeGoogle(REGIONS, MACHINES, SKUS)
    report = refresh([GcpAdapter(PROJECT, clients(fake))], store, regions=["us-central1", "europe-west4"])
    rows = {row.region: row for row in report.regions}
    assert report.failed and rows["europe-west4"].stale and "ServiceUnavailable" in rows["europe-west4"].error
    assert rows["europe-west4"].attempts == base.RETRY_ATTEMPTS and rows["europe-west4"].removed == 0
    assert rows["us-central1"].offers == 3 and not rows["us-central1"].stale
    assert report.unknown_gpus == {"gcp": ["nvidia-quasar-q9"]}


def test_missing_credentials_skip_gcp(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    with pytest.raises(base.MissingCredentials, match="no Google credentials"):
        GcpAdapter().regions(None)
