"""The `status` use case: verified device reports, aggregated per rollout, wave, class and site.

Steps, each with one job:

1. `verify_reports`: every envelope is checked before anything in it is used: the device
   is enrolled (its id is in the inventory: E702), the signature is its enrolled
   `public_key`'s and the report is its own (agent-io's `verify_report`: E66x), the counter
   goes up (`check_sequence`: E665, replays), the generation is one the desired-state
   tree really gave that device (E703), and its release counter never goes below one the
   device reported before (E710). Refused reports are counted and listed by reason,
   never used. The latest accepted report of each device is kept, per model.
2. `evaluate_rollout` (pure): each device the rollout selects is placed in its wave; each
   live wave's devices are classified (rollout/observe.py) and tallied, and the current
   wave's gates are evaluated (rollout/gates.py) at `now`.

The CLI (`edgefleet status`) only parses and renders; promote reuses both steps.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

from edgefleet.core.diagnostics import Diagnostic, error, has_errors
from edgefleet.core.source import Location
from edgefleet.desired.activation import parse_time
from edgefleet.desired.waves import RolloutWaves
from edgefleet.load.repo import FleetRepo
from edgefleet.rollout.aggregate import Tally
from edgefleet.rollout.gates import GateResult, evaluate, with_earlier_waves
from edgefleet.rollout.observe import Observation, observe, standing
from edgefleet.rollout.sources import GivenGenerations, SourceError, read_envelopes, read_given_generations
from edgefleet.rules.selectors import matches
from edgefleet.spec.rollout import Evidence, Rollout

MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Rejection:
    device: str
    counter: int | None
    code: str
    reason: str


@dataclass
class VerifiedReports:
    """The outcome of step 1: per (device, model) the latest accepted observation."""

    latest: dict[tuple[str, str], Observation] = field(default_factory=dict)
    timeline: dict[tuple[str, str], list[Observation]] = field(default_factory=dict)
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def rejected_by_code(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r.code] = out.get(r.code, 0) + 1
        return dict(sorted(out.items()))


PARALLEL_FROM = 5000  # envelopes; below this, worker processes cost more than they save
BATCH = 256  # envelopes per message to a worker


def verify_reports(envelopes: Iterable[tuple[str, bytes]], repo: FleetRepo, given: GivenGenerations,
                   models: Iterable[str], keep_timeline: bool = False, jobs: int = 1) -> VerifiedReports:
    """Verify every envelope as it is read; from PARALLEL_FROM envelopes on, in `jobs` processes.

    Envelopes are routed to workers by a hash of the device id, so each device's reports
    are checked in arrival order by one `_Verifier` (the counter check is per device) while
    the main process keeps reading: the result is the same whatever `jobs` is, and the
    rejections are sorted.
    """
    keys = {d.doc.id: d.doc.public_key for d in repo.devices}
    models = tuple(sorted(set(models)))
    stream = iter(envelopes)
    head = list(itertools.islice(stream, PARALLEL_FROM))
    if jobs <= 1 or len(head) < PARALLEL_FROM:
        verifier = _Verifier(keys, given.by_device, models, keep_timeline)
        for device_id, envelope in itertools.chain(head, stream):
            verifier.add(device_id, envelope)
        out = verifier.out
    else:
        out = _verify_in_workers(itertools.chain(head, stream), jobs,
                                 (keys, given.by_device, models, keep_timeline))
    out.rejected.sort(key=lambda r: (r.device, -1 if r.counter is None else r.counter, r.code, r.reason))
    return out


def _verify_in_workers(envelopes, jobs: int, setup: tuple) -> VerifiedReports:
    import multiprocessing
    import queue
    import zlib

    context = multiprocessing.get_context("fork")  # workers inherit keys and generations, unpickled
    inboxes = [context.Queue(maxsize=64) for _ in range(jobs)]
    results = context.Queue()
    workers = [context.Process(target=_worker_main, args=(inbox, results, *setup), daemon=True)
               for inbox in inboxes]
    for worker in workers:
        worker.start()
    parts: list = []
    try:
        batches: list[list[tuple[str, bytes]]] = [[] for _ in range(jobs)]
        for device_id, envelope in envelopes:
            i = zlib.crc32(device_id.encode()) % jobs
            batches[i].append((device_id, envelope))
            if len(batches[i]) >= BATCH:
                inboxes[i].put(batches[i])
                batches[i] = []
        for i, inbox in enumerate(inboxes):
            if batches[i]:
                inbox.put(batches[i])
            inbox.put(None)  # end of input
        while len(parts) < jobs:
            try:
                parts.append(results.get(timeout=1))
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    raise RuntimeError("a report-verifying worker process died") from None
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    out = VerifiedReports()
    for part in parts:
        if isinstance(part, str):
            raise RuntimeError(f"a report-verifying worker failed: {part}")
        out.latest.update(part.latest)
        out.timeline.update(part.timeline)
        out.accepted += part.accepted
        out.rejected += part.rejected
    return out


def _worker_main(inbox, results, keys, given, models, keep_timeline) -> None:
    try:
        verifier = _Verifier(keys, given, models, keep_timeline)
        while (batch := inbox.get()) is not None:
            for device_id, envelope in batch:
                verifier.add(device_id, envelope)
        results.put(verifier.out)
    except BaseException as exc:  # reported to the main process, which raises it
        results.put(f"{type(exc).__name__}: {exc}")


class _Verifier:
    """Checks envelopes one at a time, remembering per device the last accepted counter and release."""

    def __init__(self, keys: dict[str, str], given: dict, models: tuple[str, ...], keep_timeline: bool):
        from edgefleet.agent.report import ReportError, check_sequence, verify_report

        self.keys, self.given, self.models, self.keep_timeline = keys, given, models, keep_timeline
        self._error, self._check_sequence, self._verify = ReportError, check_sequence, verify_report
        self.last_counter: dict[str, int] = {}
        self.last_release: dict[str, int] = {}
        self.out = VerifiedReports()

    def add(self, device_id: str, envelope: bytes) -> None:
        out = self.out
        key = self.keys.get(device_id)
        if key is None:
            out.rejected.append(Rejection(device_id, None, "E702", "the device is not enrolled (not in the inventory)"))
            return
        try:
            report = self._verify(envelope, key, device_id)
            self._check_sequence(self.last_counter.get(device_id), report)
        except self._error as exc:
            code, message = exc.code, exc.message
            claimed = _claimed_device(envelope) if code == "E663" else None
            if claimed is not None and claimed != device_id:  # say why the key cannot match
                code, message = "E664", f"a report of device {claimed!r} was delivered as {device_id!r}'s"
            out.rejected.append(Rejection(device_id, None, code, message))
            return
        generation = report.generation
        if generation is not None and (generation.target_sha256, generation.release_counter) not in self.given.get(
                device_id, ()):
            out.rejected.append(Rejection(
                device_id, report.counter, "E703",
                f"generation {generation.target_sha256[:12]}… (release {generation.release_counter}) "
                "is not a desired state this device was given"))
            return
        last_release = self.last_release.get(device_id, -1)
        if generation is not None and generation.release_counter < last_release:
            out.rejected.append(Rejection(
                device_id, report.counter, "E710",
                f"release counter {generation.release_counter} is below the {last_release} this device "
                "reported before (a device never goes back to an older desired state)"))
            return
        self.last_counter[device_id] = report.counter
        if generation is not None:
            self.last_release[device_id] = max(last_release, generation.release_counter)
        out.accepted += 1
        for model in self.models:
            obs = observe(report, model)
            out.latest[(device_id, model)] = obs
            if self.keep_timeline:
                out.timeline.setdefault((device_id, model), []).append(obs)


def _claimed_device(envelope: bytes) -> str | None:
    """The device an unverifiable report claims to be from: for the message only, never trusted."""
    import base64
    import json

    try:
        payload = json.loads(base64.b64decode(json.loads(envelope)["payload"], validate=True))
        claimed = payload.get("device")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return claimed[:64] if isinstance(claimed, str) else None


@dataclass
class WaveStatus:
    index: int
    name: str
    devices: int
    live: bool
    live_since: str | None
    tally: Tally
    result: GateResult | None  # only for the current wave
    used: list[tuple[str, int]] = field(default_factory=list)  # (device, counter) of the reports tallied


@dataclass
class RolloutReport:
    name: str
    path: str  # repository-relative file
    rollout: Rollout
    waves: list[WaveStatus]
    by_class: dict[str, Tally]
    by_site: dict[str, Tally]
    not_live: int  # selected devices whose wave is not live
    members: dict[int, list[str]]  # wave index -> device ids (for the timeline chart)

    @property
    def current(self) -> WaveStatus | None:
        wave = self.rollout.status.current_wave
        return self.waves[wave] if wave is not None and self.rollout.status.phase in ("progressing", "paused") \
            else None

    def evidence(self, rejected: int = 0) -> Evidence | None:
        wave = self.current
        if wave is None:
            return None
        used = sorted(wave.used)
        digest = hashlib.sha256("\n".join(f"{d}:{c}" for d, c in used).encode()).hexdigest()
        t = wave.tally
        return Evidence(
            wave=wave.name, devices=t.devices, reported=t.reported, on_new_version=t.on_new_version,
            healthy=t.counts["healthy"], failed=t.counts["failed"], rolled_back=t.counts["rolled_back"],
            degraded=t.counts["degraded"], frozen=t.counts["frozen"], silent=t.counts["silent"],
            rejected_reports=rejected, latency_ms=t.latency(), checks=list(wave.result.checks) if wave.result else [],
            reports_sha256=digest, failed_devices=sorted(t.failed_devices)[:MAX_LISTED])


def evaluate_rollout(name: str, path: str, rollout: Rollout, repo: FleetRepo, verified: VerifiedReports,
                     now: datetime) -> RolloutReport:
    """Tally the rollout's live waves and evaluate the current wave's gates. Pure."""
    spec, status = rollout.spec, rollout.status
    waves = RolloutWaves.of(name, spec, status)
    started = [status.wave_started.get(w.name) or (status.since if i == status.current_wave else None)
               for i, w in enumerate(spec.waves)]
    since = [parse_time(s) if s else None for s in started]
    out = [WaveStatus(i, w.name, 0, i < waves.live_count, started[i], Tally(), None)
           for i, w in enumerate(spec.waves)]
    by_class: dict[str, Tally] = {}
    by_site: dict[str, Tally] = {}
    members: dict[int, list[str]] = {}
    not_live = 0
    for loaded in repo.devices:
        device = loaded.doc
        if not matches(spec.selector, device):
            continue
        place = waves.place(device)
        if place.wave is not None:
            out[place.wave].devices += 1
        if not place.live or place.wave is None:
            not_live += 1
            continue
        members.setdefault(place.wave, []).append(device.id)
        obs = verified.latest.get((device.id, spec.model))
        where = standing(obs, spec.to_version, since[place.wave])
        wave = out[place.wave]
        wave.tally.add(device.id, where, obs)
        if where != "silent" and obs is not None:
            wave.used.append((device.id, obs.counter))
        by_class.setdefault(device.hardware_class, Tally()).add(device.id, where, obs)
        by_site.setdefault(device.site, Tally()).add(device.id, where, obs)
    report = RolloutReport(name, path, rollout, out, dict(sorted(by_class.items())), dict(sorted(by_site.items())),
                           not_live, members)
    current = report.current
    if current is not None and since[current.index] is not None:
        result = evaluate(spec.waves[current.index].gates, current.tally, since[current.index], now,
                          spec.to_version)
        earlier = [(w.name, spec.waves[w.index].gates, w.tally) for w in out[:current.index]]
        current.result = with_earlier_waves(result, earlier)
    return report


@dataclass
class StatusResult:
    rollouts: list[RolloutReport]
    verified: VerifiedReports
    generations_commits: int
    diagnostics: list[Diagnostic]


def rollout_paths(repo: FleetRepo) -> dict[str, str]:
    """Rollout name -> its repository-relative file."""
    out = {}
    for name, loaded in repo.rollouts.items():
        shown = loaded.source.path
        rel = shown[len(repo.display_root) + 1:] if repo.display_root not in ("", ".") and shown.startswith(
            repo.display_root.rstrip("/") + "/") else shown
        out[name] = rel
    return out


def load_inputs(root: Path, reports, desired: Path | None, models: Iterable[str],
                keep_timeline: bool = False, branch: str | None = None, jobs: int = 1
                ) -> tuple[FleetRepo | None, VerifiedReports | None, int, list[Diagnostic]]:
    """Validate the fleet, read the desired-state history and verify every report."""
    from edgefleet.pipeline.validate import validate_repository

    repo, diags = validate_repository(root)
    if has_errors(diags):
        return None, None, 0, diags
    branch = branch or repo.fleet.doc.spec.desired_state_branch
    try:
        given = read_given_generations(desired or root, branch)
    except SourceError as exc:
        return repo, None, 0, diags + [error(
            "E705", f"no desired-state history to check report generations against: {exc}",
            Location(str(desired or root)),
            f"pass --desired with the git repository holding branch '{branch}' (compile --commit {branch}), "
            "or a compiled tree")]
    models = list(models) or sorted({r.doc.spec.model for r in repo.rollouts.values()})
    try:
        envelopes = read_envelopes(reports) if isinstance(reports, (str, Path)) else reports
        verified = verify_reports(envelopes, repo, given, models, keep_timeline, jobs)
    except SourceError as exc:
        return repo, None, 0, diags + [error("E704", str(exc), Location(str(reports)),
                                             "give a status remote (git URL or path), a folder of reports, "
                                             "or an object store URL")]
    return repo, verified, given.commits, diags


def run_status(root: Path, reports, now: datetime, desired: Path | None = None,
               rollout: str | None = None, keep_timeline: bool = False, jobs: int = 1) -> StatusResult:
    """`reports`: a status remote / folder / object-store URL, or (device id, envelope) pairs."""
    repo, verified, commits, diags = load_inputs(root, reports, desired, (), keep_timeline, jobs=jobs)
    if repo is None or verified is None:
        return StatusResult([], verified or VerifiedReports(), commits, diags)
    paths = rollout_paths(repo)
    names = sorted(repo.rollouts)
    if rollout is not None:
        if rollout not in repo.rollouts:
            return StatusResult([], verified, commits, diags + [unknown_rollout(rollout, names)])
        names = [rollout]
    reports_out = [evaluate_rollout(n, paths[n], repo.rollouts[n].doc, repo, verified, now) for n in names]
    return StatusResult(reports_out, verified, commits, diags)


def unknown_rollout(name: str, names: list[str]) -> Diagnostic:
    return error("E706", f"no rollout named '{name}'", Location("--rollout"),
                 f"rollouts in this fleet: {', '.join(names) or 'none'}")
