"""The Ray cluster a run uses: node labels, what nodes there are, and a local stand-in for a plan.

Every GPU Supply node carries labels (``LABEL_PREFIX`` + provider, region, gpu, market, offer);
a placement's replicas select its (provider, region, offer, market). Ray leaves an actor whose
selector no node satisfies pending forever, so runs check placements against the live nodes
first (``unsatisfiable``) and fail fast with the reason.

``LocalCluster`` starts a multi-node Ray cluster on this machine whose nodes stand in for a
plan's nodes: the same labels and GPU counts (fake GPUs: replicas run their model on the CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LABEL_PREFIX = "gpu-supply/"
# Simulated nodes per placement: two, so losing one leaves a node that satisfies the same placement.
LOCAL_NODES_PER_PLACEMENT = 2
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024


def node_labels(provider: str, region: str, gpu: str | None = None, market: str | None = None,
                offer: str | None = None, zone: str | None = None) -> dict[str, str]:
    values = {"provider": provider, "region": region, "gpu": gpu, "market": market, "offer": offer, "zone": zone}
    return {LABEL_PREFIX + key: value for key, value in values.items() if value}


def placement_selector(placement: Any) -> dict[str, str]:
    """The labels a placement's replicas require (the GPU is implied by the offer)."""
    return node_labels(placement.provider, placement.region, market=placement.pricing, offer=placement.instance_type)


def describe_selector(selector: dict[str, str]) -> str:
    return ",".join(f"{key.removeprefix(LABEL_PREFIX)}={value}" for key, value in sorted(selector.items()))


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    labels: dict[str, str] = field(hash=False)
    gpus: float
    alive: bool

    def satisfies(self, selector: dict[str, str], gpus: int) -> bool:
        return self.alive and self.gpus >= gpus and all(self.labels.get(k) == v for k, v in selector.items())


def cluster_nodes() -> list[NodeInfo]:
    """The connected cluster's nodes (``ray.init`` done)."""
    import ray

    return [NodeInfo(node["NodeID"], dict(node.get("Labels") or {}), float(node["Resources"].get("GPU", 0)),
                     bool(node["Alive"])) for node in ray.nodes()]


def unsatisfiable(placements: list[Any], nodes: list[NodeInfo]) -> list[str]:
    """Why each placement no live node can take (empty: all can), naming what the cluster has."""
    have = "; ".join(sorted({describe_selector({k: v for k, v in node.labels.items() if k.startswith(LABEL_PREFIX)})
                             for node in nodes if node.alive and node.gpus})) or "no GPU nodes"
    return [f"{placement.workload}: no live node labelled {describe_selector(placement_selector(placement))} with "
            f"{placement.tensor_parallel} GPU(s) (cluster has: {have})"
            for placement in placements
            if not any(node.satisfies(placement_selector(placement), placement.tensor_parallel) for node in nodes)]


class LocalCluster:
    """A local multi-node Ray cluster standing in for a plan's nodes."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self._cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "num_gpus": 0, "object_store_memory": LOCAL_OBJECT_STORE_BYTES})
        self._nodes: dict[str, Any] = {}
        self.nodes: list[NodeInfo] = []

    @property
    def address(self) -> str:
        return self._cluster.address

    def add_placements(self, placements: list[Any]) -> list[NodeInfo]:
        """Nodes for the placements: up to ``LOCAL_NODES_PER_PLACEMENT`` per (offer, market), GPUs shared out."""
        added = []
        grouped: dict[tuple, list[Any]] = {}
        for placement in placements:
            grouped.setdefault((placement.provider, placement.region, placement.instance_type, placement.pricing,
                                placement.gpu, placement.gpu_count), []).append(placement)
        for (provider, region, instance_type, pricing, gpu, gpu_count), group in grouped.items():
            nodes = sum(p.nodes for p in group)
            count = min(nodes, LOCAL_NODES_PER_PLACEMENT)
            gpus = gpu_count * math.ceil(nodes / count)
            labels = node_labels(provider, region, gpu, pricing, instance_type)
            for _ in range(count):
                added.append(self.add_node(labels, gpus))
        self.wait_for_nodes()
        return added

    def wait_for_nodes(self) -> None:
        """Block until every node added so far has joined."""
        self._cluster.wait_for_nodes()

    def add_node(self, labels: dict[str, str], gpus: int) -> NodeInfo:
        handle = self._cluster.add_node(num_cpus=1, num_gpus=gpus, labels=labels,
                                        resources={f"accelerator_type:{labels.get(LABEL_PREFIX + 'gpu', 'GPU')}": gpus},
                                        object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        node = NodeInfo(handle.node_id, labels, gpus, alive=True)
        self._nodes[node.node_id] = handle
        self.nodes.append(node)
        return node

    def remove_node(self, node_id: str) -> None:
        """Kill a node as a lost machine or a spot preemption would."""
        self._cluster.remove_node(self._nodes.pop(node_id))
        self.nodes = [node for node in self.nodes if node.node_id != node_id]

    def shutdown(self) -> None:
        self._cluster.shutdown()
