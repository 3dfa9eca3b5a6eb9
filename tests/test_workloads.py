"""Workload files: the documented schema, and bad files rejected with the workload and field named."""

import pytest

from conftest import REPO
from gpu_supply.errors import UserError
from scheduler.workloads import SpotPolicy, load_workloads, parse_workloads

GOOD = {"name": "chat", "model": {"name": "qwen2.5-7b", "params_b": 7.6}, "demand": {"tokens_per_s": 1000}}


def test_example_file_loads():
    workloads = load_workloads(REPO / "examples" / "workloads.yaml")
    assert [w.name for w in workloads][:2] == ["chat-qwen-7b", "code-llama-70b"]
    chat = workloads[0]
    assert chat.spot is SpotPolicy.ALLOWED and chat.spread.min_providers == 2 and chat.gpus.allow == ("H100", "A100-80GB", "L40S")


def test_defaults():
    (workload,) = parse_workloads({"workloads": [GOOD]})
    assert (workload.priority, workload.hours, workload.spot, workload.demand.input_tokens) == (1, 720.0, SpotPolicy.ALLOWED, 512)


@pytest.mark.parametrize("change, field, message", [
    ({"colour": "blue"}, "workload 'chat' colour", "Extra inputs"),
    ({"demand": {"tokens_per_s": -5}}, "workload 'chat' demand.tokens_per_s", "greater than 0"),
    ({"demand": {"tokens_per_s": 10, "replicas": 2, "gpus_per_replica": 1}}, "workload 'chat' demand", "either tokens_per_s or replicas"),
    ({"demand": {"replicas": 2}}, "workload 'chat' demand", "needs gpus_per_replica"),
    ({"model": {"name": "x", "params_b": "big"}}, "workload 'chat' model.params_b", "valid number"),
    ({"model": {"name": "x", "params_b": 7, "dtype": "fp7"}}, "workload 'chat' model.dtype", "one of"),
    ({"gpus": {"allow": ["H1OO"]}}, "workload 'chat' gpus.allow", "did you mean H100"),
    ({"regions": {"geo": ["mars"]}}, "workload 'chat' regions.geo", "unknown geo"),
    ({"spot": "sometimes"}, "workload 'chat' spot", "never"),
    ({"min_on_demand_share": 1.5}, "workload 'chat' min_on_demand_share", "less than or equal to 1"),
    ({"spread": {"min_providers": 1}}, "workload 'chat' spread.min_providers", "greater than or equal to 2"),
    ({"priority": 0}, "workload 'chat' priority", "greater than or equal to 1"),
    ({"model": None}, "workload 'chat'", "needs a model"),
    ({"gpus": {"allow": ["H100"], "deny": ["H100"]}}, "workload 'chat'", "both name"),
])
def test_bad_workloads_name_the_workload_and_field(change, field, message):
    with pytest.raises(UserError) as caught:
        parse_workloads({"workloads": [{**GOOD, **change}]})
    assert caught.value.field == field and message in caught.value.problem


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="duplicate workload names"):
        parse_workloads({"workloads": [GOOD, GOOD]})
    with pytest.raises(UserError, match="at least 1 item"):
        parse_workloads({"workloads": []})
    bad = tmp_path / "w.yaml"
    bad.write_text("workloads: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_workloads(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_workloads(tmp_path / "missing.yaml")
