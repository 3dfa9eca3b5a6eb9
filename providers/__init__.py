"""Supplier adapters: one module per supplier behind one small interface (``providers.base``).

``ADAPTERS`` names each adapter `gpu-supply refresh` can build: ``aws`` (boto3), ``gcp``
(google-cloud-compute and google-cloud-billing), ``azure`` (azure-mgmt-compute and the Retail
Prices API) and ``idc`` (IDC feeds from files, directories or http(s) URLs).
"""

from __future__ import annotations

from collections.abc import Sequence

from gpu_supply.errors import UserError


def _idc(config: dict, idc_feeds: Sequence[str]):
    from providers.idc import IdcFeeds

    configured = config.get("idc", {}).get("feeds", [])
    if not isinstance(configured, list):
        raise UserError("config [idc] feeds", "must be a list of paths or URLs", 'e.g. feeds = ["/data/idc"]')
    return IdcFeeds([*idc_feeds, *configured])


def _aws(config: dict, idc_feeds: Sequence[str]):
    from providers.aws import AwsAdapter

    return AwsAdapter()


def _azure(config: dict, idc_feeds: Sequence[str]):
    from providers.azure import AzureAdapter

    return AzureAdapter(subscription_id=config.get("azure", {}).get("subscription_id"))


def _gcp(config: dict, idc_feeds: Sequence[str]):
    from providers.gcp import GcpAdapter

    return GcpAdapter(project=config.get("gcp", {}).get("project"))


ADAPTERS = {"aws": _aws, "gcp": _gcp, "azure": _azure, "idc": _idc}


def build_adapters(names: Sequence[str], config: dict, idc_feeds: Sequence[str] = ()) -> list:
    """The adapters for these provider names (all when empty), in the order given."""
    unknown = [name for name in names if name not in ADAPTERS]
    if unknown:
        raise UserError("--provider", f"no live adapter for {', '.join(unknown)}",
                        f"refresh knows: {', '.join(ADAPTERS)}")
    return [ADAPTERS[name](config, idc_feeds) for name in (names or list(ADAPTERS))]
