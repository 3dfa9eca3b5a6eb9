"""``gpu-supply run``: a plan's jobs, run on a Ray cluster (a local stand-in or an existing one).

Batch jobs run first, in priority order. A batch job whose run at this plan revision already
succeeded is reported, not launched again; one that stopped part-way resumes from its output.
Serve jobs are then deployed (``serving.py``) and checked through their own endpoint (health,
then one generation). On a local cluster they serve until ``serve_for`` seconds pass or Ctrl-C;
on an existing cluster they keep serving after ``run`` returns, and a re-run of the same plan
revision finds them serving and deploys nothing. Progress bars show replicas starting and
prompts answered; the report lists every replica attempt with where it ran and what it cost.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpu_supply import settings
from gpu_supply.errors import UserError
from scheduler.executor import BatchReport
from scheduler.serving import ServeJob
from scheduler.state import JobStore, State, plan_revision


@dataclass
class WorkloadRun:
    workload: str
    kind: str
    state: str
    batch: BatchReport | None = None  # batch jobs
    endpoint: str | None = None  # serve jobs
    replans: int = 0
    cost: float = 0.0
    output: str | None = None
    error: str | None = None
    run_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "kind": self.kind, "state": self.state,
                **(asdict(self.batch or BatchReport()) if self.kind == "batch"
                   else {"endpoint": self.endpoint, "replans": self.replans}),
                "cost": self.cost, "output": self.output, "error": self.error}


@dataclass
class RunReport:
    revision: str
    jobs: JobStore
    runs: list[WorkloadRun] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(run.state == State.FAILED for run in self.runs)

    def replica_rows(self) -> list[dict[str, Any]]:
        rows = []
        for run in self.runs:
            if run.run_id is None:
                continue
            for replica in self.jobs.replicas(run.run_id):
                rows.append({"workload": run.workload, "slot": replica.slot, "attempt": replica.attempt,
                             "provider": replica.provider, "region": replica.region,
                             "instance_type": replica.instance_type, "gpu": replica.gpu, "market": replica.market,
                             "node_id": replica.node_id, "state": replica.state, "started_at": replica.started_at,
                             "finished_at": replica.finished_at, "cost_per_hour": replica.cost_per_hour,
                             "cost_so_far": round(replica.cost_so_far(), 6), "error": replica.error})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision,
                "runs": [run.to_dict() for run in self.runs],
                "replicas": self.replica_rows()}


def run_plan(planned: Any, fleet: list[Any], base_dir: Path, local: bool, address: str | None,
             console: Any = None, serve_for: float | None = None, http_port: int = 8000) -> RunReport:
    """Run the jobs of ``fleet`` (workloads with a job) on ``planned.plan``'s placements."""
    import ray

    from scheduler import vllm_engine
    from scheduler.cluster import LocalCluster

    if local:  # the local stand-in nodes are this machine: an engine it cannot run fails before any launch
        for workload in fleet:
            vllm_engine.choose(workload.job.engine)
    placements = [p for p in planned.plan.placements if any(p.workload == w.name for w in fleet)]
    revision = plan_revision(fleet, placements)
    jobs = JobStore(settings.database_url())
    report = RunReport(revision, jobs)
    unfinished = [w for w in fleet if w.job.kind == "serve" or not _finished(jobs, revision, w, base_dir)]
    cluster = LocalCluster() if local and unfinished else None
    try:
        if cluster is not None:
            with _status(console, f"starting a local Ray cluster for {len(placements)} placement(s)"):
                cluster.add_placements(placements)
        if cluster is not None or address is not None:
            ray.init(address=cluster.address if cluster else address, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)

        serving: list[tuple[Any, WorkloadRun]] = []
        try:
            _launch_all(planned, fleet, placements, jobs, revision, report, serving, cluster, base_dir, local, address,
                        http_port, console)
        except KeyboardInterrupt:  # Ctrl-C while serve jobs deploy stops them like Ctrl-C while serving
            if not serving:
                raise
            serve_for = 0.0
        live = [(serve_job, result) for serve_job, result in serving if result.state == State.RUNNING]
        if live and (local or serve_for is not None):
            _serve(live, serve_for, console)
        for _, result in serving:
            if result.run_id is not None:
                result.cost = sum(replica.cost_so_far() for replica in jobs.replicas(result.run_id))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    return report


def _launch_all(planned: Any, fleet: list[Any], placements: list[Any], jobs: JobStore, revision: str,
                report: RunReport, serving: list, cluster: Any, base_dir: Path, local: bool, address: str | None,
                http_port: int, console: Any) -> None:
    """Batch jobs to completion, then serve jobs deployed (appended to ``serving`` as they are)."""
    from scheduler.executor import Executor
    from scheduler.replica import ReplicaSpec

    for workload in sorted(fleet, key=lambda w: w.job.kind != "batch"):  # stable: priority order kept
        job = workload.job
        mine = [p for p in placements if p.workload == workload.name]
        if not mine:
            report.runs.append(WorkloadRun(workload.name, job.kind, State.FAILED,
                                           error="the plan placed nothing (see gpu-supply plan)"))
            continue

        def replan(name: str, lost: list[Any], replicas: int, workload: Any = workload) -> list[Any]:
            exclude = {(p.provider, p.region, p.instance_type, p.pricing) for p in lost}
            added = planned.replan(workload, replicas, lost[0].tensor_parallel, exclude)
            if cluster is not None and added:
                cluster.add_placements(added)
            return added

        spec = ReplicaSpec(workload.model.name, workload.model.params_b, workload.model.dtype,
                           max_batch=job.batch_size, max_new_tokens=job.max_new_tokens,
                           threads=1 if local else None, engine=job.engine)
        on_event = (lambda message: console.print(f"  {message}")) if console else None
        if job.kind == "serve":
            serve_job = ServeJob(jobs, revision, workload, spec, replan, on_event)
            result = WorkloadRun(workload.name, "serve", State.RUNNING, endpoint=_endpoint(workload, local, address,
                                                                                           http_port))
            report.runs.append(result)
            serving.append((serve_job, result))  # before deploying: Ctrl-C mid-deploy stops it too
            if not _deploy(serve_job, result, mine, local, http_port, console):
                serving.pop()
            continue
        executor = Executor(jobs, revision, spec, replan=replan, on_event=on_event)
        report.runs.append(_run_batch(executor, workload, mine, base_dir, jobs, revision, console))


def _run_batch(executor: Any, workload: Any, placements: list[Any], base_dir: Path, jobs: JobStore, revision: str,
               console: Any) -> WorkloadRun:
    job = workload.job
    input_path, output_path = base_dir / job.input, base_dir / job.output
    result = WorkloadRun(workload.name, job.kind, State.RUNNING, output=str(output_path))
    previous = jobs.run(revision, workload.name)
    with _progress(console) as progress:
        starting = progress.add_task(f"{workload.name}: replicas", total=sum(p.replicas for p in placements))
        answering = progress.add_task(f"{workload.name}: prompts", total=None)
        try:
            batch = executor.run_batch(
                workload, placements, input_path, output_path,
                on_progress=lambda done, total: progress.update(answering, completed=done, total=total),
                on_ready=lambda replica: progress.advance(starting))
        except UserError as error:
            result.state, result.error = State.FAILED, error.line()
            run = jobs.run(revision, workload.name)
            result.run_id = run.id if run else None
            return result
    run = jobs.run(revision, workload.name)
    result.run_id, result.state, result.batch = run.id, run.state, batch
    result.cost = sum(replica.cost_so_far() for replica in jobs.replicas(run.id))
    if previous is not None and previous.state == State.SUCCEEDED and console is not None:
        console.print(f"  {workload.name}: already done at plan revision {revision}; nothing launched")
    return result


def _endpoint(workload: Any, local: bool, address: str | None, http_port: int) -> str:
    from scheduler.serving import route_of

    return f"http://{'127.0.0.1' if local else _host_of(address)}:{http_port}{route_of(workload)}"


def _deploy(serve_job: Any, result: WorkloadRun, placements: list[Any], local: bool, http_port: int,
            console: Any) -> bool:
    """Deploy a serve job and check its endpoint; False when it failed, or when this plan revision
    is already serving on the cluster (nothing deployed)."""
    from scheduler.serving import start_serve

    workload = serve_job.workload
    previous = serve_job.jobs.run(serve_job.revision, workload.name)
    try:
        start_serve(local, http_port)
        if not local and previous is not None and previous.state == State.RUNNING and serve_job.is_deployed():
            result.run_id = previous.id
            if console is not None:
                console.print(f"  {workload.name}: already serving at plan revision {serve_job.revision}; "
                              "nothing deployed")
            return False
        with _status(console, f"{workload.name}: deploying {sum(p.replicas for p in placements)} replica(s)"):
            serve_job.deploy(placements)
        result.run_id = serve_job.run_id
        _check_endpoint(result.endpoint, must_answer=local)
    except UserError as error:
        result.state, result.error = State.FAILED, error.line()
        result.run_id = serve_job.run_id
        if serve_job.run_id is not None:
            serve_job.stop(State.FAILED)
        return False
    if console is not None:
        console.print(f"  {workload.name}: serving at {result.endpoint} (POST /generate, GET /health), "
                      f"{serve_job.running()} replica(s)")
    return True


def _check_endpoint(endpoint: str, must_answer: bool) -> None:
    """The endpoint's health, then one generation; from a machine that cannot reach an existing
    cluster's endpoint this is skipped."""
    import httpx

    try:
        health = httpx.get(f"{endpoint}/health", timeout=30)
        answer = httpx.post(f"{endpoint}/generate", json={"prompt": "Is GPU supply serving?"}, timeout=60)
    except httpx.HTTPError as error:
        if must_answer:
            raise UserError("run", f"{endpoint} did not answer ({type(error).__name__})",
                            "check the Serve proxy (ray logs)") from None
        return
    if health.status_code != 200 or answer.status_code != 200:
        raise UserError("run", f"{endpoint}: health {health.status_code}, generate {answer.status_code} "
                               f"({answer.text[:200]})", "check the replica logs (ray logs)")


def _serve(live: list[tuple[Any, WorkloadRun]], seconds: float | None, console: Any) -> None:
    """Keep serving (rows in step, lost placements re-planned) until ``seconds`` pass or Ctrl-C; then stop."""
    import time

    from scheduler.serving import WATCH_PERIOD_S

    if console is not None:
        console.print("  serving " + (f"for {seconds:g} s" if seconds is not None else "until Ctrl-C"))
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(WATCH_PERIOD_S if deadline is None else max(min(WATCH_PERIOD_S, deadline - time.monotonic()), 0))
            for serve_job, result in live:
                if result.state == State.RUNNING:
                    try:
                        serve_job.tick()
                    except UserError as error:
                        result.state, result.error = State.FAILED, error.line()
    except KeyboardInterrupt:
        if console is not None:
            console.print("  stopping")
    for serve_job, result in live:
        serve_job.stop(State.SUCCEEDED if result.state == State.RUNNING else State.FAILED)
        result.replans = serve_job.replans
        if result.state == State.RUNNING:
            result.state = State.SUCCEEDED


def _host_of(address: str | None) -> str:
    """The host an existing cluster's endpoint is reached at: the head's, from ``HEAD:6379`` or ``ray://HEAD:10001``."""
    text = (address or "").removeprefix("ray://")
    return text.rsplit(":", 1)[0] if text and text != "auto" else "127.0.0.1"


def _finished(jobs: JobStore, revision: str, workload: Any, base_dir: Path) -> bool:
    run = jobs.run(revision, workload.name)
    return run is not None and run.state == State.SUCCEEDED and (base_dir / workload.job.output).exists()


def _progress(console: Any) -> Any:
    """Progress bars on ``console``; none (disabled) when output is JSON."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=console is None)


def _status(console: Any, message: str) -> Any:
    return console.status(message) if console is not None else nullcontext()
