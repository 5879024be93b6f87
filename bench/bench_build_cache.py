"""Benchmark: `edgefleet build` on the example fleet, cold (empty store) then warm; prints JSON.

    python bench/bench_build_cache.py [--jobs 1 2]

Each run is a fresh `edgefleet build` process on a private copy of fleet/, so the time
includes start-up. Cold: every need is optimized and gated. Warm: the same command again,
every need a cache hit (no optimization). The artifact digests of the cold runs with
different --jobs are compared: they must be identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLEET = Path(__file__).resolve().parents[1] / "fleet"


def build(repo: Path, store: Path, jobs: int) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgefleet", "build", str(repo), "--store", str(store),
                           "--jobs", str(jobs), "--format", "json"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if not proc.stdout.strip():
        raise SystemExit(f"edgefleet build failed (exit {proc.returncode}):\n{proc.stderr}")
    return seconds, json.loads(proc.stdout) | {"exit_code": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    results, digests = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "fleet"
        shutil.copytree(FLEET, repo, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
        for jobs in args.jobs:
            store = Path(tmp) / f"store-{jobs}"
            cold_s, cold = build(repo, store, jobs)
            warm_s, warm = build(repo, store, jobs)
            digests[jobs] = {f"{b['model']}@{b['version']}:{b['hardware_class']}": b["digest"] for b in cold["builds"]}
            results.append({
                "jobs": jobs,
                "needs": cold["summary"]["total"],
                "cold_seconds": round(cold_s, 2),
                "cold": cold["summary"],
                "cold_exit_code": cold["exit_code"],
                "warm_seconds": round(warm_s, 2),
                "warm": warm["summary"],
                "store_bytes": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()),
            })
    identical = len({json.dumps(d, sort_keys=True) for d in digests.values()}) == 1
    print(json.dumps({"benchmark": "build_cache", "fleet": "fleet/ (example)", "results": results,
                      "digests_identical_across_runs": identical}, indent=2))


if __name__ == "__main__":
    main()
