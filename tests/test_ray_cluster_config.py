"""ray-cluster.yaml is a working launcher config: it passes Ray's own schema and labels every GPU node."""

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
