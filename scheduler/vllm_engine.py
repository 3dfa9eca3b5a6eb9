"""vLLM as the replicas' and the profiler's engine, chosen automatically where it is installed.

vLLM's paged attention, continuous batching and CUDA graphs beat the built-in static-cache
decoder (``engine.py``) on real GPUs, so ``auto`` (the default everywhere an engine is chosen)
means vLLM on a machine that has it and a CUDA GPU, else the built-in runtime.

The model is the same as the built-in runtime's: ``engine.ModelArch``'s transformers config,
written to a directory, loaded with ``load_format="dummy"`` (random weights, nothing read or
downloaded) and ``skip_tokenizer_init`` (the replica tokenizes with the in-process tokenizer and
hands vLLM token ids). A replica owns its GPUs: they are the only ones visible while its engine
starts, and a tensor-parallel replica spans them.

Imports vLLM on first use only; nothing here runs on a machine without it.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpu_supply.errors import UserError
from scheduler import engine

ENGINES = ("auto", "static", "vllm")
VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Share of each of its GPUs' memory a replica's vLLM engine takes for weights, activations and KV cache.
GPU_MEMORY_UTILIZATION = 0.9


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose(requested: str = "auto") -> str:
    """The engine that runs: ``static`` or ``vllm``. ``auto`` is vLLM where it is installed and a
    CUDA GPU is visible; asking for vLLM where it cannot run is an error, not a silent fallback."""
    if requested not in ENGINES:
        raise UserError("engine", f"unknown engine {requested!r}", f"one of {', '.join(ENGINES)}")
    if requested == "static":
        return "static"
    missing = None
    if not vllm_installed():
        missing = "vLLM is not installed"
    elif not cuda_available():
        missing = "no CUDA GPU is visible"
    if requested == "vllm" and missing:
        raise UserError("engine", f"vllm cannot run here: {missing}",
                        "pip install vllm on the GPU nodes, or use engine: auto (the built-in runtime)")
    return "static" if missing else "vllm"


def write_model(arch: engine.ModelArch, directory: Path) -> Path:
    """The model directory vLLM loads: ``arch``'s transformers config, no weights (vLLM's dummy
    loader makes them)."""
    directory.mkdir(parents=True, exist_ok=True)
    arch.hf_config().save_pretrained(directory)
    return directory


@contextmanager
def _only_gpus(gpus: range) -> Iterator[None]:
    """Make ``gpus`` (indices among those this process sees) the only visible ones while vLLM
    starts: its engine process inherits the environment, and a host holds several replicas."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(index) for index in range(gpus.stop)]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids[index] for index in gpus)
    try:
        yield
    finally:
        if visible is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


class VllmDecoder:
    """Greedy completions of token-id prompts on vLLM: the same contract as ``engine.StaticDecoder``'s
    ``generate``, so replicas and the profiler use either."""

    def __init__(self, arch: engine.ModelArch, dtype: str, gpus: range, max_batch: int, max_len: int) -> None:
        from vllm import LLM

        if dtype not in VLLM_DTYPES:
            raise UserError("dtype", f"{dtype!r} is not supported by vLLM here", f"one of {', '.join(VLLM_DTYPES)}")
        self._directory = tempfile.TemporaryDirectory(prefix=f"gpu-supply-{arch.name}-")
        model = str(write_model(arch, Path(self._directory.name)))
        with _only_gpus(gpus):
            self.llm = LLM(model=model, skip_tokenizer_init=True, load_format="dummy", dtype=VLLM_DTYPES[dtype],
                           tensor_parallel_size=len(gpus), max_model_len=max_len, max_num_seqs=max_batch,
                           gpu_memory_utilization=GPU_MEMORY_UTILIZATION, seed=0,
                           distributed_executor_backend="mp")

    def generate(self, prompts: list[list[int]], max_new_tokens: int, exact: bool = False) -> list[list[int]]:
        """Up to ``max_new_tokens`` per prompt (exactly that many with ``exact``, for timing)."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, detokenize=False,
                                ignore_eos=exact, min_tokens=max_new_tokens if exact else 0)
        outputs = self.llm.generate([{"prompt_token_ids": prompt} for prompt in prompts], params, use_tqdm=False)
        return [list(output.outputs[0].token_ids) for output in outputs]


def version() -> str:
    import vllm

    return f"vllm {vllm.__version__}"
