"""One inference replica: a model on this node's GPU (or CPU), answering batches of prompts.

Ray-free, so it runs the same inside a node's host actor (``executor.py``), behind Ray Serve
(``serving.py``), and directly (tests). The engine is vLLM where it is installed on a GPU node,
else the built-in static-cache runtime (``vllm_engine.choose``); models come from
``engine.MODELS`` or a size, with random weights and the in-process tokenizer, so no replica ever
downloads anything.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from scheduler import engine, vllm_engine

# Cache length of a replica's decoder: prompt plus completion, in tokens (longer prompts are cut
# from the left, keeping their end).
MAX_LEN = 1024


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What a replica loads: the model (by name or size), dtype, and its request limits."""

    model: str
    params_b: float
    dtype: str = "bf16"
    max_batch: int = 8
    max_new_tokens: int = 64
    threads: int | None = None  # CPU threads when there is no GPU (None: torch's default)
    engine: str = "auto"  # auto | static | vllm (vllm_engine.choose)

    def arch(self) -> engine.ModelArch:
        if self.model in engine.MODELS:
            return engine.MODELS[self.model]
        return engine.model_arch(params_b=self.params_b)


class InferenceRunner:
    """Loads the model once; ``generate`` answers a list of ``(id, prompt)`` with completions.

    It owns ``gpus`` GPUs from index ``gpu`` among those visible to the process (a node's host
    process holds one runner per replica): vLLM spans them (tensor parallel), the built-in runtime
    uses the first. Without CUDA it runs on the CPU.
    """

    def __init__(self, spec: ReplicaSpec, gpu: int = 0, tokenizer: Any = None, gpus: int = 1) -> None:
        import torch

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.engine = vllm_engine.choose(spec.engine)
        self.device = f"cuda:{gpu}" if torch.cuda.is_available() else "cpu"
        # Half precision on the CPU is slow and not what a GPU node would run: CPUs compute in fp32.
        dtype = spec.dtype if self.device != "cpu" else "fp32"
        arch = spec.arch()
        self.tokenizer = tokenizer or engine.build_tokenizer()
        self.eos = self.tokenizer.token_to_id(engine.EOS_TOKEN)
        self.vocabulary = self.tokenizer.get_vocab_size()
        if self.engine == "vllm":
            self.decoder: Any = vllm_engine.VllmDecoder(arch, dtype, range(gpu, gpu + gpus), spec.max_batch, MAX_LEN)
        else:
            with self._on_device():
                self.decoder = engine.StaticDecoder(engine.DecoderWeights.random(arch, dtype, self.device),
                                                    max_batch=spec.max_batch, max_len=MAX_LEN)
        self.model_name = arch.name

    def _on_device(self) -> Any:
        """CUDA graphs are captured and replayed on the current device: make it this runner's."""
        import torch

        return torch.cuda.device(self.device) if self.device != "cpu" else nullcontext()

    def generate(self, items: list[tuple[str, str]], max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Completions for ``items`` (id, prompt), in order, ``max_batch`` prompts per decoder pass."""
        new_tokens = max(1, min(max_new_tokens or self.spec.max_new_tokens, MAX_LEN // 2))
        room = MAX_LEN - new_tokens
        results = []
        for start in range(0, len(items), self.spec.max_batch):
            chunk = items[start:start + self.spec.max_batch]
            prompts = [self.tokenizer.encode(prompt).ids[-room:] or [self.eos] for _, prompt in chunk]
            with self._on_device():
                completions = self.decoder.generate(prompts, new_tokens)
            for (item_id, _), tokens in zip(chunk, completions, strict=True):
                results.append({"id": item_id, "completion": self._text(tokens), "tokens": len(tokens)})
        return results

    def _text(self, tokens: list[int]) -> str:
        # Random-weight models with a large vocabulary emit ids beyond the in-process tokenizer's;
        # they are folded into it so every completion is text.
        ids = [token % self.vocabulary for token in tokens]
        if self.eos in ids:
            ids = ids[:ids.index(self.eos)]
        return self.tokenizer.decode(ids)
