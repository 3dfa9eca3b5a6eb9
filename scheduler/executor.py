"""Runs a plan's jobs on Ray: one actor per replica, pinned to its placement's nodes by labels.

Batch jobs: the driver hands chunks of prompts to the replicas (two in flight each) and is the
only writer of the output file, so each input is answered exactly once: results are appended
only for ids not yet written (and flushed and synced per chunk), a chunk whose replica dies is
handed to another, and a re-run resumes from the ids already in the output.

Lost nodes: replica actors restart (``max_restarts``) on another live node that satisfies the
same label selector; the lost attempt is recorded ``preempted`` (spot) or ``failed`` and the
replacement as a new attempt. When no live node satisfies the placement any more, the workload
is re-planned on the remaining supply (``replan``) and its replicas launched there.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gpu_supply.errors import UserError
from scheduler.cluster import cluster_nodes, placement_selector, unsatisfiable
from scheduler.replica import ReplicaSpec
from scheduler.state import JobStore, ReplicaPlace, State

IN_FLIGHT_PER_REPLICA = 2
# How long a batch may make no progress with no replica alive before the run fails.
STALL_SECONDS = 120.0
# How long a lost replica may take to come back on another node of its placement before the
# workload is re-planned (its selector matches no node with a free GPU).
RESTART_GRACE_S = 15.0
RETRY_PAUSE_S = 0.5


def read_prompts(path: Path) -> list[tuple[str, str]]:
    """(id, prompt) per JSONL line; ids default to the line number and must be unique."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError("job.input", f"{path} does not exist", "give a JSONL file of {\"id\", \"prompt\"}") from None
    items, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError("job.input", f"{path} line {number}: not JSON ({exc.msg})", "one JSON object per line") \
                from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise UserError("job.input", f"{path} line {number}: no string 'prompt'", 'e.g. {"id": "a1", "prompt": "..."}')
        item_id = str(record.get("id", number))
        if item_id in seen:
            raise UserError("job.input", f"{path} line {number}: duplicate id {item_id!r}", "give every prompt a unique id")
        seen.add(item_id)
        items.append((item_id, record["prompt"]))
    return items


def completed_ids(path: Path) -> set[str]:
    """Ids already answered in an output file; a torn last line (a crash mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    good = data[:data.rfind(b"\n") + 1]
    if len(good) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(good))
    return {str(json.loads(line)["id"]) for line in good.decode("utf-8").splitlines() if line.strip()}


def _append_fresh(out: Any, results: list[dict], done: set[str], placement: Any) -> int:
    """Append the results whose ids are not answered yet, synced to disk before they count as done."""
    fresh = [result for result in results if result["id"] not in done]
    for result in fresh:
        out.write(json.dumps({**result, "offer": placement.instance_type, "provider": placement.provider}) + "\n")
    out.flush()
    os.fsync(out.fileno())
    done.update(result["id"] for result in fresh)
    return len(fresh)


def _actor_class() -> Any:
    import ray

    from scheduler.replica import InferenceRunner

    @ray.remote
    class InferenceReplica:
        """A replica on a labelled node; answers with the node it ran on."""

        def __init__(self, spec: ReplicaSpec) -> None:
            self.runner = InferenceRunner(spec)

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

        def generate(self, items: list[tuple[str, str]], max_new_tokens: int) -> tuple[str, list[dict]]:
            return self.node(), self.runner.generate(items, max_new_tokens)

    return InferenceReplica


def _place(placement: Any) -> ReplicaPlace:
    """A replica's placement as its state row records it, with its share of the nodes' price."""
    return ReplicaPlace(placement.provider, placement.region, placement.instance_type, placement.gpu,
                        placement.pricing, placement.cost_per_hour / max(placement.replicas, 1))


@dataclass
class Replica:
    """One replica slot of a run: its placement, current attempt and actor."""

    slot: int
    placement: Any
    actor: Any
    record_id: int
    attempt: int = 1
    state: State = State.PENDING
    in_flight: int = 0
    node_id: str | None = None
    lost_at: float | None = None  # when its node was lost, until it runs again



@dataclass
class BatchReport:
    items: int = 0
    answered: int = 0  # by this invocation
    already_done: int = 0  # found in the output on start (a resumed run)
    lost_replicas: int = 0
    replans: int = 0
    seconds: float = 0.0


class Executor:
    """Launches replicas for one workload's placements and runs its batch job; state in ``JobStore``."""

    def __init__(self, jobs: JobStore, revision: str, spec: ReplicaSpec,
                 replan: Callable[[str, list[Any], int], list[Any]] | None = None,
                 on_event: Callable[[str], None] | None = None, restart_grace_s: float = RESTART_GRACE_S) -> None:
        self.jobs, self.revision, self.spec = jobs, revision, spec
        self.restart_grace_s = restart_grace_s
        self.replan = replan
        self.on_event = on_event or (lambda message: None)
        self._actor_class = _actor_class()

    def check(self, placements: list[Any]) -> None:
        """Fail fast when no live node can take a placement (Ray would leave it pending forever)."""
        reasons = unsatisfiable(placements, cluster_nodes())
        if reasons:
            raise UserError("placement", reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""),
                            "start nodes with those labels (docs/ray.md), or re-plan against this cluster's supply")

    def _launch(self, run_id: int, placement: Any, slot: int) -> Replica:
        actor = self._actor_class.options(
            num_gpus=placement.tensor_parallel, num_cpus=0, label_selector=placement_selector(placement),
            max_restarts=-1, max_task_retries=0).remote(self.spec)
        return Replica(slot, placement, actor, self.jobs.add_replica(run_id, slot, _place(placement)))

    def launch(self, run_id: int, placements: list[Any], first_slot: int = 0) -> list[Replica]:
        self.check(placements)
        replicas = []
        for placement in placements:
            for _ in range(placement.replicas):
                replicas.append(self._launch(run_id, placement, first_slot + len(replicas)))
        return replicas

    def wait_ready(self, replicas: list[Replica], on_ready: Callable[[Replica], None] | None = None,
                   timeout_s: float = 600.0) -> None:
        """Block until every replica has loaded its model; record its node."""
        import ray

        pending = {replica.actor.node.remote(): replica for replica in replicas}
        deadline = time.monotonic() + timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(deadline - time.monotonic(), 0.1))
            if not ready:
                raise UserError("run", f"{len(pending)} replica(s) did not start within {timeout_s:.0f} s",
                                "check the cluster's nodes (ray status) and the replica logs")
            replica = pending.pop(ready[0])
            self._running(replica, ray.get(ready[0]))
            if on_ready:
                on_ready(replica)

    def _running(self, replica: Replica, node_id: str) -> None:
        replica.state, replica.node_id, replica.lost_at = State.RUNNING, node_id, None
        self.jobs.replica_running(replica.record_id, node_id)

    def _lost(self, replica: Replica, run_id: int, error: Exception) -> None:
        """The replica's node is gone: close the attempt, open the next (Ray restarts the actor)."""
        if replica.state is not State.RUNNING:
            return
        lost_state = State.PREEMPTED if replica.placement.pricing == "spot" else State.FAILED
        self.jobs.replica_finished(replica.record_id, lost_state, f"node lost: {type(error).__name__}")
        self.on_event(f"replica {replica.slot} ({replica.placement.instance_type}) {lost_state}: node lost")
        replica.attempt += 1
        replica.state, replica.lost_at = State.PENDING, time.monotonic()
        replica.record_id = self.jobs.add_replica(run_id, replica.slot, _place(replica.placement), replica.attempt)

    def run_batch(self, workload: Any, placements: list[Any], input_path: Path, output_path: Path,
                  on_progress: Callable[[int, int], None] | None = None,
                  on_ready: Callable[[Replica], None] | None = None) -> BatchReport:
        """Answer every prompt of ``input_path`` into ``output_path`` exactly once."""
        import ray
        from ray.exceptions import RayActorError  # a dead, restarting or unreachable actor

        started = time.monotonic()
        job = workload.job
        items = read_prompts(input_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        done = completed_ids(output_path)
        already = len(done & {item_id for item_id, _ in items})
        run = self.jobs.start_run(self.revision, workload.name, job.kind, len(items))
        report = BatchReport(items=len(items), already_done=already)
        todo = [item for item in items if item[0] not in done]
        if on_progress:
            on_progress(already, len(items))
        if not todo:
            self.jobs.update_run(run.id, state=State.SUCCEEDED, items_done=len(items))
            report.seconds = time.monotonic() - started
            return report
        self.jobs.update_run(run.id, state=State.RUNNING)
        replicas = self.launch(run.id, placements)
        self.wait_ready(replicas, on_ready)
        queue = deque(todo[i:i + job.batch_size] for i in range(0, len(todo), job.batch_size))
        in_flight: dict[Any, tuple[Replica, list]] = {}
        last_progress = time.monotonic()
        with output_path.open("a", encoding="utf-8") as out:
            while queue or any(chunk is not None for _, chunk in in_flight.values()):
                for replica in replicas:
                    while queue and replica.state is State.RUNNING and replica.in_flight < IN_FLIGHT_PER_REPLICA:
                        chunk = queue.popleft()
                        in_flight[replica.actor.generate.remote(chunk, job.max_new_tokens)] = (replica, chunk)
                        replica.in_flight += 1
                if in_flight:
                    ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=RETRY_PAUSE_S)
                else:  # no replica can take work (all lost, probes pending)
                    ready = []
                    time.sleep(RETRY_PAUSE_S)
                for ref in ready:
                    replica, chunk = in_flight.pop(ref)
                    replica.in_flight -= 1
                    try:
                        answer = ray.get(ref)
                    except RayActorError as error:
                        if chunk is not None:
                            queue.appendleft(chunk)
                        if replica.state is State.RUNNING:
                            report.lost_replicas += 1
                            self._lost(replica, run.id, error)
                            replicas = self._ensure_supply(workload, run.id, replicas, report)
                        if replica in replicas:  # probe until Ray has restarted it on another node
                            time.sleep(RETRY_PAUSE_S)
                            in_flight[replica.actor.node.remote()] = (replica, None)
                            replica.in_flight += 1
                        continue
                    if chunk is None:  # a probe: the restarted replica is up
                        self._running(replica, answer)
                        self.on_event(f"replica {replica.slot} running again on node {answer[:8]}")
                        continue
                    node_id, results = answer
                    if replica.state is not State.RUNNING or replica.node_id != node_id:
                        self._running(replica, node_id)
                    report.answered += _append_fresh(out, results, done, replica.placement)
                    last_progress = time.monotonic()
                    self.jobs.update_run(run.id, items_done=len(done))
                    if on_progress:
                        on_progress(len(done), len(items))
                overdue = [r for r in replicas if r.state is State.PENDING and r.lost_at is not None
                           and time.monotonic() - r.lost_at > self.restart_grace_s]
                if overdue:
                    replicas = self._ensure_supply(workload, run.id, replicas, report, overdue)
                if time.monotonic() - last_progress > STALL_SECONDS:
                    self._stop(replicas, State.FAILED, "stalled")
                    self.jobs.update_run(run.id, state=State.FAILED, error="no replica made progress")
                    raise UserError("run", f"{workload.name}: no replica made progress for {STALL_SECONDS:.0f} s",
                                    "check the cluster's nodes (ray status)")
        self._stop([r for r in replicas if r.state is State.RUNNING], State.SUCCEEDED)
        self._stop([r for r in replicas if r.state is not State.RUNNING], State.FAILED,
                   "lost, and not back on a node before the job finished")
        self.jobs.update_run(run.id, state=State.SUCCEEDED, items_done=len(done))
        report.seconds = time.monotonic() - started
        return report

    def _ensure_supply(self, workload: Any, run_id: int, replicas: list[Replica], report: BatchReport,
                       overdue: list[Replica] = ()) -> list[Replica]:
        """Replicas whose placement no live node satisfies any more (or that did not come back within
        the restart grace: no free GPU there) are re-planned on the remaining supply."""
        import ray

        nodes = cluster_nodes()
        stranded = [r for r in replicas if r in overdue or (r.state is State.PENDING and not any(
            n.satisfies(placement_selector(r.placement), r.placement.tensor_parallel) for n in nodes))]
        if not stranded:
            return replicas
        lost_placements = list({id(r.placement): r.placement for r in stranded}.values())
        for replica in stranded:
            ray.kill(replica.actor)
            if replica.state is State.PENDING:
                self.jobs.replica_finished(replica.record_id, State.FAILED, "no node left for its placement")
        keep = [r for r in replicas if r not in stranded]
        new_placements = self.replan(workload.name, lost_placements, len(stranded)) if self.replan else []
        if not new_placements:
            if keep:
                return keep
            raise UserError("run", f"{workload.name}: lost every node of its placements and re-planning found no "
                                   "other supply", "add nodes or supply, then re-run (finished prompts are kept)")
        report.replans += 1
        self.on_event(f"re-planned {workload.name}: " + ", ".join(
            f"{p.provider}/{p.region}/{p.instance_type} x{p.replicas}" for p in new_placements))
        added = self.launch(run_id, new_placements, first_slot=max(r.slot for r in replicas) + 1)
        self.wait_ready(added)
        return keep + added

    def _stop(self, replicas: list[Replica], state: State, error: str | None = None) -> None:
        import ray

        for replica in replicas:
            self.jobs.replica_finished(replica.record_id, state, error)
            ray.kill(replica.actor)
