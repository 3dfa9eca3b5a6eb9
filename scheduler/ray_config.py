"""Ray cluster-launcher configs whose worker node types are exactly a plan's offers at one supplier.

Each (region, instance type, market) the plan places becomes a node type with the plan's node
count as both ``min_workers`` and ``max_workers``, the usual GPU resources, and the GPU Supply
node labels (provider, region, GPU, market, offer) that placed jobs select on. A launcher
config covers one region, so a plan spanning several needs one config per region.
"""

from __future__ import annotations

import re

from gpu_supply.errors import UserError
from scheduler.cluster import node_labels

# Head nodes: CPU only, they schedule and do not serve.
HEAD_INSTANCE = {"aws": "m6i.2xlarge", "gcp": "n2-standard-8", "azure": "Standard_D8s_v5"}
# Images with CUDA drivers; AWS AMIs are per region, so other regions need --image.
DEFAULT_IMAGES = {("aws", "us-east-1"): "ami-0dd6adfad4ad37eec",  # Deep Learning AMI GPU PyTorch, Ubuntu 22.04
                  ("gcp", None): "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204",
                  ("azure", None): "microsoft-dsvm:ubuntu-hpc:2204:latest"}
PROVIDERS = tuple(HEAD_INSTANCE)


def _image(provider: str, region: str, image: str | None) -> str:
    found = image or DEFAULT_IMAGES.get((provider, region)) or DEFAULT_IMAGES.get((provider, None))
    if not found:
        raise UserError("--image", f"no default {provider} image for {region}",
                        "pass --image with a GPU image (AMI id) for that region")
    return found


def _node_config(provider: str, instance_type: str, market: str, zone: str | None, image: str) -> dict:
    spot = market == "spot"
    if provider == "aws":
        config = {"InstanceType": instance_type, "ImageId": image}
        if spot:
            config["InstanceMarketOptions"] = {"MarketType": "spot"}
        if zone:
            config["Placement"] = {"AvailabilityZone": zone}
        return config
    if provider == "gcp":
        config = {"machineType": instance_type, "disks": [{"boot": True, "autoDelete": True, "type": "PERSISTENT",
                                                          "initializeParams": {"diskSizeGb": 200, "sourceImage": image}}],
                  "scheduling": [{"onHostMaintenance": "TERMINATE"}]}
        if spot:
            config["scheduling"] = [{"provisioningModel": "SPOT", "onHostMaintenance": "TERMINATE"}]
        return config
    publisher, offer, sku, version = image.split(":")
    parameters = {"vmSize": instance_type, "imagePublisher": publisher, "imageOffer": offer, "imageSku": sku,
                  "imageVersion": version}
    if spot:
        parameters["priority"] = "Spot"
    return {"azure_arm_parameters": parameters}


def _provider_block(provider: str, region: str, zone: str | None, project: str | None, resource_group: str) -> dict:
    if provider == "aws":
        return {"type": "aws", "region": region, "cache_stopped_nodes": False}
    if provider == "gcp":
        if not project:
            raise UserError("--project", "a GCP launcher config needs the project", "pass --project PROJECT_ID")
        return {"type": "gcp", "region": region, "availability_zone": zone or f"{region}-a", "project_id": project}
    return {"type": "azure", "location": region, "resource_group": resource_group}


def _node_type_name(instance_type: str, market: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{instance_type}-{market}").strip("-").lower()


def launcher_config(plan: dict, provider: str, *, region: str | None = None, image: str | None = None,
                    project: str | None = None, resource_group: str = "gpu-supply",
                    cluster_name: str = "gpu-supply") -> dict:
    """The launcher config for ``plan`` (``gpu-supply plan --format json``) at ``provider``."""
    if provider not in PROVIDERS:
        raise UserError("--provider", f"no Ray launcher support for {provider!r}", f"use one of {', '.join(PROVIDERS)}")
    placements = [p for p in plan.get("placements", []) if p.get("provider") == provider]
    if not placements:
        raise UserError("--provider", f"the plan places nothing at {provider}",
                        "pick a provider the plan uses (see its placements)")
    regions = sorted({p["region"] for p in placements})
    if region is None and len(regions) > 1:
        raise UserError("--region", f"the plan uses {len(regions)} {provider} regions ({', '.join(regions)})",
                        "pass --region R: a launcher config covers one region")
    region = region or regions[0]
    placements = [p for p in placements if p["region"] == region]
    if not placements:
        raise UserError("--region", f"the plan places nothing at {provider} {region}", f"use one of {', '.join(regions)}")
    grouped: dict[tuple[str, str], dict] = {}
    for placement in placements:
        entry = grouped.setdefault((placement["instance_type"], placement["pricing"]),
                                   {**placement, "nodes": 0, "zones": set()})
        entry["nodes"] += placement["nodes"]
        entry["zones"].update(placement.get("zones") or ())
    zones = sorted({zone for entry in grouped.values() for zone in entry["zones"]})
    chosen_image = _image(provider, region, image)
    node_types = {"head": {"resources": {"CPU": 0},
                           "labels": node_labels(provider, region, market="on_demand"),
                           "node_config": _node_config(provider, HEAD_INSTANCE[provider], "on_demand", None,
                                                       chosen_image)}}
    for (instance_type, market), entry in sorted(grouped.items()):
        zone = sorted(entry["zones"])[0] if len(entry["zones"]) == 1 else None
        labels = node_labels(provider, region, entry["gpu"], market, instance_type, zone)
        node_types[_node_type_name(instance_type, market)] = {
            "min_workers": entry["nodes"], "max_workers": entry["nodes"],
            "resources": {"GPU": entry["gpu_count"], f"accelerator_type:{entry['gpu']}": entry["gpu_count"]},
            "labels": labels,
            "node_config": _node_config(provider, instance_type, market, zone, chosen_image)}
    return {
        "cluster_name": cluster_name,
        "max_workers": sum(entry["nodes"] for entry in grouped.values()),
        "idle_timeout_minutes": 10,
        "provider": _provider_block(provider, region, zones[0] if zones else None, project, resource_group),
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": node_types,
        "head_node_type": "head",
        "setup_commands": ['pip install -q -U "ray[default]>=2.49"'],
    }
