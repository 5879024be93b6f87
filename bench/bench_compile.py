"""Benchmark: `edgefleet compile` on generated fleets of 10k, 100k and 1M devices; prints JSON.

    python bench/bench_compile.py                      # 10k and 100k devices
    python bench/bench_compile.py --devices 1000000    # 1M: about 7 minutes and 4 GB here

Per size, a fresh process (so peak memory is that run's own maximum resident set)
loads and checks the fleet, compiles every device's desired state and publishes the
signed TUF tree (keys made in a temporary directory) — the work of `edgefleet compile`
minus the artifact-store lookups: builds are stand-ins (tests/desired_support.py), not
real builds. Reported per size:

- seconds: load+check, compile (time spent producing device states), publish (hashing,
  writing targets, signing bins and top-level metadata), their total (wall clock), and
  cpu_total (this process's CPU time: less sensitive to other work on the machine);
- recompile_unchanged: the same compile again into the same tree (reads the previous
  tree, writes nothing);
- files_written and bytes_written of the first compile;
- baseline_write_seconds: plain Python writing the same files with the same bytes
  (open/write, one file at a time), and the ratio of the total to it;
- peak_rss_mb: the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


SHARD = 200_000  # devices per CSV file: the loader refuses files over 64 MiB


def make_fleet(dest: Path, devices: int) -> Path:
    """The example fleet with `devices` generated devices, in CSV shards."""
    from fleetgen import device_rows, generate_fleet

    generate_fleet(dest, 1)
    for old in (dest / "devices").iterdir():
        old.unlink()
    rows = device_rows(devices)
    for shard in range(-(-devices // SHARD)):
        with open(dest / "devices" / f"inventory-{shard:03d}.csv", "w", encoding="utf-8") as out:
            out.write("id,hardware_class,site,labels,public_key\n")
            for _ in range(min(SHARD, devices - shard * SHARD)):
                out.write(",".join(next(rows)) + "\n")
    return dest


def one(devices: int, work: Path) -> dict:
    from edgefleet.pipeline.validate import validate_repository
    from edgefleet.core.collector import collector_paused
    from edgefleet.desired.compile import prepare
    from edgefleet.desired.release import read_previous_releases
    from edgefleet.core.diagnostics import has_errors
    from edgefleet.signing.keys import init_keys
    from edgefleet.signing.publish import TargetFile, publish
    from tests.desired_support import synthetic_artifacts

    fleet = make_fleet(work / "fleet", devices)
    keys = init_keys(work / "keys")
    out = work / "out"
    now = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)

    def compile_once() -> dict:  # what `edgefleet compile` does, timed by phase
        start, cpu_start = time.perf_counter(), time.process_time()
        repo, diags = validate_repository(fleet)
        assert not has_errors(diags), diags[:3]
        loaded = time.perf_counter()
        compiler, problems = prepare(repo, synthetic_artifacts(repo))
        assert compiler is not None, problems
        previous = read_previous_releases(out)
        compile_seconds = time.perf_counter() - loaded
        stream = compiler.stream(previous, previous.next_release)

        def targets():
            nonlocal compile_seconds
            while True:
                t = time.perf_counter()
                device = next(stream, None)
                compile_seconds += time.perf_counter() - t
                if device is None:
                    return
                yield TargetFile(device.path, device.data, device.custom())

        spec = repo.fleet.doc.spec
        report = publish(out, targets(), keys, spec.expiry, now, spec.signing.hash_bins)
        end = time.perf_counter()
        return {"load_check": loaded - start, "compile": compile_seconds,
                "publish": end - loaded - compile_seconds, "total": end - start,
                "cpu_total": time.process_time() - cpu_start, "report": report}

    with collector_paused():  # as `edgefleet compile` runs
        first = compile_once()
    gc.collect()  # each `edgefleet compile` is a process of its own
    with collector_paused():
        second = compile_once()
    report = first.pop("report")
    second_report = second.pop("report")

    # Plain Python writing the same files, the same bytes (reads are not timed).
    baseline_dir = work / "baseline"
    written_bytes, baseline = 0, 0.0
    made: set[Path] = set()
    for rel in report.written:
        data = (out / rel).read_bytes()
        target = baseline_dir / rel
        t = time.perf_counter()
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        with open(target, "wb") as f:
            f.write(data)
        baseline += time.perf_counter() - t
        written_bytes += len(data)

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "devices": devices,
        "seconds": {k: round(v, 2) for k, v in first.items()},
        "recompile_unchanged": {"seconds": round(second["total"], 2), "files_written": len(second_report.written)},
        "files_written": len(report.written),
        "bytes_written": written_bytes,
        "bins": report.bins,
        "baseline_write_seconds": round(baseline, 2),
        "ratio_to_baseline": round(first["total"] / baseline, 1) if baseline else None,
        "ratio_compile_publish_to_baseline": round((first["compile"] + first["publish"]) / baseline, 1)
        if baseline else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size here
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.work))))
        return
    results = []
    for count in args.devices:
        with tempfile.TemporaryDirectory(prefix=f"bench-compile-{count}-") as tmp:
            proc = subprocess.run([sys.executable, __file__, "--one", str(count), "--work", tmp],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"benchmark of {count} devices failed")
            results.append(json.loads(proc.stdout))
            print(json.dumps(results[-1]), file=sys.stderr)  # progress: cleaning up 1M files takes minutes
    print(json.dumps({"benchmark": "compile", "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
