"""The built-in inference runtime: a Hugging Face model run with a static KV cache and CUDA graphs.

Eager ``generate()`` is bound by kernel-launch overhead (about 6 % of the H100's HBM roofline at
batch 1), so the runtime takes the weights of a transformers decoder (Llama and Qwen2 families),
fuses them (one QKV and one gate/up matrix per layer: fewer, larger matrix-vector products) and
runs its own decoder over a pre-allocated KV cache. The decode step has fixed shapes and no host
synchronisation, so on CUDA it is captured once into a CUDA graph and replayed per token: the
step's kernels launch as one. The position, cache slot and next token advance inside the graph.

Correctness is pinned to transformers: on the same weights the decoder's logits and greedy tokens
match the model's own forward and ``generate`` (tests/test_engine.py).

Models have random weights (``MODELS``, or any size via ``params_b``) and a byte-level tokenizer
trained in-process, so nothing is downloaded: enough for profiling and for exercising the
execution path. Replicas make the fused weights directly (``DecoderWeights.random``, torch only);
``build_model`` makes a transformers model for the profiler and the equality tests, and real
checkpoints go through ``from_pretrained`` and ``DecoderWeights.take`` the same way.

Imports torch (and transformers, for ``build_model``) on first use only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from gpu_supply.errors import UserError

DTYPES = ("bf16", "fp16", "fp32")
# Prompt and completion length of the built-in decoder's cache unless a caller sizes it.
DEFAULT_MAX_LEN = 1024
# transformers' defaults for Llama and Qwen2 configs, which ``DecoderWeights.random`` follows.
INIT_STD = 0.02
RMS_NORM_EPS = 1e-6
# Granularity, in cache slots, of the attention span a decode step reads (one CUDA graph per span).
SPAN_STEP = 256


@dataclass(frozen=True, slots=True)
class ModelArch:
    """A decoder's shape: enough to build it with random weights and to count its bytes."""

    name: str
    family: str  # "llama" or "qwen2" (Qwen2 adds QKV biases)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool = False
    rope_theta: float = 500_000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        if self.family == "qwen2":
            attention += self.head_dim * (self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        return self.layers * self.layer_params + embeddings + self.hidden

    @property
    def params_b(self) -> float:
        return self.params / 1e9

    @property
    def decode_params(self) -> int:
        """Parameters a decode step reads: all but the input embedding table (only B rows of it)."""
        return self.params - (0 if self.tie_embeddings else self.vocab * self.hidden)

    def kv_bytes_per_token(self, dtype_bytes: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def hf_config(self) -> Any:
        from transformers import AutoConfig

        return AutoConfig.for_model(
            self.family, hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            vocab_size=self.vocab, tie_word_embeddings=self.tie_embeddings, rope_theta=self.rope_theta,
            max_position_embeddings=131_072)


# Public architectures by name (shapes from the models' published configs).
MODELS: dict[str, ModelArch] = {arch.name: arch for arch in (
    ModelArch("llama-3.2-1b", "llama", 2048, 8192, 16, 32, 8, 128_256, tie_embeddings=True),
    ModelArch("llama-3.2-3b", "llama", 3072, 8192, 28, 24, 8, 128_256, tie_embeddings=True),
    ModelArch("llama-3-8b", "llama", 4096, 14_336, 32, 32, 8, 128_256),
    ModelArch("qwen2.5-7b", "qwen2", 3584, 18_944, 28, 28, 4, 152_064, rope_theta=1_000_000.0),
    ModelArch("qwen2.5-14b", "qwen2", 5120, 13_824, 48, 40, 8, 152_064, rope_theta=1_000_000.0),
    ModelArch("qwen2.5-32b", "qwen2", 5120, 27_648, 64, 40, 8, 152_064, rope_theta=1_000_000.0),
    ModelArch("llama-3-70b", "llama", 8192, 28_672, 80, 64, 8, 128_256),
    # For tests and local runs: a few hundred thousand parameters, CPU-fast.
    ModelArch("tiny-llama", "llama", 64, 128, 2, 4, 2, 512),
)}


def model_arch(model: str | None = None, params_b: float | None = None) -> ModelArch:
    """The architecture named ``model``, or a Llama-3-shaped one of about ``params_b`` billion.

    For a size, the named Llama model nearest in size keeps its widths and its layer count is
    scaled to the size asked for.
    """
    if model is not None:
        if model not in MODELS:
            raise UserError("model", f"unknown model {model!r}", f"one of {', '.join(MODELS)}, or give --params-b")
        return MODELS[model]
    if params_b is None or not 0 < params_b <= 1000:
        raise UserError("params-b", f"{params_b!r} is not a size in billions", "e.g. --params-b 8")
    llamas = [arch for arch in MODELS.values() if arch.family == "llama" and arch.params_b >= 1]
    base = min(llamas, key=lambda arch: abs(math.log(arch.params_b / params_b)))
    outside_layers = base.params - base.layers * base.layer_params
    layers = max(1, round((params_b * 1e9 - outside_layers) / base.layer_params))
    return replace(base, name=f"llama-{params_b:g}b", layers=layers)


def torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise UserError("dtype", f"{dtype!r} is not supported by the built-in runtime", f"one of {', '.join(DTYPES)}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def build_model(arch: ModelArch, dtype: str = "bf16", device: str = "cpu", seed: int = 0) -> Any:
    """A transformers model of ``arch`` with random weights, built directly on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(arch.hf_config(), dtype=torch_dtype(dtype))
    return model.eval()


# Text the in-process tokenizer learns its merges from: any fixed text does; English keeps
# typical prompts to a few characters per token.
_TOKENIZER_TEXT = (
    "The quick brown fox jumps over the lazy dog. GPU supply plans place inference workloads on the "
    "cheapest feasible hardware: memory, throughput, capacity, residency and spot policy decide. "
    "Summarise the following document. Translate this sentence. What is the capital of France? "
    "Write a short poem about the sea. Explain how a transformer model generates text token by token.")


PAD_TOKEN, EOS_TOKEN = "<pad>", "<eos>"


def build_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained in-process (no download), with ``PAD_TOKEN``
    and ``EOS_TOKEN``. The bare tokenizer, not transformers' wrapper: replicas start without
    importing transformers (about 2 s of a replica's start on a small machine)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([_TOKENIZER_TEXT] * 4, trainer=trainer)
    return tokenizer


@dataclass
class _Layer:
    input_norm: Any
    qkv: Any
    qkv_bias: Any
    out: Any
    post_norm: Any
    gate_up: Any
    down: Any


@dataclass
class DecoderWeights:
    """A transformers decoder's weights in the runtime's fused layout, with what decoding needs."""

    layers: list[_Layer]
    embedding: Any
    final_norm: Any
    lm_head: Any
    inv_freq: Any  # rotary frequencies, float32
    rope_scaling: float
    heads: int
    kv_heads: int
    head_dim: int
    eps: float

    @classmethod
    def random(cls, arch: ModelArch, dtype: str = "bf16", device: str = "cpu", seed: int = 0) -> DecoderWeights:
        """Random weights of ``arch`` in the fused layout, made directly with torch: no transformers
        import and no unfused copy. Initialised as transformers initialises these models (normal,
        std 0.02; norms one; biases zero), with the same rotary frequencies and norm epsilon."""
        import torch

        generator = torch.Generator(device=device).manual_seed(seed)
        kind = torch_dtype(dtype)

        def normal(*shape: int) -> Any:
            return torch.empty(shape, device=device, dtype=kind).normal_(0.0, INIT_STD, generator=generator)

        def ones(size: int) -> Any:
            return torch.ones(size, device=device, dtype=kind)

        qkv_rows = arch.head_dim * (arch.heads + 2 * arch.kv_heads)
        layers = [_Layer(ones(arch.hidden), normal(qkv_rows, arch.hidden),
                         torch.zeros(qkv_rows, device=device, dtype=kind) if arch.family == "qwen2" else None,
                         normal(arch.hidden, arch.heads * arch.head_dim), ones(arch.hidden),
                         normal(2 * arch.intermediate, arch.hidden), normal(arch.hidden, arch.intermediate))
                  for _ in range(arch.layers)]
        embedding = normal(arch.vocab, arch.hidden)
        lm_head = embedding if arch.tie_embeddings else normal(arch.vocab, arch.hidden)
        exponents = torch.arange(0, arch.head_dim, 2, device=device, dtype=torch.float32) / arch.head_dim
        return cls(layers, embedding, ones(arch.hidden), lm_head, 1.0 / arch.rope_theta ** exponents, 1.0,
                   arch.heads, arch.kv_heads, arch.head_dim, RMS_NORM_EPS)

    @classmethod
    def take(cls, model: Any) -> DecoderWeights:
        """Fuse the model's weights layer by layer, freeing the originals as it goes (the model is spent)."""
        import torch

        layers = []
        for block in model.model.layers:
            attention, mlp = block.self_attn, block.mlp
            projections = (attention.q_proj, attention.k_proj, attention.v_proj)
            qkv = torch.cat([p.weight.data for p in projections])
            bias = torch.cat([p.bias.data for p in projections]) if attention.q_proj.bias is not None else None
            gate_up = torch.cat([mlp.gate_proj.weight.data, mlp.up_proj.weight.data])
            layers.append(_Layer(block.input_layernorm.weight.data, qkv, bias, attention.o_proj.weight.data,
                                 block.post_attention_layernorm.weight.data, gate_up, mlp.down_proj.weight.data))
            for module in (*projections, mlp.gate_proj, mlp.up_proj):
                module.weight.data = torch.empty(0, device=qkv.device)
        config = model.config
        rotary = model.model.rotary_emb
        heads = config.num_attention_heads
        return cls(layers, model.model.embed_tokens.weight.data, model.model.norm.weight.data,
                   model.lm_head.weight.data, rotary.inv_freq.to(torch.float32),
                   float(getattr(rotary, "attention_scaling", 1.0)), heads, config.num_key_value_heads,
                   getattr(config, "head_dim", None) or config.hidden_size // heads, config.rms_norm_eps)


@dataclass
class StaticDecoder:
    """Greedy decoding of a batch over a static KV cache; the decode step replays a CUDA graph.

    Sequences are left-padded to a common prompt length; cache slot ``s`` of sequence ``b`` holds
    its token at position ``s - pad[b]``, and a validity mask keeps padding out of attention.
    """

    weights: DecoderWeights
    max_batch: int
    max_len: int = DEFAULT_MAX_LEN
    use_graphs: bool | None = None  # default: on CUDA
    _graphs: dict[tuple[int, int], Any] = field(default_factory=dict, init=False, repr=False)
    _pool: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        import torch

        w = self.weights
        self.device, self.dtype = w.embedding.device, w.embedding.dtype
        if self.use_graphs is None:
            self.use_graphs = self.device.type == "cuda"
        shape = (self.max_batch, w.kv_heads, self.max_len, w.head_dim)
        # Zeroed, not empty: masked slots get zero attention weight, but 0 x NaN from stale memory is NaN.
        self.keys = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in w.layers]
        self.values = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in w.layers]
        # Per-step state, advanced by the step itself so graph replays chain with no host work.
        self.tokens = torch.zeros(self.max_batch, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(self.max_batch, dtype=torch.long, device=self.device)
        self.slot = torch.zeros(1, dtype=torch.long, device=self.device)
        self.valid = torch.zeros(self.max_batch, self.max_len, dtype=torch.bool, device=self.device)
        self.history = torch.zeros(self.max_batch, self.max_len, dtype=torch.long, device=self.device)

    @cached_property
    def _slots(self) -> Any:
        import torch

        return torch.arange(self.max_len, device=self.device)

    # -- the decoder ------------------------------------------------------------------------

    # Few kernels per layer matter as much as the matrix products: at batch 1 each launch costs
    # about as much as reading a small weight. Norms are single fused kernels, rotary embedding
    # is applied to queries and keys in one pass, and residual adds ride in the products (addmm).

    def _norm(self, x: Any, weight: Any) -> Any:
        import torch.nn.functional as F

        return F.rms_norm(x, (x.shape[-1],), weight, self.weights.eps)

    @staticmethod
    def _rope(x: Any, cos: Any, sin: Any) -> Any:
        import torch

        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _angles(self, positions: Any) -> tuple[Any, Any]:
        import torch

        freqs = positions.float()[..., None] * self.weights.inv_freq  # (B, T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)[:, :, None]  # (B, T, 1, D)
        scaling = self.weights.rope_scaling
        return (angles.cos() * scaling).to(self.dtype), (angles.sin() * scaling).to(self.dtype)

    def _forward(self, tokens: Any, positions: Any, slots: Any, mask: Any, batch: int) -> Any:
        """Hidden states of ``tokens`` (B, T) at ``positions``, written to cache ``slots`` (T,).

        ``mask`` is additive, (B, 1, T, S) over the first S cache slots it attends to.
        """
        import torch
        import torch.nn.functional as F

        w = self.weights
        steps, attended, group = tokens.shape[1], mask.shape[-1], w.heads // w.kv_heads
        if steps > 1:  # query rows are (group, step) per KV head, below
            mask = mask.repeat(1, 1, group, 1)
        cos, sin = self._angles(positions)
        x = F.embedding(tokens, w.embedding).view(batch * steps, -1)
        roped_heads = w.heads + w.kv_heads
        for layer, keys, values in zip(w.layers, self.keys, self.values, strict=True):
            h = self._norm(x, layer.input_norm)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias).view(batch, steps, roped_heads + w.kv_heads, w.head_dim)
            qk = self._rope(qkv[:, :, :roped_heads], cos, sin)
            q, k, v = qk[:, :, :w.heads], qk[:, :, w.heads:], qkv[:, :, roped_heads:]
            keys[:batch].index_copy_(2, slots, k.transpose(1, 2))
            values[:batch].index_copy_(2, slots, v.transpose(1, 2))
            # Grouped-query attention without repeating K/V: each KV head's query group is folded
            # into the query-length axis, so any SDPA kernel reads the cache once.
            q = q.transpose(1, 2).reshape(batch, w.kv_heads, group * steps, w.head_dim)
            attention = F.scaled_dot_product_attention(q, keys[:batch, :, :attended], values[:batch, :, :attended],
                                                       attn_mask=mask)
            attention = attention.reshape(batch, w.heads, steps, w.head_dim).transpose(1, 2)
            x = torch.addmm(x, attention.reshape(batch * steps, -1), layer.out.t())
            gate, up = F.linear(self._norm(x, layer.post_norm), layer.gate_up).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate) * up, layer.down.t())
        return self._norm(x, w.final_norm).view(batch, steps, -1)

    def _logits(self, hidden: Any) -> Any:
        import torch.nn.functional as F

        return F.linear(hidden, self.weights.lm_head)

    def _additive(self, allowed: Any) -> Any:
        """Boolean attention permission as the additive mask SDPA takes (0 or the dtype's minimum)."""
        import torch

        return torch.where(allowed, self._zero, self._blocked)

    @cached_property
    def _zero(self) -> Any:
        import torch

        return torch.zeros((), dtype=self.dtype, device=self.device)

    @cached_property
    def _blocked(self) -> Any:
        import torch

        return torch.full((), torch.finfo(self.dtype).min, dtype=self.dtype, device=self.device)

    def prefill(self, prompts: list[list[int]]) -> Any:
        """Fill the cache with left-padded prompts; returns the last prompt token's logits (B, vocab)."""
        import torch

        batch, length = len(prompts), max(len(p) for p in prompts)
        if batch > self.max_batch or length >= self.max_len:
            raise ValueError(f"batch {batch} x prompt {length} exceeds the cache ({self.max_batch} x {self.max_len})")
        pads = torch.tensor([length - len(p) for p in prompts], device=self.device)
        tokens = torch.tensor([[0] * (length - len(p)) + list(p) for p in prompts], device=self.device)
        slots = self._slots[:length]
        self.valid[:batch] = False
        self.valid[:batch, :length] = slots[None] >= pads[:, None]
        causal = slots[None, :, None] >= slots[None, None, :]  # (1, T query, T key)
        allowed = causal & self.valid[:batch, None, :length]
        # A padding row attends to nothing; let it see itself so softmax stays finite.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=self.device)[None]
        positions = (slots[None] - pads[:, None]).clamp(min=0)
        with torch.inference_mode():
            hidden = self._forward(tokens, positions, slots, self._additive(allowed[:, None]), batch)
            logits = self._logits(hidden[:, -1])
        self.history[:batch, :length] = tokens
        self.tokens[:batch] = logits.argmax(-1)
        self.positions[:batch] = length - pads
        self.slot.fill_(length)
        return logits

    def _step(self, batch: int, span: int) -> None:
        """One decode step for the first ``batch`` sequences attending to the first ``span`` cache slots,
        in place: capture-safe, no host sync."""
        tokens = self.tokens[:batch]
        self.valid[:batch].index_fill_(1, self.slot, True)
        self.history[:batch].index_copy_(1, self.slot, tokens[:, None])
        mask = self._additive(self.valid[:batch, None, None, :span])
        hidden = self._forward(tokens[:, None], self.positions[:batch, None], self.slot, mask, batch)
        tokens.copy_(self._logits(hidden[:, 0]).argmax(-1))
        self.positions[:batch] += 1
        self.slot += 1

    def _span(self, slot: int) -> int:
        """Cache slots a step at ``slot`` attends to: rounded up to ``SPAN_STEP``, so a short context
        does not read the whole cache and a handful of graphs covers every length."""
        return min(self.max_len, (slot // SPAN_STEP + 1) * SPAN_STEP)

    def _graph(self, batch: int, span: int) -> Any:
        import torch

        if (batch, span) not in self._graphs:
            state = (self.tokens, self.positions, self.slot, self.valid, self.history)
            saved = [t.clone() for t in state]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(stream):
                for _ in range(2):  # warm-up allocates the step's workspaces outside the graph
                    self._step(batch, span)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            self._pool = self._pool or torch.cuda.graph_pool_handle()
            with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
                self._step(batch, span)
            for target, value in zip(state, saved, strict=True):
                target.copy_(value)
            self._graphs[batch, span] = graph
        return self._graphs[batch, span]

    def decode(self, batch: int, steps: int) -> None:
        """Run ``steps`` decode steps after ``prefill`` (the step that would pass the cache is refused)."""
        import torch

        first = int(self.slot)
        if first + steps > self.max_len:
            raise ValueError(f"{steps} steps after slot {first} exceed the cache of {self.max_len}")
        with torch.inference_mode():
            for slot in range(first, first + steps):
                if self.use_graphs:
                    self._graph(batch, self._span(slot)).replay()
                else:
                    self._step(batch, self._span(slot))

    def generated(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
        """The ``steps`` tokens generated after each prompt (read once decoding is done)."""
        length = max(len(p) for p in prompts)
        self.history[:len(prompts)].index_copy_(1, self.slot, self.tokens[:len(prompts), None])
        return self.history[:len(prompts), length:length + steps].tolist()

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations of ``prompts`` (token ids), ``max_new_tokens`` each."""
        if max(len(p) for p in prompts) + max_new_tokens > self.max_len:
            raise ValueError(f"prompt plus {max_new_tokens} new tokens exceed the cache of {self.max_len}")
        self.prefill(prompts)
        self.decode(len(prompts), max_new_tokens - 1)
        return self.generated(prompts, max_new_tokens)


def synchronize(device: Any) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def timed(device: Any, work: Any) -> float:
    """Seconds ``work()`` takes on ``device``, its queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start
