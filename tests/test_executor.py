"""Ray execution on a small local multi-node cluster (shared by this module): label routing,
fail-fast placements, node loss with exactly-once batch output, re-planning, idempotent re-runs."""

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import labels_of

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from gpu_supply.errors import UserError  # noqa: E402
from scheduler.cluster import LABEL_PREFIX  # noqa: E402
from scheduler.executor import Executor, completed_ids, read_prompts  # noqa: E402
from scheduler.plans import Placement  # noqa: E402
from scheduler.replica import ReplicaSpec  # noqa: E402
from scheduler.state import State  # noqa: E402
from scheduler.workloads import parse_workloads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = ReplicaSpec("tiny-llama", 0.0002, max_batch=4, max_new_tokens=4, threads=1)


def placement(offer, pricing="on_demand", nodes=1, replicas=1, provider="aws", workload="w"):
    return Placement(workload, provider, "us-east-1", (), offer, "L4", 1, pricing, nodes, replicas, 1, None,
                     0.8 * nodes, 0.8 * nodes, False, ())


def batch_workload(tmp_path, prompts=40, name="w"):
    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "prompt": f"prompt {i} about GPU supply"}) + "\n" for i in range(prompts)))
    return parse_workloads({"workloads": [{
        "name": name, "model": {"name": "tiny-llama", "params_b": 0.0002}, "demand": {"replicas": 1, "gpus_per_replica": 1},
        "job": {"kind": "batch", "input": "in.jsonl", "output": "out.jsonl", "max_new_tokens": 4, "batch_size": 4}}]})[0]


def answered(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [line["id"] for line in lines]
    assert len(ids) == len(set(ids)), "an input was answered twice"
    return lines


@pytest.fixture
def cluster(ray_cluster):
    return ray_cluster


def test_replicas_land_only_on_nodes_with_their_placements_labels(cluster, jobs, tmp_path):
    placements = [placement("route-a", "spot"), placement("route-b", provider="gcp")]
    cluster.add_placements(placements)
    workload = batch_workload(tmp_path)
    report = Executor(jobs, "r-route", SPEC).run_batch(workload, placements, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert report.answered == 40 and len(answered(tmp_path / "out.jsonl")) == 40
    for replica in jobs.replicas(jobs.run("r-route", "w").id):
        labels = labels_of(replica.node_id)
        assert labels[LABEL_PREFIX + "offer"] == replica.instance_type
        assert labels[LABEL_PREFIX + "market"] == replica.market and labels[LABEL_PREFIX + "provider"] == replica.provider
        assert replica.state == State.SUCCEEDED and replica.cost_so_far() > 0


def test_replicas_fill_their_nodes_whole_and_report_when_all_ran(cluster, jobs, tmp_path):
    packed = replace(placement("pack-a", nodes=2, replicas=4), gpu_count=2)  # two nodes of two GPUs
    cluster.add_placements([packed])
    report = Executor(jobs, "r-pack", SPEC).run_batch(batch_workload(tmp_path), [packed], tmp_path / "in.jsonl",
                                                      tmp_path / "out.jsonl")
    nodes = Counter(replica.node_id for replica in jobs.replicas(jobs.run("r-pack", "w").id))
    assert sorted(nodes.values()) == [2, 2]  # each node's two GPUs taken, by one host per node
    assert 0 < report.placed_s <= report.running_s < report.seconds and report.recovery_s is None


def test_a_placement_no_node_satisfies_fails_fast_with_the_reason(cluster, jobs):
    start = time.monotonic()
    with pytest.raises(UserError, match=r"no live node labelled .*offer=p5\.48xlarge.* \(cluster has: "):
        Executor(jobs, "r-missing", SPEC).check([placement("p5.48xlarge")])
    assert time.monotonic() - start < 5


def test_a_lost_node_restarts_its_replica_on_another_node_and_loses_no_prompt(cluster, jobs, tmp_path):
    spot = placement("loss-spot", "spot", nodes=2, replicas=1)  # a spare node of the same placement
    cluster.add_placements([spot])
    workload = batch_workload(tmp_path, prompts=200)
    removed = []

    def lose_the_node(done, total):
        if done >= 40 and not removed:
            running = [r for r in jobs.replicas(jobs.run("r-loss", "w").id) if r.state == State.RUNNING]
            removed.append(running[0].node_id)
            cluster.remove_node(running[0].node_id)

    report = Executor(jobs, "r-loss", SPEC).run_batch(workload, [spot], tmp_path / "in.jsonl", tmp_path / "out.jsonl",
                                                      on_progress=lose_the_node)
    assert removed and report.lost_replicas == 1 and report.replans == 0
    assert 0 < report.recovery_placed_s <= report.recovery_s
    assert {line["id"] for line in answered(tmp_path / "out.jsonl")} == {f"p{i}" for i in range(200)}
    first, second = jobs.replicas(jobs.run("r-loss", "w").id)
    assert (first.attempt, first.state, first.node_id) == (1, State.PREEMPTED, removed[0])  # spot: preempted
    assert first.finished_at is not None and "node lost" in first.error
    assert second.attempt == 2 and second.node_id not in (None, removed[0])
    assert labels_of(second.node_id)[LABEL_PREFIX + "offer"] == "loss-spot"


def test_when_no_node_of_the_placement_is_left_the_workload_is_replanned(cluster, jobs, tmp_path):
    lonely = placement("replan-a", nodes=1, replicas=1)
    cluster.add_placements([lonely])
    workload = batch_workload(tmp_path, prompts=200)
    asked = []

    def replan(name, lost, replicas):
        asked.append((name, [p.instance_type for p in lost], replicas))
        fresh = [placement("replan-b", provider="azure")]
        cluster.add_placements(fresh)
        return fresh

    def lose_the_node(done, total):
        if done >= 40 and not asked and not getattr(lose_the_node, "done", False):
            lose_the_node.done = True
            running = [r for r in jobs.replicas(jobs.run("r-replan", "w").id) if r.state == State.RUNNING]
            cluster.remove_node(running[0].node_id)

    report = Executor(jobs, "r-replan", SPEC, replan=replan).run_batch(
        workload, [lonely], tmp_path / "in.jsonl", tmp_path / "out.jsonl", on_progress=lose_the_node)
    assert asked == [("w", ["replan-a"], 1)] and report.replans == 1
    assert len(answered(tmp_path / "out.jsonl")) == 200
    states = [(r.instance_type, r.state) for r in jobs.replicas(jobs.run("r-replan", "w").id)]
    assert ("replan-a", State.FAILED) in states and ("replan-b", State.SUCCEEDED) in states


def test_rerunning_a_finished_revision_launches_nothing(cluster, jobs, tmp_path):
    only = placement("rerun-a")
    cluster.add_placements([only])
    workload = batch_workload(tmp_path, prompts=12)
    executor = Executor(jobs, "r-rerun", SPEC)
    first = executor.run_batch(workload, [only], tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    again = executor.run_batch(workload, [only], tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert (first.answered, again.answered, again.already_done) == (12, 0, 12)
    assert len(jobs.replicas(jobs.run("r-rerun", "w").id)) == 1  # no second launch


def test_prompt_files_are_validated(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(UserError, match="line 2: duplicate id 'a'"):
        read_prompts(path)
    path.write_text('{"prompt": 3}\n')
    with pytest.raises(UserError, match="line 1: no string 'prompt'"):
        read_prompts(path)
    path.write_text('{"prompt": "x"}\n\n{"prompt": "y"}\n')
    assert read_prompts(path) == [("1", "x"), ("3", "y")]


def test_a_torn_last_output_line_is_cut_and_its_prompt_answered_again(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "completion": "x"}\n{"id": "b", "compl')
    assert completed_ids(path) == {"a"}
    assert path.read_text() == '{"id": "a", "completion": "x"}\n'


def test_run_needs_exactly_one_of_local_and_address(monkeypatch, capsys, seeded_db):
    from conftest import run_main

    code, _, err = run_main(monkeypatch, capsys, "run", str(REPO / "examples" / "local-batch.yaml"))
    assert code == 2 and "--local/--address: give exactly one" in err


def test_gpu_supply_run_local_end_to_end_and_rerun(tmp_path, seeded_db):
    example = tmp_path / "local-batch.yaml"
    example.write_text((REPO / "examples" / "local-batch.yaml").read_text())
    (tmp_path / "prompts.jsonl").write_text((REPO / "examples" / "prompts.jsonl").read_text())
    env = {**os.environ, "GPU_SUPPLY_DB": seeded_db}
    command = [sys.executable, "-m", "gpu_supply", "run", str(example), "--local", "--format", "json"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    document = json.loads(first.stdout)
    assert document["runs"][0]["state"] == "succeeded" and document["runs"][0]["answered"] == 120
    assert len({r["provider"] for r in document["replicas"]}) == 2  # spread across two providers
    assert len(answered(tmp_path / "out" / "completions.jsonl")) == 120
    again = json.loads(subprocess.run(command, capture_output=True, text=True, env=env, timeout=300).stdout)
    assert again["revision"] == document["revision"] and again["runs"][0]["already_done"] == 120
    assert len(again["replicas"]) == 2
