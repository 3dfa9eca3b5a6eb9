"""GPU profiler: measured prefill and decode speed of a model on this machine's GPU.

Builds a model of the asked architecture and size with random weights (no download), runs the
engine the jobs run (``auto``: vLLM where it is installed on a GPU, else ``engine.py``'s
static-cache CUDA-graph decoder; or eager transformers ``generate`` for comparison) across batch
sizes and prompt lengths, and appends one row per point
to the profile table the optimizer's throughput model reads (``throughput.PROFILE_COLUMNS`` plus
the roofline it was measured against).

The roofline of a decode step is the bytes it must read (the weights once, every sequence's KV
cache) over this GPU's measured copy bandwidth.

    python -m scheduler.profiler --model llama-3-8b --gpu H100 --batch 1,8,32 --out profiles.csv

runs wherever torch and transformers are installed; it needs no Ray. ``gpu-supply profile`` runs
it in-process, or with ``--address`` as a Ray task on a node labelled with the GPU asked for
(``profile_on_cluster``), rows streamed back as they are measured.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from gpu_supply import gpus
from gpu_supply.errors import UserError
from scheduler import engine, vllm_engine
from scheduler.throughput import DTYPE_BYTES, PROFILE_COLUMNS

ENGINES = (*vllm_engine.ENGINES, "eager")
EXTRA_COLUMNS = ("kv_bytes_per_token", "copy_bandwidth_tbps", "roofline_decode_tokens_per_s", "roofline_fraction")
# Prompts per prefill measurement: enough tokens to fill the GPU, bounded so the mask stays small.
PREFILL_TOKENS = 8192
REPEATS = 3
DECODE_ROUNDS = 5  # most rounds of REPEATS runs timing decode as a difference (see _decode_seconds)


@dataclass(frozen=True, slots=True)
class ProfileRequest:
    arch: engine.ModelArch
    gpu: str | None = None  # the GPU this must run on; None: whatever this machine has
    dtype: str = "bf16"
    batches: tuple[int, ...] = (1, 8, 32)
    input_tokens: tuple[int, ...] = (512,)
    output_tokens: int = 128
    engine: str = "auto"  # auto | static | vllm (vllm_engine.choose) | eager
    device: str | None = None  # default: cuda when available

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UserError("engine", f"unknown engine {self.engine!r}", f"one of {', '.join(ENGINES)}")
        if not self.batches or min(self.batches) < 1:
            raise UserError("batch", "batch sizes must be positive", "e.g. --batch 1,8,32")
        if not self.input_tokens or min(self.input_tokens) < 1 or self.output_tokens < 2:
            raise UserError("input-tokens", "need prompt lengths >= 1 and at least 2 output tokens",
                            "e.g. --input-tokens 512,2048 --output-tokens 128")
        engine.torch_dtype(self.dtype)


def _device_gpu(device: Any) -> tuple[str, str]:
    """Canonical GPU name and a hardware description of ``device``."""
    import torch

    if device.type != "cuda":
        return "CPU", f"CPU, {torch.get_num_threads()} threads"
    props = torch.cuda.get_device_properties(device)
    name = gpus.resolve(props.name, props.total_memory / 1e9) or props.name
    return name, f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"


def copy_bandwidth(device: Any, size_bytes: int = 1 << 30) -> float:
    """Device memory bandwidth in bytes/s: a large copy, counting bytes read plus bytes written."""
    import torch

    if device.type != "cuda":
        size_bytes = 1 << 26
    source = torch.empty(size_bytes // 4, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = statistics.median(engine.timed(device, lambda: target.copy_(source)) for _ in range(10))
    return 2 * size_bytes / seconds


def _fits(arch: engine.ModelArch, request: ProfileRequest, batch: int, length: int, device: Any) -> bool:
    """Whether a KV cache of ``batch`` x ``length`` fits the free GPU memory (with 10% to spare)."""
    import torch

    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return batch * length * arch.kv_bytes_per_token(DTYPE_BYTES[request.dtype]) < 0.9 * free - (2 << 30)


def _report_skipped(request: ProfileRequest, fitting: list[int], max_len: int) -> None:
    skipped = sorted(set(request.batches) - set(fitting))
    if skipped:
        print(f"skipped batch {', '.join(map(str, skipped))}: a KV cache of {max_len} tokens per sequence "
              "does not fit the free GPU memory", file=sys.stderr)


def _row(request: ProfileRequest, arch: engine.ModelArch, batch: int, length: int, prefill_tps: float,
         decode_seconds: float, bandwidth: float, gpu: str, hardware: str, engine_version: str) -> dict[str, Any]:
    steps = request.output_tokens - 1
    dtype_bytes = DTYPE_BYTES[request.dtype]
    kv_per_token = arch.kv_bytes_per_token(dtype_bytes)
    step_bytes = arch.decode_params * dtype_bytes + batch * (length + steps / 2) * kv_per_token
    roofline = batch * bandwidth / step_bytes
    tpot = decode_seconds / steps
    return {"model": arch.name, "params_b": float(f"{arch.params_b:.4g}"), "dtype": request.dtype, "gpu": gpu, "tp": 1,
            "batch": batch, "input_tokens": length, "output_tokens": request.output_tokens,
            "prefill_tokens_per_s": round(prefill_tps, 1), "decode_tokens_per_s": round(batch / tpot, 1),
            "tpot_ms": round(tpot * 1000, 3), "engine": request.engine, "engine_version": engine_version,
            "hardware": hardware, "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kv_bytes_per_token": int(kv_per_token), "copy_bandwidth_tbps": round(bandwidth / 1e12, 3),
            "roofline_decode_tokens_per_s": round(roofline, 1), "roofline_fraction": round(batch / tpot / roofline, 3)}


def profile(request: ProfileRequest) -> Iterator[dict[str, Any]]:
    """Measure every (prompt length, batch) point of ``request``; rows in the profile table's columns,
    each as soon as it is measured. A GPU asked for must be this machine's, unless the request
    forces the CPU (``device="cpu"``: then the rows say CPU)."""
    import torch
    import transformers

    device = torch.device(request.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu, hardware = _device_gpu(device)
    if request.gpu is not None and request.device != "cpu" and gpus.resolve(request.gpu) != gpu:
        raise UserError("gpu", f"this machine has {gpu}, not {request.gpu}",
                        "run on a node with that GPU (gpu-supply profile --address schedules it there on Ray)")
    if request.engine == "vllm" and device.type != "cuda":
        raise UserError("engine", "vllm runs on a CUDA GPU only", "drop --device cpu, or use --engine static")
    if request.engine != "eager":
        request = replace(request, engine="static" if device.type != "cuda" else vllm_engine.choose(request.engine))
    arch = request.arch
    bandwidth = copy_bandwidth(device)
    versions = f"torch {torch.__version__}; transformers {transformers.__version__}"
    if request.engine == "vllm":
        versions = f"{vllm_engine.version()}; {versions}"
    max_len = max(request.input_tokens) + request.output_tokens
    measure = {"static": _static_points, "eager": _eager_points, "vllm": _vllm_points}[request.engine]
    for batch, length, prefill_tps, decode_seconds in measure(request, arch, device, max_len):
        yield _row(request, arch, batch, length, prefill_tps, decode_seconds, bandwidth, gpu, hardware,
                   f"{request.engine}; {versions}")


def profile_on_cluster(request: ProfileRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run ``profile`` as a Ray task (``ray.init`` done) on a node labelled with the request's GPU
    (any GPU node when it names none), holding one GPU; yields (node id, row) as rows are measured.
    Fails fast when no live node has that GPU (Ray would leave the task pending forever)."""
    import ray

    from scheduler.cluster import LABEL_PREFIX, cluster_nodes

    selector = {}
    if request.gpu is not None:
        canonical = gpus.resolve(request.gpu)
        if canonical is None:
            raise UserError("gpu", f"unknown GPU {request.gpu!r}", "see `gpu-supply gpus`")
        selector = {LABEL_PREFIX + "gpu": canonical}
    nodes = [node for node in cluster_nodes() if node.alive and node.gpus >= 1]
    if not any(node.satisfies(selector, 1) for node in nodes):
        have = sorted({node.labels.get(LABEL_PREFIX + "gpu", "unlabelled") for node in nodes}) or ["no GPU nodes"]
        raise UserError("gpu", f"no live node labelled gpu={selector.get(LABEL_PREFIX + 'gpu', 'any')} with a GPU "
                               f"(cluster has: {', '.join(have)})", "start one (docs/ray.md) or pick another --gpu")

    @ray.remote(num_gpus=1, num_cpus=0, num_returns="streaming")
    def measure(request: ProfileRequest) -> Iterator[tuple[str, dict[str, Any]]]:
        node = ray.get_runtime_context().get_node_id()
        for row in profile(request):
            yield node, row

    for ref in measure.options(label_selector=selector).remote(request):
        yield ray.get(ref)


def _prompts(generator: Any, batch: int, length: int, vocab: int) -> list[list[int]]:
    import torch

    return torch.randint(1, vocab, (batch, length), generator=generator).tolist()


def _static_points(request: ProfileRequest, arch: engine.ModelArch, device: Any, max_len: int):
    import torch

    weights = engine.DecoderWeights.take(engine.build_model(arch, request.dtype, device.type))
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the unfused originals' blocks, so free memory is what the cache can use
    generator = torch.Generator().manual_seed(0)
    fitting = [b for b in sorted(request.batches) if _fits(arch, request, b, max_len, device)]
    _report_skipped(request, fitting, max_len)
    if not fitting:
        return
    decoder = engine.StaticDecoder(weights, max_batch=max(fitting), max_len=max_len)
    steps = request.output_tokens - 1
    for length in request.input_tokens:
        for batch in fitting:
            prefill_batch = max(1, min(batch, PREFILL_TOKENS // length))
            prefill_prompts = _prompts(generator, prefill_batch, length, arch.vocab)
            decoder.prefill(prefill_prompts)  # warm-up
            prefill_seconds = statistics.median(
                engine.timed(device, lambda: decoder.prefill(prefill_prompts)) for _ in range(REPEATS))
            prompts = _prompts(generator, batch, length, arch.vocab)
            decode_times = []
            for _ in range(REPEATS + 1):  # the first includes graph capture
                decoder.prefill(prompts)
                decode_times.append(engine.timed(device, lambda: decoder.decode(batch, steps)))
            yield batch, length, prefill_batch * length / prefill_seconds, statistics.median(decode_times[1:])


def _eager_points(request: ProfileRequest, arch: engine.ModelArch, device: Any, max_len: int):
    """Plain transformers ``generate`` (dynamic cache, eager kernels): the baseline the runtime beats."""
    import torch

    model = engine.build_model(arch, request.dtype, device.type)
    generator = torch.Generator().manual_seed(0)
    fitting = [b for b in sorted(request.batches) if _fits(arch, request, b, max_len, device)]
    _report_skipped(request, fitting, max_len)
    for length in request.input_tokens:
        for batch in fitting:
            ids = torch.tensor(_prompts(generator, batch, length, arch.vocab), device=device)

            def run(new_tokens: int) -> None:
                with torch.inference_mode():
                    model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=0)

            run(2)
            prefill_seconds, decode_seconds = _decode_seconds(
                lambda: engine.timed(device, lambda: run(1)),
                lambda: engine.timed(device, lambda: run(request.output_tokens)), request.output_tokens)
            yield batch, length, batch * length / prefill_seconds, decode_seconds


def _vllm_points(request: ProfileRequest, arch: engine.ModelArch, device: Any, max_len: int):
    """vLLM's ``generate``: prefill as one-token completions, decode as the rest of full-length ones.
    Every timed call gets fresh prompts, so vLLM's prefix cache never skips a prefill."""
    import torch

    generator = torch.Generator().manual_seed(0)
    prefill_batches = {length: max(1, PREFILL_TOKENS // length) for length in request.input_tokens}
    gpu = device.index or 0
    decoder = vllm_engine.VllmDecoder(arch, request.dtype, range(gpu, gpu + 1),
                                      max(*request.batches, *prefill_batches.values()), max_len)

    def once(batch: int, length: int, new_tokens: int) -> float:
        prompts = _prompts(generator, batch, length, arch.vocab)
        return engine.timed(device, lambda: decoder.generate(prompts, new_tokens, exact=True))

    def seconds(batch: int, length: int, new_tokens: int) -> float:
        once(batch, length, new_tokens)  # warm-up
        return statistics.median(once(batch, length, new_tokens) for _ in range(REPEATS))

    for length in request.input_tokens:
        prefill_batch = prefill_batches[length]
        prefill_tps = prefill_batch * length / seconds(prefill_batch, length, 1)
        for batch in sorted(request.batches):
            once(batch, length, 1), once(batch, length, request.output_tokens)  # warm-up
            _, decode_seconds = _decode_seconds(lambda: once(batch, length, 1),
                                                lambda: once(batch, length, request.output_tokens),
                                                request.output_tokens)
            yield batch, length, prefill_tps, decode_seconds


def _decode_seconds(one_token: Callable[[], float], full: Callable[[], float], output_tokens: int
                    ) -> tuple[float, float]:
    """Seconds of a one-token generation and of the decode steps after it, for engines timed only as
    whole generations: the fastest full run less the fastest one-token run, interleaved so both see
    the same machine (interference only adds time; for small models the difference of medians was
    below its noise, even below 0), with more rounds of runs where it is not yet positive."""
    first = total = math.inf
    for _ in range(DECODE_ROUNDS):
        for _ in range(REPEATS):
            first, total = min(first, one_token()), min(total, full())
        if total > first:
            return first, total - first
    raise UserError("output-tokens", f"decode of {output_tokens - 1} tokens is too short to time against the "
                    "prefill", "ask for more --output-tokens")


def append_profiles(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a profile table, writing the header when the file is new."""
    columns = (*PROFILE_COLUMNS, *EXTRA_COLUMNS)
    new = not path.exists() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def ints(text: str, field: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(field, f"{text!r} is not a comma-separated list of integers", "e.g. 1,8,32") from None


def request_from_args(argv: list[str] | None = None) -> tuple[ProfileRequest, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m scheduler.profiler", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--model", choices=sorted(engine.MODELS))
    size.add_argument("--params-b", type=float)
    parser.add_argument("--gpu")
    parser.add_argument("--dtype", default="bf16", choices=engine.DTYPES)
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--input-tokens", default="512")
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--engine", default="auto", choices=ENGINES)
    parser.add_argument("--device")
    parser.add_argument("--out", type=Path, help="profile table to append to")
    args = parser.parse_args(argv)
    request = ProfileRequest(engine.model_arch(args.model, args.params_b), args.gpu, args.dtype,
                             ints(args.batch, "batch"), ints(args.input_tokens, "input-tokens"), args.output_tokens,
                             args.engine, args.device)
    return request, args.out


HEADER_CELLS = ("batch", "input", "prefill tok/s", "decode tok/s", "tpot ms", "roofline tok/s", "of roofline")


def _line(cells: tuple[Any, ...]) -> str:
    return "  ".join(f"{cell!s:>14}" for cell in cells)


def header_line() -> str:
    return _line(HEADER_CELLS)


def row_line(row: dict[str, Any]) -> str:
    """A measured row as the profilers print it, under ``header_line``."""
    return _line((row["batch"], row["input_tokens"], row["prefill_tokens_per_s"], row["decode_tokens_per_s"],
                  row["tpot_ms"], row["roofline_decode_tokens_per_s"], f"{row['roofline_fraction']:.0%}"))


def main(argv: list[str] | None = None) -> int:
    try:
        request, out = request_from_args(argv)
        print(f"{request.arch.name} ({request.arch.params_b:.2f}B) {request.dtype}, engine {request.engine}")
        print(header_line(), flush=True)
        rows = []
        for row in profile(request):
            rows.append(row)
            print(row_line(row), flush=True)
    except UserError as error:
        print(f"error: {error.line()}", file=sys.stderr)
        return 2
    if out is not None:
        append_profiles(out, rows)
        print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

