"""Coarse geography of a supplier region, for residency filters (``--geo eu``).

Region names follow each supplier's own scheme; one function maps any of them to a geo code
by, in order: exact names that follow no pattern (Azure's ``westeurope``), name prefixes
(``us-east-1``, ``europe-west4``, ``cn-shanghai``), then a country or continent code inside the
name (Vast's ``"France, FR, EU"``, Cudo's ``no-kristiansand-1``).
"""

from __future__ import annotations

import re
from functools import lru_cache

GEOS: dict[str, str] = {
    "us": "United States",
    "ca": "Canada",
    "latam": "Mexico, Central and South America",
    "eu": "Europe (incl. UK, Switzerland, Norway)",
    "me": "Middle East (incl. Israel)",
    "africa": "Africa",
    "apac": "Asia-Pacific (incl. Hong Kong, India, Oceania)",
    "cn": "Mainland China",
    "other": "Unknown or global",
}

_EXACT: dict[str, str] = {
    # Azure
    "eastus": "us", "eastus2": "us", "centralus": "us", "northcentralus": "us", "southcentralus": "us",
    "westcentralus": "us", "westus": "us", "westus2": "us", "westus3": "us",
    "canadacentral": "ca", "canadaeast": "ca",
    "brazilsouth": "latam", "brazilsoutheast": "latam", "chilecentral": "latam", "mexicocentral": "latam",
    "northeurope": "eu", "westeurope": "eu", "francecentral": "eu", "francesouth": "eu", "germanynorth": "eu",
    "germanywestcentral": "eu", "italynorth": "eu", "norwayeast": "eu", "norwaywest": "eu", "polandcentral": "eu",
    "spaincentral": "eu", "swedencentral": "eu", "switzerlandnorth": "eu", "switzerlandwest": "eu",
    "uksouth": "eu", "ukwest": "eu", "austriaeast": "eu", "belgiumcentral": "eu", "denmarkeast": "eu",
    "israelcentral": "me", "qatarcentral": "me", "uaecentral": "me", "uaenorth": "me", "saudiarabiaeast": "me",
    "southafricanorth": "africa", "southafricawest": "africa",
    "australiacentral": "apac", "australiacentral2": "apac", "australiaeast": "apac", "australiasoutheast": "apac",
    "centralindia": "apac", "southindia": "apac", "westindia": "apac", "jioindiacentral": "apac",
    "jioindiawest": "apac", "eastasia": "apac", "southeastasia": "apac", "japaneast": "apac", "japanwest": "apac",
    "koreacentral": "apac", "koreasouth": "apac", "indonesiacentral": "apac", "malaysiawest": "apac",
    "newzealandnorth": "apac", "taiwannorth": "apac",
    "chinaeast": "cn", "chinaeast2": "cn", "chinaeast3": "cn", "chinanorth": "cn", "chinanorth2": "cn",
    "chinanorth3": "cn",
    # Regions that look like another scheme's prefix
    "ap-east-1": "apac", "northamerica-south1": "latam", "me-west1": "me",
    # GPU clouds' free-form names
    "finland": "eu", "iceland": "eu", "norway": "eu", "default": "other",
}

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("us", "us"), ("northamerica", "ca"), ("ca", "ca"), ("sa", "latam"), ("mx", "latam"),
    ("southamerica", "latam"), ("europe", "eu"), ("eu", "eu"), ("uk", "eu"), ("me", "me"), ("il", "me"),
    ("af", "africa"), ("africa", "africa"), ("asia", "apac"), ("ap", "apac"), ("australia", "apac"),
    ("cn", "cn"), ("china", "cn"),
)

_COUNTRIES: dict[str, str] = {
    "US": "us", "USA": "us", "CA": "ca", "MX": "latam", "BR": "latam", "CL": "latam", "AR": "latam", "CO": "latam",
    "GB": "eu", "UK": "eu", "IE": "eu", "FR": "eu", "DE": "eu", "NL": "eu", "BE": "eu", "LU": "eu", "ES": "eu",
    "PT": "eu", "IT": "eu", "CH": "eu", "AT": "eu", "PL": "eu", "CZ": "eu", "SK": "eu", "HU": "eu", "RO": "eu",
    "BG": "eu", "GR": "eu", "SE": "eu", "NO": "eu", "FI": "eu", "FIN": "eu", "DK": "eu", "IS": "eu", "ICE": "eu",
    "EE": "eu", "LV": "eu", "LT": "eu", "SI": "eu", "HR": "eu", "RS": "eu", "UA": "eu",
    "IL": "me", "AE": "me", "SA": "me", "QA": "me", "TR": "me",
    "ZA": "africa", "NG": "africa", "KE": "africa", "EG": "africa",
    "JP": "apac", "KR": "apac", "SG": "apac", "IN": "apac", "AU": "apac", "NZ": "apac", "HK": "apac",
    "TW": "apac", "MY": "apac", "TH": "apac", "VN": "apac", "ID": "apac", "PH": "apac",
    "CN": "cn",
}
_CONTINENTS = {"EU": "eu", "AS": "apac", "OC": "apac", "SA": "latam", "AF": "africa"}
_CITY_CODES = {"nyc": "us", "sfo": "us", "atl": "us", "tor": "ca", "ams": "eu", "fra": "eu", "lon": "eu",
               "sgp": "apac", "blr": "apac", "syd": "apac"}


@lru_cache(maxsize=4096)
def geo_of(region: str) -> str:
    """Geo code (a key of ``GEOS``) for any supplier's region name; ``other`` when unknown."""
    name = region.strip().lower()
    if name in _EXACT:
        return _EXACT[name]
    head = re.split(r"[-_\s,]", name, maxsplit=1)[0]
    if "," not in name:  # Vast's "State, CC, Continent" is read by its codes below ("SA, AS" is Saudi Arabia)
        for prefix, geo in _PREFIXES:
            if head == prefix:
                return geo
        city = re.match(r"[a-z]+", name)
        if city and city.group(0) in _CITY_CODES:
            return _CITY_CODES[city.group(0)]
    tokens = [token for token in re.split(r"[^A-Za-z]+", region.strip()) if token]
    for token in reversed(tokens):  # "Michigan, US, NA": the country code is the second-to-last token
        if token.upper() in _COUNTRIES and token.isupper():
            return _COUNTRIES[token.upper()]
    for token in reversed(tokens):
        if token.upper() in _CONTINENTS and token.isupper():
            return _CONTINENTS[token.upper()]
    if head.upper() in _COUNTRIES:
        return _COUNTRIES[head.upper()]
    lowered = name.replace("(", " ").replace(")", " ")
    for word, geo in (("east coast", "us"), ("west coast", "us"), ("europe", "eu"), ("asia", "apac")):
        if word in lowered:
            return geo
    return "other"
