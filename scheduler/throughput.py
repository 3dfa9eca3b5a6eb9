"""How many output tokens/s one replica of a model sustains on a GPU type, within its SLO.

From a measured profile table when one matches (``PROFILE_COLUMNS``; the profiler of issue #5
writes it), else from a roofline estimate on the GPU registry's memory, bandwidth and FLOPS:

- weights plus KV cache must fit in ``MEMORY_UTILIZATION`` of the replica's GPU memory, with room
  for ``MIN_CONCURRENT_SEQUENCES`` full-length sequences (this picks the tensor-parallel degree);
- a decode step reads the weights once plus each sequence's KV cache (bandwidth-bound) or does
  2 x params FLOPs per sequence (compute-bound), whichever is slower: bandwidth-bound until the
  batch reaches the ridge point; the batch grows until memory, the SLO or ``MAX_BATCH`` stops it;
- prefill is compute-bound: 2 x params FLOPs per input token.

Efficiency factors are named constants below; issue #5's H100 measurements calibrate them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gpu_supply.errors import UserError
from gpu_supply.gpus import GpuSpec

# Fraction of GPU memory usable for weights and KV cache (the rest: activations, runtime, fragmentation).
MEMORY_UTILIZATION = 0.90
# KV headroom a replica must have besides its weights, in full-length sequences (a useful batch).
MIN_CONCURRENT_SEQUENCES = 32
# Decode-step calibration, fitted to the built-in runtime's H100 profiles (scheduler/data/profiles.csv,
# 1B/8B/32B-class at batch 1-64; every row within 10 %, see tests/test_throughput.py):
# weights and KV stream at this fraction of the datasheet bandwidth (the measured copy bandwidth is
# 0.90 of it), plus a fixed cost per step for the ~20 small kernels of each layer, which grows with
# depth (about the square root of the size: 16 layers at 1B, 32 at 8B, 64 at 32B).
BANDWIDTH_EFFICIENCY = 0.91
STEP_OVERHEAD_S_PER_SQRT_B = 1.1e-3
# Achieved fraction of dense BF16 FLOPS (model FLOPs utilisation) in prefill and compute-bound decode.
COMPUTE_EFFICIENCY = 0.50
# Throughput kept per doubling of the tensor-parallel degree (all-reduce cost): NVLink/Infinity
# Fabric parts keep most of it; PCIe-only parts (L40S, RTX 4090, ...) pay far more per all-reduce.
TP_SCALING_EFFICIENCY = 0.90
PCIE_TP_SCALING_EFFICIENCY = 0.70
MAX_BATCH = 256
# KV-cache bytes per token when the spec gives none: fitted to GQA models in bf16 (Llama-3.2-1B 32 KiB,
# Qwen2.5-7B 56 KiB, Llama-3-8B 128 KiB, Llama-3-70B 320 KiB, Llama-3.1-405B 504 KiB) as 40 KiB x sqrt(params_b).
KV_BYTES_PER_TOKEN_PER_SQRT_B = 40 * 1024
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}

# Measured profiles shipped with the project (the profiler of issue #5 appends to it).
DEFAULT_PROFILES = Path(__file__).with_name("data") / "profiles.csv"
PROFILE_COLUMNS = ("model", "params_b", "dtype", "gpu", "tp", "batch", "input_tokens", "output_tokens",
                   "prefill_tokens_per_s", "decode_tokens_per_s", "tpot_ms", "engine", "engine_version",
                   "hardware", "measured_at")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What throughput depends on: the model, its dtype, and the request shape and SLO."""

    name: str
    params_b: float
    dtype_bytes: float
    kv_bytes_per_token: float
    input_tokens: int
    output_tokens: int
    tpot_ms: float | None

    @property
    def weight_bytes(self) -> float:
        return self.params_b * 1e9 * self.dtype_bytes

    @property
    def sequence_kv_bytes(self) -> float:
        return self.kv_bytes_per_token * (self.input_tokens + self.output_tokens)


def estimated_kv_bytes_per_token(params_b: float) -> float:
    return KV_BYTES_PER_TOKEN_PER_SQRT_B * math.sqrt(params_b)


@dataclass(frozen=True, slots=True)
class ReplicaThroughput:
    tensor_parallel: int
    tokens_per_s: float  # output tokens/s of one replica, prefill included
    batch: int
    tpot_ms: float
    source: str  # "profile" or "roofline"


@dataclass(frozen=True, slots=True)
class ProfileRow:
    model: str
    params_b: float
    dtype: str
    gpu: str
    tp: int
    batch: int
    input_tokens: int
    output_tokens: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    tpot_ms: float


def load_profiles(path: Path) -> list[ProfileRow]:
    """Read a profile table (CSV with ``PROFILE_COLUMNS``); engine/version/hardware columns are provenance."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(PROFILE_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise UserError("profiles", f"{path} lacks columns {sorted(missing)}", "see docs/workloads.md")
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(ProfileRow(record["model"], float(record["params_b"]), record["dtype"], record["gpu"],
                                       int(record["tp"]), int(record["batch"]), int(record["input_tokens"]),
                                       int(record["output_tokens"]), float(record["prefill_tokens_per_s"]),
                                       float(record["decode_tokens_per_s"]), float(record["tpot_ms"])))
            except ValueError as exc:
                raise UserError("profiles", f"{path} line {line}: {exc}", "fix the row") from None
    return rows


def fits(shape: ModelShape, gpu: GpuSpec, tp: int) -> bool:
    usable = tp * gpu.memory_gb * 1e9 * MEMORY_UTILIZATION
    return shape.weight_bytes + MIN_CONCURRENT_SEQUENCES * shape.sequence_kv_bytes <= usable


def tensor_parallel_degree(shape: ModelShape, gpu: GpuSpec, limit: int = 64) -> int | None:
    """Smallest power of two whose GPUs hold the weights plus KV headroom; None if none up to ``limit``."""
    tp = 1
    while tp <= limit:
        if fits(shape, gpu, tp):
            return tp
        tp *= 2
    return None


@dataclass(frozen=True, slots=True)
class _Hardware:
    bandwidth: float  # achieved bytes/s of the replica
    flops: float  # achieved FLOP/s of the replica

    @classmethod
    def of(cls, gpu: GpuSpec, tp: int) -> _Hardware:
        per_doubling = PCIE_TP_SCALING_EFFICIENCY if gpu.interconnect == "pcie" else TP_SCALING_EFFICIENCY
        scaling = per_doubling ** math.log2(tp)
        return cls(tp * gpu.bandwidth_tbps * 1e12 * BANDWIDTH_EFFICIENCY * scaling,
                   tp * gpu.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY * scaling)


def _step_overhead_seconds(shape: ModelShape) -> float:
    return STEP_OVERHEAD_S_PER_SQRT_B * math.sqrt(shape.params_b)


def _decode_step_seconds(shape: ModelShape, hardware: _Hardware, batch: int) -> float:
    """One decode step: weights once plus every sequence's average KV, or the FLOPs, whichever is
    slower, plus the step's fixed overhead."""
    kv_read = shape.kv_bytes_per_token * (shape.input_tokens + shape.output_tokens / 2)
    return max((shape.weight_bytes + batch * kv_read) / hardware.bandwidth,
               batch * 2 * shape.params_b * 1e9 / hardware.flops) + _step_overhead_seconds(shape)


def _roofline(shape: ModelShape, gpu: GpuSpec, tp: int) -> ReplicaThroughput | None:
    hardware = _Hardware.of(gpu, tp)
    kv_budget = tp * gpu.memory_gb * 1e9 * MEMORY_UTILIZATION - shape.weight_bytes
    batch = min(int(kv_budget // shape.sequence_kv_bytes), MAX_BATCH)
    if shape.tpot_ms is not None:  # the step time grows with the batch: largest batch within the SLO
        kv_read = shape.kv_bytes_per_token * (shape.input_tokens + shape.output_tokens / 2)
        budget = shape.tpot_ms / 1000 - _step_overhead_seconds(shape)
        by_bandwidth = (budget * hardware.bandwidth - shape.weight_bytes) / kv_read
        by_compute = budget * hardware.flops / (2 * shape.params_b * 1e9)
        batch = min(batch, math.floor(min(by_bandwidth, by_compute)))
    if batch < 1:
        return None
    step = _decode_step_seconds(shape, hardware, batch)
    prefill_per_output_token = (shape.input_tokens / shape.output_tokens) * 2 * shape.params_b * 1e9 / hardware.flops
    return ReplicaThroughput(tp, 1 / (step / batch + prefill_per_output_token), batch, step * 1000, "roofline")


def _from_profiles(shape: ModelShape, gpu: str, tp: int, dtype: str,
                   profiles: tuple[ProfileRow, ...]) -> ReplicaThroughput | None:
    matches = [row for row in profiles
               if row.gpu == gpu and row.tp == tp and row.dtype == dtype
               and (row.model == shape.name or abs(row.params_b - shape.params_b) <= 0.1 * shape.params_b)
               and (shape.tpot_ms is None or row.tpot_ms <= shape.tpot_ms)]
    if not matches:
        return None
    # Rows measured at the prompt length nearest the workload's (longer prompts, more KV per step).
    nearest = min(abs(math.log(row.input_tokens / shape.input_tokens)) for row in matches)
    matches = [row for row in matches if abs(math.log(row.input_tokens / shape.input_tokens)) == nearest]
    best = max(matches, key=lambda row: row.decode_tokens_per_s)
    seconds = 1 / best.decode_tokens_per_s + (shape.input_tokens / shape.output_tokens) / best.prefill_tokens_per_s
    return ReplicaThroughput(tp, 1 / seconds, best.batch, best.tpot_ms, "profile")


class ThroughputModel:
    """Replica throughput per (model shape, GPU, TP degree): measured profiles first, roofline otherwise."""

    def __init__(self, profiles: list[ProfileRow] | None = None) -> None:
        self._profiles = tuple(profiles or ())
        self.replica = lru_cache(maxsize=None)(self._replica)

    def _replica(self, shape: ModelShape, gpu: GpuSpec, dtype: str, tp: int | None = None,
                 max_tp: int = 64) -> ReplicaThroughput | None:
        """Throughput of one replica at ``tp`` (default: the smallest degree that fits), or None."""
        degree = tp if tp is not None else tensor_parallel_degree(shape, gpu, max_tp)
        if degree is None or degree > max_tp or not fits(shape, gpu, degree):
            return None
        return _from_profiles(shape, gpu.name, degree, dtype, self._profiles) or _roofline(shape, gpu, degree)


def roofline_error(profiles: list[ProfileRow], specs: dict[str, GpuSpec]) -> list[tuple[ProfileRow, float]]:
    """Relative error of the roofline's decode tokens/s against each measured row, at its batch size."""
    errors = []
    for row in profiles:
        spec = specs.get(row.gpu)
        if spec is None or row.dtype not in DTYPE_BYTES:
            continue
        shape = ModelShape(row.model, row.params_b, DTYPE_BYTES[row.dtype], estimated_kv_bytes_per_token(row.params_b),
                           row.input_tokens, row.output_tokens, None)
        estimate = row.batch / _decode_step_seconds(shape, _Hardware.of(spec, row.tp), row.batch)
        errors.append((row, estimate / row.decode_tokens_per_s - 1))
    return errors
