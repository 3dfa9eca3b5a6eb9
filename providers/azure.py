"""Azure through azure-mgmt-compute and the public Retail Prices API.

Per region: ``resource_skus.list`` gives the GPU VM sizes (capabilities vCPUs, MemoryGB, GPUs; a
location restriction means the size is not available to this subscription there), ``usage.list``
the vCPU quota per VM family (matched case-insensitively; spot: the low-priority quota) turned
into nodes, and the Retail
Prices API (paged by ``NextPageLink``) the Linux consumption prices: spot from the meter name,
Windows and Low Priority meters left out.

Resource SKUs do not name the GPU: it comes from the size name (``Standard_NC40ads_H100_v5``)
or, for sizes that do not carry it, from the family (``SERIES_GPUS``). Credentials come from
``DefaultAzureCredential`` and the subscription from ``AZURE_SUBSCRIPTION_ID``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

from gpu_supply import gpus
from gpu_supply.offer import Offer, PricingModel, utcnow
from pricing.query import Scope
from providers.base import MissingCredentials, RegionFetch, TransientError, retrying

SOURCE = "azure-api"
RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
# Families whose size names do not name the GPU (Azure's documentation of each series).
SERIES_GPUS = {"standardndasv4_a100family": "A100", "standardndamsv4_a100family": "A100-80GB",
               "standardncsv3family": "V100", "standardncsv2family": "P100", "standardndsfamily": "P40",
               "standardndsv2family": "V100", "standardncasv3_t4family": "T4"}


def _transient(error: BaseException) -> bool:
    import httpx
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, (TransientError, ServiceRequestError, ServiceResponseError, httpx.TransportError)):
        return True
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, (HttpResponseError, httpx.HTTPStatusError)) and status is not None:
        return status == 429 or status >= 500
    return False


def retail_prices(items: Iterable[dict], malformed: list[tuple[str, str]] | None = None
                  ) -> dict[tuple[str, PricingModel], float]:
    """(VM size, on-demand or spot) -> USD per hour, from Retail Prices API items; items whose price
    cannot be read are added to ``malformed`` as (VM size, what)."""
    prices: dict[tuple[str, PricingModel], float] = {}
    for item in items:
        meter, product = item.get("meterName", ""), item.get("productName", "")
        if (item.get("type") != "Consumption" or "Windows" in product or "Low Priority" in meter
                or item.get("unitOfMeasure") != "1 Hour" or item.get("currencyCode", "USD") != "USD"):
            continue
        try:
            price = float(item["retailPrice"])
        except (KeyError, TypeError, ValueError):
            if malformed is not None:
                malformed.append((item.get("armSkuName", ""), f"retail price of {item.get('armSkuName', '?')} ({meter})"))
            continue
        if price <= 0 or not item.get("armSkuName"):
            continue
        key = (item["armSkuName"], PricingModel.SPOT if "Spot" in meter else PricingModel.ON_DEMAND)
        prices[key] = min(price, prices.get(key, math.inf))
    return prices


def _capabilities(sku) -> dict[str, str]:
    return {capability.name: capability.value for capability in sku.capabilities or []}


def _restricted(sku, region: str) -> bool:
    """A Location restriction for this region (zone restrictions still leave other zones)."""
    # ``restriction.values`` is the mapping method on these models: read the field by key.
    return any(restriction.type == "Location" and region.lower() in [value.lower() for value in restriction.get("values") or []]
               for restriction in sku.restrictions or [])


class AzureAdapter:
    name = "azure"

    def __init__(self, compute=None, prices_transport=None, subscription_id: str | None = None) -> None:
        self._compute = compute  # tests: a ComputeManagementClient on a faked transport
        self._prices_transport = prices_transport  # tests: an httpx transport
        self._subscription_id = subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID")

    def _client(self):
        if self._compute is None:
            if not self._subscription_id:
                raise MissingCredentials("no Azure subscription (set AZURE_SUBSCRIPTION_ID; credentials from "
                                         "DefaultAzureCredential)")
            from azure.identity import DefaultAzureCredential
            from azure.mgmt.compute import ComputeManagementClient

            # Retries are ours (providers.base.retrying), one policy for every supplier.
            self._compute = ComputeManagementClient(DefaultAzureCredential(), self._subscription_id, retry_total=0)
        return self._compute

    def regions(self, wanted: Sequence[str] | None) -> list[str]:
        self._client()
        if wanted:
            return list(wanted)
        from azure.core.exceptions import ClientAuthenticationError

        try:
            skus, _ = retrying(lambda: list(self._client().resource_skus.list(filter=None)), is_transient=_transient)
        except ClientAuthenticationError as error:
            raise MissingCredentials(f"Azure credentials not usable ({type(error).__name__})") from None
        return sorted({location.lower() for sku in skus if sku.resource_type == "virtualMachines"
                       and _capabilities(sku).get("GPUs") for location in sku.locations or []})

    def scopes(self, unit: str) -> tuple[Scope, ...]:
        return ((self.name, unit, None),)

    def _prices(self, region: str, malformed: list[tuple[str, str]]) -> dict[tuple[str, PricingModel], float]:
        import httpx

        query = (f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' "
                 f"and priceType eq 'Consumption'")
        items: list[dict] = []
        with httpx.Client(timeout=30, transport=self._prices_transport) as client:
            url, params = RETAIL_PRICES_URL, {"$filter": query}
            while url:
                def get_page(url=url, params=params):
                    response = client.get(url, params=params)
                    response.raise_for_status()
                    return response.json()
                page, _ = retrying(get_page, is_transient=_transient)
                items.extend(page.get("Items", []))
                url, params = page.get("NextPageLink"), None
        return retail_prices(items, malformed)

    def fetch(self, unit: str) -> RegionFetch:
        region = unit.lower()
        compute = self._client()
        skus, _ = retrying(lambda: list(compute.resource_skus.list(filter=f"location eq '{region}'")),
                           is_transient=_transient)
        usages, _ = retrying(lambda: list(compute.usage.list(region)), is_transient=_transient)
        free_vcpus = {usage.name.value.lower(): max(0, usage.limit - usage.current_value) for usage in usages}
        malformed: list[tuple[str, str]] = []
        prices = self._prices(region, malformed)
        observed = utcnow()
        offers, unknown = [], set()
        for sku in skus:
            capabilities = _capabilities(sku)
            if sku.resource_type != "virtualMachines" or _restricted(sku, region):
                continue
            try:
                gpu_count = float(capabilities.get("GPUs", 0))
                vcpus = int(float(capabilities["vCPUs"]))
            except (KeyError, ValueError):
                continue
            if gpu_count < 1 or gpu_count != int(gpu_count):  # no GPU, or a fraction of one
                continue
            family = (sku.family or "").lower()
            canonical = gpus.resolve_from_instance_type(sku.name) or SERIES_GPUS.get(family)
            if canonical is None:
                unknown.add(sku.family or sku.name)
            spec = gpus.spec(canonical) if canonical else None
            shape = dict(provider=self.name, region=region, instance_type=sku.name,
                         gpu=canonical or (sku.family or sku.name), gpu_count=int(gpu_count),
                         gpu_memory_gb=spec.memory_gb if spec else 0.0, vcpus=vcpus,
                         ram_gb=float(capabilities.get("MemoryGB", 0)) or None, currency="USD", source=SOURCE,
                         observed_at=observed)
            # On-demand draws on the family's vCPU quota; spot on the region's low-priority quota.
            for pricing, quota in ((PricingModel.ON_DEMAND, free_vcpus.get(family)),
                                   (PricingModel.SPOT, free_vcpus.get("lowprioritycores"))):
                if (sku.name, pricing) in prices:
                    offers.append(Offer(**shape, pricing=pricing, price_per_hour=prices[(sku.name, pricing)],
                                        available_nodes=None if quota is None else int(quota // vcpus)))
        protected = {(name, pricing.value) for name, _ in malformed if name for pricing in PricingModel}
        return RegionFetch(self.name, region, self.scopes(region), tuple(offers), unknown_gpus=tuple(sorted(unknown)),
                           malformed=tuple(what for _, what in malformed), protected=tuple(sorted(protected)))
