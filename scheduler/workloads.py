"""Workload specs: what the company must serve. The YAML schema is a contract (docs/workloads.md).

Validation is strict: unknown fields, wrong types and impossible values are rejected with the
workload's name and the field's path, so a typo never silently changes a plan.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpu_supply import gpus
from gpu_supply.errors import UserError
from gpu_supply.geo import GEOS
from scheduler.throughput import DTYPE_BYTES
from scheduler.vllm_engine import ENGINES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ModelSpec(_Strict):
    name: str = Field(min_length=1)
    params_b: float = Field(gt=0, le=5000, description="parameters, billions")
    dtype: str = "bf16"
    kv_bytes_per_token: float | None = Field(default=None, gt=0, description="override the KV-cache estimate")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in DTYPE_BYTES:
            raise ValueError(f"must be one of {', '.join(DTYPE_BYTES)}")
        return value


class Demand(_Strict):
    """Either a token rate (output tokens/s, with the request shape) or a fixed replica count."""

    tokens_per_s: float | None = Field(default=None, gt=0)
    input_tokens: int = Field(default=512, ge=1, le=1_000_000)
    output_tokens: int = Field(default=256, ge=1, le=1_000_000)
    replicas: int | None = Field(default=None, ge=1)
    gpus_per_replica: int | None = Field(default=None, ge=1, le=64)

    @model_validator(mode="after")
    def _one_kind(self) -> Demand:
        if (self.tokens_per_s is None) == (self.replicas is None):
            raise ValueError("give either tokens_per_s or replicas (with gpus_per_replica)")
        if self.replicas is not None and self.gpus_per_replica is None:
            raise ValueError("replicas needs gpus_per_replica")
        if self.tokens_per_s is not None and self.gpus_per_replica is not None:
            raise ValueError("gpus_per_replica goes with replicas, not tokens_per_s")
        return self


class Slo(_Strict):
    tpot_ms: float | None = Field(default=None, gt=0, description="time per output token")


class GpuPolicy(_Strict):
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    min_memory_gb: float | None = Field(default=None, gt=0)

    @field_validator("allow", "deny")
    @classmethod
    def _canonical(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        resolved = []
        for name in names:
            canonical = gpus.resolve(name)
            if canonical is None:
                close = gpus.suggest(name)
                raise ValueError(f"unknown GPU {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            resolved.append(canonical)
        return tuple(resolved)


class Residency(_Strict):
    geo: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @field_validator("geo")
    @classmethod
    def _geo(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if value not in GEOS:
                raise ValueError(f"unknown geo {value!r}; use {', '.join(GEOS)}")
        return values

    @model_validator(mode="after")
    def _one_kind(self) -> Residency:
        if self.geo and self.names:
            raise ValueError("give geo or names, not both")
        return self


class ProviderPolicy(_Strict):
    allow: tuple[str, ...] = ()

    @field_validator("allow")
    @classmethod
    def _lower(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(value.lower() for value in values)


class Spread(_Strict):
    min_providers: int | None = Field(default=None, ge=2, le=16)
    min_regions: int | None = Field(default=None, ge=2, le=64)

    @model_validator(mode="after")
    def _one_kind(self) -> Spread:
        if self.min_providers and self.min_regions:
            raise ValueError("give min_providers or min_regions, not both")
        return self

    @property
    def count(self) -> int:
        """How many groups must each carry 1/count of the demand (0: no spread)."""
        return self.min_providers or self.min_regions or 0

    def group(self, provider: str, region: str) -> str:
        """The unit spread counts: a provider, or one provider's region."""
        return provider if self.min_providers else f"{provider}/{region}"


class SpotPolicy(StrEnum):
    NEVER = "never"
    ALLOWED = "allowed"
    PREFERRED = "preferred"


class JobKind(StrEnum):
    BATCH = "batch"
    SERVE = "serve"


class Job(_Strict):
    """What ``gpu-supply run`` executes on the placed replicas (docs/workloads.md, "Jobs").

    ``batch``: every line of ``input`` (JSONL, ``{"id": ..., "prompt": ...}``) answered exactly once
    into ``output``; ``serve``: replicas behind ``POST <route>/generate`` with ``GET <route>/health``.
    Relative paths are relative to the workload file.
    """

    kind: JobKind
    input: str | None = Field(default=None, min_length=1)
    output: str | None = Field(default=None, min_length=1)
    max_new_tokens: int = Field(default=64, ge=1, le=8192)
    batch_size: int = Field(default=8, ge=1, le=1024, description="prompts per request to a replica")
    route: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]*$")
    engine: Literal[ENGINES] = Field(
        default="auto", description="auto: vLLM on GPU nodes that have it installed, else the built-in runtime")

    @model_validator(mode="after")
    def _kind_fields(self) -> Job:
        if self.kind is JobKind.BATCH and (self.input is None or self.output is None):
            raise ValueError("a batch job needs input and output (JSONL files)")
        if self.kind is JobKind.SERVE and (self.input is not None or self.output is not None):
            raise ValueError("a serve job takes no input or output; requests come over HTTP")
        if self.kind is JobKind.BATCH and self.route is not None:
            raise ValueError("route is for serve jobs")
        return self


class Workload(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    model: ModelSpec | None = None
    demand: Demand
    slo: Slo = Slo()
    gpus: GpuPolicy = GpuPolicy()
    regions: Residency = Residency()
    providers: ProviderPolicy = ProviderPolicy()
    spot: SpotPolicy = SpotPolicy.ALLOWED
    min_on_demand_share: float = Field(default=0.0, ge=0, le=1, description="share of capacity that must not be spot")
    spread: Spread = Spread()
    priority: int = Field(default=1, ge=1, le=1000)
    hours: float = Field(default=720.0, gt=0, le=87600)
    job: Job | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        if self.demand.tokens_per_s is not None and self.model is None:
            raise ValueError("a tokens_per_s demand needs a model to estimate throughput")
        if self.job is not None and self.model is None:
            raise ValueError("a job needs a model to run")
        if self.spot is SpotPolicy.NEVER and self.min_on_demand_share not in (0.0, 1.0):
            raise ValueError("min_on_demand_share has no effect with spot: never")
        overlap = set(self.gpus.allow) & set(self.gpus.deny)
        if overlap:
            raise ValueError(f"gpus.allow and gpus.deny both name {sorted(overlap)}")
        return self

    @property
    def serves_tokens(self) -> bool:
        return self.demand.tokens_per_s is not None

    @property
    def demand_units(self) -> float:
        """Demand in the unit the optimizer covers: output tokens/s or replicas."""
        return self.demand.tokens_per_s if self.serves_tokens else float(self.demand.replicas)


class WorkloadFile(_Strict):
    workloads: tuple[Workload, ...] = Field(min_length=1)


def parse_workloads(document: Any, where: str = "workloads") -> list[Workload]:
    """Validate a parsed YAML document; errors name the workload and the field."""
    if not isinstance(document, dict):
        raise UserError(where, "expected a mapping with a 'workloads' list", "see docs/workloads.md")
    try:
        parsed = WorkloadFile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = list(first["loc"])
        label = where
        if len(location) >= 2 and location[0] == "workloads" and isinstance(location[1], int):
            items = document.get("workloads") or []
            index = location[1]
            name = items[index].get("name") if index < len(items) and isinstance(items[index], dict) else None
            label = f"workload {name!r}" if name else f"workloads[{index}]"
            location = location[2:]
        field = ".".join(str(part) for part in location if not str(part).startswith("function-"))
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{label}{' ' + field if field else ''}", message, "see docs/workloads.md") from None
    names = [workload.name for workload in parsed.workloads]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(where, f"duplicate workload names {duplicates}", "give every workload a unique name")
    return list(parsed.workloads)


def load_workloads(path: Path | str) -> list[Workload]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("WORKLOADS", f"{path} does not exist", "give a workload YAML file") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(str(path), f"not valid YAML: {str(exc).splitlines()[0]}", "fix the file") from None
    return parse_workloads(document, str(path))
