"""edgefleet agent enroll|run|state: the device agent.

  edgefleet agent enroll --state-dir DIR --device ID [--format json]
  edgefleet agent run --state-dir DIR --device ID --remote URL --root FILE [--store URL]
        [--status-remote URL] [--once | --interval DURATION] [--listen 127.0.0.1:PORT | unix:PATH]
        [--branch B] [--confirm-inferences N] [--soak DURATION] [--now RFC3339]
  edgefleet agent state --state-dir DIR [--format json]

`run --once` exits 0 when the device serves what its verified desired state asks, 1
otherwise (the reason on stderr), 2 on usage errors.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from edgefleet.cli.output import add_format_argument


def register(sub) -> None:
    parser = sub.add_parser("agent", help="the device agent: enroll, run, state", description=__doc__)
    asub = parser.add_subparsers(dest="agent_command", metavar="SUBCOMMAND")
    asub.required = True

    p = asub.add_parser("enroll", help="make this device's key; print its inventory entry")
    p.add_argument("--state-dir", required=True, metavar="DIR")
    p.add_argument("--device", required=True, metavar="ID")
    add_format_argument(p)
    p.set_defaults(run=run_enroll)

    p = asub.add_parser("run", help="reconcile the device toward its signed desired state")
    p.add_argument("--state-dir", required=True, metavar="DIR")
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--remote", required=True, metavar="URL",
                   help="desired-state git repository (any URL git accepts) or http(s):// static mirror")
    p.add_argument("--root", required=True, metavar="FILE", help="the pinned root metadata the device shipped with")
    p.add_argument("--store", metavar="URL", help="artifact store: directory, http(s)://, s3:// or file:// URL")
    p.add_argument("--status-remote", metavar="URL", help="where signed reports are pushed")
    p.add_argument("--branch", default="desired-state", help="desired-state branch (git remotes; default %(default)s)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one cycle; exit 0 when in sync, 1 otherwise")
    mode.add_argument("--interval", metavar="DURATION", help="poll interval, e.g. 5m (default: the state's poll_interval)")
    p.add_argument("--listen", metavar="ADDR", help="serve KServe v2 REST on 127.0.0.1:PORT or unix:PATH")
    p.add_argument("--confirm-inferences", type=int, default=20, metavar="N",
                   help="inferences that must succeed after a switch before commit (default %(default)s)")
    p.add_argument("--soak", default="30s", metavar="DURATION",
                   help="time after a switch without failures before commit (default %(default)s)")
    p.add_argument("--now", metavar="RFC3339", help="the device clock (tests); default: the system clock")
    add_format_argument(p)
    p.set_defaults(run=run_agent)

    p = asub.add_parser("state", help="what the device serves now")
    p.add_argument("--state-dir", required=True, metavar="DIR")
    add_format_argument(p)
    p.set_defaults(run=run_state)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")


def parse_duration(value: str, flag: str) -> float:
    from edgefleet.cli import UsageError

    m = _DURATION.match(value or "")
    if not m:
        raise UsageError(f"{flag} {value!r} is not a duration like 500ms, 30s, 5m, 1h")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _identity_error(exc) -> int:
    print(f"{exc.path + ': ' if getattr(exc, 'path', '') else ''}error[{exc.code}]: {exc.message}", file=sys.stderr)
    if getattr(exc, "hint", ""):
        print(f"  = hint: {exc.hint}", file=sys.stderr)
    return 1


def run_enroll(args) -> int:
    from edgefleet.agent.identity import IdentityError, enroll, inventory_entry

    try:
        identity = enroll(Path(args.state_dir), args.device)
    except IdentityError as exc:
        return _identity_error(exc)
    entry = inventory_entry(identity)
    if args.format == "json":
        print(json.dumps(entry, sort_keys=True))
    else:
        print(f"- id: {entry['id']}\n  public_key: {entry['public_key']}")
    return 0


def _parse_now(value: str):
    from datetime import timezone

    from edgefleet.pipeline.common import parse_time

    return parse_time(value).astimezone(timezone.utc)


def _listen(value: str) -> str:
    from edgefleet.cli import UsageError

    if value.startswith("unix:") and len(value) > 5:
        return value
    host, _, port = value.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        raise UsageError(f"--listen {value!r}: give 127.0.0.1:PORT or unix:PATH (the agent never listens "
                         "beyond this host)")
    return value


def run_agent(args) -> int:
    from edgefleet.cli import UsageError

    state_dir = Path(args.state_dir)
    try:
        root = Path(args.root).read_bytes()
    except OSError as exc:
        raise UsageError(f"--root {args.root}: cannot read it ({exc.strerror})") from None
    soak = parse_duration(args.soak, "--soak")
    interval = parse_duration(args.interval, "--interval") if args.interval else None
    if args.confirm_inferences < 0:
        raise UsageError("--confirm-inferences must be 0 or more")
    listen = _listen(args.listen) if args.listen else None
    clock = None
    if args.now:
        fixed = _parse_now(args.now)
        clock = lambda: fixed  # noqa: E731
    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"--state-dir {state_dir} is not a directory")

    from edgefleet.agent.cycle import AgentConfig

    config = AgentConfig(state_dir=state_dir, device=args.device, remote=args.remote, trusted_root=root,
                         branch=args.branch, store=args.store, status_remote=args.status_remote,
                         confirm_inferences=args.confirm_inferences, soak_s=soak)
    if clock is not None:
        config.clock = clock
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_state_dir(state_dir)
    if lock is None:
        print(f"{state_dir}: error[E619]: another agent is running on this state directory", file=sys.stderr)
        print("  = hint: one agent per device; stop the other (systemctl stop edgefleet-agent) first",
              file=sys.stderr)
        return 1
    try:
        return _run_locked(args, config, state_dir, listen, interval)
    finally:
        import os

        os.close(lock)


def _run_locked(args, config, state_dir: Path, listen, interval) -> int:
    from edgefleet.agent.cycle import Agent
    from edgefleet.agent.errors import AgentError
    from edgefleet.agent.registry import Registry
    from edgefleet.agent.reporting import after_cycle

    telemetry, identity = _telemetry(state_dir), _identity(state_dir, args.device)
    registry = Registry(telemetry)
    agent = Agent(config, registry)
    try:
        agent.start()
    except AgentError as exc:
        print(f"{state_dir}: error[{exc.code}]: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  = hint: {exc.hint}", file=sys.stderr)
        return 1
    server = _serve(registry, listen) if listen else None

    def one():
        try:
            result = agent.cycle()
        except AgentError as exc:  # a loop guard or a damaged journal: keep serving, say so
            from edgefleet.agent.cycle import CycleResult

            result = CycleResult(False, exc.message, code=exc.code)
        status = after_cycle(agent, result, telemetry, identity)
        return result, status

    try:
        if args.once:
            result, status = one()
            return _print_result(result, status, args.format)
        import threading

        from edgefleet.agent.daemon import run_forever

        import signal

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # systemd stop: finish the cycle, exit 0
        wait = interval
        if wait is None:
            wait = _poll_interval(agent)

        def cycle():
            result, status = one()
            _print_result(result, status, "text")
            return result

        try:
            run_forever(cycle, wait, stop)
        except KeyboardInterrupt:
            stop.set()
        return 0
    finally:
        if server is not None:
            server.stop()
        if telemetry is not None:
            telemetry.close()


def _poll_interval(agent) -> float:
    """The desired state's agent.poll_interval (last verified), else 5 minutes."""
    from edgefleet.agent import slots

    active = slots.active_slot(agent.state_dir)
    info = slots.read_slot(agent.state_dir, active, check_digests=False) if active else None
    value = (info.meta.get("poll_interval") if info else None) or "5m"
    return parse_duration(value, "poll_interval")


def _lock_state_dir(state_dir: Path):
    """An exclusive flock on STATE/agent.lock for the process's life (None: another agent holds it)."""
    import fcntl
    import os

    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd  # released by the kernel when the process ends, even on SIGKILL


def _print_result(result, status, fmt) -> int:
    if fmt == "json":
        print(json.dumps({"in_sync": result.in_sync, "reason": result.reason, "code": result.code,
                          "serving": status.get("serving"),
                          "workloads": [{"model": w.model, "in_sync": w.in_sync, "reason": w.reason, "code": w.code}
                                        for w in getattr(result, "workloads", [])]}, sort_keys=True))
    elif result.in_sync:
        print(f"in sync: {result.reason}")
    else:
        code = f"error[{result.code}]: " if result.code else ""
        print(f"not in sync: {code}{result.reason}", file=sys.stderr)
    return 0 if result.in_sync else 1


def _telemetry(state_dir: Path):
    try:
        from edgefleet.agent.telemetry import TelemetryStore
    except ImportError:
        return None
    return TelemetryStore(state_dir / "telemetry.db", state_dir=state_dir)


def _identity(state_dir: Path, device: str):
    from edgefleet.agent.identity import IdentityError, load_identity

    try:
        identity = load_identity(state_dir)
    except IdentityError as exc:
        print(f"warning[{exc.code}]: {exc.message}; reports are not made until the device is enrolled",
              file=sys.stderr)
        return None
    if identity.device_id != device:
        from edgefleet.cli import UsageError

        raise UsageError(f"--device {device}: this state directory is enrolled as {identity.device_id}")
    return identity


def _serve(registry, listen: str):
    from edgefleet.agent.serving import InferenceServer

    server = InferenceServer(registry, listen)
    server.start()
    print(f"serving KServe v2 on {server.address}", file=sys.stderr)
    return server


def run_state(args) -> int:
    from edgefleet.agent import slots
    from edgefleet.agent.status import read_status

    state_dir = Path(args.state_dir)
    if not state_dir.is_dir():
        from edgefleet.cli import UsageError

        raise UsageError(f"--state-dir {state_dir}: no such directory")
    status = read_status(state_dir)
    active = slots.active_slot(state_dir)
    info = slots.read_slot(state_dir, active, check_digests=False) if active else None
    device = status.get("device")
    if device is None:
        try:
            device = json.loads((state_dir / "identity" / "device.json").read_bytes()).get("device")
        except (OSError, ValueError):
            device = None
    serving = None
    if info is not None and info.meta.get("model") == status.get("model", info.meta.get("model")):
        m = info.meta
        serving = {"model": m["model"], "version": m["version"], "variant": m["variant"],
                   "digest": f"sha256:{m['digest']}", "slot": info.slot}
    if status.get("serving") is not None:
        serving = status["serving"]  # what really ran (e.g. the fallback when degraded)
    workloads = _workloads_state(state_dir, status)
    pending = 0
    if (state_dir / "telemetry.db").exists():
        store = _telemetry(state_dir)
        if store is not None:
            pending = len(store.pending_reports())
            store.close()
    out = {
        "device": device, "serving": serving, "active_slot": active,
        "degraded": bool(status.get("degraded", False)),
        "conditions": status.get("conditions", []),
        "pending_reports": pending,
        "generation": status.get("generation"),
        "update": status.get("update"),
        "last_contact": status.get("last_contact"),
        "beyond_max_offline": bool(status.get("beyond_max_offline", False)),
        "observed_at": status.get("observed_at"),
        "workloads": workloads,
    }
    if args.format == "json":
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    s = out["serving"]
    print(f"device {out['device'] or '?'}: serving "
          + (f"{s['model']}@{s['version']} ({s['variant']}, {s['digest'][:19]}, slot {s['slot']})" if s else "nothing"))
    if out["degraded"]:
        print("  DEGRADED")
    if out["beyond_max_offline"]:
        print(f"  offline beyond max_offline (last contact {out['last_contact']})")
    if len(workloads) > 1:
        for w in workloads:
            ws = w["serving"]
            print(f"  workload {w['model']}: "
                  + (f"{ws['version']} ({ws['variant']}, slot {ws['slot']})" if ws else "nothing")
                  + f", wants {w.get('desired_version') or '?'}, update {w.get('update') or 'Idle'}"
                  + (" DEGRADED" if w.get("degraded") else ""))
    for c in out["conditions"]:
        print(f"  {c['type']:<13}{c['status']:<8}{c['reason']}: {c.get('message', '')}"[:160])
    print(f"  pending reports: {pending}")
    return 0


def _workloads_state(state_dir: Path, status: dict) -> list[dict]:
    """One entry per model: the last cycle's (status.json), else what each home's active slot holds."""
    from edgefleet.agent import homes, slots

    keys = ("model", "rollout", "wave", "desired_version", "serving", "ready", "degraded", "update",
            "update_failed", "rolled_back", "code", "reason")
    out = []
    on_disk = {h.model: h for h in homes.homes(state_dir)}
    for entry in status.get("workloads") or []:
        item = {k: entry.get(k) for k in keys}
        home = on_disk.get(entry.get("model"))
        item["active_slot"] = slots.active_slot(home.path) if home is not None else None
        out.append(item)
    if out or status.get("workloads") is not None:
        return out
    for model, home in on_disk.items():  # no cycle recorded per workload yet (or an older agent's status)
        active = slots.active_slot(home.path)
        info = slots.read_slot(home.path, active, check_digests=False) if active else None
        serving = None
        if info is not None:
            m = info.meta
            serving = {"model": m["model"], "version": m["version"], "variant": m["variant"],
                       "digest": f"sha256:{m['digest']}", "slot": info.slot}
        item = {k: None for k in keys}
        item.update(model=model, serving=serving, active_slot=active)
        out.append(item)
    return out
