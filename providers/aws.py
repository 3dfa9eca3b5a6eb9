"""AWS through boto3: GPU instance types, where they are offered, on-demand and spot prices, quotas.

Per region: ``ec2.describe_instance_types`` (GPU types by ``GpuInfo``), the availability zones
offering them (``describe_instance_type_offerings``), the latest Linux/UNIX spot price per zone
(``describe_spot_price_history``), on-demand prices from the Pricing API (Linux, shared tenancy,
``marketoption=OnDemand`` only, so Capacity Block rows never pass as cheap on-demand), and the
vCPU quotas of the P and G families (Service Quotas) turned into nodes per instance type, and
the account's active capacity reservations and capacity blocks (committed capacity).

One on-demand offer per type and region (the price is region-wide) and one spot offer at the
cheapest zone's price, both carrying the family quota in nodes (a quota the family shares: an
upper bound per type). A quota AWS does not report is unknown, not zero. A price row that cannot
be read is reported, and that type's last good offer stays current.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from gpu_supply import gpus
from gpu_supply.offer import Offer, PricingModel, utcnow
from pricing.query import Scope
from providers.base import MissingCredentials, RegionFetch, retrying

SOURCE = "aws-api"
PRICING_REGION = "us-east-1"  # the Pricing API's endpoint region
# Service Quotas codes (vCPUs): running on-demand instances, and spot requests, per family.
QUOTAS = {("p", PricingModel.ON_DEMAND): "L-417A185B", ("g", PricingModel.ON_DEMAND): "L-DB2E81BA",
          ("p", PricingModel.SPOT): "L-7212CCBC", ("g", PricingModel.SPOT): "L-3819A6DF"}
GPU_TYPE_PATTERNS = ["p*", "g*"]  # the families with GPUs (GpuInfo decides)
THROTTLING = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
              "RequestThrottled", "ServiceUnavailable", "InternalError", "InternalFailure"}

# role -> boto3 service: the adapter asks for clients by role, so tests can fake each at the edge.
ROLES = {"inventory": "ec2", "spot": "ec2", "reservations": "ec2", "pricing": "pricing", "quotas": "service-quotas"}
ClientFactory = Callable[[str, str], object]  # (role, region) -> boto3 client


def _transient(error: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code") in THROTTLING
    return isinstance(error, (ConnectionError, ReadTimeoutError))


def _pages(client, operation: str, key: str, **params) -> Iterable[dict]:
    """Every item of a paginated call, each page retried on throttling."""
    token_name = "NextToken"
    token = None
    while True:
        request = {**params, **({token_name: token} if token else {})}
        page, _ = retrying(lambda: getattr(client, operation)(**request), is_transient=_transient)
        yield from page.get(key, [])
        token = page.get(token_name)
        if not token:
            return


def parse_price_list(items: Iterable[str], malformed: list[tuple[str, str]] | None = None) -> dict[str, float]:
    """On-demand USD per hour by instance type, from Pricing API ``PriceList`` JSON strings. Rows
    that are not plain on-demand (Capacity Blocks, reservations) are left out; rows that cannot be
    read are added to ``malformed`` as (instance type or "", what)."""
    prices: dict[str, float] = {}
    for item in items:
        try:
            product = json.loads(item)
            attributes = product["product"]["attributes"]
        except (ValueError, KeyError, TypeError):
            if malformed is not None:
                malformed.append(("", "a PriceList row that is not a product"))
            continue
        if attributes.get("marketoption", "OnDemand") != "OnDemand" or "instanceType" not in attributes:
            continue
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                try:
                    price = float(dimension["pricePerUnit"]["USD"])
                except (KeyError, TypeError, ValueError):
                    if malformed is not None:
                        malformed.append((attributes["instanceType"], f"on-demand price of {attributes['instanceType']}"))
                    continue
                if price > 0 and dimension.get("unit", "Hrs") in ("Hrs", "Hours"):
                    type_name = attributes["instanceType"]
                    prices[type_name] = min(price, prices.get(type_name, math.inf))
    return prices


def latest_spot_prices(history: Iterable[dict], malformed: list[tuple[str, str]] | None = None
                       ) -> dict[str, tuple[float, str]]:
    """Per instance type, the cheapest zone's latest spot price: (USD per hour, zone). Rows whose
    price cannot be read are added to ``malformed`` as (instance type, what)."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for row in history:
        key = (row.get("InstanceType", "?"), row.get("AvailabilityZone", "?"))
        moment = row.get("Timestamp")
        try:
            price = float(row["SpotPrice"])
        except (KeyError, TypeError, ValueError):
            if malformed is not None:
                malformed.append((key[0], f"spot price of {key[0]} in {key[1]}"))
            continue
        if price > 0 and (key not in latest or moment > latest[key][0]):
            latest[key] = (moment, price)
    cheapest: dict[str, tuple[float, str]] = {}
    for (type_name, zone), (_, price) in sorted(latest.items()):
        if type_name not in cheapest or price < cheapest[type_name][0]:
            cheapest[type_name] = (price, zone)
    return cheapest


class AwsAdapter:
    name = "aws"

    def __init__(self, clients: ClientFactory | None = None, session=None) -> None:
        self._session = session
        self._clients = clients or self._default_clients

    def _default_clients(self, role: str, region: str):
        from botocore.config import Config

        return self._boto_session().client(ROLES[role], region_name=region,
                                           # retries are ours (providers.base.retrying)
                                           config=Config(retries={"mode": "standard", "max_attempts": 1}))

    def _boto_session(self):
        if self._session is None:
            import boto3

            self._session = boto3.Session()
        return self._session

    def regions(self, wanted: Sequence[str] | None) -> list[str]:
        if self._clients == self._default_clients and self._boto_session().get_credentials() is None:
            raise MissingCredentials("no AWS credentials found (profile, environment or instance role)")
        if wanted:
            return list(wanted)
        client = self._clients("inventory", PRICING_REGION)
        response, _ = retrying(lambda: client.describe_regions(), is_transient=_transient)
        return sorted(region["RegionName"] for region in response["Regions"]
                      if region.get("OptInStatus") != "not-opted-in")

    def scopes(self, unit: str) -> tuple[Scope, ...]:
        return ((self.name, unit, None),)

    def fetch(self, unit: str) -> RegionFetch:
        region = unit
        inventory = self._clients("inventory", region)
        filters = [{"Name": "instance-type", "Values": GPU_TYPE_PATTERNS}]
        types = {item["InstanceType"]: item for item in _pages(inventory, "describe_instance_types",
                                                                "InstanceTypes", Filters=filters)
                 if item.get("GpuInfo", {}).get("Gpus")}
        if not types:
            return RegionFetch(self.name, region, self.scopes(region))
        offered = {item["InstanceType"] for item in _pages(
            inventory, "describe_instance_type_offerings", "InstanceTypeOfferings",
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": sorted(types)}])}
        types = {name: item for name, item in types.items() if name in offered}
        malformed: list[tuple[str, str]] = []
        on_demand = parse_price_list(_pages(
            self._clients("pricing", PRICING_REGION), "get_products", "PriceList", ServiceCode="AmazonEC2",
            Filters=[{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in (
                ("regionCode", region), ("operatingSystem", "Linux"), ("tenancy", "Shared"),
                ("preInstalledSw", "NA"), ("capacitystatus", "Used"), ("marketoption", "OnDemand"))]), malformed)
        spot_malformed: list[tuple[str, str]] = []
        spot = latest_spot_prices(_pages(
            self._clients("spot", region), "describe_spot_price_history", "SpotPriceHistory",
            InstanceTypes=sorted(types), ProductDescriptions=["Linux/UNIX"],
            StartTime=utcnow() - timedelta(hours=6)), spot_malformed)
        reservations = list(_pages(self._clients("reservations", region), "describe_capacity_reservations",
                                   "CapacityReservations", Filters=[{"Name": "state", "Values": ["active"]}]))
        quotas = self._quotas(region)
        observed = utcnow()
        offers, unknown = [], set()
        for type_name, item in sorted(types.items()):
            gpu = item["GpuInfo"]["Gpus"][0]
            memory_gb = gpu.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024
            canonical = gpus.resolve(gpu["Name"], memory_gb or None)
            if canonical is None:
                unknown.add(gpu["Name"])
            vcpus = item.get("VCpuInfo", {}).get("DefaultVCpus")
            shape = dict(provider=self.name, region=region, instance_type=type_name, gpu=canonical or gpu["Name"],
                         gpu_count=int(gpu["Count"]), gpu_memory_gb=round(memory_gb, 1), currency="USD",
                         vcpus=vcpus, ram_gb=round(item.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024, 1) or None,
                         source=SOURCE, observed_at=observed)
            family = type_name[0]
            if type_name in on_demand:
                offers.append(Offer(**shape, pricing=PricingModel.ON_DEMAND, price_per_hour=on_demand[type_name],
                                    available_nodes=_nodes(quotas.get((family, PricingModel.ON_DEMAND)), vcpus)))
            if type_name in spot:
                price, zone = spot[type_name]
                offers.append(Offer(**shape, zone=zone, pricing=PricingModel.SPOT, price_per_hour=price,
                                    available_nodes=_nodes(quotas.get((family, PricingModel.SPOT)), vcpus)))
            offers.extend(_held(shape, reservations, type_name, on_demand.get(type_name), observed))
        protected = {(name, PricingModel.ON_DEMAND.value) for name, _ in malformed if name}
        protected |= {(name, PricingModel.SPOT.value) for name, _ in spot_malformed}
        return RegionFetch(self.name, region, self.scopes(region), tuple(offers), unknown_gpus=tuple(sorted(unknown)),
                           malformed=tuple(what for _, what in malformed + spot_malformed),
                           protected=tuple(sorted(protected)))

    def _quotas(self, region: str) -> dict[tuple[str, PricingModel], float]:
        """vCPU quotas by (family, market); a quota AWS does not report is left out (unknown)."""
        from botocore.exceptions import ClientError

        client = self._clients("quotas", region)
        found = {}
        for key, code in QUOTAS.items():
            try:
                response, _ = retrying(lambda: client.get_service_quota(ServiceCode="ec2", QuotaCode=code),
                                       is_transient=_transient)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchResourceException", "AccessDeniedException"):
                    continue
                raise
            found[key] = float(response["Quota"]["Value"])
        return found


def _held(shape: dict, reservations: list[dict], type_name: str, on_demand: float | None, observed) -> list[Offer]:
    """Capacity reservations and capacity blocks the account holds for this type: committed capacity
    (paid whether used or not, so zero marginal cost to the optimizer) with its unused instances."""
    held = []
    for reservation in reservations:
        if reservation.get("InstanceType") != type_name or not reservation.get("AvailableInstanceCount"):
            continue
        end = reservation.get("EndDate")
        hours_left = max(0.0, (end - observed).total_seconds() / 3600) if end else 0.0
        kind = reservation.get("ReservationType", "default")
        held.append(Offer(**{**shape, "instance_type": type_name, "source": f"{SOURCE}:{kind}"},
                          zone=reservation.get("AvailabilityZone"), pricing=PricingModel.CONTRACT,
                          price_per_hour=on_demand or 0.0, committed=True, min_term_hours=hours_left,
                          available_nodes=int(reservation["AvailableInstanceCount"])))
    return held


def _nodes(quota_vcpus: float | None, vcpus: int | None) -> int | None:
    if quota_vcpus is None or not vcpus:
        return None
    return int(quota_vcpus // vcpus)

