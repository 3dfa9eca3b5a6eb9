"""Azure adapter through the real ComputeManagementClient (azure-core pipeline on a faked requests
transport) and the Retail Prices API (httpx MockTransport), in the APIs' JSON shapes."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.compute import ComputeManagementClient

from conftest import FakeHttpAdapter
from pricing.store import open_store
from providers import base
from providers.azure import AzureAdapter, retail_prices
from providers.refresh import refresh

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-token", int(time.time()) + 3600)


class FakeArm(FakeHttpAdapter, requests.adapters.BaseAdapter):
    """Azure Resource Manager at the HTTP edge: answers by path, in ARM's JSON shapes."""

    def __init__(self, skus: list[dict], usages: list[dict], fail_regions=()) -> None:
        super().__init__()
        self.skus, self.usages, self.fail_regions = skus, usages, set(fail_regions)
        self.calls: list[str] = []

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        self.calls.append(url.path)
        query = parse_qs(url.query)
        if url.path.endswith("/providers/Microsoft.Compute/skus"):
            location = query.get("$filter", [""])[0].split("'")[1] if "$filter" in query else None
            if location in self.fail_regions:
                return self.json_response(request, 500, {"error": {"code": "InternalServerError", "message": "boom"}})
            page = "page" in query
            skus = [sku for sku in self.skus if location is None or location in sku["locations"]]
            half = len(skus) // 2
            body = {"value": skus[half:]} if page else {"value": skus[:half],
                                                        "nextLink": request.url + "&page=2"}
            return self.json_response(request, 200, body)
        if "/usages" in url.path:
            return self.json_response(request, 200, {"value": self.usages})
        return self.json_response(request, 404, {"error": {"code": "NotFound", "message": url.path}})


def sku(name: str, family: str, vcpus: int, gpus: str, locations=("eastus",), restricted=()) -> dict:
    return {"resourceType": "virtualMachines", "name": name, "tier": "Standard", "size": name.split("_", 1)[1],
            "family": family, "locations": list(locations),
            "locationInfo": [{"location": location, "zones": ["1", "2"]} for location in locations],
            "capabilities": [{"name": "vCPUs", "value": str(vcpus)}, {"name": "MemoryGB", "value": "320"},
                             {"name": "GPUs", "value": gpus}],
            "restrictions": [{"type": "Location", "values": list(restricted), "reasonCode": "NotAvailableForSubscription",
                              "restrictionInfo": {"locations": list(restricted)}}] if restricted else []}


SKUS = [sku("Standard_NC40ads_H100_v5", "standardNCADSH100v5Family", 40, "1"),
        sku("Standard_ND96asr_v4", "standardNDASv4_A100Family", 96, "8"),
        sku("Standard_NV6ads_A10_v5", "StandardNVADSA10v5Family", 6, "0.166"),  # a sixth of a GPU: skipped
        sku("Standard_ND96isr_H200_v5", "standardNDISRH200V5Family", 96, "8", restricted=("eastus",)),
        sku("Standard_NG8ads_V620_v1", "StandardNGADSV620v1Family", 8, "1"),  # AMD V620: not in the registry
        sku("Standard_D4s_v5", "standardDSv5Family", 4, "0")]
USAGES = [{"name": {"value": "StandardNCADSH100v5Family", "localizedValue": "NCads H100 v5"}, "currentValue": 40,
           "limit": 200, "unit": "Count"},
          {"name": {"value": "lowPriorityCores", "localizedValue": "Spot vCPUs"}, "currentValue": 0, "limit": 960,
           "unit": "Count"}]


def price(sku_name: str, value: float, meter: str, product: str = "Virtual Machines NCadsH100v5 Series") -> dict:
    return {"currencyCode": "USD", "retailPrice": value, "unitPrice": value, "armRegionName": "eastus",
            "location": "US East", "meterName": meter, "productName": product, "skuName": meter,
            "armSkuName": sku_name, "serviceName": "Virtual Machines", "unitOfMeasure": "1 Hour",
            "type": "Consumption", "isPrimaryMeterRegion": True}


PRICES = [price("Standard_NC40ads_H100_v5", 6.98, "NC40ads H100 v5"),
          price("Standard_NC40ads_H100_v5", 2.10, "NC40ads H100 v5 Spot"),
          price("Standard_NC40ads_H100_v5", 1.40, "NC40ads H100 v5 Low Priority"),
          price("Standard_NC40ads_H100_v5", 9.90, "NC40ads H100 v5", "Virtual Machines NCadsH100v5 Series Windows"),
          price("Standard_ND96asr_v4", 27.20, "ND96asr v4"),
          price("Standard_NG8ads_V620_v1", 0.88, "NG8ads V620 v1")]


def prices_transport(pages: list[list[dict]], throttle_first: bool = False) -> httpx.MockTransport:
    state = {"throttled": not throttle_first}

    def handler(request: httpx.Request) -> httpx.Response:
        if not state["throttled"]:
            state["throttled"] = True
            return httpx.Response(429, json={"Error": "Too many requests"})
        page = int(request.url.params.get("page", "0"))
        body = {"BillingCurrency": "USD", "Items": pages[page], "Count": len(pages[page]),
                "NextPageLink": f"https://prices.azure.com/api/retail/prices?page={page + 1}"
                if page + 1 < len(pages) else None}
        return httpx.Response(200, json=body)
    return httpx.MockTransport(handler)


def compute_client(arm: FakeArm) -> ComputeManagementClient:
    session = requests.Session()
    session.mount("https://", arm)
    return ComputeManagementClient(FakeCredential(), SUBSCRIPTION, transport=RequestsTransport(session=session),
                                   retry_total=0)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(base.time, "sleep", lambda seconds: None)


def test_retail_prices_keep_linux_consumption_with_spot_by_meter():
    from gpu_supply.offer import PricingModel

    malformed = []
    broken = {**price("Standard_ND96asr_v4", 0, "ND96asr v4 Spot"), "retailPrice": "n/a"}
    assert retail_prices(PRICES + [broken], malformed) == {("Standard_NC40ads_H100_v5", PricingModel.ON_DEMAND): 6.98,
                                     ("Standard_NC40ads_H100_v5", PricingModel.SPOT): 2.10,
                                     ("Standard_ND96asr_v4", PricingModel.ON_DEMAND): 27.20,
                                     ("Standard_NG8ads_V620_v1", PricingModel.ON_DEMAND): 0.88}
    assert malformed == [("Standard_ND96asr_v4", "retail price of Standard_ND96asr_v4 (ND96asr v4 Spot)")]


def test_region_fetch_through_the_real_client():
    arm = FakeArm(SKUS, USAGES)
    adapter = AzureAdapter(compute=compute_client(arm), prices_transport=prices_transport([PRICES[:3], PRICES[3:]],
                                                                                          throttle_first=True))
    fetch = adapter.fetch("eastus")
    offers = {(offer.instance_type, offer.pricing.value): offer for offer in fetch.offers}
    h100 = offers[("Standard_NC40ads_H100_v5", "on_demand")]
    assert (h100.gpu, h100.gpu_count, h100.gpu_memory_gb, h100.price_per_hour, h100.available_nodes) == \
        ("H100", 1, 80.0, 6.98, 4)  # (200 - 40) vCPUs free / 40
    assert offers[("Standard_NC40ads_H100_v5", "spot")].available_nodes == 24  # 960 low-priority vCPUs / 40
    assert offers[("Standard_ND96asr_v4", "on_demand")].gpu == "A100"  # from the family
    assert offers[("Standard_ND96asr_v4", "on_demand")].available_nodes is None  # no quota reported: unknown
    assert offers[("Standard_NG8ads_V620_v1", "on_demand")].gpu == "StandardNGADSV620v1Family"
    assert fetch.unknown_gpus == ("StandardNGADSV620v1Family",)
    assert not any("H200" in name or "NV6ads" in name or "D4s" in name for name, _ in offers)
    assert sum("skus" in path for path in arm.calls) == 2  # followed nextLink


def test_a_failing_region_stays_stale_and_the_others_land(seeded_db):
    arm = FakeArm([sku("Standard_NC40ads_H100_v5", "standardNCADSH100v5Family", 40, "1",
                       locations=("eastus", "westeurope"))], USAGES, fail_regions={"westeurope"})
    adapter = AzureAdapter(compute=compute_client(arm), prices_transport=prices_transport([PRICES]))
    report = refresh([adapter], open_store(seeded_db), regions=["eastus", "westeurope"])
    rows = {row.region: row for row in report.regions}
    assert report.failed and rows["westeurope"].stale and "InternalServerError" in rows["westeurope"].error
    assert rows["westeurope"].attempts == base.RETRY_ATTEMPTS  # 5xx retried with back-off
    assert not rows["eastus"].stale and rows["eastus"].offers == 2
    assert rows["westeurope"].removed == 0  # its snapshot offers stay


def test_missing_subscription_skips_azure(monkeypatch):
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    with pytest.raises(base.MissingCredentials, match="AZURE_SUBSCRIPTION_ID"):
        AzureAdapter().regions(None)
