"""Benchmark: `edgefleet status` and `edgefleet promote` over N signed device reports; prints JSON.

    python bench/bench_status.py                    # 100k devices, one report each
    python bench/bench_status.py --devices 10000

Setup (not timed as status): N device identities (ed25519, in memory), an inventory of
their public keys, the example fleet's classes and model with a 3-wave rollout whose
last wave is live, a real compile + TUF publish of every device's desired state committed
to the `desired-state` branch of a git repository, and one signed report per device
(agent-io's `sign_report`) in a `dir:` object-store status remote (the first 100 through
agent-io's `push_reports`, the rest written as the same object bytes without its
per-file fsync, which alone would make setup take 10 minutes). Then, each in a fresh process (so peak RSS is its own):

- status_command, promote_command: `edgefleet status|promote FLEET --reports ... --desired ...
  --now ... --format json` as an operator runs it, timed from process start to exit
  (interpreter start, imports, rendering and teardown included): the figures the < 10 s target
  is judged by; with `--git`, status_command_git_remote: the same reports read from a git
  status remote (a bare repository on this disk, `refs/status/<device>`);
- status (with one verifying process per CPU, as the CLI's default `--jobs`): validate the fleet, read the desired-state branch's generations, read every
  report, verify each (signature, counter, generation), aggregate per rollout, wave,
  class and site, evaluate the gates (`pipeline.status.run_status`);
- promote: the same plus the decision and the round-trip write of the rollout's status
  (`pipeline.promote.run_promote`, without --commit);
- phases: status's steps run one after the other, each timed (`phase_seconds`: starting
  the workers, validating the fleet, reading the desired-state generations, finishing the
  verification, evaluating the rollout): where the time goes. In status the workers read
  and check signatures while the fleet loads, so its wall time is below their sum.

Reported: wall seconds, CPU seconds of the main process and of its verifying workers, peak
RSS in MB of the main process and of the largest worker, the 1-minute load average at the
end (other work on the machine stretches wall time), and the setup's seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOW = "2026-12-01T12:00:00Z"
ROLLOUT = """\
apiVersion: edgefleet/v1
kind: Rollout
metadata:
  name: bench-rollout
spec:
  model: meter-digits
  from_version: "1.0.0"
  to_version: "1.1.0"
  waves:
    - {name: canary, percent: 10}
    - {name: half, percent: 50}
    - name: all
      percent: 100
      gates: {min_reporting: 0.9, max_failure_rate: 0.02, max_latency_p95_ms: 30, soak: 1h, timeout: 6h}
status:
  phase: progressing
  current_wave: 2
  since: "2026-12-01T08:00:00Z"
  wave_started: {canary: "2026-11-29T08:00:00Z", half: "2026-11-30T08:00:00Z", all: "2026-12-01T08:00:00Z"}
"""


def setup(work: Path, devices: int) -> dict:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    import git

    from edgefleet.agent.conditions import Condition
    from edgefleet.agent.identity import DeviceIdentity
    from edgefleet.agent.report import Generation, Latency, Report, TelemetrySummary, WorkloadStatus, sign_report
    import base64

    import rfc8785

    from edgefleet.agent.status_remote import LOG_FORMAT, push_reports
    from edgefleet.desired.release import read_previous_releases
    from edgefleet.signing import device_target_path
    from edgefleet.signing.keys import init_keys
    from tests.rollout_support import compile_and_commit

    timings = {}
    t = time.perf_counter()
    fleet = work / "fleet"
    fleet.mkdir()
    shutil.copy(ROOT / "fleet/fleet.yaml", fleet / "fleet.yaml")
    shutil.copytree(ROOT / "fleet/hardware", fleet / "hardware")
    shutil.copytree(ROOT / "fleet/models", fleet / "models", ignore=shutil.ignore_patterns("__pycache__"))
    (fleet / "rollouts").mkdir()
    (fleet / "rollouts/bench-rollout.yaml").write_text(ROLLOUT, encoding="utf-8")
    (fleet / "devices").mkdir()
    classes = ("medical-cart-cpu", "intel-lowpower-detector", "jetson-vision-standard", "factory-gateway-gpu")
    identities = []
    with open(fleet / "devices/inventory.csv", "w", encoding="utf-8") as out:
        out.write("id,hardware_class,site,labels,public_key\n")
        for i in range(devices):
            key = Ed25519PrivateKey.generate()
            public = "ed25519:" + key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
            device = f"dev-{i:07d}"
            identities.append(DeviceIdentity(device, public, key))
            out.write(f"{device},{classes[i % 4]},site-{i % 50:02d},,{public}\n")
    timings["identities_and_inventory"] = time.perf_counter() - t

    t = time.perf_counter()
    keys = work / "keys"
    init_keys(keys)
    desired = work / "desired"
    compile_and_commit(fleet, desired, keys, datetime(2026, 12, 1, 8, tzinfo=timezone.utc))
    timings["compile_publish_commit"] = time.perf_counter() - t
    repo = git.Repo.init(fleet)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "bench").set_value("user", "email", "bench@localhost")
    repo.git.add("--all")
    repo.git.commit("-q", "-m", "fleet")

    t = time.perf_counter()
    previous = read_previous_releases(desired)
    remote = f"dir:{work / 'reports'}"
    reports_dir = work / "reports"
    (reports_dir / "status").mkdir(parents=True)
    for i, identity in enumerate(identities):
        entry = previous.entries[device_target_path(identity.device_id)]
        release, sha = entry.release_counter, entry.sha256
        failed = i % 200 == 0  # 0.5% fail: under the 2% budget
        conditions = [Condition(type="Ready", status="True", reason="Serving", observed_generation=sha,
                                last_transition="2026-12-01T09:00:00Z")]
        if failed:
            conditions.append(Condition(type="UpdateFailed", status="True", reason="ProbeFailed",
                                        observed_generation=sha, last_transition="2026-12-01T09:00:00Z"))
        report = Report(device=identity.device_id, counter=1, observed_at="2026-12-01T10:00:00Z",
                        generation=Generation(target_sha256=sha, release_counter=release),
                        workloads=[WorkloadStatus(model="meter-digits", rollout="bench-rollout",
                                                  desired_version="1.1.0",
                                                  serving_version="1.0.0" if failed else "1.1.0",
                                                  update="ProbeFailed" if failed else "Committed")],
                        conditions=conditions,
                        telemetry=TelemetrySummary(inferences=1000, latency_ms=Latency(
                            p50=4 + i % 7, p95=9 + i % 11, p99=15 + i % 13)))
        envelope = sign_report(report, identity)
        if i < 100:  # agent-io's own delivery, to pin the format ...
            push_reports(remote, identity.device_id, [envelope])
        else:  # ... and the same object bytes written without its per-file fsync (setup speed only)
            (reports_dir / f"status/{identity.device_id}.json").write_bytes(rfc8785.dumps(
                {"format": LOG_FORMAT, "device": identity.device_id,
                 "reports": [base64.b64encode(envelope).decode()]}))
    timings["sign_and_deliver_reports"] = time.perf_counter() - t
    return {"fleet": str(fleet), "desired": str(desired), "reports": remote,
            "setup_seconds": {k: round(v, 2) for k, v in timings.items()}}


def make_git_remote(work: Path) -> str:
    """The same reports as a git status remote (`refs/status/<device>`, one commit per report
    holding report.dsse.json, as agent-io's `push_reports` makes them), written with `git
    fast-import` from the `dir:` store's logs (pushing 100k refs through the hook would take hours)."""
    import base64

    remote = work / "status.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    proc = subprocess.Popen(["git", "-C", str(remote), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    mark = 0
    for name in sorted(os.listdir(work / "reports/status")):
        log = json.loads((work / "reports/status" / name).read_bytes())
        parent = None
        for envelope in (base64.b64decode(e) for e in log["reports"]):
            blob, mark = mark + 1, mark + 2
            proc.stdin.write(b"blob\nmark :%d\ndata %d\n%b\n" % (blob, len(envelope), envelope))
            proc.stdin.write(b"commit refs/status/%b\nmark :%d\ncommitter device <device@localhost> 1764576000 +0000\n"
                             b"data 6\nreport\n" % (name[:-5].encode(), mark))
            if parent:
                proc.stdin.write(b"from :%d\n" % parent)
            proc.stdin.write(b"M 100644 :%d report.dsse.json\n\n" % blob)
            parent = mark
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    return str(remote)


def measure(kind: str, fleet: str, desired: str, reports: str) -> dict:
    from edgefleet.desired.activation import parse_time

    now = parse_time(NOW)
    wall, cpu = time.perf_counter(), time.process_time()
    if kind == "phases":
        extra = phases(Path(fleet), Path(desired), reports, now)
    elif kind == "status":
        from edgefleet.pipeline.status import run_status

        result = run_status(Path(fleet), reports, now, desired=Path(desired), jobs=os.cpu_count() or 1)
        tally = result.rollouts[0].waves[2].tally
        extra = {"accepted": result.verified.accepted, "rejected": len(result.verified.rejected),
                 "healthy_in_last_wave": tally.counts["healthy"], "failed_in_last_wave": tally.counts["failed"],
                 "verdict": result.rollouts[0].waves[2].result.verdict}
    else:
        from edgefleet.pipeline.promote import run_promote

        result = run_promote(Path(fleet), reports, now, desired=Path(desired), jobs=os.cpu_count() or 1)
        extra = {"decision": result.results[0].decision.action, "changed": result.results[0].changed}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the verifying worker processes
    return {"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "cpu_seconds_workers": round(children.ru_utime + children.ru_stime, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_rss_worker_mb": round(children.ru_maxrss / 1024), "load_average_1m": os.getloadavg()[0], **extra}


def phases(fleet: Path, desired: Path, reports: str, now) -> dict:
    """status's steps one after the other, each timed (wall seconds): where the time goes.

    In `status` itself reading and signature checks (`started`) run in the workers while
    the fleet loads, so its wall time is less than the sum of these. The collector is paused
    throughout, as run_status pauses it.
    """
    from edgefleet.core.collector import collector_paused
    from edgefleet.pipeline.status import enrolled_keys, evaluate_rollout, rollout_paths, start_verification
    from edgefleet.pipeline.validate import validate_repository
    from edgefleet.rollout.sources import read_given_generations

    out = {}
    with collector_paused():
        t = time.perf_counter()
        run = start_verification(reports, os.cpu_count() or 1)
        out["start_workers"] = time.perf_counter() - t
        t = time.perf_counter()
        repo, _ = validate_repository(fleet)
        out["validate_fleet"] = time.perf_counter() - t
        t = time.perf_counter()
        given = read_given_generations(desired, repo.fleet.doc.spec.desired_state_branch)
        out["read_given_generations"] = time.perf_counter() - t
        t = time.perf_counter()
        try:
            verified = run.finish(enrolled_keys(repo), given.by_device, ["meter-digits"])
        finally:
            run.close()
        out["finish_verification"] = time.perf_counter() - t
        t = time.perf_counter()
        name, rel = "bench-rollout", rollout_paths(repo)["bench-rollout"]
        evaluate_rollout(name, rel, repo.rollouts[name].doc, repo, verified, now)
        out["evaluate_rollout"] = time.perf_counter() - t
    return {"phase_seconds": {k: round(v, 2) for k, v in out.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--keep", metavar="DIR", help="set up in DIR (kept) instead of a temporary directory")
    parser.add_argument("--reuse", metavar="DIR", help="measure on a setup kept with --keep; no setup")
    parser.add_argument("--git", action="store_true",
                        help="also put the reports in a git status remote and time status reading it")
    parser.add_argument("--measure", nargs=4, metavar=("KIND", "FLEET", "DESIRED", "REPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if args.reuse:
        info = json.loads((Path(args.reuse) / "setup.json").read_text())
        if args.git and not info.get("git_remote"):
            t = time.perf_counter()
            info["git_remote"] = make_git_remote(Path(args.reuse))
            info["setup_seconds"]["git_remote"] = round(time.perf_counter() - t, 2)
            (Path(args.reuse) / "setup.json").write_text(json.dumps(info))
        print(json.dumps(run_all(info, info["devices"]), indent=2))
        return
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True)
        info = {**setup(work, args.devices), "devices": args.devices}
        if args.git:
            info["git_remote"] = make_git_remote(work)
        (work / "setup.json").write_text(json.dumps(info))
        print(json.dumps(run_all(info, args.devices), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        info = setup(Path(tmp), args.devices)
        if args.git:
            info["git_remote"] = make_git_remote(Path(tmp))
        print(json.dumps(run_all(info, args.devices), indent=2))


def measure_command(kind: str, fleet: str, desired: str, reports: str) -> dict:
    """The command as an operator runs it: `edgefleet status|promote ... --format json`, its wall
    time from process start to exit (interpreter start, imports, rendering and teardown included),
    its CPU seconds and peak RSS together with its verifying workers' (wait4 counts the children
    it reaped)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "compiler"),
                                                                     os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "edgefleet", kind, fleet, "--reports", reports, "--desired", desired,
               "--now", NOW, "--format", "json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        wall = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - wall
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {process.returncode}: {err.read().decode()[-2000:]}")
        shown = json.loads(out.read())
    result = {"seconds": round(wall, 2), "cpu_seconds_with_workers": round(usage.ru_utime + usage.ru_stime, 2),
              "peak_rss_mb_of_largest_process": round(usage.ru_maxrss / 1024),
              "load_average_1m": os.getloadavg()[0], "exit_code": process.returncode}
    if kind == "status":
        result["accepted"] = shown["reports"]["accepted"]
    return result


def run_all(info: dict, devices: int) -> dict:
    out = {"devices": devices, "setup_seconds": info["setup_seconds"], "load_average_1m_before": os.getloadavg()[0]}
    rollout = Path(info["fleet"]) / "rollouts/bench-rollout.yaml"
    before = rollout.read_bytes()
    try:
        for kind in ("status", "promote"):
            out[f"{kind}_command"] = measure_command(kind, info["fleet"], info["desired"], info["reports"])
            rollout.write_bytes(before)  # promote wrote the decision: the next run starts where this one did
        if info.get("git_remote"):  # --git: the same reports read from a git status remote
            out["status_command_git_remote"] = measure_command("status", info["fleet"], info["desired"],
                                                               info["git_remote"])
        for kind in ("status", "promote", "phases"):
            run = subprocess.run([sys.executable, __file__, "--measure", kind, info["fleet"], info["desired"],
                                  info["reports"]], capture_output=True, text=True, check=True)
            out[kind] = json.loads(run.stdout.strip().splitlines()[-1])
            rollout.write_bytes(before)
    finally:
        rollout.write_bytes(before)
    return out


if __name__ == "__main__":
    main()
