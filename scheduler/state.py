"""Job and replica state of ``gpu-supply run``, in the same database as the offers.

Tables: ``job_run`` (one per workload and plan revision: kind, state, progress) and
``job_replica`` (one row per replica attempt: placement, node, state with timestamps and its
cost per hour; the cost so far is derived). A replica lost with its node is marked ``preempted``
when it ran on spot capacity and ``failed`` otherwise; its replacement is a new attempt.

The plan revision is a digest of the workloads and the placements; a launch is idempotent per
revision: ``gpu-supply run`` on an unchanged plan resumes or reports the run it already has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, create_engine

from gpu_supply.offer import as_utc, utcnow


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"


FINAL = (State.SUCCEEDED, State.FAILED, State.PREEMPTED)


class JobRun(SQLModel, table=True):
    __tablename__ = "job_run"
    __table_args__ = (Index("ix_job_run_revision", "revision", "workload", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    revision: str
    workload: str
    kind: str
    state: str = State.PENDING
    items_total: int = 0
    items_done: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    error: str | None = None


class JobReplica(SQLModel, table=True):
    __tablename__ = "job_replica"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="job_run.id", index=True)
    slot: int  # the replica's number within its run; attempts of one slot replace each other
    attempt: int = 1
    provider: str
    region: str
    instance_type: str
    gpu: str
    market: str
    cost_per_hour: float  # this replica's share of its nodes' price
    state: str = State.PENDING
    node_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None

    def cost_so_far(self, now: datetime | None = None) -> float:
        if self.started_at is None:
            return 0.0
        end = as_utc(self.finished_at) if self.finished_at else now or utcnow()
        return self.cost_per_hour * max((end - as_utc(self.started_at)).total_seconds(), 0.0) / 3600


def plan_revision(workloads: list, placements: list) -> str:
    """Digest of what a run launches: the workloads (jobs included) and the plan's placements."""
    document = {"workloads": [w.model_dump(mode="json") for w in workloads],
                "placements": [[p.workload, p.provider, p.region, p.instance_type, p.pricing, p.nodes, p.replicas,
                                p.tensor_parallel] for p in placements]}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ReplicaPlace:
    """Where a replica runs, as the state table records it."""

    provider: str
    region: str
    instance_type: str
    gpu: str
    market: str
    cost_per_hour: float

    @classmethod
    def of(cls, placement: Any) -> ReplicaPlace:
        """A replica of ``placement``, with its share of the nodes' price."""
        return cls(placement.provider, placement.region, placement.instance_type, placement.gpu,
                   placement.pricing, placement.cost_per_hour / max(placement.replicas, 1))


class JobStore:
    """Reads and writes ``job_run`` and ``job_replica``; every write is its own short transaction."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.engine = engine or create_engine(url)
        SQLModel.metadata.create_all(self.engine, tables=[JobRun.__table__, JobReplica.__table__])

    def run(self, revision: str, workload: str) -> JobRun | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(JobRun).where(JobRun.revision == revision,
                                                          JobRun.workload == workload)).mappings().first()
        return JobRun(**row) if row else None

    def start_run(self, revision: str, workload: str, kind: str, items_total: int = 0) -> JobRun:
        """The run of ``workload`` at ``revision``: the existing one (idempotent) or a new one."""
        existing = self.run(revision, workload)
        if existing is not None:
            return existing
        with self.engine.begin() as connection:
            record = JobRun(revision=revision, workload=workload, kind=kind, items_total=items_total)
            values = record.model_dump(exclude={"id"})
            run_id = connection.execute(JobRun.__table__.insert().values(**values)).inserted_primary_key[0]
        return JobRun(id=run_id, **values)

    def update_run(self, run_id: int, **values) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(JobRun).where(JobRun.id == run_id).values(updated_at=utcnow(), **values))

    def add_replicas(self, run_id: int, replicas: list[tuple[int, ReplicaPlace, int]]) -> list[int]:
        """New pending attempts, one per ``(slot, place, attempt)``, in one transaction; their ids."""
        rows = [JobReplica(run_id=run_id, slot=slot, attempt=attempt, provider=place.provider, region=place.region,
                           instance_type=place.instance_type, gpu=place.gpu, market=place.market,
                           cost_per_hour=place.cost_per_hour).model_dump(exclude={"id"})
                for slot, place, attempt in replicas]
        with self.engine.begin() as connection:
            return [connection.execute(JobReplica.__table__.insert().values(**row)).inserted_primary_key[0]
                    for row in rows]

    def replicas_running(self, replica_ids: list[int], node_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(JobReplica).where(JobReplica.id.in_(replica_ids)).values(
                state=State.RUNNING, node_id=node_id, started_at=utcnow()))

    def replicas_finished(self, replica_ids: list[int], state: State, error: str | None = None) -> None:
        """Close the attempts that are not closed yet (a closed attempt keeps its outcome)."""
        with self.engine.begin() as connection:
            connection.execute(update(JobReplica).where(JobReplica.id.in_(replica_ids),
                                                        JobReplica.state.not_in(list(FINAL))).values(
                state=state, finished_at=utcnow(), error=error))

    def replicas(self, run_id: int) -> list[JobReplica]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(JobReplica).where(JobReplica.run_id == run_id)
                                      .order_by(JobReplica.slot, JobReplica.attempt)).mappings().all()
        return [JobReplica(**row) for row in rows]
