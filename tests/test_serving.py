"""Serve jobs on the shared local Ray cluster: the endpoint (generate, health, bad requests), replicas
on their placements' nodes, a lost node's replica replaced with its rows kept in step, and
`gpu-supply run` serving the example end to end until Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import labels_of

pytest.importorskip("torch")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from scheduler.cluster import LABEL_PREFIX  # noqa: E402
from scheduler.plans import Placement  # noqa: E402
from scheduler.replica import ReplicaSpec  # noqa: E402
from scheduler.serving import ServeJob, start_serve  # noqa: E402
from scheduler.state import State  # noqa: E402
from scheduler.workloads import parse_workloads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = ReplicaSpec("tiny-llama", 0.0002, max_batch=4, max_new_tokens=4, threads=1)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def placement(offer, pricing="on_demand", nodes=1, replicas=1, provider="aws"):
    return Placement("chat", provider, "us-east-1", (), offer, "L4", 1, pricing, nodes, replicas, 1, None,
                     0.8 * nodes, 0.8 * nodes, False, ())


def serve_workload(name="chat"):
    return parse_workloads({"workloads": [{
        "name": name, "model": {"name": "tiny-llama", "params_b": 0.0002}, "demand": {"replicas": 1, "gpus_per_replica": 1},
        "job": {"kind": "serve", "route": f"/{name}", "max_new_tokens": 4, "batch_size": 4}}]})[0]


@pytest.fixture(scope="module")
def port(ray_cluster):
    from ray import serve

    chosen = free_port()
    start_serve(local=True, http_port=chosen)
    yield chosen
    serve.shutdown()


def test_the_endpoint_generates_across_placements_and_rejects_bad_requests(ray_cluster, port, jobs):
    placements = [placement("serve-a", "spot"), placement("serve-b", provider="gcp")]
    ray_cluster.add_placements(placements)
    job = ServeJob(jobs, "r-endpoint", serve_workload(), SPEC)
    job.deploy(placements)
    try:
        url = f"http://127.0.0.1:{port}/chat"
        health = httpx.get(f"{url}/health", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert {name: entry["running"] for name, entry in health.json()["placements"].items()} == \
            {"aws-us-east-1-serve-a-spot": 1, "gcp-us-east-1-serve-b-on_demand": 1}
        one = httpx.post(f"{url}/generate", json={"prompt": "hello supply", "max_new_tokens": 2}, timeout=60).json()
        assert isinstance(one["completion"], str) and one["tokens"] == 2
        assert labels_of(one["node"])[LABEL_PREFIX + "offer"] == one["offer"]
        many = httpx.post(f"{url}/generate", json={"prompts": [f"p{i}" for i in range(6)]}, timeout=60).json()
        offers = [answer["offer"] for answer in many["completions"]]
        assert len(offers) == 6 and sorted(set(offers)) == ["serve-a", "serve-b"]  # spread by replicas
        for body, field in [({"prompt": 3}, "prompt"), ({"prompt": "x", "max_new_tokens": 99}, "max_new_tokens"),
                            ([1], "body")]:
            bad = httpx.post(f"{url}/generate", json=body, timeout=30)
            assert bad.status_code == 400 and bad.json()["error"].startswith(f"{field}:"), bad.text
        assert httpx.get(f"{url}/nothing", timeout=30).status_code == 404
        rows = jobs.replicas(job.run_id)
        assert [(row.instance_type, row.state) for row in rows] == [("serve-a", State.RUNNING), ("serve-b", State.RUNNING)]
        assert all(labels_of(row.node_id)[LABEL_PREFIX + "offer"] == row.instance_type for row in rows)
    finally:
        job.stop()
    assert {row.state for row in jobs.replicas(job.run_id)} == {State.SUCCEEDED}
    assert jobs.run("r-endpoint", "chat").state == State.SUCCEEDED


def test_a_lost_node_s_serve_replica_comes_back_on_another_node(ray_cluster, port, jobs):
    spot = placement("serve-loss", "spot", nodes=2)  # a spare node of the same placement
    ray_cluster.add_placements([spot])
    job = ServeJob(jobs, "r-serve-loss", serve_workload("lossy"), SPEC)
    job.deploy([spot])
    try:
        first = jobs.replicas(job.run_id)[0]
        ray_cluster.remove_node(first.node_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job.tick()
            rows = jobs.replicas(job.run_id)
            if len(rows) == 2 and rows[1].state == State.RUNNING:
                break
            time.sleep(1)
        lost, back = jobs.replicas(job.run_id)
        assert (lost.attempt, lost.state, lost.error) == (1, State.PREEMPTED, "node lost")
        assert back.slot == lost.slot and back.attempt == 2 and back.node_id != first.node_id
        assert labels_of(back.node_id)[LABEL_PREFIX + "offer"] == "serve-loss"
        answer = httpx.post(f"http://127.0.0.1:{port}/lossy/generate", json={"prompt": "still there?"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["node"] == back.node_id
    finally:
        job.stop()


def test_gpu_supply_run_serves_the_local_example_until_interrupted(tmp_path, seeded_db):
    example = tmp_path / "local-serve.yaml"
    example.write_text((REPO / "examples" / "local-serve.yaml").read_text())
    chosen = free_port()
    env = {**os.environ, "GPU_SUPPLY_DB": seeded_db}
    process = subprocess.Popen([sys.executable, "-m", "gpu_supply", "run", str(example), "--local", "--format", "json",
                                "--http-port", str(chosen)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        url, deadline = f"http://127.0.0.1:{chosen}/chat", time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        answer = httpx.post(f"{url}/generate", json={"prompt": "What does 8xH100 cost?"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["tokens"] > 0
        time.sleep(1)  # past the smoke check, into serving
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    document = json.loads(out)
    run = document["runs"][0]
    assert (run["kind"], run["state"], run["endpoint"]) == ("serve", "succeeded", url)
    assert len({replica["provider"] for replica in document["replicas"]}) == 2
    assert {replica["state"] for replica in document["replicas"]} == {"succeeded"}


def test_a_revision_already_serving_on_a_cluster_is_not_deployed_again(ray_cluster, port, jobs):
    from scheduler.runs import WorkloadRun, _deploy

    placements = [placement("serve-idem")]
    ray_cluster.add_placements(placements)
    first = ServeJob(jobs, "r-idem", serve_workload("idem"), SPEC)
    first.deploy(placements)
    try:
        again = ServeJob(jobs, "r-idem", serve_workload("idem"), SPEC)
        result = WorkloadRun("idem", "serve", State.RUNNING, endpoint=f"http://127.0.0.1:{port}/idem")
        assert _deploy(again, result, placements, local=False, http_port=port, console=None) is False
        assert result.run_id == first.run_id and result.state == State.RUNNING
        assert len(jobs.replicas(first.run_id)) == 1  # nothing launched twice
    finally:
        first.stop()
