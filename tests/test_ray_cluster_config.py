"""ray-cluster.yaml is a working launcher config: it passes Ray's own schema and labels every GPU node."""

import json

import pytest
import yaml

from conftest import REPO


def test_ray_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))
    for name, node_type in config["available_node_types"].items():
        labels = node_type["labels"]
        assert {"gpu-supply/provider", "gpu-supply/region", "gpu-supply/market"} <= set(labels), name
        if node_type["resources"].get("GPU"):
            assert labels["gpu-supply/gpu"] and labels["gpu-supply/offer"] == node_type["node_config"]["InstanceType"]


PLAN = {"placements": [
    {"workload": "chat", "provider": "aws", "region": "us-east-1", "zones": ["us-east-1a"], "instance_type": "p5.48xlarge",
     "gpu": "H100", "gpu_count": 8, "pricing": "on_demand", "nodes": 2},
    {"workload": "batch", "provider": "aws", "region": "us-east-1", "zones": ["us-east-1a"],
     "instance_type": "p5.48xlarge", "gpu": "H100", "gpu_count": 8, "pricing": "on_demand", "nodes": 1},
    {"workload": "batch", "provider": "aws", "region": "us-east-1", "zones": [], "instance_type": "g6e.12xlarge",
     "gpu": "L40S", "gpu_count": 4, "pricing": "spot", "nodes": 3},
    {"workload": "chat", "provider": "gcp", "region": "us-central1", "zones": [], "instance_type": "a3-highgpu-8g",
     "gpu": "H100", "gpu_count": 8, "pricing": "spot", "nodes": 1},
    {"workload": "chat", "provider": "azure", "region": "eastus", "zones": [], "instance_type": "Standard_NC40ads_H100_v5",
     "gpu": "H100", "gpu_count": 1, "pricing": "on_demand", "nodes": 4},
    {"workload": "eu", "provider": "azure", "region": "westeurope", "zones": [],
     "instance_type": "Standard_NC40ads_H100_v5", "gpu": "H100", "gpu_count": 1, "pricing": "spot", "nodes": 1}]}


def _write_config(tmp_path, monkeypatch, capsys, *args):
    from conftest import run_main

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    out = tmp_path / "cluster.yaml"
    code, _, err = run_main(monkeypatch, capsys, "ray-config", str(plan), *args, "--output", str(out))
    return code, err, (yaml.safe_load(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize("args, expected", [
    (["--provider", "aws"], {"p5.48xlarge-on_demand": (3, "on_demand"), "g6e.12xlarge-spot": (3, "spot")}),
    (["--provider", "gcp", "--project", "ops"], {"a3-highgpu-8g-spot": (1, "spot")}),
    (["--provider", "azure", "--region", "eastus"], {"standard_nc40ads_h100_v5-on_demand": (4, "on_demand")}),
])
def test_ray_config_node_types_are_the_plans_offers(tmp_path, monkeypatch, capsys, args, expected):
    from ray.autoscaler._private.util import prepare_config, validate_config

    code, err, config = _write_config(tmp_path, monkeypatch, capsys, *args)
    assert code in (0, None), err
    validate_config(prepare_config(config))
    workers = {name: node for name, node in config["available_node_types"].items() if name != "head"}
    assert {name: (node["max_workers"], node["labels"]["gpu-supply/market"]) for name, node in workers.items()} == expected
    for node in workers.values():
        assert node["min_workers"] == node["max_workers"]
        gpu = node["labels"]["gpu-supply/gpu"]
        assert node["resources"]["GPU"] == node["resources"][f"accelerator_type:{gpu}"] > 0
    assert config["max_workers"] == sum(node["max_workers"] for node in workers.values())


def test_ray_config_spot_and_zone_settings(tmp_path, monkeypatch, capsys):
    _, _, config = _write_config(tmp_path, monkeypatch, capsys, "--provider", "aws")
    nodes = config["available_node_types"]
    assert nodes["g6e.12xlarge-spot"]["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert nodes["p5.48xlarge-on_demand"]["node_config"]["Placement"] == {"AvailabilityZone": "us-east-1a"}
    assert nodes["p5.48xlarge-on_demand"]["labels"]["gpu-supply/zone"] == "us-east-1a"


@pytest.mark.parametrize("args, message", [
    (["--provider", "azure"], "--region: the plan uses 2 azure regions (eastus, westeurope)"),
    (["--provider", "gcp"], "--project: a GCP launcher config needs the project"),
    (["--provider", "lambda"], "--provider: no Ray launcher support for 'lambda'"),
    (["--provider", "aws", "--region", "eu-west-1"], "--region: the plan places nothing at aws eu-west-1"),
])
def test_ray_config_errors_name_the_field_and_write_nothing(tmp_path, monkeypatch, capsys, args, message):
    code, err, config = _write_config(tmp_path, monkeypatch, capsys, *args)
    assert code == 2 and message in err and config is None
