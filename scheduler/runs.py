"""``gpu-supply run``: a plan's jobs, run on a Ray cluster (a local stand-in or an existing one).

Workloads run in priority order. A batch job whose run at this plan revision already succeeded
is reported, not launched again; one that stopped part-way resumes from its output. Progress
bars show replicas starting and prompts answered; the report lists every replica attempt with
where it ran and what it cost.
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
from scheduler.state import JobStore, State, plan_revision


@dataclass
class WorkloadRun:
    workload: str
    kind: str
    state: str
    batch: BatchReport = field(default_factory=BatchReport)
    cost: float = 0.0
    output: str | None = None
    error: str | None = None
    run_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "kind": self.kind, "state": self.state, **asdict(self.batch),
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
             console: Any = None) -> RunReport:
    """Run the jobs of ``fleet`` (workloads with a job) on ``planned.plan``'s placements."""
    import ray

    from scheduler.cluster import LocalCluster
    from scheduler.executor import Executor
    from scheduler.replica import ReplicaSpec

    placements = [p for p in planned.plan.placements if any(p.workload == w.name for w in fleet)]
    revision = plan_revision(fleet, placements)
    jobs = JobStore(settings.database_url())
    report = RunReport(revision, jobs)
    unfinished = [w for w in fleet if not _finished(jobs, revision, w, base_dir)]
    cluster = LocalCluster() if local and unfinished else None
    try:
        if cluster is not None:
            with _status(console, f"starting a local Ray cluster for {len(placements)} placement(s)"):
                cluster.add_placements(placements)
        if cluster is not None or address is not None:
            ray.init(address=cluster.address if cluster else address, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)

        for workload in fleet:
            job = workload.job
            mine = [p for p in placements if p.workload == workload.name]
            if not mine:
                report.runs.append(WorkloadRun(workload.name, job.kind, State.FAILED,
                                               error="the plan placed nothing (see gpu-supply plan)"))
                continue
            if job.kind != "batch":
                raise UserError(f"workload {workload.name!r} job.kind", "serve jobs are not supported by run yet",
                                "use kind: batch")

            def replan(name: str, lost: list[Any], replicas: int, workload: Any = workload) -> list[Any]:
                exclude = {(p.provider, p.region, p.instance_type, p.pricing) for p in lost}
                added = planned.replan(workload, replicas, lost[0].tensor_parallel, exclude)
                if cluster is not None and added:
                    cluster.add_placements(added)
                return added

            spec = ReplicaSpec(workload.model.name, workload.model.params_b, workload.model.dtype,
                               max_batch=job.batch_size, max_new_tokens=job.max_new_tokens,
                               threads=1 if local else None)
            executor = Executor(jobs, revision, spec, replan=replan,
                                on_event=lambda message: console.print(f"  {message}") if console else None)
            report.runs.append(_run_batch(executor, workload, mine, base_dir, jobs, revision, console))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    return report


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
