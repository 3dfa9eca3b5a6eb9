"""Cold-start wall time of `gpu-supply compare` against a bare interpreter start, in the same run.

Target: the CLI's median stays under 0.5 s above `python -c pass` on the 2-core CI machine.
The store is seeded before timing (seeding happens once per machine, not per command).

    .venv/bin/python benchmarks/cli.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_OVERHEAD_S = 0.5
COMMAND = ["compare", "--gpu", "H100", "--gpus", "8", "--hours", "720", "--format", "json"]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("gpu-supply")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gpu_supply"]


def _time(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gpu-supply-bench-"))
    try:
        env = {**os.environ, "GPU_SUPPLY_DB": f"sqlite:///{workdir / 'bench.db'}",
               "GPU_SUPPLY_CONFIG": str(workdir / "none.toml")}
        subprocess.run([*_cli(), *COMMAND], env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # seed the store, untimed
        baseline = _time([sys.executable, "-c", "pass"], env, args.runs)
        cli = _time([*_cli(), *COMMAND], env, args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base_median, cli_median = statistics.median(baseline), statistics.median(cli)
    overhead = cli_median - base_median
    print(f"{'command':<66} {'median s':>9} {'min s':>7} {'max s':>7}")
    print(f"{'python -c pass':<66} {base_median:>9.3f} {min(baseline):>7.3f} {max(baseline):>7.3f}")
    print(f"{'gpu-supply ' + ' '.join(COMMAND):<66} {cli_median:>9.3f} {min(cli):>7.3f} {max(cli):>7.3f}")
    print(f"overhead above bare interpreter: {overhead:.3f} s ({cli_median / base_median:.1f}x) "
          f"- target < {TARGET_OVERHEAD_S} s: {'met' if overhead < TARGET_OVERHEAD_S else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
