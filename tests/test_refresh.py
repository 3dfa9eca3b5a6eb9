"""`gpu-supply refresh` with IDC feeds from files and a loopback HTTP server: retries, stale regions,
withdrawals, secrets, --max-age."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import run_main
from gpu_supply.cli import app
from pricing.store import open_store
from providers.idc import IdcFeeds
from providers.refresh import refresh

FEED = """format: gpu-supply-idc/1
source: broker-a
offers:
  - {{site: sh-1, city: Shanghai, region: cn-shanghai, gpu: H100, gpus_per_node: 8, nodes_available: 4,
     price_per_node_month: {h100}, currency: CNY, min_term_months: 1}}
  - {{site: bj-1, city: Beijing, region: cn-beijing, gpu: A800, gpus_per_node: 8, nodes_available: 8,
     price_per_node_month: 33000, currency: CNY, min_term_months: 1}}
"""
ONE_ROW = """format: gpu-supply-idc/1
source: broker-a
offers:
  - {site: sh-1, city: Shanghai, region: cn-shanghai, gpu: H100, gpus_per_node: 8, nodes_available: 4,
     price_per_node_month: 70000, currency: CNY, min_term_months: 1}
"""
MALFORMED = FEED.format(h100=60000).replace("gpus_per_node: 8, nodes_available: 8", "gpus_per_node: -8, nodes_available: 8")
SECRET = "s3cr3t-T0KEN"


class Script:
    """Responses per path, served in order (the last one repeats): (status, body, delay seconds)."""

    def __init__(self) -> None:
        self.responses: dict[str, list[tuple[int, str, float]]] = {}
        self.hits: dict[str, int] = {}

    def next(self, path: str) -> tuple[int, str, float]:
        self.hits[path] = self.hits.get(path, 0) + 1
        queue = self.responses.get(path, [(404, "not found", 0.0)])
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def feed_server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            status, body, delay = script.next(self.path.split("?")[0])
            time.sleep(delay)
            payload = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/yaml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out first, as the test intends

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def feeds(*locations, timeout_s=2.0):
    return IdcFeeds(locations, timeout_s=timeout_s, sleep=lambda seconds: None)


def current(db_url: str, provider: str = "idc") -> dict[str, float]:
    path = db_url.removeprefix("sqlite:///")
    rows = sqlite3.connect(path).execute("""
        SELECT o.key, p.price_per_hour FROM offer o JOIN price_observation p ON p.id = (
            SELECT q.id FROM price_observation q WHERE q.offer_id = o.id ORDER BY q.observed_at DESC, q.id DESC LIMIT 1)
        WHERE o.provider = ? AND p.price_per_hour IS NOT NULL""", (provider,)).fetchall()
    return dict(rows)


def test_files_and_directories_refresh_into_the_store(tmp_path, seeded_db):
    folder = tmp_path / "feeds"
    folder.mkdir()
    (folder / "a.yaml").write_text(FEED.format(h100=60000))
    (folder / "b.csv").write_text("site,city,region,gpu,gpus_per_node,price_per_node_month,currency,source\n"
                                  "gz-1,Guiyang,cn-guizhou,H20,8,30000,CNY,broker-b\n")
    report = refresh([feeds(str(folder))], open_store(seeded_db))
    assert not report.failed
    assert [(row.region.split("/")[-1], row.offers, row.new) for row in report.regions] == [("a.yaml", 2, 2),
                                                                                           ("b.csv", 1, 1)]
    prices = current(seeded_db)
    assert prices["idc|cn-shanghai|sh-1|8xH100|H100|8|contract"] == pytest.approx(60000 / 730)
    assert "idc|cn-guizhou|gz-1|8xH20|H20|8|contract" in prices


def test_throttling_then_success_is_retried(feed_server, seeded_db):
    script, base = feed_server
    script.responses["/feed.yaml"] = [(429, "slow down", 0.0), (503, "busy", 0.0), (200, FEED.format(h100=60000), 0.0)]
    report = refresh([feeds(f"{base}/feed.yaml")], open_store(seeded_db))
    (row,) = report.regions
    assert row.error is None and row.attempts == 3 and row.offers == 2
    assert script.hits["/feed.yaml"] == 3


def test_failures_keep_the_last_good_offers_and_mark_them_stale(feed_server, seeded_db):
    script, base = feed_server
    store = open_store(seeded_db)
    script.responses["/slow.yaml"] = [(200, FEED.format(h100=60000), 0.0)]
    other = FEED.replace("broker-a", "broker-c").replace("sh-1", "sh-9").replace("bj-1", "bj-9")
    script.responses["/other.yaml"] = [(200, other.format(h100=61000), 0.0)]
    assert not refresh([feeds(f"{base}/slow.yaml", f"{base}/other.yaml")], store).failed
    before = current(seeded_db)

    # The feed now times out; the other feed answers a malformed row, then an empty page.
    script.responses["/slow.yaml"] = [(200, FEED.format(h100=1), 3.0)]
    script.responses["/other.yaml"] = [(200, MALFORMED, 0.0)]
    report = refresh([feeds(f"{base}/slow.yaml", f"{base}/other.yaml", timeout_s=0.5)], store)
    assert report.failed
    errors = {row.region.rsplit("/", 1)[-1]: row.error for row in report.regions}
    assert "Timeout" in errors["slow.yaml"]
    assert "offers[1].gpus_per_node" in errors["other.yaml"]
    assert current(seeded_db) == before  # nothing erased, nothing half-written

    script.responses["/other.yaml"] = [(200, "", 0.0)]
    report = refresh([feeds(f"{base}/other.yaml")], store)
    assert report.failed and current(seeded_db) == before

    result = CliRunner().invoke(app, ["offers", "--provider", "idc", "--format", "json", "--limit", "0"])
    rows = json.loads(result.stdout)
    assert {row["source"]: row["stale"] for row in rows if row["source"].startswith("broker")} == \
        {"broker-a": True, "broker-c": True}


def test_a_feed_that_drops_an_offer_withdraws_it(tmp_path, seeded_db):
    feed = tmp_path / "feed.yaml"
    feed.write_text(FEED.format(h100=60000))
    store = open_store(seeded_db)
    refresh([feeds(str(feed))], store)
    feed.write_text(ONE_ROW)
    (row,) = refresh([feeds(str(feed))], store).regions
    assert (row.offers, row.changed, row.removed) == (1, 1, 1)
    assert set(current(seeded_db)) >= {"idc|cn-shanghai|sh-1|8xH100|H100|8|contract"}
    assert "idc|cn-beijing|bj-1|8xA800|A800|8|contract" not in current(seeded_db)
    assert "idc|cn-shanghai|sh-pudong-1|8xH100|H100|8|contract" in current(seeded_db)  # other feeds untouched


def test_secrets_in_feed_urls_never_reach_reports_or_the_store(feed_server, seeded_db):
    script, base = feed_server
    script.responses["/private.yaml"] = [(500, "boom", 0.0)]
    url = base.replace("http://", f"http://ops:{SECRET}@") + f"/private.yaml?token={SECRET}"
    result = CliRunner().invoke(app, ["refresh", "--provider", "idc", "--idc", url, "--format", "json"])
    assert result.exit_code == 1
    assert SECRET not in result.stdout + result.stderr
    dump = "\n".join(sqlite3.connect(seeded_db.removeprefix("sqlite:///")).iterdump())
    assert SECRET not in dump
    assert "private.yaml" in json.loads(result.stdout)["regions"][0]["region"]


def test_refresh_cli_report_skips_and_errors(tmp_path, seeded_db, monkeypatch, capsys):
    runner = CliRunner()
    skipped = runner.invoke(app, ["refresh", "--provider", "idc"])
    assert skipped.exit_code == 0 and "idc: skipped: no IDC feeds configured" in skipped.stderr
    code, _, err = run_main(monkeypatch, capsys, "refresh", "--provider", "oracle")
    assert code == 2 and "--provider: no live adapter for oracle" in err
    feed = tmp_path / "feed.yaml"
    feed.write_text(FEED.format(h100=60000))
    done = runner.invoke(app, ["refresh", "--idc", str(feed)])
    assert done.exit_code == 0, done.stderr
    assert "Refreshed 1 of 1 regions" in done.stdout
    missing = runner.invoke(app, ["refresh", "--idc", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "stale: FileNotFoundError" in missing.stdout


def test_max_age_refuses_old_data_and_keeps_fresh(tmp_path, seeded_db, monkeypatch, capsys):
    runner = CliRunner()
    code, _, err = run_main(monkeypatch, capsys, "offers", "--gpu", "H100", "--max-age", "1h")
    assert code == 2 and "--max-age: no matching offer is newer than 1h" in err
    code, _, err = run_main(monkeypatch, capsys, "compare", "--gpu", "H100", "--max-age", "soon")
    assert code == 2 and "--max-age: 'soon' is not a duration" in err
    feed = tmp_path / "feed.yaml"
    feed.write_text(FEED.format(h100=60000))  # observed now
    assert runner.invoke(app, ["refresh", "--idc", str(feed)]).exit_code == 0
    fresh = runner.invoke(app, ["offers", "--gpu", "H100", "--max-age", "1h", "--format", "json"])
    assert fresh.exit_code == 0 and "older than 1h left out" in fresh.stderr
    (row,) = json.loads(fresh.stdout)
    assert row["source"] == "broker-a" and row["age_hours"] < 1
    compared = runner.invoke(app, ["compare", "--gpu", "H100", "--gpus", "8", "--max-age", "1h", "--format", "json"])
    assert compared.exit_code == 0 and json.loads(compared.stdout)[0]["provider"] == "idc"


def test_offers_table_shows_age(seeded_db):
    result = CliRunner().invoke(app, ["offers", "--gpu", "H100", "--limit", "3"])
    assert result.exit_code == 0 and "Age" in result.stdout


def test_report_rows_are_json_ready(tmp_path, seeded_db):
    feed = tmp_path / "feed.yaml"
    feed.write_text(FEED.format(h100=60000))
    report = refresh([feeds(str(feed))], open_store(seeded_db))
    assert json.loads(json.dumps(report.to_dict()))["regions"][0]["offers"] == 2
    assert Path(report.regions[0].region).name == "feed.yaml"
