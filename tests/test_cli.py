"""The CLI end to end on a store seeded from the embedded snapshot."""

import csv
import io
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES, REPO, run_main
from gpu_supply import cli
from gpu_supply.offer import HOURS_PER_MONTH

runner = CliRunner()


def invoke_json(*args):
    result = runner.invoke(cli.app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_offers_json_rows_carry_the_contract_and_are_sorted(seeded_db):
    rows = invoke_json("offers", "--gpu", "h100", "--limit", "0")
    assert rows and {row["gpu"] for row in rows} == {"H100"}
    for column in ("provider", "region", "instance_type", "gpu", "gpu_count", "pricing", "price_per_hour",
                   "price_per_gpu_hour", "currency", "available"):
        assert column in rows[0]
    prices = [row["price_per_gpu_hour"] for row in rows]
    assert prices == sorted(prices)
    assert {"aws", "gcp", "azure", "lambda", "idc"} <= {row["provider"] for row in rows}


def test_offers_filters_combine(seeded_db):
    rows = invoke_json("offers", "--gpu", "H100,H200", "--geo", "eu", "--pricing", "on_demand",
                       "--gpus-per-node", "8", "--limit", "0")
    assert rows
    assert all(r["geo"] == "eu" and r["pricing"] == "on_demand" and r["gpu_count"] == 8 for r in rows)
    assert {r["gpu"] for r in rows} <= {"H100", "H200"}
    prefixed = invoke_json("offers", "--region", "us-east", "--provider", "aws", "--limit", "0")
    assert prefixed and all(r["region"].startswith("us-east") for r in prefixed)
    cheap = invoke_json("offers", "--gpu", "H100", "--max-price", "2", "--limit", "0")
    assert cheap and all(r["price_per_gpu_hour"] <= 2 for r in cheap)
    big = invoke_json("offers", "--min-gpu-memory", "141", "--limit", "0")
    assert big and all(r["gpu_memory_gb"] >= 141 for r in big)


def test_offers_in_another_currency_keep_the_native_price(seeded_db):
    rows = invoke_json("offers", "--provider", "idc", "--currency", "USD", "--fx", "CNY=7.0", "--limit", "0")
    shanghai = next(r for r in rows if r["zone"] == "sh-pudong-1" and r["gpu"] == "H100")
    assert shanghai["native_currency"] == "CNY" and shanghai["currency"] == "USD"
    assert shanghai["price_per_hour"] == pytest.approx(68000 / HOURS_PER_MONTH / 7.0)


def test_offers_csv(seeded_db):
    result = runner.invoke(cli.app, ["offers", "--geo", "cn", "--format", "csv", "--limit", "0"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and {row["geo"] for row in rows} == {"cn"} and "idc" in {row["provider"] for row in rows}
    assert "price_per_gpu_hour" in rows[0]


def test_offers_table(seeded_db):
    result = runner.invoke(cli.app, ["offers", "--gpu", "L4", "--limit", "3"])
    assert result.exit_code == 0 and "L4" in result.stdout and "cheapest 3" in result.stdout


def test_compare_finds_the_winner_and_savings(seeded_db):
    rows = invoke_json("compare", "--gpu", "H100", "--gpus", "64", "--hours", "720")
    winner = rows[0]
    assert winner["winner"] and winner["feasible"] and winner["winner_saving"] == 0
    assert all(row["gpus"] >= 64 and row["nodes"] >= 1 for row in rows if row["feasible"])
    totals = [row["total_cost"] for row in rows if row["feasible"]]
    assert totals == sorted(totals)
    for row in rows[1:]:
        assert row["winner_saving"] == pytest.approx(row["total_cost"] - winner["total_cost"], abs=0.02)
    pairs = {(row["provider"], row["pricing"]) for row in rows}
    assert len(pairs) == len(rows)  # one row per provider x pricing model
    assert ("aws", "on_demand") in pairs and ("aws", "spot") in pairs and ("idc", "contract") in pairs


def test_compare_charges_minimum_terms_in_full(seeded_db):
    (row,) = invoke_json("compare", "--gpu", "H100", "--gpus", "8", "--months", "1", "--region", "cn-wulanchabu",
                         "--currency", "CNY")
    assert row["billed_hours"] == 12 * HOURS_PER_MONTH  # a 12-month contract
    assert row["total_cost"] == pytest.approx(61000 * 12)


def test_compare_respects_known_capacity(seeded_db):
    (row,) = invoke_json("compare", "--gpu", "H100", "--gpus", "384", "--provider", "idc", "--months", "12")
    nodes = {a["zone"]: a["nodes"] for a in row["allocations"]}
    # 416 GPUs on offer: the 32 Ulanqab and 12 Shanghai nodes are cheapest, 4 more come from Hong Kong.
    assert row["feasible"] and nodes == {"wlcb-jining-1": 32, "sh-pudong-1": 12, "hk-tko-1": 4}


def test_compare_short_supply_exits_1(seeded_db):
    result = runner.invoke(cli.app, ["compare", "--gpu", "H200", "--gpus", "1000", "--provider", "idc"])
    assert result.exit_code == 1 and "short: max 32 GPUs" in result.stdout


def test_compare_table_names_the_winner(seeded_db):
    result = runner.invoke(cli.app, ["compare", "--gpu", "A100-80GB", "--gpus", "16", "--hours", "100"])
    assert result.exit_code == 0 and "winner" in result.stdout and "16 x A100-80GB" in result.stdout


@pytest.mark.parametrize("args, field, hint", [
    (["compare", "--gpu", "H1OO", "--gpus", "8"], "--gpu", "did you mean H100"),
    (["compare", "--gpu", "H100", "--gpus", "-8"], "--gpus", "e.g. --gpus 8"),
    (["compare", "--gpu", "H100", "--provider", "awz"], "--provider", "known: "),
    (["compare", "--gpu", "H100", "--fx", "CNY=seven"], "--fx CNY", "rate per 1 USD"),
    (["compare", "--gpu", "H100", "--hours", "10", "--months", "1"], "--hours/--months", "one of them"),
    (["offers", "--geo", "mars"], "--geo", "use one of"),
    (["offers", "--pricing", "cheap"], "--pricing", "on_demand"),
    (["offers", "--gpus-per-node", "0"], "--gpus-per-node", "positive whole number"),
    (["offers", "--currency", "XXX"], "currency", "--fx XXX=RATE"),
    (["offers", "--limit", "-1"], "--limit", "use 0"),
    (["offers", "--frobnicate"], "No such option", "--help"),
    (["compare", "--gpus", "abc"], "'--gpus'", "valid integer"),
    (["catalog", "import-skypilot", "/nonexistent"], "DIR", "catalog root"),
    (["catalog", "import-idc", "/nonexistent.yaml"], "path", "IDC offer file"),
])
def test_bad_input_is_one_clear_line_and_exit_2(seeded_db, monkeypatch, capsys, args, field, hint):
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert field in err and hint in err


def test_import_skypilot_reports_and_replaces_that_clouds_catalog(seeded_db):
    result = runner.invoke(cli.app, ["catalog", "import-skypilot", str(FIXTURES / "skypilot"), "--cloud", "aws",
                                     "--observed", "2026-11-20"])
    assert result.exit_code == 0, result.output
    assert "aws: read 5 rows" in result.stdout and "fractional GPU" in result.stdout
    assert "Imported 4 offers" in result.stdout and "withdrawn" in result.stdout
    rows = invoke_json("offers", "--provider", "aws", "--limit", "0")
    assert {row["instance_type"] for row in rows} == {"p5.48xlarge", "p3dn.24xlarge"}


def test_import_skypilot_dry_run_writes_nothing(seeded_db):
    before = invoke_json("catalog", "info")
    result = runner.invoke(cli.app, ["catalog", "import-skypilot", str(FIXTURES / "skypilot"), "--dry-run"])
    assert result.exit_code == 0 and "nothing written" in result.stdout
    assert invoke_json("catalog", "info") == before


def test_reimporting_the_same_idc_file_changes_nothing(seeded_db):
    result = runner.invoke(cli.app, ["catalog", "import-idc", str(REPO / "examples" / "idc-offers.yaml")])
    assert result.exit_code == 0 and "0 new, 0 changed, 10 unchanged, 0 withdrawn" in result.stdout


def test_catalog_info_and_gpus(seeded_db):
    info = {row["provider"]: row for row in invoke_json("catalog", "info")}
    assert {"aws", "gcp", "azure", "lambda", "runpod", "idc"} <= set(info)
    assert info["azure"]["regions"] > 30 and "spot" in info["gcp"]["pricing"]
    names = {row["gpu"] for row in invoke_json("gpus")}
    assert {"H100", "H200", "MI300X", "RTX4090"} <= names


def test_cli_start_up_imports_no_heavy_modules(seeded_db):
    code = ("import sys\n"
            "sys.argv = ['gpu-supply', 'compare', '--gpu', 'H100', '--gpus', '8', '--format', 'json']\n"
            "from gpu_supply import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'ortools', 'boto3', 'botocore', "
            "'google', 'azure', 'pandas', 'numpy', 'sqlalchemy', 'sqlmodel'})\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stderr, done.stderr
    assert json.loads(done.stdout)[0]["winner"] is True


def test_help_runs(seeded_db):
    done = subprocess.run([sys.executable, "-m", "gpu_supply", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "compare" in done.stdout and "offers" in done.stdout


def test_catalog_info_table_shows_the_import_log(seeded_db):
    runner.invoke(cli.app, ["catalog", "import-idc", str(REPO / "examples" / "idc-offers.yaml")])
    result = runner.invoke(cli.app, ["catalog", "info"])
    assert result.exit_code == 0
    assert "snapshot:" in result.stdout and "idc:" in result.stdout and "7,417" in result.stdout


def test_plan_json_contract_on_the_snapshot(seeded_db):
    document = invoke_json("plan", str(REPO / "examples" / "workloads.yaml"), "--time-limit", "20")
    assert set(document) >= {"placements", "unmet", "total_cost_per_hour", "total_cost", "solver"}
    assert not document["unmet"] and document["solver"]["status"] == "optimal"
    assert {p["workload"] for p in document["placements"]} == {
        "chat-qwen-7b", "code-llama-70b", "batch-summaries-8b", "cn-assistant-32b", "embeddings-fixed"}
    assert all(p["provider"] == "idc" for p in document["placements"] if p["workload"] == "cn-assistant-32b")
    assert document["solver"]["lp_bound"] <= document["solver"]["objective"] * (1 + 1e-9)


def test_plan_against_an_exported_offers_csv(seeded_db, tmp_path):
    exported = runner.invoke(cli.app, ["offers", "--provider", "idc", "--currency", "USD", "--format", "csv",
                                       "--limit", "0"])
    offers = tmp_path / "idc.csv"
    offers.write_text(exported.stdout)
    document = invoke_json("plan", str(REPO / "examples" / "workloads.yaml"), "--offers", str(offers))
    assert {p["provider"] for p in document["placements"]} == {"idc"}
    unmet = {u["workload"]: u["reason"] for u in document["unmet"]}
    assert "residency" in unmet["chat-qwen-7b"] or "providers" in unmet["chat-qwen-7b"]
    assert "cn-assistant-32b" not in unmet


def test_plan_table(seeded_db):
    result = runner.invoke(cli.app, ["plan", str(REPO / "examples" / "workloads.yaml")])
    assert result.exit_code == 0 and "Solver highs: optimal" in result.stdout and "Cheapest rejected" in result.stdout
    words = " ".join(result.stdout.split())  # however the console wrapped the solver line
    assert "LP bound " in words and "stages pricing-lp > cost-lp" in words


@pytest.mark.parametrize("content, field", [
    ("workloads:\n  - name: chat\n    demand: {tokens_per_s: -1}\n", "workload 'chat' demand.tokens_per_s"),
    ("workloads:\n  - name: chat\n    demand: {replicas: 1, gpus_per_replica: 1}\n    spot: sometimes\n", "workload 'chat' spot"),
    ("nothing: here\n", "workloads"),
])
def test_plan_bad_workload_file(seeded_db, monkeypatch, capsys, tmp_path, content, field):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, out, err = run_main(monkeypatch, capsys, "plan", str(path))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and field in err
