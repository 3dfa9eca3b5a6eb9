"""Runs a plan's jobs on Ray: a placement's replicas, on live nodes that carry its labels.

Replicas are grouped by node: the executor assigns each replica to a live node that satisfies its
placement's labels and has free GPUs (best fit: the fullest node that still fits, so nodes fill
as the plan bought them), and starts one host actor per (node, placement) holding that node's
replicas, each with its own model on its own GPU(s). A Ray actor is a worker process (about 0.7 s to start on a small
machine); one per replica would make 1,000 replicas take many minutes, while a node's replicas
share its fate anyway.

Batch jobs: the driver hands chunks of prompts to the replicas (two in flight each) and is the
only writer of the output file, so each input is answered exactly once: results are appended
only for ids not yet written (and flushed and synced per chunk), a chunk whose replica dies is
handed to another, and a re-run resumes from the ids already in the output.

Lost nodes: every replica of a lost host is recorded ``preempted`` (spot) or ``failed`` and, as a
new attempt, assigned at once to other live nodes of the same placement with free GPUs. When
none has room, or the new host is not running within ``RESTART_GRACE_S``, the workload is
re-planned on the remaining supply (``replan``) and its replicas launched there.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from gpu_supply.errors import UserError
from scheduler.cluster import cluster_nodes, placement_selector, unsatisfiable
from scheduler.replica import ReplicaSpec
from scheduler.state import JobStore, ReplicaPlace, State

IN_FLIGHT_PER_REPLICA = 2
# How long a batch may make no progress with no replica alive before the run fails.
STALL_SECONDS = 120.0
# How long replicas may take to load their models before the run fails.
START_TIMEOUT_S = 600.0
# How long lost replicas may take to come back on another node of their placement before the
# workload is re-planned.
RESTART_GRACE_S = 15.0
RETRY_PAUSE_S = 0.5
# How often a batch's progress is saved to its run row (the output file is synced every round).
PROGRESS_SAVE_S = 1.0
# Ray's own label on every node: pins a host to the node its replicas were assigned to.
NODE_ID_LABEL = "ray.io/node-id"


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


def _append_fresh(out: Any, answered: list[tuple[list[dict], Any]], done: set[str]) -> int:
    """Append the results (with their replica's placement) whose ids are not answered yet, synced to
    disk before they count as done; one sync for all of them."""
    fresh: set[str] = set()
    for results, placement in answered:
        for result in results:
            if result["id"] not in done and result["id"] not in fresh:
                out.write(json.dumps({**result, "offer": placement.instance_type, "provider": placement.provider}) + "\n")
                fresh.add(result["id"])
    out.flush()
    os.fsync(out.fileno())
    done.update(fresh)
    return len(fresh)


def _host_class() -> Any:
    import threading

    import ray

    from scheduler import engine
    from scheduler.replica import InferenceRunner

    @ray.remote
    class ReplicaHost:
        """One node's replicas of one placement: a runner per replica, on its own GPU(s).

        Two phases, so a host that is on its node but still loading models is told apart from one
        no node has taken: the constructor only starts the process (``placed``); ``load`` builds
        the models (``loaded``) and runs once, while ``placed`` answers from another thread.
        """

        def __init__(self, spec: ReplicaSpec, replicas: int, gpus_per_replica: int) -> None:
            self.spec, self.replicas, self.gpus_per_replica = spec, replicas, gpus_per_replica
            self.runners: list[InferenceRunner] = []
            self.locks = [threading.Lock() for _ in range(replicas)]  # a runner decodes one batch at a time

        def placed(self) -> str:
            return ray.get_runtime_context().get_node_id()

        def load(self) -> str:
            tokenizer = engine.build_tokenizer()
            self.runners = [InferenceRunner(self.spec, gpu=index * self.gpus_per_replica, tokenizer=tokenizer,
                                            gpus=self.gpus_per_replica) for index in range(self.replicas)]
            return self.placed()

        def generate(self, index: int, items: list[tuple[str, str]], max_new_tokens: int) -> list[dict]:
            with self.locks[index]:
                return self.runners[index].generate(items, max_new_tokens)

    return ReplicaHost


class Probe(Enum):
    """A host's phases the driver waits for."""

    PLACED = "placed"
    LOADED = "loaded"


@dataclass(eq=False)
class Replica:
    """One replica slot of a run: its placement, current attempt and the host it is on."""

    slot: int
    placement: Any
    record_id: int
    attempt: int = 1
    state: State = State.PENDING
    host: Host | None = None
    index: int = 0  # its runner on the host
    in_flight: int = 0
    lost_at: float | None = None  # when its node was lost, until it runs again


@dataclass(eq=False)
class Host:
    """A host actor on one node, holding that node's replicas of one placement."""

    actor: Any
    node_id: str
    gpus: int
    replicas: list[Replica]
    started: float = field(default_factory=time.monotonic)
    placed: bool = False  # its process runs on the node
    ready: bool = False  # its models are loaded

    @property
    def members(self) -> list[Replica]:
        """Its replicas still assigned to it (a lost host's replicas move on)."""
        return [replica for replica in self.replicas if replica.host is self]


@dataclass
class BatchReport:
    items: int = 0
    answered: int = 0  # by this invocation
    already_done: int = 0  # found in the output on start (a resumed run)
    lost_replicas: int = 0
    replans: int = 0
    seconds: float = 0.0
    placed_s: float | None = None  # from the plan to every first replica's host on its node
    running_s: float | None = None  # ... to every first replica running (its model loaded)
    recovery_placed_s: float | None = None  # longest wait of lost replicas for a host on another node
    recovery_s: float | None = None  # ... to run again there (models loaded); both from the loss seen


class Executor:
    """Launches replicas for one workload's placements and runs its batch job; state in ``JobStore``."""

    def __init__(self, jobs: JobStore, revision: str, spec: ReplicaSpec,
                 replan: Callable[[str, list[Any], int], list[Any]] | None = None,
                 on_event: Callable[[str], None] | None = None, restart_grace_s: float = RESTART_GRACE_S,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.jobs, self.revision, self.spec = jobs, revision, spec
        self.restart_grace_s, self.start_timeout_s = restart_grace_s, start_timeout_s
        self.replan = replan
        self.on_event = on_event or (lambda message: None)
        self._host_class = _host_class()
        self.hosts: list[Host] = []  # live hosts
        self._unwatched: list[Host] = []  # started; nobody waits for them to be placed and loaded yet
        self._lost_nodes: set[str] = set()  # Ray may list a lost node as alive for a while

    def check(self, placements: list[Any]) -> None:
        """Fail fast when no live node can take a placement (Ray would leave it pending forever)."""
        reasons = unsatisfiable(placements, cluster_nodes())
        if reasons:
            raise UserError("placement", reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""),
                            "start nodes with those labels (docs/ray.md), or re-plan against this cluster's supply")

    def launch(self, run_id: int, placements: list[Any], first_slot: int = 0) -> tuple[list[Replica], list[Replica]]:
        """Record and start the placements' replicas: (all of them, those no live node has room for)."""
        self.check(placements)
        slots = list(enumerate((p for p in placements for _ in range(p.replicas)), start=first_slot))
        ids = self.jobs.add_replicas(run_id, [(slot, ReplicaPlace.of(placement), 1) for slot, placement in slots])
        replicas = [Replica(slot, placement, record_id) for (slot, placement), record_id in zip(slots, ids)]
        return replicas, self._assign(replicas)

    def _assign(self, replicas: list[Replica]) -> list[Replica]:
        """Start hosts for ``replicas`` on live nodes of their placements with free GPUs, filling the
        fullest node that still fits first (as the plan buys nodes: whole); returns the replicas no
        node has room for."""
        nodes = [node for node in cluster_nodes() if node.node_id not in self._lost_nodes]
        used = Counter()
        for host in self.hosts:
            used[host.node_id] += host.gpus
        free = {node.node_id: node.gpus - used[node.node_id] for node in nodes}
        groups: dict[tuple[str, int], list[Replica]] = {}
        homeless = []
        for replica in replicas:
            gpus, selector = replica.placement.tensor_parallel, placement_selector(replica.placement)
            fitting = [node for node in nodes if node.satisfies(selector, gpus) and free[node.node_id] >= gpus]
            if not fitting:
                homeless.append(replica)
                continue
            node = min(fitting, key=lambda n: (free[n.node_id], n.node_id))
            free[node.node_id] -= gpus
            groups.setdefault((node.node_id, id(replica.placement)), []).append(replica)
        for (node_id, _), members in groups.items():
            self._start_host(node_id, members)
        return homeless

    def _start_host(self, node_id: str, replicas: list[Replica]) -> None:
        placement = replicas[0].placement
        gpus = placement.tensor_parallel * len(replicas)
        actor = self._host_class.options(
            num_gpus=gpus, num_cpus=0, label_selector={**placement_selector(placement), NODE_ID_LABEL: node_id},
            max_restarts=0, max_concurrency=IN_FLIGHT_PER_REPLICA * len(replicas) + 1,
        ).remote(self.spec, len(replicas), placement.tensor_parallel)
        host = Host(actor, node_id, gpus, replicas)
        for index, replica in enumerate(replicas):
            replica.host, replica.index = host, index
        self.hosts.append(host)
        self._unwatched.append(host)

    def _host_ready(self, host: Host, report: BatchReport, on_ready: Callable[[Replica], None] | None) -> None:
        members = host.members
        host.placed = host.ready = True
        self.jobs.replicas_running([replica.record_id for replica in members], host.node_id)
        back = [replica for replica in members if replica.lost_at is not None]
        if back:
            waited = time.monotonic() - min(replica.lost_at for replica in back)
            report.recovery_s = max(report.recovery_s or 0.0, waited)
        for replica in members:
            replica.state, replica.lost_at = State.RUNNING, None
            if on_ready:
                on_ready(replica)
        if back:
            self.on_event(f"{len(back)} replica(s) running again on node {host.node_id[:8]}")

    def _host_lost(self, workload: Any, run_id: int, host: Host, replicas: list[Replica], report: BatchReport,
                   error: Exception) -> list[Replica]:
        """The host's node is gone: close its replicas' attempts and start the next ones elsewhere."""
        self.hosts.remove(host)
        self._lost_nodes.add(host.node_id)
        members = host.members
        placement = host.replicas[0].placement
        lost_state = State.PREEMPTED if placement.pricing == "spot" else State.FAILED
        self.jobs.replicas_finished([replica.record_id for replica in members], lost_state,
                                    f"node lost: {type(error).__name__}")
        ids = self.jobs.add_replicas(run_id, [(r.slot, ReplicaPlace.of(r.placement), r.attempt + 1) for r in members])
        now = time.monotonic()
        for replica, record_id in zip(members, ids):
            replica.record_id, replica.attempt, replica.state, replica.host = record_id, replica.attempt + 1, \
                State.PENDING, None
            replica.lost_at = replica.lost_at or now
        report.lost_replicas += len(members)
        self.on_event(f"{len(members)} replica(s) of {placement.instance_type} on node {host.node_id[:8]} "
                      f"{lost_state}: node lost")
        homeless = self._assign(members)
        return self._replan(workload, run_id, replicas, homeless, report) if homeless else replicas

    def _overdue(self, workload: Any, run_id: int, replicas: list[Replica], report: BatchReport) -> list[Replica]:
        """Re-plan lost replicas whose new host is not on a node within the grace (the node has no free
        GPU after all); fail the run when first starts take longer than the start timeout."""
        now = time.monotonic()
        stranded = []
        for host in [host for host in self.hosts if not host.ready]:
            members = host.members
            lost = [replica.lost_at for replica in members if replica.lost_at is not None]
            if lost and not host.placed and now - min(lost) > self.restart_grace_s:
                self._kill(host)
                stranded += members
            elif not lost and now - host.started > self.start_timeout_s:
                raise UserError("run", f"{len(members)} replica(s) on node {host.node_id[:8]} did not start within "
                                       f"{self.start_timeout_s:.0f} s", "check the node (ray status) and replica logs")
        return self._replan(workload, run_id, replicas, stranded, report) if stranded else replicas

    def _replan(self, workload: Any, run_id: int, replicas: list[Replica], stranded: list[Replica],
                report: BatchReport) -> list[Replica]:
        """Replicas no live node of their placement can take are re-planned on the remaining supply."""
        self.jobs.replicas_finished([replica.record_id for replica in stranded], State.FAILED,
                                    "no node left for its placement")
        keep = [replica for replica in replicas if replica not in stranded]
        lost_placements = list({id(r.placement): r.placement for r in stranded}.values())
        new_placements = self.replan(workload.name, lost_placements, len(stranded)) if self.replan else []
        if not new_placements:
            if keep:
                self.on_event(f"{len(stranded)} replica(s) of {workload.name} lost; no other supply, going on with "
                              f"{len(keep)}")
                return keep
            raise UserError("run", f"{workload.name}: lost every node of its placements and re-planning found no "
                                   "other supply", "add nodes or supply, then re-run (finished prompts are kept)")
        report.replans += 1
        self.on_event(f"re-planned {workload.name}: " + ", ".join(
            f"{p.provider}/{p.region}/{p.instance_type} x{p.replicas}" for p in new_placements))
        added, homeless = self.launch(run_id, new_placements, first_slot=max(r.slot for r in replicas) + 1)
        if homeless:
            self.jobs.replicas_finished([replica.record_id for replica in homeless], State.FAILED,
                                        "no room on the re-planned supply")
            added = [replica for replica in added if replica not in homeless]
        if not keep and not added:
            raise UserError("run", f"{workload.name}: the re-planned supply has no free GPUs",
                            "add nodes or supply, then re-run (finished prompts are kept)")
        return keep + added

    def run_batch(self, workload: Any, placements: list[Any], input_path: Path, output_path: Path,
                  on_progress: Callable[[int, int], None] | None = None,
                  on_ready: Callable[[Replica], None] | None = None) -> BatchReport:
        """Answer every prompt of ``input_path`` into ``output_path`` exactly once."""
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
        try:
            replicas, homeless = self.launch(run.id, placements)
            if homeless:
                replicas = self._replan(workload, run.id, replicas, homeless, report)
            replicas = self._answer(workload, run.id, replicas, todo, output_path, done, report, started,
                                    on_progress, on_ready)
        except UserError as error:
            for host in list(self.hosts):
                self._kill(host)
            self.jobs.replicas_finished([row.id for row in self.jobs.replicas(run.id)], State.FAILED, error.line())
            self.jobs.update_run(run.id, state=State.FAILED, items_done=len(done), error=error.line())
            raise
        self._stop([r for r in replicas if r.state is State.RUNNING], State.SUCCEEDED)
        self._stop([r for r in replicas if r.state is not State.RUNNING], State.FAILED,
                   "lost, and not back on a node before the job finished")
        self.jobs.update_run(run.id, state=State.SUCCEEDED, items_done=len(done))
        report.seconds = time.monotonic() - started
        return report

    def _answer(self, workload: Any, run_id: int, replicas: list[Replica], todo: list[tuple[str, str]],
                output_path: Path, done: set[str], report: BatchReport, started: float,
                on_progress: Callable[[int, int], None] | None,
                on_ready: Callable[[Replica], None] | None) -> list[Replica]:
        """The dispatch loop: chunks to running replicas, results to the output, hosts watched."""
        import ray
        from ray.exceptions import RayActorError  # a dead or unreachable host

        job, total = workload.job, report.items
        queue = deque(todo[i:i + job.batch_size] for i in range(0, len(todo), job.batch_size))
        # ref -> (host, replica, chunk of prompts), or (host, None, Probe) for a host's phases
        in_flight: dict[Any, tuple[Host, Replica | None, Any]] = {}
        chunks_in_flight = 0
        # Replicas that may take a chunk: one entry per free place, checked when taken (work per event,
        # not per replica per round: the loop stays cheap at 1,000 replicas).
        free: deque[Replica] = deque()
        last_progress = last_saved = time.monotonic()
        first_hosts = list(self.hosts)  # work starts once all of these run: the plan's replicas are all up
        with output_path.open("a", encoding="utf-8") as out:
            while queue or chunks_in_flight:
                for host in self._unwatched:
                    in_flight[host.actor.placed.remote()] = (host, None, Probe.PLACED)
                    in_flight[host.actor.load.remote()] = (host, None, Probe.LOADED)
                self._unwatched.clear()
                if first_hosts:
                    first_hosts = [host for host in first_hosts if host in self.hosts and not host.ready]
                while queue and free and not first_hosts:
                    replica = free.popleft()
                    if replica.state is State.RUNNING and replica.in_flight < IN_FLIGHT_PER_REPLICA:
                        chunk = queue.popleft()
                        ref = replica.host.actor.generate.remote(replica.index, chunk, job.max_new_tokens)
                        in_flight[ref] = (replica.host, replica, chunk)
                        replica.in_flight += 1
                        chunks_in_flight += 1
                refs = list(in_flight)
                ready, _ = ray.wait(refs, num_returns=1, timeout=RETRY_PAUSE_S)
                if ready:  # and whatever else is ready by now
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                answered = []
                for ref in ready:
                    host, replica, chunk = in_flight.pop(ref)
                    if replica is not None:
                        replica.in_flight -= 1
                        chunks_in_flight -= 1
                    try:
                        results = ray.get(ref)
                    except RayActorError as error:
                        if replica is not None:
                            queue.appendleft(chunk)
                        if host in self.hosts:
                            replicas = self._host_lost(workload, run_id, host, replicas, report, error)
                        continue
                    last_progress = time.monotonic()
                    if chunk is Probe.PLACED:
                        host.placed = True
                        lost = [r.lost_at for r in host.members if r.lost_at is not None]
                        if lost:
                            report.recovery_placed_s = max(report.recovery_placed_s or 0.0,
                                                           time.monotonic() - min(lost))
                        if report.placed_s is None and all(h.placed for h in first_hosts):
                            report.placed_s = time.monotonic() - started
                        continue
                    if chunk is Probe.LOADED:
                        self._host_ready(host, report, on_ready)
                        free.extend(r for r in host.members for _ in range(IN_FLIGHT_PER_REPLICA))
                        if first_hosts and all(h.ready for h in first_hosts):
                            report.placed_s = report.placed_s or time.monotonic() - started
                            report.running_s = time.monotonic() - started
                        continue
                    answered.append((results, replica.placement))
                    free.append(replica)
                if answered:
                    report.answered += _append_fresh(out, answered, done)
                    if time.monotonic() - last_saved > PROGRESS_SAVE_S or len(done) == total:
                        self.jobs.update_run(run_id, items_done=len(done))
                        last_saved = time.monotonic()
                    if on_progress:
                        on_progress(len(done), total)
                replicas = self._overdue(workload, run_id, replicas, report)
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise UserError("run", f"{workload.name}: no replica made progress for {STALL_SECONDS:.0f} s",
                                    "check the cluster's nodes (ray status)")
        return replicas

    def _kill(self, host: Host) -> None:
        import ray

        ray.kill(host.actor)
        if host in self.hosts:
            self.hosts.remove(host)

    def _stop(self, replicas: list[Replica], state: State, error: str | None = None) -> None:
        self.jobs.replicas_finished([replica.record_id for replica in replicas], state, error)
        for host in {id(r.host): r.host for r in replicas if r.host is not None}.values():
            self._kill(host)
