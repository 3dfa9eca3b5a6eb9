"""Shared fixtures: a throwaway store per test (seeded once per session and copied), offer factories."""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gpu_supply.offer import Offer, PricingModel

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


def make_offer(**overrides) -> Offer:
    """An offer with sensible defaults; tests override only what they are about."""
    fields = dict(provider="aws", region="us-east-1", zone=None, instance_type="p5.48xlarge", gpu="H100", gpu_count=8,
                  gpu_memory_gb=80.0, pricing=PricingModel.ON_DEMAND, price_per_hour=80.0, currency="USD",
                  observed_at=datetime(2026, 11, 1, tzinfo=timezone.utc), source="test")
    fields.update(overrides)
    return Offer(**fields)


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory) -> Path:
    """A store seeded from the embedded snapshot, built once; tests get copies."""
    from pricing.store import open_store

    path = tmp_path_factory.mktemp("template") / "seeded.db"
    open_store(f"sqlite:///{path}")
    return path


@pytest.fixture(autouse=True)
def no_user_profiles(tmp_path, monkeypatch):
    """Plans in tests read the shipped profile table only, never a developer's own."""
    monkeypatch.setenv("GPU_SUPPLY_PROFILES", str(tmp_path / "user-profiles.csv"))


@pytest.fixture
def seeded_db(seeded_template, tmp_path, monkeypatch) -> str:
    path = tmp_path / "store.db"
    shutil.copy(seeded_template, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("GPU_SUPPLY_DB", url)
    monkeypatch.setenv("GPU_SUPPLY_CONFIG", str(tmp_path / "no-config.toml"))
    return url


@pytest.fixture
def empty_db(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    monkeypatch.setenv("GPU_SUPPLY_DB", url)
    monkeypatch.setenv("GPU_SUPPLY_CONFIG", str(tmp_path / "no-config.toml"))
    return url


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local multi-node Ray cluster for every test that runs replicas (CI stays fast);
    tests add the nodes they need with ``add_placements``."""
    ray = pytest.importorskip("ray")
    from scheduler.cluster import LocalCluster

    local = LocalCluster()
    ray.init(address=local.address, log_to_driver=False, logging_level="warning")
    yield local
    ray.shutdown()
    local.shutdown()


@pytest.fixture
def jobs(tmp_path):
    """A job/replica state store of its own."""
    from scheduler.state import JobStore

    return JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def labels_of(node_id):
    """The labels of a node of the connected Ray cluster."""
    from scheduler.cluster import cluster_nodes

    return next(node.labels for node in cluster_nodes() if node.node_id == node_id)


def run_main(monkeypatch, capsys, *args):
    """Through the real entry point, which turns errors into one line and an exit code."""
    monkeypatch.setattr(sys, "argv", ["gpu-supply", *args])
    with pytest.raises(SystemExit) as exited:
        from gpu_supply import cli

        cli.main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


class FakeHttpAdapter:
    """Base of the fake HTTP edges under the SDKs' requests sessions (Google and Azure clients):
    subclasses answer ``send`` with ``json_response``."""

    @staticmethod
    def json_response(request, status: int, body: dict):
        import io
        import json

        import requests
        import urllib3

        payload = json.dumps(body).encode()
        response = requests.Response()
        response.status_code = status
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(payload), status=status, preload_content=False,
                                            headers={"Content-Type": "application/json"})
        response._content = payload
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def fleet(*specs):
    """Workloads from spec dicts (the YAML schema), validated."""
    from scheduler.workloads import parse_workloads

    return parse_workloads({"workloads": list(specs)})


def replicas(name, count, **extra):
    """A fixed-shape workload spec: ``count`` one-GPU replicas for one hour."""
    return {"name": name, "demand": {"replicas": count, "gpus_per_replica": 1}, "hours": 1, **extra}
