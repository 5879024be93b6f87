"""Benchmark: `edgefleet validate` on generated fleets; prints JSON.

    python bench/bench_validate.py [--devices 100000] [--format csv|yaml]

Each run is a fresh `edgefleet validate` process, so the time includes start-up and
the peak memory is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleetgen import generate_fleet  # noqa: E402


def measure(repo: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgefleet", "validate", str(repo), "--format", "json"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(proc.stdout)
    return {"exit_code": proc.returncode, "seconds": round(seconds, 2),
            "peak_rss_mb": round(max(peak_kb, before) / 1024, 1), "devices_loaded": report["summary"]["devices"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--format", choices=["csv", "yaml"], default="csv")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.devices:
            repo = generate_fleet(Path(tmp) / f"fleet-{count}", count, args.format)
            results.append({"devices": count, "inventory": args.format, **measure(repo)})
    print(json.dumps({"benchmark": "validate", "results": results}, indent=2))


if __name__ == "__main__":
    main()
