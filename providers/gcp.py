"""GCP through google-cloud-compute and google-cloud-billing.

Per region: the machine types with built-in accelerators in each of its zones
(``MachineTypesClient``; A2, A3, A4, G2 and the like), the region's GPU quotas (``RegionsClient``:
``NVIDIA_*_GPUS`` for on-demand and ``PREEMPTIBLE_NVIDIA_*_GPUS`` for spot; a metric that is absent
is unknown, not zero), and prices from the Cloud Billing Catalog (the Compute Engine service's
SKUs: the GPU rate, and the family's core and RAM rates, for on-demand and spot, matched through
``serviceRegions``) composed into a node price: GPUs x GPU rate + vCPUs x core rate + GiB x RAM
rate. N1 machines with attachable GPUs are not listed yet. The catalog is read once per refresh.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from gpu_supply import gpus
from gpu_supply.offer import Offer, PricingModel, utcnow
from pricing.query import Scope
from providers.base import MissingCredentials, RegionFetch, retrying

SOURCE = "gcp-api"
COMPUTE_ENGINE_SERVICE = "services/6F81-5844-456A"
_GPU_SKU = re.compile(r"^Nvidia\s+(?:Tesla\s+)?(?P<gpu>.+?)\s+GPU\b", re.IGNORECASE)
_HOST_SKU = re.compile(r"^(?P<family>[A-Z]\d+)\s+Instance\s+(?P<kind>Core|Ram)\b", re.IGNORECASE)
USAGE = {"OnDemand": PricingModel.ON_DEMAND, "Preemptible": PricingModel.SPOT}
ONE_TRY = {"retry": None, "timeout": 60.0}  # retries are ours (providers.base.retrying), one policy for all


def _transient(error: BaseException) -> bool:
    from google.api_core import exceptions

    return isinstance(error, (exceptions.TooManyRequests, exceptions.ServiceUnavailable, exceptions.InternalServerError,
                              exceptions.GatewayTimeout, exceptions.DeadlineExceeded, ConnectionError, TimeoutError))


def quota_metric(accelerator_type: str) -> str:
    """``nvidia-h100-80gb`` -> ``NVIDIA_H100_GPUS``; ``nvidia-a100-80gb`` -> ``NVIDIA_A100_80GB_GPUS``."""
    parts = [part for part in accelerator_type.lower().split("-")[1:] if part != "tesla"]
    name = parts[0].upper() if parts else accelerator_type.upper()
    if "mega" in parts:
        name += "_MEGA"
    elif parts[:1] == ["a100"] and "80gb" in parts:
        name += "_80GB"
    return f"NVIDIA_{name}_GPUS"


def _unit_price(sku) -> float | None:
    try:
        rate = sku.pricing_info[0].pricing_expression.tiered_rates[-1].unit_price
    except (IndexError, AttributeError):
        return None
    if rate.currency_code not in ("", "USD"):
        return None
    return int(rate.units or 0) + rate.nanos / 1e9


def catalog_rates(skus) -> dict[tuple[str, str, PricingModel, str], float]:
    """(``gpu``/``core``/``ram``, GPU name or machine family, market, region) -> USD per hour (per
    GPU, per vCPU, per GiB) from Compute Engine SKUs; commitments and other SKUs left out."""
    rates: dict[tuple[str, str, PricingModel, str], float] = {}
    for sku in skus:
        market = USAGE.get(sku.category.usage_type)
        price = _unit_price(sku)
        if market is None or price is None or price <= 0:
            continue
        description = re.sub(r"^Spot Preemptible\s+", "", sku.description.strip(), flags=re.IGNORECASE)
        if sku.category.resource_group == "GPU" and (match := _GPU_SKU.match(description)):
            canonical = gpus.resolve(match["gpu"])
            if canonical is None:
                continue
            key_kind, key_name = "gpu", canonical
        elif match := _HOST_SKU.match(description):
            key_kind, key_name = match["kind"].lower(), match["family"].lower()
        else:
            continue
        for region in sku.service_regions:
            rates[(key_kind, key_name, market, region)] = price
    return rates


class GcpAdapter:
    name = "gcp"

    def __init__(self, project: str | None = None, clients: dict | None = None) -> None:
        self._project = project
        self._clients = clients  # tests: {"regions", "machine_types", "catalog"} on faked sessions
        self._rates: dict | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._clients is not None and self._project:
            return
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, project = google.auth.default()
        except DefaultCredentialsError:
            raise MissingCredentials("no Google credentials (Application Default Credentials)") from None
        self._project = self._project or project
        if not self._project:
            raise MissingCredentials("no Google Cloud project (set GOOGLE_CLOUD_PROJECT)")
        from google.cloud import billing_v1, compute_v1

        self._clients = {"regions": compute_v1.RegionsClient(credentials=credentials),
                         "machine_types": compute_v1.MachineTypesClient(credentials=credentials),
                         "catalog": billing_v1.CloudCatalogClient(credentials=credentials, transport="rest")}

    def regions(self, wanted: Sequence[str] | None) -> list[str]:
        self._ensure()
        if wanted:
            return list(wanted)
        found, _ = retrying(lambda: [region.name for region in self._clients["regions"].list(project=self._project, **ONE_TRY)],
                            is_transient=_transient)
        return sorted(found)

    def scopes(self, unit: str) -> tuple[Scope, ...]:
        return ((self.name, unit, None),)

    def _catalog(self) -> dict:
        with self._lock:  # regions run in parallel; the catalog is read once
            if self._rates is None:
                skus, _ = retrying(lambda: list(self._clients["catalog"].list_skus(parent=COMPUTE_ENGINE_SERVICE, **ONE_TRY)),
                                   is_transient=_transient)
                self._rates = catalog_rates(skus)
            return self._rates

    def fetch(self, unit: str) -> RegionFetch:
        self._ensure()
        region_name = unit
        region, _ = retrying(lambda: self._clients["regions"].get(project=self._project, region=region_name, **ONE_TRY),
                             is_transient=_transient)
        quotas = {quota.metric: max(0.0, quota.limit - quota.usage) for quota in region.quotas}
        machines = {}
        for zone in sorted(url.rsplit("/", 1)[-1] for url in region.zones):
            listed, _ = retrying(lambda zone=zone: list(self._clients["machine_types"].list(
                project=self._project, zone=zone, **ONE_TRY)), is_transient=_transient)
            for machine in listed:
                if machine.accelerators:
                    machines.setdefault(machine.name, machine)
        rates = self._catalog()
        observed = utcnow()
        offers, unknown = [], set()
        for name, machine in sorted(machines.items()):
            accelerator = machine.accelerators[0]
            canonical = gpus.resolve(accelerator.guest_accelerator_type)
            if canonical is None:
                unknown.add(accelerator.guest_accelerator_type)
                continue  # no GPU rate can be matched to a GPU we cannot name
            count = accelerator.guest_accelerator_count
            family = name.split("-", 1)[0]
            memory_gib = machine.memory_mb / 1024
            metric = quota_metric(accelerator.guest_accelerator_type)
            for market, quota in ((PricingModel.ON_DEMAND, quotas.get(metric)),
                                  (PricingModel.SPOT, quotas.get(f"PREEMPTIBLE_{metric}"))):
                parts = (rates.get(("gpu", canonical, market, region_name)),
                         rates.get(("core", family, market, region_name)), rates.get(("ram", family, market, region_name)))
                if None in parts:
                    continue  # the catalog does not price this machine here
                gpu_rate, core_rate, ram_rate = parts
                offers.append(Offer(
                    provider=self.name, region=region_name, instance_type=name, gpu=canonical, gpu_count=count,
                    gpu_memory_gb=gpus.spec(canonical).memory_gb, vcpus=machine.guest_cpus,
                    ram_gb=round(memory_gib, 1), pricing=market, currency="USD", source=SOURCE, observed_at=observed,
                    price_per_hour=round(count * gpu_rate + machine.guest_cpus * core_rate + memory_gib * ram_rate, 6),
                    available_nodes=None if quota is None else int(quota // count)))
        return RegionFetch(self.name, region_name, self.scopes(region_name), tuple(offers),
                           unknown_gpus=tuple(sorted(unknown)))
