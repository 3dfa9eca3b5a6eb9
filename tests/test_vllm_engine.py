"""Choosing vLLM: automatically where it can run, an error where it was asked for and cannot; the
model directory it loads; the GPUs a replica's engine sees."""

import os

import pytest

pytest.importorskip("torch")

from gpu_supply.errors import UserError  # noqa: E402
from scheduler import engine, vllm_engine  # noqa: E402
from scheduler.workloads import parse_workloads  # noqa: E402


@pytest.mark.parametrize(("installed", "cuda", "auto"), [
    (True, True, "vllm"), (True, False, "static"), (False, True, "static"), (False, False, "static")])
def test_auto_is_vllm_only_where_it_is_installed_and_a_gpu_is_visible(monkeypatch, installed, cuda, auto):
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: installed)
    monkeypatch.setattr(vllm_engine, "cuda_available", lambda: cuda)
    assert vllm_engine.choose("auto") == auto
    assert vllm_engine.choose("static") == "static"
    if auto == "vllm":
        assert vllm_engine.choose("vllm") == "vllm"
    else:
        with pytest.raises(UserError, match="vllm cannot run here: "
                                            + ("no CUDA GPU" if installed else "vLLM is not installed")):
            vllm_engine.choose("vllm")


def test_unknown_engines_are_user_errors():
    with pytest.raises(UserError, match="unknown engine 'tgi'"):
        vllm_engine.choose("tgi")


@pytest.mark.parametrize("name", ["llama-3-8b", "qwen2.5-7b", "llama-3.2-1b"])
def test_the_model_directory_describes_the_runtimes_architecture(tmp_path, name):
    """vLLM builds the model from this directory's config alone: it must be the arch, parameter for parameter."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = engine.MODELS[name]
    config = AutoConfig.from_pretrained(vllm_engine.write_model(arch, tmp_path / "model"))
    assert config.model_type == arch.family and config.num_hidden_layers == arch.layers
    assert (config.hidden_size, config.num_key_value_heads, config.vocab_size) == (arch.hidden, arch.kv_heads, arch.vocab)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(parameter.numel() for parameter in model.parameters()) == arch.params
    assert not list((tmp_path / "model").glob("*.safetensors"))  # no weights: vLLM's dummy loader makes them


@pytest.mark.parametrize(("visible", "gpus", "inside"), [("3,5,6,7", range(1, 3), "5,6"), (None, range(2, 4), "2,3")])
def test_a_replica_engine_sees_only_its_own_gpus(monkeypatch, visible, gpus, inside):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with vllm_engine._only_gpus(gpus):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == inside
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible


def job_workload(**job):
    return {"workloads": [{"name": "w", "model": {"name": "tiny-llama", "params_b": 0.0002},
                           "demand": {"replicas": 1, "gpus_per_replica": 1},
                           "job": {"kind": "serve", **job}}]}


def test_the_job_engine_defaults_to_auto_and_is_validated():
    assert parse_workloads(job_workload())[0].job.engine == "auto"
    assert parse_workloads(job_workload(engine="vllm"))[0].job.engine == "vllm"
    with pytest.raises(UserError, match="workload 'w'.*engine"):
        parse_workloads(job_workload(engine="tgi"))


def test_run_local_refuses_an_engine_this_machine_cannot_run_before_launching(monkeypatch, capsys, tmp_path, seeded_db):
    from conftest import run_main

    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: False)
    spec = tmp_path / "w.yaml"
    spec.write_text("workloads:\n  - name: w\n    model: {name: tiny-llama, params_b: 0.0002}\n"
                    "    demand: {replicas: 1, gpus_per_replica: 1}\n    job: {kind: serve, engine: vllm}\n")
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "--local")
    assert code == 2 and "engine: vllm cannot run here: vLLM is not installed" in err
    assert err.count("\n") == 1
