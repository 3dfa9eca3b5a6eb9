"""AWS adapter: moto for instance types and offerings, botocore's Stubber for Pricing, spot history and
Service Quotas (values moto does not model), in the APIs' wire shapes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from pricing.store import open_store
from providers import base
from providers.aws import AwsAdapter, latest_spot_prices, parse_price_list
from providers.refresh import refresh


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(base.time, "sleep", lambda seconds: None)  # back-off without waiting


def price_item(instance_type: str, usd: str, market: str = "OnDemand") -> str:
    """One Pricing API PriceList entry, as get_products returns it (a JSON string)."""
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": f"SKU{instance_type}{market}",
                    "attributes": {"instanceType": instance_type, "regionCode": "us-east-1", "operatingSystem": "Linux",
                                   "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
                                   "marketoption": market}},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {f"SKU{instance_type}.JRTCKXETXF": {"priceDimensions": {
            f"SKU{instance_type}.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": usd},
                                                         "description": f"${usd} per On Demand Linux hour"}}}}},
        "version": "20261101", "publicationDate": "2026-11-01T00:00:00Z"})


def spot_row(instance_type: str, zone: str, price: str, hour: int) -> dict:
    return {"AvailabilityZone": zone, "InstanceType": instance_type, "ProductDescription": "Linux/UNIX",
            "SpotPrice": price, "Timestamp": datetime(2026, 11, 23, hour, tzinfo=timezone.utc)}


def quota(code: str, value: float) -> dict:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "QuotaName": code, "Value": value, "Unit": "None"}}


class Clients:
    """The adapter's client factory: moto's EC2 for inventory, stubbed clients for the rest."""

    def __init__(self) -> None:
        self.stubs: dict[tuple[str, str], Stubber] = {}
        self.clients: dict[tuple[str, str], object] = {}

    def stub(self, role: str, region: str) -> Stubber:
        service = {"spot": "ec2", "reservations": "ec2", "pricing": "pricing", "quotas": "service-quotas"}[role]
        client = boto3.client(service, region_name=region)
        self.clients[(role, region)] = client
        self.stubs[(role, region)] = stubber = Stubber(client)
        stubber.activate()
        return stubber

    def __call__(self, role: str, region: str):
        if role == "inventory":
            return boto3.client("ec2", region_name=region)  # moto
        return self.clients[(role, region)]


def stub_pricing(clients: Clients) -> None:
    """Two pages of the Pricing API (its endpoint is in us-east-1 whatever the region asked)."""
    pricing = clients.stubs.get(("pricing", "us-east-1")) or clients.stub("pricing", "us-east-1")
    pricing.add_response("get_products", {"PriceList": [price_item("p5.48xlarge", "98.3200000000"),
                                                        price_item("p5.48xlarge", "31.4640000000", "CapacityBlock")],
                                          "NextToken": "page-2", "FormatVersion": "aws_v1"}, {
        "ServiceCode": "AmazonEC2", "Filters": ANY})
    pricing.add_response("get_products", {"PriceList": [price_item("g6e.xlarge", "1.8610000000")],
                                          "FormatVersion": "aws_v1"},
                         {"ServiceCode": "AmazonEC2", "Filters": ANY, "NextToken": "page-2"})


def stub_region(clients: Clients, region: str, throttle_spot: bool = False, g6e_spot: str = "bad") -> None:
    stub_pricing(clients)
    spot = clients.stub("spot", region)
    if throttle_spot:
        spot.add_client_error("describe_spot_price_history", service_error_code="RequestLimitExceeded",
                              http_status_code=503)
    spot.add_response("describe_spot_price_history", {"SpotPriceHistory": [
        spot_row("p5.48xlarge", f"{region}a", "55.000000", 1), spot_row("p5.48xlarge", f"{region}a", "40.100000", 5),
        spot_row("p5.48xlarge", f"{region}b", "35.000000", 4), spot_row("g6e.xlarge", f"{region}c", g6e_spot, 4)]},
        {"InstanceTypes": ANY, "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY})
    clients.stub("reservations", region).add_response("describe_capacity_reservations", {"CapacityReservations": [{
        "CapacityReservationId": "cr-0123456789abcdef0", "InstanceType": "p5.48xlarge", "InstancePlatform": "Linux/UNIX",
        "AvailabilityZone": f"{region}a", "Tenancy": "default", "TotalInstanceCount": 4, "AvailableInstanceCount": 2,
        "State": "active", "ReservationType": "capacity-block",
        "StartDate": datetime(2026, 11, 20, tzinfo=timezone.utc), "EndDate": datetime(2099, 1, 1, tzinfo=timezone.utc)}]},
        {"Filters": [{"Name": "state", "Values": ["active"]}]})
    quotas = clients.stub("quotas", region)
    quotas.add_response("get_service_quota", quota("L-417A185B", 384), {"ServiceCode": "ec2", "QuotaCode": "L-417A185B"})
    quotas.add_response("get_service_quota", quota("L-DB2E81BA", 64), {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})
    quotas.add_client_error("get_service_quota", service_error_code="NoSuchResourceException",
                            expected_params={"ServiceCode": "ec2", "QuotaCode": "L-7212CCBC"})
    quotas.add_response("get_service_quota", quota("L-3819A6DF", 32), {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF"})


def test_price_list_keeps_plain_on_demand_only():
    items = [price_item("p5.48xlarge", "98.32"), price_item("p5.48xlarge", "31.46", "CapacityBlock"),
             price_item("g6.xlarge", "0.0000")]
    assert parse_price_list(items) == {"p5.48xlarge": pytest.approx(98.32)}


def test_latest_spot_price_per_zone_then_cheapest_zone():
    rows = [spot_row("p5.48xlarge", "a", "55", 1), spot_row("p5.48xlarge", "a", "40", 5),
            spot_row("p5.48xlarge", "b", "45", 4), spot_row("p5.48xlarge", "c", "x", 6)]
    assert latest_spot_prices(rows) == {"p5.48xlarge": (40.0, "a")}


@mock_aws
def test_region_fetch_builds_offers_from_every_api():
    clients = Clients()
    stub_region(clients, "us-east-1", throttle_spot=True)
    fetch = AwsAdapter(clients=clients).fetch("us-east-1")
    offers = {(offer.instance_type, offer.pricing.value): offer for offer in fetch.offers}
    p5 = offers[("p5.48xlarge", "on_demand")]
    assert (p5.gpu, p5.gpu_count, p5.gpu_memory_gb, p5.price_per_hour) == ("H100", 8, 80.0, pytest.approx(98.32))
    assert p5.available_nodes == 2  # 384 vCPUs of P quota / 192
    spot = offers[("p5.48xlarge", "spot")]
    assert (spot.price_per_hour, spot.zone, spot.available_nodes) == (pytest.approx(35.0), "us-east-1b", None)
    g6e = offers[("g6e.xlarge", "on_demand")]
    assert (g6e.gpu, g6e.price_per_hour, g6e.available_nodes) == ("L40S", pytest.approx(1.861), 16)
    assert ("g6e.xlarge", "spot") not in offers  # its only spot row was malformed...
    assert fetch.malformed == ("spot price of g6e.xlarge in us-east-1c",)  # ...and is reported
    assert fetch.protected == (("g6e.xlarge", "spot"),)
    block = offers[("p5.48xlarge", "contract")]  # a capacity block the account holds
    assert block.committed and block.available_nodes == 2 and block.zone == "us-east-1a"
    assert block.source == "aws-api:capacity-block"
    assert all(offer.source.startswith("aws-api") for offer in fetch.offers)
    for stubber in clients.stubs.values():
        stubber.assert_no_pending_responses()


@mock_aws
def test_refresh_keeps_a_failed_regions_offers(seeded_db):
    clients = Clients()
    store = open_store(seeded_db)
    stub_region(clients, "us-east-1")
    stub_region(clients, "us-west-2")
    # One region at a time: the regions share the stubbed Pricing client, whose answers come in order.
    first = refresh([AwsAdapter(clients=clients)], store, regions=["us-east-1", "us-west-2"], concurrency=1)
    assert not first.failed
    rows = {row.region: row for row in first.regions}
    # Live data speaks for the whole region: the snapshot's us-east-1 offers are withdrawn.
    assert (rows["us-east-1"].offers, rows["us-east-1"].new) == (4, 4) and rows["us-east-1"].removed > 100

    clients = Clients()
    stub_region(clients, "us-east-1")
    stub_pricing(clients)
    failing = clients.stub("spot", "us-west-2")
    for _ in range(base.RETRY_ATTEMPTS):
        failing.add_client_error("describe_spot_price_history", service_error_code="RequestLimitExceeded",
                                 http_status_code=503)
    clients.stub("quotas", "us-west-2")
    clients.stub("reservations", "us-west-2")
    second = refresh([AwsAdapter(clients=clients)], store, regions=["us-east-1", "us-west-2"], concurrency=1)
    rows = {row.region: row for row in second.regions}
    assert second.failed and rows["us-west-2"].stale and "RequestLimitExceeded" in rows["us-west-2"].error
    assert rows["us-west-2"].attempts == base.RETRY_ATTEMPTS
    from pricing.query import OfferReader, build_query
    from pricing.fx import FxTable

    reader = OfferReader(seeded_db)
    live = [offer for offer in reader.offers(build_query(providers=["aws"], regions=["us-west-2"],
                                                         known_providers=["aws"], fx=FxTable()), FxTable())
            if offer.source == "aws-api"]
    assert {(offer.instance_type, offer.pricing.value) for offer in live} == {
        ("p5.48xlarge", "on_demand"), ("p5.48xlarge", "spot"), ("g6e.xlarge", "on_demand")}
    assert [offer.instance_type for offer in reader.offers(build_query(
        providers=["aws"], regions=["us-west-2"], pricing=["contract"], known_providers=["aws"], fx=FxTable()),
        FxTable())] == ["p5.48xlarge"]
    assert reader.stale_units() == [("aws", "us-west-2", None, rows["us-west-2"].error)]


def test_unknown_gpu_is_kept_raw_and_reported():
    clients = Clients()
    inventory = Stubber(inventory_client := boto3.client("ec2", region_name="eu-west-1"))
    inventory.add_response("describe_instance_types", {"InstanceTypes": [{
        "InstanceType": "g9x.2xlarge", "VCpuInfo": {"DefaultVCpus": 8}, "MemoryInfo": {"SizeInMiB": 32768},
        "GpuInfo": {"Gpus": [{"Name": "Quasar Q9", "Manufacturer": "Acme", "Count": 1,
                              "MemoryInfo": {"SizeInMiB": 49152}}], "TotalGpuMemoryInMiB": 49152}}]},
        {"Filters": ANY})
    inventory.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "g9x.2xlarge", "LocationType": "availability-zone", "Location": "eu-west-1a"}]},
        {"LocationType": "availability-zone", "Filters": ANY})
    inventory.activate()
    pricing = clients.stub("pricing", "us-east-1")
    pricing.add_response("get_products", {"PriceList": [price_item("g9x.2xlarge", "2.5")], "FormatVersion": "aws_v1"},
                         {"ServiceCode": "AmazonEC2", "Filters": ANY})
    clients.stub("spot", "eu-west-1").add_response("describe_spot_price_history", {"SpotPriceHistory": []},
                                                   {"InstanceTypes": ANY, "ProductDescriptions": ANY, "StartTime": ANY})
    clients.stub("reservations", "eu-west-1").add_response("describe_capacity_reservations",
                                                           {"CapacityReservations": []}, {"Filters": ANY})
    quotas = clients.stub("quotas", "eu-west-1")
    for code in ("L-417A185B", "L-DB2E81BA", "L-7212CCBC", "L-3819A6DF"):
        quotas.add_client_error("get_service_quota", service_error_code="AccessDeniedException",
                                expected_params={"ServiceCode": "ec2", "QuotaCode": code})

    def factory(role, region):
        return inventory_client if role == "inventory" else clients(role, region)

    fetch = AwsAdapter(clients=factory).fetch("eu-west-1")
    (offer,) = fetch.offers
    assert (offer.gpu, offer.gpu_memory_gb, offer.available_nodes) == ("Quasar Q9", 48.0, None)
    assert fetch.unknown_gpus == ("Quasar Q9",)


def test_no_credentials_skips_aws_with_one_line(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(base.MissingCredentials, match="no AWS credentials"):
        AwsAdapter().regions(None)


@mock_aws
def test_a_malformed_price_row_keeps_that_offers_last_good_price(seeded_db):
    store = open_store(seeded_db)
    clients = Clients()
    stub_region(clients, "us-east-1", g6e_spot="0.700000")
    refresh([AwsAdapter(clients=clients)], store, regions=["us-east-1"])
    clients = Clients()
    stub_region(clients, "us-east-1", g6e_spot="n/a")
    (row,) = refresh([AwsAdapter(clients=clients)], store, regions=["us-east-1"]).regions
    assert row.malformed == ["spot price of g6e.xlarge in us-east-1c"] and row.removed == 0 and not row.stale
    from pricing.fx import FxTable
    from pricing.query import OfferReader, build_query

    (kept,) = OfferReader(seeded_db).offers(build_query(providers=["aws"], regions=["us-east-1"], pricing=["spot"],
                                                        gpus_per_node=["1"], known_providers=["aws"], fx=FxTable()),
                                            FxTable())
    assert (kept.instance_type, kept.price_per_hour) == ("g6e.xlarge", 0.7)
