"""Executor: seconds from a plan to all its replicas running, and from a node's loss to its replicas
running again, on a local simulated Ray cluster.

The cluster: a head and 20 simulated nodes (four offers, five nodes each, 64 fake GPUs per node),
all on this machine. The plan: four placements (one per offer) of 100 or 1,000 one-GPU replicas of
the tiny model; its batch job has ten chunks of four prompts per replica. Figures per size:

- placed / running: seconds from ``run_batch`` receiving the plan to every replica's host process
  on its node, and to every replica running (model loaded); running divided by the replicas is
  the overhead per replica. A host is one process per (node, placement); on this machine all
  simulated nodes share two cores, so the hosts' process starts (Ray worker, torch import, about
  2 s of CPU each) queue behind each other, where real nodes start theirs in parallel;
- recovery: once a tenth of the prompts are answered a node holding replicas is removed. Placed
  again: seconds from the loss seen to the new host on another node of the same offer (the
  executor's part); running again: from the node's removal to the last of its replicas running
  again (models loaded while every other replica keeps the two cores busy with the batch);
- the batch's total seconds and prompts (every prompt answered exactly once is checked), and the
  driver's CPU seconds.

Baseline, measured in the same run: one Ray actor per replica (the executor's earlier design), for
``--baseline`` replicas; its seconds per replica against the executor's give the ratio.

Targets on the 2-core machine: 1,000 replicas placed in under 30 s; recovery under 10 s.

    .venv/bin/python benchmarks/executor.py [--sizes 100,1000] [--baseline 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from gpu_supply.offer import as_utc  # noqa: E402
from scheduler.cluster import LocalCluster, node_labels  # noqa: E402
from scheduler.executor import Executor  # noqa: E402
from scheduler.plans import Placement  # noqa: E402
from scheduler.replica import InferenceRunner, ReplicaSpec  # noqa: E402
from scheduler.state import JobStore  # noqa: E402
from scheduler.workloads import parse_workloads  # noqa: E402

OFFERS = [("aws", "us-east-1", "p5.48xlarge", "H100", "on_demand"), ("aws", "us-east-1", "p5.48xlarge", "H100", "spot"),
          ("gcp", "us-central1", "a3-highgpu-8g", "H100", "on_demand"),
          ("azure", "eastus", "Standard_ND96isr_H100_v5", "H100", "on_demand")]
NODES_PER_OFFER = 5
GPUS_PER_NODE = 64
PROMPTS_PER_REPLICA = 40  # ten chunks each: the job outlasts a lost node's recovery
SPEC = ReplicaSpec("tiny-llama", 0.0002, max_batch=4, max_new_tokens=4, threads=1)


def placements(replicas: int) -> list[Placement]:
    shares = [replicas // len(OFFERS) + (i < replicas % len(OFFERS)) for i in range(len(OFFERS))]
    return [Placement("bench", provider, region, (), offer, gpu, 8, market, -(-share // 8), share, 1, None,
                      2.0 * share, 2.0 * share, False, ())
            for (provider, region, offer, gpu, market), share in zip(OFFERS, shares)]


def workload(directory: Path, prompts: int):
    (directory / "in.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i} on supply"}) + "\n"
                                                for i in range(prompts)))
    return parse_workloads({"workloads": [{
        "name": "bench", "model": {"name": "tiny-llama", "params_b": 0.0002},
        "demand": {"replicas": 1, "gpus_per_replica": 1},
        "job": {"kind": "batch", "input": "in.jsonl", "output": "out.jsonl", "max_new_tokens": 4, "batch_size": 4}}]})[0]


def measure(cluster: LocalCluster, replicas: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        jobs = JobStore(f"sqlite:///{directory / 'jobs.db'}")
        job = workload(directory, prompts=replicas * PROMPTS_PER_REPLICA)
        revision = f"bench-{replicas}"
        removed = {}
        started, cpu = time.monotonic(), time.process_time()

        def lose_a_node(done: int, total: int) -> None:
            if done >= total // 10 and not removed:
                rows = [r for r in jobs.replicas(jobs.run(revision, "bench").id) if r.state == "running"]
                node = rows[0].node_id
                labels = next(n.labels for n in cluster.nodes if n.node_id == node)
                removed.update(node=node, labels=labels, replicas=sum(r.node_id == node for r in rows),
                               at=datetime.now(timezone.utc))
                cluster.remove_node(node)

        events = lambda message: print(f"  [{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr)
        report = Executor(jobs, revision, SPEC, on_event=events).run_batch(job, placements(replicas), directory / "in.jsonl",
                                                          directory / "out.jsonl", on_progress=lose_a_node)
        lines = (directory / "out.jsonl").read_text().splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids)) == report.items, "a prompt was lost or answered twice"
        rows = jobs.replicas(jobs.run(revision, "bench").id)
        back = [as_utc(r.started_at) for r in rows if r.attempt > 1 and r.started_at is not None]
        recovery = (max(back) - removed["at"]).total_seconds() if back else float("nan")
        return {"replicas": replicas, "placed_s": report.placed_s, "start_s": report.running_s,
                "per_replica_ms": 1000 * report.running_s / replicas,
                "lost": removed.get("replicas", 0), "back": len(back), "recovery_s": recovery,
                "recovery_placed_s": report.recovery_placed_s or float("nan"),
                "driver_cpu_s": time.process_time() - cpu,
                "batch_s": report.seconds, "prompts": report.items, "lost_labels": removed.get("labels")}


def baseline(replicas: int) -> float:
    """Seconds until ``replicas`` one-replica actors (one process each) are running."""
    @ray.remote
    class OneReplica:
        def __init__(self, spec: ReplicaSpec) -> None:
            self.runner = InferenceRunner(spec)

        def ready(self) -> bool:
            return True

    provider, region, offer, gpu, market = OFFERS[0]
    selector = node_labels(provider, region, market=market, offer=offer)
    started = time.monotonic()
    actors = [OneReplica.options(num_gpus=1, num_cpus=0, label_selector=selector).remote(SPEC) for _ in range(replicas)]
    ray.get([actor.ready.remote() for actor in actors])
    seconds = time.monotonic() - started
    for actor in actors:
        ray.kill(actor)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--baseline", type=int, default=20, help="replicas for the one-actor-per-replica baseline")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    cluster_started = time.monotonic()
    cluster = LocalCluster()
    for provider, region, offer, gpu, market in OFFERS:
        for _ in range(NODES_PER_OFFER):
            cluster.add_node(node_labels(provider, region, gpu, market, offer), GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
    try:
        print(f"cluster: head + {len(OFFERS) * NODES_PER_OFFER} simulated nodes ({GPUS_PER_NODE} fake GPUs each) "
              f"up in {time.monotonic() - cluster_started:.1f} s")
        base = baseline(args.baseline) if args.baseline else None
        if base is not None:
            print(f"baseline, one actor per replica: {args.baseline} replicas running in {base:.1f} s "
                  f"({1000 * base / args.baseline:.0f} ms per replica)")
        print(f"{'replicas':>8} {'placed s':>8} {'running s':>9} {'ms/replica':>10} {'vs baseline':>11} {'lost':>5} {'back':>5} "
              f"{'placed again s':>14} {'running again s':>15} {'batch s':>8} {'prompts':>8} {'driver cpu s':>12}")
        for size in sizes:
            row = measure(cluster, size)
            ratio = f"{1000 * base / args.baseline / row['per_replica_ms']:.0f}x faster" if base else "-"
            print(f"{row['replicas']:>8} {row['placed_s']:>8.1f} {row['start_s']:>9.1f} {row['per_replica_ms']:>10.1f} {ratio:>11} "
                  f"{row['lost']:>5} {row['back']:>5} {row['recovery_placed_s']:>14.1f} {row['recovery_s']:>15.1f} "
                  f"{row['batch_s']:>8.1f} {row['prompts']:>8} {row['driver_cpu_s']:>12.1f}", flush=True)
            if row["lost_labels"]:  # the lost node is back for the next size
                cluster.add_node(row["lost_labels"], GPUS_PER_NODE)
                cluster.wait_for_nodes()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
