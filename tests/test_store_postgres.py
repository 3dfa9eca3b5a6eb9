"""The store on a real PostgreSQL server: a throwaway cluster on a Unix socket, started by the test.

Skipped where no PostgreSQL server binaries are installed (`initdb`/`pg_ctl`).
"""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import make_offer
from pricing.fx import FxTable
from pricing.query import OfferQuery, OfferReader
from pricing.snapshot import load_snapshot
from pricing.store import open_store


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or ([shutil.which("initdb")] if shutil.which("initdb") else [])
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries on this machine")
    pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="gs-pg-"))
    data, socket_dir = root / "data", root / "socket"
    socket_dir.mkdir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(socket_dir, "postgres")
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "gs", "--auth=trust", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
        f"-k {socket_dir} -c listen_addresses='' -p 54329", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", str(socket_dir), "-p", "54329", "-U", "gs", "gpu_supply")
        yield f"postgresql+psycopg://gs@/gpu_supply?host={socket_dir}&port=54329"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_seed_import_and_read_on_postgres(postgres_url):
    store = open_store(postgres_url)
    reader = OfferReader(postgres_url)
    assert reader.seeded is None  # open_store already seeded it
    h100 = reader.offers(OfferQuery(gpus=("H100",), geos=("eu",)), FxTable())
    assert h100 and {offer.gpu for offer in h100} == {"H100"}
    total = reader.offers(OfferQuery(), FxTable())
    assert len(total) == len(load_snapshot().offers)
    summary = store.import_offers([make_offer(provider="testcloud", price_per_hour=9.5)], "feed", "test")
    assert summary.new == 1
    (offer,) = reader.offers(OfferQuery(providers=("testcloud",)), FxTable())
    assert offer.price_per_hour == 9.5 and offer.observed_at.tzinfo is not None
