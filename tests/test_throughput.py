"""Throughput model: tensor-parallel choice, roofline behaviour, SLOs, and measured profiles first."""

import pytest

from gpu_supply import gpus
from scheduler.throughput import (ModelShape, ThroughputModel, estimated_kv_bytes_per_token,
                                  load_profiles, roofline_error, tensor_parallel_degree)


def shape(params_b, tpot_ms=None, dtype_bytes=2.0, name="m"):
    return ModelShape(name, params_b, dtype_bytes, estimated_kv_bytes_per_token(params_b), 512, 256, tpot_ms)


@pytest.mark.parametrize("params_b, gpu, expected", [(8, "H100", 1), (70, "H100", 4), (70, "H200", 2),
                                                     (70, "MI300X", 1), (405, "H200", 8), (405, "H100", 16)])
def test_tensor_parallel_is_the_smallest_power_of_two_that_fits(params_b, gpu, expected):
    assert tensor_parallel_degree(shape(params_b), gpus.spec(gpu)) == expected


def test_faster_memory_serves_more_tokens():
    model = ThroughputModel()
    rates = {name: model.replica(shape(8), gpus.spec(name), "bf16").tokens_per_s for name in ("A100-80GB", "H100", "H200")}
    assert rates["A100-80GB"] < rates["H100"] < rates["H200"]


def test_a_tight_slo_shrinks_the_batch_and_can_rule_a_gpu_out():
    model = ThroughputModel()
    loose = model.replica(shape(8), gpus.spec("H100"), "bf16")
    tight = model.replica(shape(8, tpot_ms=12), gpus.spec("H100"), "bf16")
    assert tight.batch < loose.batch and tight.tpot_ms <= 12 and tight.tokens_per_s < loose.tokens_per_s
    assert model.replica(shape(8, tpot_ms=50), gpus.spec("L4"), "bf16") is None  # 16 GB of weights at 300 GB/s


def test_fp8_halves_the_weights():
    assert tensor_parallel_degree(shape(70, dtype_bytes=1.0), gpus.spec("H100")) == 2


def test_measured_profiles_win_over_the_roofline(tmp_path):
    path = tmp_path / "profiles.csv"
    path.write_text("model,params_b,dtype,gpu,tp,batch,input_tokens,output_tokens,prefill_tokens_per_s,"
                    "decode_tokens_per_s,tpot_ms,engine,engine_version,hardware,measured_at\n"
                    "llama-3-8b,8,bf16,H100,1,64,512,256,40000,3000,21.3,hf-static,4.46,H100 80GB,2026-11-20\n"
                    "llama-3-8b,8,bf16,H100,1,128,512,256,40000,4000,32.0,hf-static,4.46,H100 80GB,2026-11-20\n")
    rows = load_profiles(path)
    model = ThroughputModel(rows)
    measured = model.replica(shape(8, tpot_ms=25, name="llama-3-8b"), gpus.spec("H100"), "bf16")
    assert measured.source == "profile" and measured.batch == 64
    assert measured.tokens_per_s == pytest.approx(1 / (1 / 3000 + 2 / 40000))
    assert model.replica(shape(8), gpus.spec("A100-80GB"), "bf16").source == "roofline"
    errors = roofline_error(rows, {"H100": gpus.spec("H100")})
    estimates = [(1 + error) * row.decode_tokens_per_s for row, error in errors]
    assert [row.batch for row, _ in errors] == [64, 128]
    assert 0 < estimates[0] < estimates[1]  # the roofline's decode rate grows with the batch
    assert roofline_error(rows, {}) == []  # rows on GPUs without specs are left out


def test_profile_table_needs_its_columns(tmp_path):
    from gpu_supply.errors import UserError

    path = tmp_path / "p.csv"
    path.write_text("model,gpu\nx,H100\n")
    with pytest.raises(UserError, match="lacks columns"):
        load_profiles(path)


def test_the_calibrated_roofline_is_within_20_percent_of_every_committed_h100_profile():
    from scheduler.throughput import DEFAULT_PROFILES

    rows = load_profiles(DEFAULT_PROFILES)
    assert {row.gpu for row in rows} == {"H100"} and len({row.model for row in rows}) >= 3
    errors = roofline_error(rows, {"H100": gpus.spec("H100")})
    assert len(errors) == len(rows)
    worst = max(abs(error) for _, error in errors)
    assert worst <= 0.20, [(row.model, row.batch, row.input_tokens, f"{error:+.0%}") for row, error in errors]


def test_profiles_are_matched_at_the_nearest_prompt_length(tmp_path):
    path = tmp_path / "profiles.csv"
    header = ("model,params_b,dtype,gpu,tp,batch,input_tokens,output_tokens,prefill_tokens_per_s,"
              "decode_tokens_per_s,tpot_ms,engine,engine_version,hardware,measured_at\n")
    path.write_text(header + "m,8,bf16,H100,1,8,512,128,30000,1000,8,static,v,h,2026-11-23\n"
                             "m,8,bf16,H100,1,8,4096,128,30000,700,11,static,v,h,2026-11-23\n")
    model = ThroughputModel(load_profiles(path))
    short, long = (ModelShape("m", 8, 2.0, 131072, length, 256, None) for length in (600, 3000))
    assert model.replica(short, gpus.spec("H100"), "bf16").tpot_ms == 8
    assert model.replica(long, gpus.spec("H100"), "bf16").tpot_ms == 11
