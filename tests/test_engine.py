"""The built-in runtime: same logits and greedy tokens as transformers on the same weights."""

import os
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from gpu_supply.errors import UserError  # noqa: E402
from scheduler import engine  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download


def twin_models(family):
    """A tiny random model and an untouched copy of it (the runtime consumes the first's weights)."""
    arch = replace(engine.MODELS["tiny-llama"], family=family)
    model = engine.build_model(arch, "fp32", seed=3)
    reference = engine.build_model(arch, "fp32", seed=4)
    reference.load_state_dict(model.state_dict())
    return model, reference


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_prefill_logits_and_greedy_tokens_match_transformers(family):
    model, reference = twin_models(family)
    decoder = engine.StaticDecoder(engine.DecoderWeights.take(model), max_batch=4, max_len=40)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15]]  # left-padded to one length
    logits = decoder.prefill(prompts)
    for row, prompt in zip(logits, prompts, strict=True):
        with torch.no_grad():
            expected = reference(torch.tensor([prompt])).logits[0, -1]
        assert float((row - expected).norm() / expected.norm()) < 1e-5
    generated = decoder.generate(prompts, 12)
    for tokens, prompt in zip(generated, prompts, strict=True):
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False)
        assert tokens == expected[0, len(prompt):].tolist()


def test_attention_spans_change_nothing_but_the_bytes_read(monkeypatch):
    model, reference = twin_models("llama")
    monkeypatch.setattr(engine, "SPAN_STEP", 3)  # many span boundaries within 12 steps
    decoder = engine.StaticDecoder(engine.DecoderWeights.take(model), max_batch=2, max_len=32)
    assert [decoder._span(slot) for slot in (0, 2, 3, 31)] == [3, 3, 6, 32]
    for cache in (*decoder.keys, *decoder.values):  # stale entries in slots a span covers must not leak
        cache.normal_(0, 100)
    prompt = [7, 8, 9, 10]
    expected = reference.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert decoder.generate([prompt], 12)[0] == expected[0, len(prompt):].tolist()


def test_a_decoder_is_reusable_and_refuses_to_overrun_its_cache():
    model, _ = twin_models("llama")
    decoder = engine.StaticDecoder(engine.DecoderWeights.take(model), max_batch=2, max_len=16)
    first = decoder.generate([[1, 2, 3]], 5)
    assert decoder.generate([[4, 5], [1, 2, 3]], 5)[1] == first[0]  # padding does not leak into a sequence
    with pytest.raises(ValueError, match="exceed the cache"):
        decoder.generate([[1] * 10], 7)


@pytest.mark.parametrize("name", sorted(engine.MODELS))
def test_parameter_counts_match_the_transformers_models(name):
    arch = engine.MODELS[name]
    with torch.device("meta"):
        model = engine.build_model(arch, "bf16", "meta")
    assert sum(p.numel() for p in model.parameters()) == arch.params


@pytest.mark.parametrize("size", [1, 8, 13, 32, 70])
def test_a_size_gives_a_llama_shaped_model_of_about_that_size(size):
    arch = engine.model_arch(params_b=size)
    assert arch.family == "llama" and abs(arch.params_b / size - 1) < 0.05


def test_unknown_models_and_sizes_are_user_errors():
    with pytest.raises(UserError, match="model: unknown model 'gpt-9'"):
        engine.model_arch("gpt-9")
    with pytest.raises(UserError, match="params-b"):
        engine.model_arch(params_b=-1)
    with pytest.raises(UserError, match="dtype"):
        engine.torch_dtype("fp4")


def test_the_tokenizer_is_built_in_process_and_round_trips_text():
    tokenizer = engine.build_tokenizer()
    text = "Summarise the following document: GPU prices moved 3% this week."
    ids = tokenizer.encode(text).ids
    assert len(ids) < len(text) and max(ids) < engine.MODELS["tiny-llama"].vocab
    assert tokenizer.decode(ids) == text
    assert tokenizer.token_to_id(engine.PAD_TOKEN) is not None and tokenizer.token_to_id(engine.EOS_TOKEN) is not None


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_random_weights_have_the_layout_and_rotary_of_the_transformers_model(family):
    arch = replace(engine.MODELS["tiny-llama"], family=family)
    made = engine.DecoderWeights.random(arch, "fp32")
    taken = engine.DecoderWeights.take(engine.build_model(arch, "fp32"))
    shapes = lambda w: [[None if t is None else tuple(t.shape) for t in vars(layer).values()] for layer in w.layers]
    assert shapes(made) == shapes(taken)
    for attribute in ("embedding", "final_norm", "lm_head"):
        assert getattr(made, attribute).shape == getattr(taken, attribute).shape
    assert torch.equal(made.inv_freq, taken.inv_freq)
    assert (made.eps, made.rope_scaling, made.heads, made.kv_heads, made.head_dim) == \
        (taken.eps, taken.rope_scaling, taken.heads, taken.kv_heads, taken.head_dim)
    assert 0.015 < float(made.layers[0].qkv.std()) < 0.025  # transformers' init scale
    decoder = engine.StaticDecoder(made, max_batch=2, max_len=16)
    assert [len(tokens) for tokens in decoder.generate([[5, 6, 7], [8]], 4)] == [4, 4]
