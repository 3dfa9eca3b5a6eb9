"""The profiler on the CPU with a tiny model: rows the throughput model reads, and clear errors."""

import pytest

pytest.importorskip("torch")

from scheduler import engine, profiler  # noqa: E402
from scheduler.throughput import PROFILE_COLUMNS, load_profiles  # noqa: E402


def tiny_request(**overrides):
    values = dict(arch=engine.MODELS["tiny-llama"], batches=(1, 2), input_tokens=(8, 16), output_tokens=4,
                  device="cpu")
    return profiler.ProfileRequest(**(values | overrides))


@pytest.mark.parametrize(("requested", "engine_name"), [("auto", "static"), ("static", "static"), ("eager", "eager")])
def test_profile_rows_land_in_the_table_the_optimizer_reads(tmp_path, requested, engine_name):
    rows = list(profiler.profile(tiny_request(engine=requested)))
    assert [(row["batch"], row["input_tokens"]) for row in rows] == [(1, 8), (2, 8), (1, 16), (2, 16)]
    for row in rows:  # auto on the CPU is the built-in runtime, whatever is installed: vLLM needs CUDA
        assert set(PROFILE_COLUMNS) <= set(row) and row["gpu"] == "CPU" and row["engine"] == engine_name
        assert row["decode_tokens_per_s"] > 0 and row["prefill_tokens_per_s"] > 0 and row["tpot_ms"] > 0
        assert "torch" in row["engine_version"] and 0 < row["roofline_fraction"]
    table = tmp_path / "profiles.csv"
    profiler.append_profiles(table, rows)
    profiler.append_profiles(table, rows[:1])
    assert table.read_text().count("model,params_b") == 1  # the header once
    loaded = load_profiles(table)
    assert len(loaded) == 5 and loaded[0].model == "tiny-llama" and loaded[0].decode_tokens_per_s > 0


def test_eager_decode_is_timed_from_the_fastest_runs_and_never_below_zero(monkeypatch):
    from gpu_supply.errors import UserError

    monkeypatch.setattr(engine, "timed", lambda device, work: (work(), 0.01)[1])  # decode looks free
    with pytest.raises(UserError, match=r"output-tokens: decode of 3 tokens is too short to time"):
        list(profiler.profile(tiny_request(engine="eager", batches=(1,), input_tokens=(8,))))
    slow = iter([0.5, 0.03] + [0.02, 0.03] * 10)  # one interfered prefill run: the fastest counts
    monkeypatch.setattr(engine, "timed", lambda device, work: (work(), next(slow))[1])
    (row,) = profiler.profile(tiny_request(engine="eager", batches=(1,), input_tokens=(8,)))
    assert row["tpot_ms"] == pytest.approx(10 / 3, abs=1e-3) and row["prefill_tokens_per_s"] == pytest.approx(400)


def test_python_m_entry_point_appends_rows(tmp_path, capsys):
    out = tmp_path / "p.csv"
    code = profiler.main(["--model", "tiny-llama", "--device", "cpu", "--batch", "1", "--input-tokens", "8",
                          "--output-tokens", "3", "--out", str(out)])
    assert code == 0 and "appended 1 rows" in capsys.readouterr().out
    assert len(load_profiles(out)) == 1


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny-llama", "--gpu", "H100"], "gpu: this machine has CPU, not H100"),
    (["--model", "tiny-llama", "--batch", "1,x"], "batch: '1,x' is not a comma-separated list of integers"),
    (["--model", "tiny-llama", "--batch", "0"], "batch: batch sizes must be positive"),
    (["--params-b", "0"], "params-b"),
    (["--model", "tiny-llama", "--engine", "vllm", "--device", "cpu"], "engine: vllm runs on a CUDA GPU only"),
])
def test_bad_requests_exit_2_with_one_line(args, message, capsys):
    assert profiler.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_gpu_supply_profile_appends_to_the_table_plan_reads(tmp_path, monkeypatch, capsys):
    import json

    from conftest import run_main

    table = tmp_path / "mine.csv"
    monkeypatch.setenv("GPU_SUPPLY_PROFILES", str(table))
    code, out, err = run_main(monkeypatch, capsys, "profile", "--model", "tiny-llama", "--device", "cpu", "--batch",
                              "1,2", "--input-tokens", "8", "--output-tokens", "3", "--format", "json")
    assert code in (0, None), err
    rows = json.loads(out)
    assert [row["batch"] for row in rows] == [1, 2] and f"appended 2 row(s) to {table}" in err
    assert [row.batch for row in load_profiles(table)] == [1, 2]
    code, _, err = run_main(monkeypatch, capsys, "profile", "--model", "tiny-llama", "--batch", "1,x")
    assert code == 2 and "batch: '1,x' is not a comma-separated list of integers" in err
    assert len(load_profiles(table)) == 2  # nothing half-written


def test_profile_runs_as_a_ray_task_on_a_node_with_that_gpu(ray_cluster):
    from gpu_supply.errors import UserError
    from scheduler.cluster import node_labels

    node = ray_cluster.add_node(node_labels("aws", "us-east-1", "T4", "on_demand", "profile-t4"), 1)
    ray_cluster.wait_for_nodes()
    measured = list(profiler.profile_on_cluster(tiny_request(gpu="T4", batches=(1, 2), input_tokens=(8,))))
    assert [where for where, _ in measured] == [node.node_id] * 2  # the only node labelled T4
    assert [row["batch"] for _, row in measured] == [1, 2] and measured[0][1]["gpu"] == "CPU"  # its CPU: forced
    with pytest.raises(UserError, match=r"gpu: no live node labelled gpu=H200 with a GPU \(cluster has: "):
        next(profiler.profile_on_cluster(tiny_request(gpu="H200")))
