import pytest

from gpu_supply.geo import GEOS, geo_of


@pytest.mark.parametrize("region, geo", [
    ("us-east-1", "us"), ("us-gov-west-1", "us"), ("eu-west-1", "eu"), ("ap-northeast-1", "apac"),
    ("ap-east-1", "apac"), ("ca-central-1", "ca"), ("sa-east-1", "latam"), ("me-central-1", "me"),
    ("il-central-1", "me"), ("af-south-1", "africa"), ("cn-north-1", "cn"),
    ("us-central1", "us"), ("europe-west4", "eu"), ("asia-southeast1", "apac"), ("australia-southeast1", "apac"),
    ("northamerica-northeast1", "ca"), ("northamerica-south1", "latam"), ("southamerica-east1", "latam"),
    ("me-west1", "me"), ("africa-south1", "africa"),
    ("eastus", "us"), ("westeurope", "eu"), ("australiaeast", "apac"), ("uksouth", "eu"), ("brazilsouth", "latam"),
    ("japaneast", "apac"), ("uaenorth", "me"), ("chinanorth3", "cn"),
    ("France, FR, EU", "eu"), ("Michigan, US, NA", "us"), (", CA, NA", "ca"), ("South Korea, KR, AS", "apac"),
    ("US, NA", "us"), ("SA, AS", "me"), ("ME, EU", "eu"), ("IN, AS", "apac"),
    ("no-kristiansand-1", "eu"), ("se-smedjebacken-1", "eu"), ("FIN-03", "eu"), ("ICE-01", "eu"),
    ("East Coast (NY2)", "us"), ("Europe (AMS1)", "eu"), ("tor1", "ca"), ("nyc2", "us"), ("FINLAND", "eu"),
    ("cn-shanghai", "cn"), ("cn-wulanchabu", "cn"), ("hk-hongkong", "apac"), ("default", "other"),
    ("somewhere-unknown", "other"),
])
def test_regions_map_to_geos(region, geo):
    assert geo_of(region) == geo
    assert geo in GEOS
