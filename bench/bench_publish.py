"""Benchmark: signing and writing the desired-state TUF tree (`edgefleet.signing.publish`); prints JSON.

    python bench/bench_publish.py [--targets 10000 100000] [--tmpdir /dev/shm]

Per size, in a fresh process (so peak RSS is that size's own): publish N generated
device targets (~700-byte desired states) into an empty directory, publish the same
again (no change: files written must be 0), then publish with 1% of the devices changed.
`generate_seconds` is the time to produce the targets alone (included in the publish
times, since publish consumes a generator as compile does). A fresh publish of a big
fleet creates one small file per device, so it is bound by the disk; `--tmpdir /dev/shm`
measures the same run in memory, which separates the CPU cost from the disk's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

CLASSES = ["jetson-vision-standard", "intel-lowpower-detector", "factory-gateway-gpu", "medical-cart-cpu"]
NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def targets(count: int, changed_every: int = 0):
    from edgefleet.signing import device_target_path
    from edgefleet.signing.publish import TargetFile

    for i in range(count):
        device = f"dev-{i:07d}"
        bump = 1 if changed_every and i % changed_every == 0 else 0
        state = {
            "apiVersion": "edgefleet/v1", "kind": "DesiredState", "device": device,
            "hardware_class": CLASSES[i % 4], "generation": 3 + bump,
            "model": {"name": "meter-digits", "version": f"1.{bump}.0", "variant": "student",
                      "artifact": {"sha256": f"{(i % 4) + bump:064x}", "size": 5632}},
            "runtime": {"name": "onnxruntime", "version": "1.20.0", "config": {"threads": 2}},
            "fallback": {"version": "1.0.0", "sha256": f"{i % 4:064x}"},
            "probe": {"input_sha256": "ab" * 32, "tolerance": 0.01, "latency_ms": 50},
            "rollout": {"name": "meter-digits-1.1", "wave": i % 3},
        }
        data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
        yield TargetFile(device_target_path(device), data,
                         {"device_id": device, "hardware_class": CLASSES[i % 4], "release_counter": 3 + bump})


def run_one(count: int, workdir: Path) -> dict:
    from edgefleet.signing.keys import init_keys, load_keys
    from edgefleet.signing.publish import publish
    from edgefleet.spec.fleet import ExpiryWindows

    init_keys(workdir / "keys")
    keys = load_keys(workdir / "keys")
    out = workdir / "out"
    expiry = ExpiryWindows()

    start = time.perf_counter()
    for _ in targets(count):
        pass
    generate = time.perf_counter() - start

    runs = {}
    for name, changed_every, now in (("fresh", 0, NOW), ("no_change", 0, NOW + timedelta(hours=1)),
                                     ("one_percent_changed", 100, NOW + timedelta(hours=2))):
        start = time.perf_counter()
        report = publish(out, targets(count, changed_every), keys, expiry, now)
        runs[name] = {"seconds": round(time.perf_counter() - start, 2), "files_written": len(report.written),
                      "files_unchanged": report.unchanged, "files_removed": len(report.removed)}
    tree_bytes = sum(p.stat().st_size for p in (out / "metadata").rglob("*.json"))
    return {"targets": count, "bins": report.bins, "generate_seconds": round(generate, 2), **runs,
            "metadata_mb": round(tree_bytes / 2**20, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--tmpdir", default=None, help="where to write the trees (default: the system temp dir)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.dir)))
        return
    results = []
    for count in args.targets:
        with tempfile.TemporaryDirectory(prefix="bench-publish-", dir=args.tmpdir) as tmp:
            proc = subprocess.run([sys.executable, __file__, "--one", str(count), "--dir", tmp],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"bench failed for {count} targets:\n{proc.stderr}")
            results.append({**json.loads(proc.stdout), "tmpdir": args.tmpdir or tempfile.gettempdir()})
    print(json.dumps({"benchmark": "publish", "results": results}, indent=2))


if __name__ == "__main__":
    main()
