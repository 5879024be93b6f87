"""The `status` use case: verified device reports, aggregated per rollout, wave, class and site.

Steps, each with one job:

1. `verify_reports` (`start_verification` ... `finish`): every envelope is checked before
   anything in it is used: the device is enrolled (its id is in the inventory: E702), the
   signature is its enrolled `public_key`'s and the report is its own (agent-io's
   `verify_report`, or `Prechecked.verify`, which gives the same: E66x), the counter goes up
   (`check_sequence`: E665, replays), the generation is one the desired-state tree really
   gave that device (E703), and its release counter never goes below one the device
   reported before (E710). Refused reports are counted and listed by reason, never used.
   The latest accepted report of each device is kept, per model. At scale, worker
   processes read and pre-check signatures while the fleet loads (see `start_verification`).
2. `evaluate_rollout` (pure): each device the rollout selects is placed in its wave; each
   live wave's devices are classified (rollout/observe.py) and tallied, and the current
   wave's gates are evaluated (rollout/gates.py) at `now`.

The CLI (`edgefleet status`) only parses and renders; promote reuses both steps.
"""

from __future__ import annotations

import hashlib
import itertools
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

from edgefleet.agent.report import Prechecked, ReportError, check_sequence, unverified_counter
from edgefleet.core.collector import collector_paused
from edgefleet.core.diagnostics import Diagnostic, error, has_errors
from edgefleet.core.source import Location
from edgefleet.desired.activation import parse_time
from edgefleet.desired.waves import RolloutWaves
from edgefleet.load.repo import FleetRepo
from edgefleet.rollout.aggregate import Tally
from edgefleet.rollout.gates import GateResult, evaluate, with_earlier_waves
from edgefleet.rollout.observe import Observation, observe, standing
from edgefleet.rollout.sources import (GivenGenerations, SourceError, list_report_devices, object_store_folder,
                                      read_envelopes, read_given_generations, read_object_logs)
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


PARALLEL_FROM = 5000  # envelopes (or devices at a listable source); below, workers cost more than they save
BATCH = 256  # envelopes per message to a worker


def verify_reports(envelopes: Iterable[tuple[str, bytes]], repo: FleetRepo, given: GivenGenerations,
                   models: Iterable[str], keep_timeline: bool = False, jobs: int = 1) -> VerifiedReports:
    """Verify every envelope as it is read; from PARALLEL_FROM envelopes on, in `jobs` processes.

    The result is the same whatever `jobs` is, and the rejections are sorted.
    """
    run = start_verification(envelopes, jobs)
    try:
        return run.finish(enrolled_keys(repo), given.by_device, models, keep_timeline)
    finally:
        run.close()


def enrolled_keys(repo: FleetRepo) -> dict[str, str]:
    return {d.doc.id: d.doc.public_key for d in repo.devices}


def start_verification(reports, jobs: int = 1) -> _Verification:
    """Begin reading and pre-checking the reports before the inventory is known.

    `reports`: a status remote / folder / object-store URL, or (device id, envelope) pairs.
    At a source that lists its devices cheaply (a folder, a `dir:` store, a local git
    repository) with PARALLEL_FROM devices or more, `jobs` worker processes start now, each
    reading its own share of the devices (by a hash of the id, so each device's reports are
    checked in order by one worker) and checking each signature against the key the envelope
    names (`Prechecked`), while this process loads the fleet. `finish` then hands them the
    enrolled keys and the given generations; nothing is accepted before that. Elsewhere the
    reports are read by this process in `finish`, as they are verified.
    """
    devices = list_report_devices(reports) if isinstance(reports, (str, Path)) else None
    if jobs > 1 and devices is not None and len(devices) >= PARALLEL_FROM:
        return _Verification(None, _Workers.reading(str(reports), devices, jobs))
    if isinstance(reports, (str, Path)):
        return _Verification(read_envelopes(str(reports)), None, jobs)
    return _Verification(iter(reports), None, jobs)


class _Verification:
    def __init__(self, stream: Iterator[tuple[str, bytes]] | None, workers: _Workers | None, jobs: int = 1):
        self.stream, self.workers, self.jobs = stream, workers, jobs

    def finish(self, keys: dict[str, str], given: dict, models: Iterable[str],
               keep_timeline: bool = False) -> VerifiedReports:
        """Every report verified; raises SourceError when the source cannot be read."""
        setup = (keys, given, tuple(sorted(set(models))), keep_timeline)
        if self.workers is None:
            head = list(itertools.islice(self.stream, PARALLEL_FROM))
            if self.jobs <= 1 or len(head) < PARALLEL_FROM:
                verifier = _Verifier(*setup)
                for device_id, envelope in itertools.chain(head, self.stream):
                    verifier.add(device_id, Prechecked(envelope, precheck=False))  # the keys are known
                out = verifier.out
            else:
                self.workers = _Workers.fed(self.jobs)
                out = self.workers.finish(setup, itertools.chain(head, self.stream))
        else:
            out = self.workers.finish(setup)
        out.rejected.sort(key=lambda r: (r.device, -1 if r.counter is None else r.counter, r.code, r.reason))
        return out

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()


def _shard(device_id: str, jobs: int) -> int:
    return zlib.crc32(device_id.encode()) % jobs


class _Workers:
    """Forked verifying processes: each reads (or is sent) its devices' envelopes, pre-checks
    them at once, and verifies them once the keys arrive on its pipe; the result comes back
    on the same pipe as plain tuples (cheap to pickle)."""

    def __init__(self, jobs: int, shards: list[list[str]] | None, source: str | None):
        import multiprocessing

        context = multiprocessing.get_context("fork")  # nothing to import or unpickle at start
        self.inboxes = [context.Queue(maxsize=64) for _ in range(jobs)] if shards is None else None
        self.pipes, self.processes = [], []
        for i in range(jobs):
            mine, theirs = context.Pipe()
            items = (source, shards[i]) if shards is not None else self.inboxes[i]
            process = context.Process(target=_worker_main, args=(items, theirs), daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(mine)
            self.processes.append(process)

    @classmethod
    def reading(cls, source: str, devices: list[str], jobs: int) -> _Workers:
        shards: list[list[str]] = [[] for _ in range(jobs)]
        for device in devices:
            shards[_shard(device, jobs)].append(device)
        return cls(jobs, shards, source)

    @classmethod
    def fed(cls, jobs: int) -> _Workers:
        return cls(jobs, None, None)

    def finish(self, setup: tuple, stream: Iterator[tuple[str, bytes]] | None = None) -> VerifiedReports:
        keys, given, models, keep_timeline = setup
        jobs = len(self.processes)
        parts: list[tuple[dict, dict]] = [({}, {}) for _ in range(jobs)]  # each worker its devices' share
        for device, key in keys.items():
            k, g = parts[_shard(device, jobs)]
            k[device] = key
            if device in given:
                g[device] = given[device]
        for pipe, (k, g) in zip(self.pipes, parts):
            try:
                pipe.send((k, g, models, keep_timeline))
            except OSError:
                pass  # the worker stopped (a source it could not read): its answer below says why
        del parts
        if stream is not None:
            batches: list[list[tuple[str, bytes]]] = [[] for _ in range(jobs)]
            for device_id, envelope in stream:
                i = _shard(device_id, jobs)
                batches[i].append((device_id, envelope))
                if len(batches[i]) >= BATCH:
                    self._put(i, batches[i])
                    batches[i] = []
            for i in range(jobs):
                if batches[i]:
                    self._put(i, batches[i])
                self._put(i, None)  # end of input
        out = VerifiedReports()
        for i, pipe in enumerate(self.pipes):
            kind, value = self._receive(i)
            if kind == "source":
                raise SourceError(value)
            if kind != "ok":
                raise RuntimeError(f"a report-verifying worker failed: {value}")
            latest, timeline, accepted, rejected = value
            out.latest.update(latest)
            out.timeline.update(timeline)
            out.accepted += accepted
            out.rejected += [Rejection(*r) for r in rejected]
        return out

    def _put(self, i: int, batch) -> None:
        import queue

        while True:
            try:
                self.inboxes[i].put(batch, timeout=1)
                return
            except queue.Full:
                if not self.processes[i].is_alive():
                    raise RuntimeError("a report-verifying worker process died") from None

    def _receive(self, i: int):
        pipe, process = self.pipes[i], self.processes[i]
        while not pipe.poll(1):
            if not process.is_alive() and not pipe.poll(0):
                raise RuntimeError("a report-verifying worker process died")
        try:
            return pipe.recv()
        except EOFError:
            raise RuntimeError("a report-verifying worker process died") from None

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()
        for process in self.processes:
            process.join(timeout=0.5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def _worker_main(items, pipe) -> None:
    """Pre-check envelopes as they come; verify them once (keys, generations, ...) arrive."""
    import gc

    gc.disable()  # this process only holds acyclic data until it exits (see core/collector.py)
    try:
        drop_unreadable = False
        if isinstance(items, tuple):
            source, devices = items
            drop_unreadable = object_store_folder(source) is not None
            stream = read_object_logs(source, devices) if drop_unreadable else read_envelopes(source, devices)
        else:
            stream = iter(items.get, None)
            stream = (pair for batch in stream for pair in batch)
        verifier: _Verifier | None = None
        waiting: list[tuple[str, Prechecked]] = []
        for device_id, envelope in stream:
            checked = Prechecked(envelope)
            if verifier is None and pipe.poll():
                verifier = _Verifier(*pipe.recv(), drop_unreadable=drop_unreadable)
                for pair in waiting:
                    verifier.add(*pair)
                waiting = []
            if verifier is None:
                waiting.append((device_id, checked))
            else:
                verifier.add(device_id, checked)
        if verifier is None:
            verifier = _Verifier(*pipe.recv(), drop_unreadable=drop_unreadable)
            for pair in waiting:
                verifier.add(*pair)
        out = verifier.out
        pipe.send(("ok", (out.latest, out.timeline, out.accepted,
                          [(r.device, r.counter, r.code, r.reason) for r in out.rejected])))
    except SourceError as exc:
        pipe.send(("source", str(exc)))
    except EOFError:
        return  # the main process gave up (an invalid fleet): nothing to report
    except BaseException as exc:  # reported to the main process, which raises it
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


class _Verifier:
    """Checks envelopes one at a time, remembering per device the last accepted counter and release."""

    def __init__(self, keys: dict[str, str], given: dict, models: tuple[str, ...], keep_timeline: bool,
                 drop_unreadable: bool = False):
        self.keys, self.given, self.models, self.keep_timeline = keys, given, models, keep_timeline
        # From `read_object_logs`: a refused envelope without a readable counter is left out,
        # as agent-io's reader leaves it out of a store's log.
        self.drop_unreadable = drop_unreadable
        self.last_counter: dict[str, int] = {}
        self.last_release: dict[str, int] = {}
        self.out = VerifiedReports()

    def add(self, device_id: str, checked: Prechecked) -> None:
        out = self.out
        key = self.keys.get(device_id)
        if key is None:
            if not self._dropped(checked):
                out.rejected.append(Rejection(device_id, None, "E702",
                                              "the device is not enrolled (not in the inventory)"))
            return
        try:
            report = checked.verify(key, device_id)
            check_sequence(self.last_counter.get(device_id), report)
        except ReportError as exc:
            if self._dropped(checked):
                return
            code, message = exc.code, exc.message
            claimed = _claimed_device(checked.envelope) if code == "E663" else None
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

    def _dropped(self, checked: Prechecked) -> bool:
        return self.drop_unreadable and unverified_counter(checked.envelope) is None


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
        for groups, group in ((by_class, device.hardware_class), (by_site, device.site)):
            tally = groups.get(group)
            if tally is None:
                tally = groups[group] = Tally()
            tally.add(device.id, where, obs)
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


@collector_paused()  # the inventory, the generations and the observations: see core/collector.py
def load_inputs(root: Path, reports, desired: Path | None, models: Iterable[str],
                keep_timeline: bool = False, branch: str | None = None, jobs: int = 1
                ) -> tuple[FleetRepo | None, VerifiedReports | None, int, list[Diagnostic]]:
    """Validate the fleet, read the desired-state history and verify every report."""
    from edgefleet.pipeline.validate import validate_repository

    # Reading and signature checks start first: at scale they overlap loading the fleet.
    verification = start_verification(reports, jobs)
    try:
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
            verified = verification.finish(enrolled_keys(repo), given.by_device, models, keep_timeline)
        except SourceError as exc:
            return repo, None, 0, diags + [error("E704", str(exc), Location(str(reports)),
                                                 "give a status remote (git URL or path), a folder of reports, "
                                                 "or an object store URL")]
        return repo, verified, given.commits, diags
    finally:
        verification.close()


@collector_paused()
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
