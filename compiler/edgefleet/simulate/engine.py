"""`run_simulation`: the whole loop on one machine, on a simulated clock.

Setup: a git copy of the fleet with N generated, enrolled devices; keys, build and the first
`compile --commit` (pipeline functions); a `git daemon` on 127.0.0.1 serving the desired-state
repository and the status repository (with the shipped pre-receive hook), behind byte-counting
proxies; an HTTP mirror of the tree and an HTTP artifact store (stdlib servers, where the store
faults happen). Every tick: the simulated clock advances `tick_s`, due scenario steps and faults
apply, every device polls once (spread over the tick), reports are pushed, the five invariants
are checked on every device, and every `promote_every` ticks the real status -> promote --commit
-> compile --commit loop runs at the simulated time.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from edgefleet.simulate import faults as faultlib
from edgefleet.simulate import fleet as fleetlib
from edgefleet.simulate import invariants as inv
from edgefleet.simulate.agents import InProcess, Processes, SimDevice
from edgefleet.simulate.errors import SimulationError
from edgefleet.simulate.faults import FaultSpec, parse_faults
from edgefleet.simulate.record import (DEVICE_VIEWS, FAULT_KINDS, ClassEnvelope, Decision, FaultResult, Observer,
                                       RolloutView, SimulationRecord, Tick, WaveView)
from edgefleet.simulate.servers import CountingProxy, GitDaemon, StaticServer, closed_port

__all__ = ["ScenarioStep", "SimulationConfig", "SimulationError", "FaultSpec", "parse_faults", "run_simulation"]

PHASE_OF_ACTION = {"start": "progressing", "advance": "progressing", "resume": "progressing", "pause": "paused",
                   "rollback": "rolled_back", "abort": "rolled_back", "complete": "complete"}
TERMINAL = ("complete", "rolled_back")
KILL_STEPS = ("stage", "probe", "switch", "confirm")  # journal steps entered through Agent._enter
FORGED_COUNTER_OFFSET = 1_000_000


@dataclass
class ScenarioStep:
    name: str
    after: str | None        # None: at the start; "rollout:<name>:<phase>": once that rollout's phase is reached
    apply: Callable[[Path], str]   # edits the fleet work tree; returns the commit message


@dataclass
class SimulationConfig:
    repo: Path
    devices: int
    duration_s: float
    faults: str = ""
    seed: int = 0
    report_dir: Path | None = None
    latency_factors: dict[str, float] = field(default_factory=dict)
    mode: str = "in-process"
    scenario: list[ScenarioStep] = field(default_factory=list)
    stop_when_settled: bool = False
    tick_s: float = 300.0
    # Beyond the brief (all optional):
    start: datetime | None = None        # the simulated clock's start (default: this hour, UTC)
    store: Path | None = None            # a built artifact store to start from (copied; build then hits its cache)
    promote_every: int = 2               # ticks between status -> promote -> compile rounds
    http_share: float = 0.25             # share of devices polling the HTTP mirror instead of git
    workers: int = 4                     # concurrent pushes (in-process) or agent processes
    tmpdir: Path | None = None           # where the work directory goes (default: the system's)


def _check(config: SimulationConfig) -> None:
    if config.devices < 1:
        raise SimulationError("E801", f"--devices {config.devices}: a simulation needs at least one device",
                              "give --devices N with N >= 1")
    if not config.duration_s > 0:
        raise SimulationError("E801", "--duration must be above zero", "e.g. --duration 6h")
    if not config.tick_s > 0:
        raise SimulationError("E801", "the tick must be above zero seconds")
    if config.mode not in ("in-process", "processes"):
        raise SimulationError("E801", f"--mode {config.mode!r}", "in-process or processes")
    for cls, f in config.latency_factors.items():
        if not f >= 1.0:
            raise SimulationError("E801", f"--latency-factor {cls}={f}: a factor below 1 would need a faster "
                                  "CPU than this one", "give factors >= 1 (the class is that much slower)")


class _Run:
    """The state of one run; `run_simulation` drives it."""

    def __init__(self, config: SimulationConfig, observer: Observer | None):
        self.cfg, self.observer = config, observer
        self.rng = random.Random(config.seed)
        self.specs = parse_faults(config.faults)
        self.wall0 = time.monotonic()
        self.start = config.start or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        self.now = self.start
        self.book = inv.Book()
        self.ticks: list[Tick] = []
        self.decisions: list[Decision] = []
        self.phases: dict[str, str] = {}
        self.reports: dict = {}
        self.pending_steps = list(config.scenario)
        self.forged: list[inv.Forged] = []
        self.forged_envelopes: list[tuple[str, bytes]] = []
        self.fault_counts = {k: 0 for k in FAULT_KINDS}
        self.fault_outcomes: dict[str, list[str]] = {k: [] for k in FAULT_KINDS}
        self.fault_notes: dict[str, list[str]] = {k: [] for k in FAULT_KINDS}
        self.update_bytes: list[int] = []
        self.mounts: list[Path] = []
        self.corrupted: dict[Path, bytes] = {}
        self.last_wait_reason: dict[str, str] = {}
        self.used_pairs: set[tuple[str, int]] = set()
        self.latest_counters: dict[str, int] = {}
        self.rejected_by_device: dict[str, int] = {}
        self.hook_refusals = 0
        self.errors: list[str] = []

    # -- setup -------------------------------------------------------------------------------------
    def setup(self) -> None:
        from edgefleet.agent.identity import enroll
        from edgefleet.agent.status_remote import install_status_hook
        from edgefleet.pipeline.keys import init as init_keys

        cfg = self.cfg
        source = fleetlib.read_fleet(Path(cfg.repo))
        self.work = Path(tempfile.mkdtemp(prefix="edgefleet-sim-", dir=cfg.tmpdir))
        specs = fleetlib.plan_devices(source, cfg.devices)
        runtimes = {name: h.doc.spec.runtime.name for name, h in source.hardware.items()}
        unknown = sorted(set(cfg.latency_factors) - set(runtimes))
        if unknown:
            raise SimulationError("E801", f"--latency-factor: no hardware class {', '.join(unknown)} in the fleet",
                                  f"classes: {', '.join(sorted(runtimes))}")
        self.devices: list[SimDevice] = []
        keys = {}
        for i, s in enumerate(specs):
            state = self.work / "devices" / s.id
            identity = enroll(state, s.id)
            keys[s.id] = identity.public_key
            kind = "http" if cfg.http_share > 0 and (i % max(1, round(1 / cfg.http_share))) == 1 else "git"
            self.devices.append(SimDevice(s.id, s.hardware_class, s.site, runtimes.get(s.hardware_class, "onnxruntime"),
                                          state, kind, factor=float(cfg.latency_factors.get(s.hardware_class, 1.0)),
                                          offset_s=cfg.tick_s * i / len(specs)))
        self.by_id = {d.id: d for d in self.devices}
        self.fleet = self.work / "fleet"
        fleetlib.copy_fleet(Path(cfg.repo), self.fleet, specs, keys, self.start)
        self._apply_due_steps(initial=True)
        from edgefleet.load.repo import read_repository

        self.device_docs = [loaded.doc for loaded in read_repository(self.fleet)[0].devices]
        self.keys = self.work / "keys"
        init_keys(self.keys)
        self.store = self.work / "store"
        if cfg.store is not None:
            shutil.copytree(cfg.store, self.store)
        self.served_store = self.work / "serve" / "store"
        self.build()
        self.desired = self.work / "serve" / "desired"
        self.desired.mkdir(parents=True)
        fleetlib.git(self.desired, "init", "-q")
        for k in ("uploadpack.allowFilter", "uploadpack.allowAnySHA1InWant"):
            fleetlib.git(self.desired, "config", k, "true")
        self.tree = self.desired / "tree"
        self.status_git = self.work / "serve" / "status.git"
        fleetlib.git(self.work / "serve", "init", "-q", "--bare", str(self.status_git))
        install_status_hook(self.status_git, keys)
        self.compile()
        self.root_bytes = (self.tree / "metadata" / "1.root.json").read_bytes()
        self.root_file = self.work / "root.json"
        self.root_file.write_bytes(self.root_bytes)
        # Servers.
        self.daemon = GitDaemon(self.work / "serve").start()
        self.git_proxy = CountingProxy(self.daemon.port)        # desired state
        self.push_proxy = CountingProxy(self.daemon.port)       # status remote
        self.mirror = StaticServer(self.tree).start()
        self.store_server = StaticServer(self.served_store).start()
        self.dead_port = closed_port()
        self.runner = InProcess(self.root_bytes) if cfg.mode == "in-process" else Processes(self.root_file)
        for d in self.devices:
            self._point(d, reachable=True)
        self.occurrences = faultlib.schedule(self.specs, cfg.duration_s, cfg.tick_s, self.rng)

    def _point(self, d: SimDevice, reachable: bool) -> None:
        port_git = self.git_proxy.port if reachable else self.dead_port
        port_push = self.push_proxy.port if reachable else self.dead_port
        port_http = self.mirror.port if reachable else self.dead_port
        port_store = self.store_server.port if reachable else self.dead_port
        d.remote = (f"git://127.0.0.1:{port_git}/desired" if d.remote_kind == "git"
                    else f"http://127.0.0.1:{port_http}")
        d.status_remote = f"git://127.0.0.1:{port_push}/status.git"
        d.store = f"http://127.0.0.1:{port_store}"

    # -- the pipeline loop -------------------------------------------------------------------------
    def compile(self) -> None:
        from edgefleet.signing.verify import VerifyError, verify_device

        fleetlib.compile_commit(self.fleet, self.tree, self.keys, self.store, self.now)
        root = (self.tree / "metadata" / "1.root.json").read_bytes()
        for d in getattr(self, "devices", []):
            try:
                state = json.loads(verify_device(self.tree, d.id, root, self.now).data)
            except VerifyError:
                continue
            for w in state.get("workloads", []):
                for ref in (w.get("run"), w.get("fallback")):
                    if ref and (ref.get("artifact") or {}).get("digest"):
                        d.allowed.add(ref["artifact"]["digest"])
            run = (state.get("workloads") or [{}])[0].get("run") or {}
            d.desired_run = (run.get("artifact") or {}).get("digest")

    def build(self) -> None:
        """Build what the fleet needs (cache hits cost only the keys) and publish new files to the
        served store: devices download from that copy, the compiler reads its own store."""
        fleetlib.build_store(self.fleet, self.store)
        for src in self.store.rglob("*"):
            if src.is_file():
                dest = self.served_store / src.relative_to(self.store)
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest)

    def promote(self) -> bool:
        from edgefleet.agent.status_remote import read_reports
        from edgefleet.pipeline.promote import run_promote

        envelopes = list(read_reports(self.status_git)) + list(self.forged_envelopes)
        run = run_promote(self.fleet, envelopes, self.now, desired=self.desired, commit=True)
        errors = [d for d in run.diagnostics if d.is_error]
        if errors:
            raise SimulationError("E803", f"promote failed: error[{errors[0].code}]: {errors[0].message}",
                                  "the simulated fleet's rollout could not be decided", str(self.fleet))
        verified = run.verified
        self.latest_counters = {dev: obs.counter for (dev, _m), obs in verified.latest.items()}
        self.rejected_by_device = {}
        for r in verified.rejected:
            self.rejected_by_device[r.device] = self.rejected_by_device.get(r.device, 0) + 1
        changed = False
        for r in run.results:
            d = r.decision
            if r.report is not None:
                self.reports[r.rollout] = r.report
                for w in r.report.waves:
                    self.used_pairs.update(w.used)
            before = self.phases.get(r.rollout) or (r.report.rollout.status.phase if r.report else "pending")
            phase = PHASE_OF_ACTION.get(d.action, before) if r.changed else before
            self.phases[r.rollout] = phase
            changed = changed or r.changed
            checks = [(c.gate, c.result) for c in d.evidence.checks] if d.evidence is not None else None
            self.book.check("gates_respected", inv.check_gate_decision(r.rollout, d.action, d.wave, checks, d.at))
            if d.action != "wait" or self.last_wait_reason.get(r.rollout) != d.reason:
                self.decisions.append(Decision(
                    sim_time=self.now, rollout=r.rollout, wave=d.wave if d.wave is not None else -1, action=d.action,
                    reason=f"{d.reason}: {d.message}",
                    evidence=d.evidence.model_dump(mode="json") if d.evidence is not None else {}))
            self.last_wait_reason[r.rollout] = d.reason if d.action == "wait" else ""
        for f in self.forged:
            self.book.check("forged_never_used", inv.check_forged(
                f, self.rejected_by_device, self.used_pairs, self.latest_counters))
        return changed

    def _apply_due_steps(self, initial: bool = False) -> bool:
        applied = False
        for step in list(self.pending_steps):
            due = step.after is None if initial else self._reached(step.after)
            if not due:
                continue
            message = step.apply(self.fleet) or step.name
            fleetlib.commit_all(self.fleet, f"scenario: {message}", self.now)
            self.pending_steps.remove(step)
            applied = True
        return applied

    def _reached(self, after: str | None) -> bool:
        if after is None:
            return True
        kind, _, rest = after.partition(":")
        name, _, phase = rest.rpartition(":")
        if kind != "rollout" or not name:
            raise SimulationError("E801", f"scenario step after={after!r}", "use rollout:<name>:<phase>")
        return self.phases.get(name) == phase

    # -- faults --------------------------------------------------------------------------------------
    def _pending_update(self) -> list[SimDevice]:
        from edgefleet.agent import slots

        out = []
        for d in self.devices:
            active = slots.active_slot(d.state_dir)
            info = slots.read_slot(d.state_dir, active, check_digests=False) if active else None
            if info is not None and d.desired_run and info.digest != d.desired_run:
                out.append(d)
        return out

    def _targets(self, spec: FaultSpec) -> list[SimDevice]:
        pool = self.devices
        if spec.device:
            pool = [d for d in pool if d.id == spec.device]
        if spec.site:
            pool = [d for d in pool if d.site == spec.site]
        if spec.hardware_class:
            pool = [d for d in pool if d.hardware_class == spec.hardware_class]
        return pool

    def faults_tick(self, tick: int) -> None:
        t = (self.now - self.start).total_seconds()
        for spec in self.specs:  # rate faults: drawn each tick
            if spec.rate is not None and self.rng.random() < spec.rate:
                occ = faultlib.Occurrence(spec, t, t + spec.duration_s, len(self.occurrences))
                self.occurrences.append(occ)
        for occ in self.occurrences:
            if not occ.started and t >= occ.start_s:
                self._start_fault(occ)
            if occ.started and not occ.ended and occ.spec.kind in ("agent_killed",):
                self._arm_kill(occ)
            if occ.started and not occ.ended and t >= occ.end_s and occ.spec.kind != "agent_killed" \
                    and not self._store_fault_unmet(occ):
                self._end_fault(occ)

    def _store_fault_unmet(self, occ) -> bool:
        """A store fault lasts until a download has met it (a window no download crossed proves nothing)."""
        faults = self.store_server.faults
        if occ.spec.kind == "slow_download":
            return faults.slowed == occ._slowed0  # type: ignore[attr-defined]
        if occ.spec.kind == "truncated_download":
            return faults.truncated == occ._trunc0  # type: ignore[attr-defined]
        return False

    def _start_fault(self, occ) -> None:
        occ.started = True
        kind, spec = occ.spec.kind, occ.spec
        pool = self._targets(spec)
        if not pool:
            occ.ended = True
            self.fault_notes[kind].append(f"{spec.text}: matched no device")
            return
        if kind == "remote_unreachable":
            if spec.scope == "site":
                site = spec.site or self.rng.choice(sorted({d.site for d in pool}))
                hit = [d for d in pool if d.site == site]
                occ.note = f"site {site} ({len(hit)} devices)"
            else:
                hit = [self.rng.choice(pool)]
                occ.note = f"device {hit[0].id}"
            for d in hit:
                self._point(d, reachable=False)
            occ.targets = [d.id for d in hit]
            self._count(kind, occ)
        elif kind == "agent_killed":
            self._arm_kill(occ)
        elif kind == "disk_full":
            pending = [d for d in pool if d in self._pending_update()] or pool
            d = self.rng.choice(pending)
            occ.targets = [d.id]
            occ.note = self._fill_disk(d)
            self._count(kind, occ)
        elif kind == "slow_download":
            self.store_server.faults.slow_s = 0.5
            occ.note = "artifact store bodies take +0.5 s (real, on the socket)"
            occ.targets = ["store"]
            occ._slowed0 = self.store_server.faults.slowed  # type: ignore[attr-defined]
        elif kind == "truncated_download":
            self.store_server.faults.truncate += 2
            occ.note = "the next 2 artifact bodies are cut off at half their length"
            occ.targets = ["store"]
            occ._trunc0 = self.store_server.faults.truncated  # type: ignore[attr-defined]
        elif kind == "corrupted_artifact":
            occ.note = self._corrupt(pool)
            occ.targets = ["store"]
            self._count(kind, occ)
        elif kind == "accelerator_failure":
            classes = sorted({d.hardware_class for d in pool if d.runtime != "onnxruntime"} or
                             {d.hardware_class for d in pool})
            cls = spec.hardware_class or self.rng.choice(classes)
            hit = [d for d in pool if d.hardware_class == cls]
            for d in hit:
                d.accelerator_failed = True
                self.runner.restart(d)  # a reboot: the model is loaded again, on the failed accelerator
            occ.targets = [d.id for d in hit]
            occ.note = f"class {cls} ({len(hit)} devices): accelerator absent, devices rebooted"
            self._count(kind, occ)
        elif kind == "clock_skew":
            d = self.rng.choice(pool)
            d.skew_s = spec.by_s
            occ.targets = [d.id]
            occ.note = f"{d.id} clock {'+' if spec.by_s >= 0 else '-'}{abs(spec.by_s) / 3600:g}h"
            self._count(kind, occ)
        elif kind == "forged_report":
            self._forge(occ, pool)
            occ.ended = True

    def _count(self, kind: str, occ, n: int = 1) -> None:
        occ.injected += n
        self.fault_counts[kind] += n

    def _end_fault(self, occ) -> None:
        occ.ended = True
        kind = occ.spec.kind
        if kind == "remote_unreachable":
            for i in occ.targets:
                self._point(self.by_id[i], reachable=True)
        elif kind == "disk_full":
            self._free_disk(self.by_id[occ.targets[0]])
        elif kind == "slow_download":
            self.store_server.faults.slow_s = 0.0
            n = self.store_server.faults.slowed - occ._slowed0  # type: ignore[attr-defined]
            self._count(kind, occ, n)
            occ.note += f"; {n} bodies slowed"
        elif kind == "truncated_download":
            self.store_server.faults.truncate = 0
            n = self.store_server.faults.truncated - occ._trunc0  # type: ignore[attr-defined]
            self._count(kind, occ, n)
            occ.note += f"; {n} bodies cut off"
        elif kind == "corrupted_artifact":
            for path, data in self.corrupted.items():
                path.write_bytes(data)
            self.corrupted.clear()
            occ.note += "; repaired"
        elif kind == "accelerator_failure":
            for i in occ.targets:
                self.by_id[i].accelerator_failed = False
        elif kind == "clock_skew":
            for i in occ.targets:
                self.by_id[i].skew_s = 0.0
        self.fault_notes[kind].append(occ.note)

    def _arm_kill(self, occ) -> None:
        if occ.injected:
            occ.ended = True
            return
        pending = [d for d in self._pending_update() if d in self._targets(occ.spec) and not d.down]
        armed = [self.by_id[i] for i in occ.targets if self.by_id[i].kill_at]
        if armed and armed[0] in pending:
            return  # armed, its update still to come
        for d in armed:
            d.kill_at = None  # its update went by another way (e.g. a failed download): arm another
        if not pending:
            return
        d = self.rng.choice(pending)
        d.kill_at = self.rng.choice(KILL_STEPS)
        occ.targets = [d.id]
        occ.note = f"{d.id} killed at step {d.kill_at}"

    def _fill_disk(self, d: SimDevice) -> str:
        import os
        import subprocess

        mount = d.state_dir / "downloads"
        mount.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            self.mounts.append(mount)
            try:
                with open(mount / ".filler", "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                        os.fsync(f.fileno())
            except OSError:
                pass  # ENOSPC: the file system is full
            return f"{d.id}: its download directory is a full 256 KiB tmpfs (a real mount, real ENOSPC)"
        if self.cfg.mode != "in-process":
            return f"{d.id}: not injected: cannot mount a tmpfs here ({proc.stderr.strip()[:120]})"
        d.free_margin = 1 << 50
        return (f"{d.id}: injected: the agent's free-space check is told the disk is full "
                f"(a tmpfs mount is not permitted here: {proc.stderr.strip()[:120]})")

    def _free_disk(self, d: SimDevice) -> None:
        import subprocess

        mount = d.state_dir / "downloads"
        if mount in self.mounts:
            subprocess.run(["umount", str(mount)], capture_output=True)
            self.mounts.remove(mount)
        d.free_margin = None

    def _corrupt(self, pool: list[SimDevice]) -> str:
        from edgefleet.agent.artifacts import blob_rel

        wanted = [d.desired_run for d in self._pending_update() if d.desired_run] or \
                 [d.desired_run for d in pool if d.desired_run]
        digest = self.rng.choice(sorted(set(wanted)))
        path = self.served_store / blob_rel(digest)
        data = path.read_bytes()
        self.corrupted[path] = data
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])
        return f"blob sha256:{digest[:12]} on the store: 64 bytes flipped"

    def _forge(self, occ, pool: list[SimDevice]) -> None:
        import hashlib

        from edgefleet.agent.identity import enroll
        from edgefleet.agent.report import Report, _unb64, sign_report
        from edgefleet.agent.status_remote import read_reports

        genuine: dict[str, list[bytes]] = {}
        for dev, env in read_reports(self.status_git):
            genuine.setdefault(dev, []).append(env)
        candidates = [d for d in pool if genuine.get(d.id)]
        if not candidates:
            occ.note = "no device had delivered a report yet: nothing to forge from"
            self.fault_notes["forged_report"].append(occ.note)
            return
        d = self.rng.choice(candidates)
        last = genuine[d.id][-1]
        payload = json.loads(_unb64(json.loads(last)["payload"]))
        if occ.index % 2 == 0:
            how = "wrong-key"
            report = Report.model_validate(payload).model_copy(
                update={"counter": payload["counter"] + FORGED_COUNTER_OFFSET})
            forger = enroll(self.work / "forger" / f"{occ.index}", d.id)  # same id, another key
            envelope = sign_report(report, forger)
            counter = report.counter
        else:
            how = "replayed"
            envelope = genuine[d.id][0]
            counter = json.loads(_unb64(json.loads(envelope)["payload"]))["counter"]
        refused = self._push_raw(d.id, envelope)
        self.hook_refusals += refused
        self.forged.append(inv.Forged(d.id, counter, hashlib.sha256(envelope).hexdigest(), how))
        self.forged_envelopes.append((d.id, envelope))  # and handed to status as if it had landed
        occ.targets = [d.id]
        occ.note = f"{how} report of {d.id} (counter {counter}) {'refused by the hook' if refused else 'ACCEPTED by the hook'}"
        self._count("forged_report", occ)
        self.fault_outcomes["forged_report"].append("hook refused" if refused else "hook accepted")

    def _push_raw(self, device: str, envelope: bytes) -> bool:
        """Push one envelope onto refs/status/<device> through the git server, no client checks; True if refused."""
        import subprocess

        from edgefleet.agent.status_remote import REPORT_FILE

        work = self.work / "forger" / "push.git"
        if not (work / "HEAD").exists():
            fleetlib.git(self.work, "init", "-q", "--bare", str(work))
        url = f"git://127.0.0.1:{self.push_proxy.port}/status.git"
        ref = f"refs/status/{device}"
        run = lambda *a, **k: subprocess.run(["git", "-C", str(work), *a], capture_output=True, **k)  # noqa: E731
        run("fetch", "-q", "--no-tags", url, f"+{ref}:refs/forged/base")
        tip = run("rev-parse", "--verify", "-q", "refs/forged/base", text=True).stdout.strip()
        blob = run("hash-object", "-w", "--stdin", input=envelope).stdout.decode().strip()
        tree = run("mktree", input=f"100644 blob {blob}\t{REPORT_FILE}\n".encode()).stdout.decode().strip()
        commit = run("commit-tree", tree, *(["-p", tip] if tip else []), "-m", "forged", env={
            **fleetlib.IDENTITY_ENV, "PATH": "/usr/bin:/bin"}).stdout.decode().strip()
        push = run("push", "-q", url, f"{commit}:{ref}")
        return push.returncode != 0

    # -- one tick ------------------------------------------------------------------------------------
    def tick(self, index: int) -> None:
        cfg = self.cfg
        if index and index % cfg.promote_every == 0:
            changed = self.promote()
            if self._apply_due_steps():
                self.build()
                changed = True
            if changed:
                self.compile()
        self.faults_tick(index)
        gens = {d.id: (d.last_status.get("generation") or {}).get("target_sha256") for d in self.devices}
        for d in self.devices:
            d.down = False
        if cfg.mode == "processes":
            total0 = self.git_proxy.served()
            with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
                outcomes = dict(zip([d.id for d in self.devices],
                                    pool.map(lambda dev: self.runner.cycle(dev, self.now), self.devices)))
            served = self.git_proxy.served() - total0
            changed = [d for d in self.devices if d.remote_kind == "git" and outcomes[d.id] == "ok"
                       and (d.last_status.get("generation") or {}).get("target_sha256") not in (None, gens[d.id])]
            if changed:  # concurrent: the tick's desired-state bytes over the tick's updates
                self.update_bytes.extend([served // len(changed)] * len(changed))
        else:
            outcomes = {}
            for d in self.devices:
                before = self.git_proxy.served()
                outcomes[d.id] = self.runner.cycle(d, self.now)
                gen = (d.last_status.get("generation") or {}).get("target_sha256")
                if d.remote_kind == "git" and outcomes[d.id] == "ok" and gen and gen != gens[d.id]:
                    self.update_bytes.append(self.git_proxy.served() - before)
        for d in self.devices:
            outcome = outcomes[d.id]
            if outcome == "killed":
                d.down = True
                occ = next((o for o in self.occurrences if o.spec.kind == "agent_killed" and d.id in o.targets
                            and not o.injected), None)
                if occ is not None:
                    self._count("agent_killed", occ)
                    self.fault_notes["agent_killed"].append(occ.note)
                else:
                    self.fault_counts["agent_killed"] += 1
                continue
            if outcome.startswith("error"):
                self.errors.append(f"{d.id}: {outcome}")
            d.cycles += 1
            d.queued += 1
            if d.last_result is not None and d.last_result.offline:
                d.offline_cycles += 1
        if cfg.mode == "in-process":
            with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
                list(pool.map(self.runner.push, [d for d in self.devices if not d.down]))
        self.observe(index)

    def observe(self, index: int) -> None:
        from edgefleet.agent import journal as journal_io
        from edgefleet.agent import slots

        views = dict.fromkeys(DEVICE_VIEWS, 0)
        versions: dict[str, int] = {}
        self.serving_version: dict[str, str | None] = {}
        for d in self.devices:
            j = journal_io.load(d.state_dir / "journal.json")
            active = slots.active_slot(d.state_dir)
            info = slots.read_slot(d.state_dir, active) if active else None  # every file's digest checked
            serving = self.runner.serving_digest(d) if not d.down else None
            if self.cfg.mode == "processes" and info is not None:
                serving = info.digest  # not resident: the verified active slot is what its daemon serves
            snap = inv.DeviceSnapshot(d.id, self.now, not d.down, j.committed is not None,
                                      info.digest if info else None, serving, frozenset(d.allowed))
            self.book.check("always_serving_verified", inv.check_serving(snap))
            self.book.check("only_allowed_versions", inv.check_allowed(snap))
            status = d.last_status
            view = self._view(d, status, info)
            views[view] += 1
            if info is not None:
                key = f"{info.meta['model']}@{info.meta['version']}"
                versions[key] = versions.get(key, 0) + 1
                self.serving_version[d.id] = info.meta["version"]
        active_faults = dict.fromkeys(FAULT_KINDS, 0)
        for o in self.occurrences:
            if o.started and not o.ended:
                active_faults[o.spec.kind] += 1
        tick = Tick(sim_time=self.now, wall_s=round(time.monotonic() - self.wall0, 3), devices=views,
                    versions=dict(sorted(versions.items())), rollouts=self._rollout_views(),
                    faults_active=active_faults)
        self.ticks.append(tick)
        if self.observer is not None:
            self.observer(tick)

    def _view(self, d: SimDevice, status: dict, info) -> str:
        if d.down:
            return "down"
        if info is None:
            return "unenrolled"
        conds = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
        if conds.get("Offline") == "True":
            return "offline"
        if conds.get("Frozen") == "True":
            return "frozen"
        if status.get("update") in ("RolledBack", "ProbeFailed") or conds.get("RolledBack") == "True":
            return "rolled_back"
        if status.get("degraded"):
            return "degraded"
        return "serving" if status.get("in_sync") else "updating"

    def _rollout_views(self) -> list[RolloutView]:
        out = []
        for name, report in sorted(self.reports.items()):
            spec = report.rollout.spec
            status = report.rollout.status
            phase = self.phases.get(name, status.phase)
            current = status.current_wave if status.current_wave is not None else 0
            members = self._members(name, spec)
            waves, cum_devices, cum_new = [], 0, 0
            for w in report.waves:
                cum_devices += len(members.get(w.index, []))
                cum_new += sum(1 for dev in members.get(w.index, [])
                               if self.serving_version.get(dev) == spec.to_version)
                if w.index < current:
                    gate = "pass"
                elif w.index == current and w.result is not None:
                    gate = {"wait": "waiting", "pause": "inconclusive"}.get(w.result.verdict, w.result.verdict)
                    if phase == "rolled_back":
                        gate = "fail"
                elif w.index == current and phase == "complete":
                    gate = "pass"
                else:
                    gate = "pending"
                waves.append(WaveView(rollout=name, wave=w.index, name=w.name, devices=cum_devices,
                                      on_new_version=cum_new, gate=gate))
            out.append(RolloutView(rollout=name, model=spec.model, from_version=spec.from_version,
                                   to_version=spec.to_version, phase=phase, current_wave=current, waves=waves))
        return out

    def _members(self, name: str, spec) -> dict[int, list[str]]:
        """Wave index -> the devices it selects (live or not), by the compiler's own placement."""
        from edgefleet.desired.waves import RolloutWaves
        from edgefleet.rules.selectors import matches

        waves = RolloutWaves.of(name, spec)
        out: dict[int, list[str]] = {}
        for doc in self.device_docs:
            if matches(spec.selector, doc):
                index = waves.index_of(doc)
                if index is not None:
                    out.setdefault(index, []).append(doc.id)
        return out

    def settled(self) -> bool:
        return not self.pending_steps and bool(self.phases) and all(p in TERMINAL for p in self.phases.values())

    # -- the end ------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Every fault over, every device polls once more and pushes: what stays queued is undelivered."""
        for occ in self.occurrences:
            if occ.started and not occ.ended:
                self._end_fault(occ)
            occ.ended = True
        for d in self.devices:
            d.kill_at = None
            self._point(d, reachable=True)
        for _ in range(2):
            for d in self.devices:
                self.runner.cycle(d, self.now)
            if self.cfg.mode == "in-process":
                with ThreadPoolExecutor(max_workers=self.cfg.workers) as pool:
                    list(pool.map(self.runner.push, self.devices))
        for d in self.devices:
            self.book.check("reports_delivered", inv.check_delivered(d.id, self.runner.pending(d)))
        self.promote()  # the last verdict sees the forged reports too

    def envelopes(self) -> list[ClassEnvelope]:
        import numpy as np

        from edgefleet.agent import slots
        from edgefleet.agent.probe import golden_feed, load_golden
        from edgefleet.agent.runner import load_runner

        out = []
        for cls in sorted({d.hardware_class for d in self.devices}):
            members = [d for d in self.devices if d.hardware_class == cls]
            factor = members[0].factor
            info = None
            for d in members:
                active = slots.active_slot(d.state_dir)
                info = slots.read_slot(d.state_dir, active) if active else None
                if info is not None:
                    break
            if info is None:
                continue
            meta = info.meta
            runner = load_runner(info.path, meta, meta["runtime"], meta["runtime_config"], cpu=True)
            feed = golden_feed(runner, load_golden(info.path / slots.GOLDEN))
            times = []
            for i in range(31):
                t0 = time.perf_counter()
                runner.infer(feed)
                if i:
                    times.append((time.perf_counter() - t0) * 1000)
            p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
            out.append(ClassEnvelope(hardware_class=cls, devices=len(members), factor=factor,
                                     measured_cpu_p50_ms=round(p50, 4), measured_cpu_p95_ms=round(p95, 4),
                                     simulated_p50_ms=round(p50 * factor, 4), simulated_p95_ms=round(p95 * factor, 4)))
        return out

    def fault_results(self) -> list[FaultResult]:
        out = []
        views = [t.devices for t in self.ticks]
        for kind in FAULT_KINDS:
            specs = [s.text for s in self.specs if s.kind == kind]
            if not specs:
                continue
            notes = [n for n in self.fault_notes[kind] if n]
            outcome = self._outcome(kind, views)
            out.append(FaultResult(kind=kind, injected=self.fault_counts[kind],
                                   description="; ".join(sorted(set(specs))) + (": " + "; ".join(notes[:6]) if notes else ""),
                                   outcome=outcome))
        return out

    def _outcome(self, kind: str, views: list[dict]) -> str:
        if kind == "forged_report":
            refused = sum(1 for o in self.fault_outcomes[kind] if o == "hook refused")
            rejected = sum(self.rejected_by_device.get(f.device, 0) > 0 for f in self.forged)
            return (f"refused by the status remote's hook: {refused}/{len(self.forged)}; "
                    f"rejected by status: {rejected}/{len(self.forged)}")
        if kind == "remote_unreachable":
            offline = max((v["offline"] for v in views), default=0)
            buffered = sum(d.offline_cycles for d in self.devices)
            return f"up to {offline} devices offline at once, kept serving; {buffered} reports buffered offline"
        if kind == "agent_killed":
            return "restarted from its state directory (journal replayed); invariants checked after"
        if kind == "accelerator_failure":
            return f"up to {max((v['degraded'] for v in views), default=0)} devices served degraded (CPU path)"
        if kind == "clock_skew":
            return f"up to {max((v['frozen'] for v in views), default=0)} devices frozen (metadata looked expired)"
        return "the current model kept serving; the download was retried on a later poll"

    def outcome(self) -> str:
        parts = []
        for name, report in sorted(self.reports.items()):
            spec = report.rollout.spec
            phase = self.phases.get(name, "pending")
            last = next((d for d in reversed(self.decisions) if d.rollout == name and d.action != "wait"), None)
            if phase == "rolled_back" and last is not None:
                wave = report.waves[last.wave].name if 0 <= last.wave < len(report.waves) else last.wave
                parts.append(f"{spec.model} {spec.to_version} rolled back in wave {wave} ({last.reason[:160]})")
            else:
                parts.append(f"{spec.model} {spec.from_version}->{spec.to_version}: {phase.replace('_', ' ')}")
        return "; ".join(parts) or "no rollout"

    def close(self) -> None:
        import subprocess

        for d in getattr(self, "devices", []):
            try:
                self.runner.close(d)
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
        for mount in list(self.mounts):
            subprocess.run(["umount", str(mount)], capture_output=True)
        for path, data in self.corrupted.items():
            path.write_bytes(data)
        for name in ("git_proxy", "push_proxy"):
            if hasattr(self, name):
                getattr(self, name).close()
        for name in ("mirror", "store_server"):
            if hasattr(self, name):
                getattr(self, name).stop()
        if hasattr(self, "daemon"):
            self.daemon.stop()
        if hasattr(self, "work"):
            shutil.rmtree(self.work, ignore_errors=True)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / (1024 * 1024)


def run_simulation(config: SimulationConfig, observer: Observer | None = None) -> SimulationRecord:
    """Run the simulation; the record says what happened and whether every invariant held."""
    _check(config)
    parse_faults(config.faults)
    run = _Run(config, observer)
    try:
        rss0 = _rss_mb()
        run.setup()
        ticks = max(1, int(round(config.duration_s / config.tick_s)))
        peak = rss0
        for i in range(ticks):
            run.now = run.start + timedelta(seconds=i * config.tick_s)
            run.tick(i)
            peak = max(peak, _rss_mb())
            if config.stop_when_settled and i and run.settled():
                break
        run.drain()
        envelopes = run.envelopes()
        if config.mode == "in-process":
            rss = max(0.0, peak - rss0) / len(run.devices)
        else:
            rss = max(d.peak_rss_kb for d in run.devices) / 1024  # the largest agent process (wait4)
        record = SimulationRecord(
            fleet=str(config.repo), seed=config.seed, devices=config.devices, duration_s=config.duration_s,
            faults_spec=config.faults, mode=config.mode, started=run.start,
            wall_s=round(time.monotonic() - run.wall0, 2), ticks=run.ticks, decisions=run.decisions,
            invariants=run.book.results(), faults=run.fault_results(), envelopes=envelopes,
            git_bytes_per_update=round(sum(run.update_bytes) / len(run.update_bytes), 1) if run.update_bytes else 0.0,
            agent_rss_mb=round(rss, 2), outcome=run.outcome())
    finally:
        run.close()
    if config.report_dir is not None:
        out = Path(config.report_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "record.json").write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return record
