"""The thin driver: one reconcile cycle of the device, doing the I/O the pure machine asks for.

    fetch -> verify                                     once per cycle, for the device
    download -> stage -> probe -> switch -> confirm -> commit     per workload (model)

A desired state can ask for several models (a robot running a digit reader and an OCR
model); each one lives in its own home (`homes.py`: two slots, a `current` link, a
journal) and goes through the update machine on its own, in the desired state's order.
A failure of one model (a bad probe, a download, a rollback) is that model's: it is
recorded in its journal and its report entry, and the next model's update goes on. The
first workload's home is the state directory itself, laid out as before, so a device
with one workload is unchanged.

Each step is entered through `machine.enter` and the journal is saved (durably) before the
step's work starts; `EDGEFLEET_AGENT_TEST_KILL_AT=<step>` (test-only) makes the agent
SIGKILL itself right after that save (`<model>:<step>`: only in that model's update), which
is how the crash tests kill it in every state. On start, `Agent.start` replays every
home's journal (`machine.recover`) before serving.

What never happens: the active slot of a model changes outside its `switch` or a rollback;
a model that did not pass its probe serves; a model is last-known-good before `confirm`; a
failure of any step stops a model from serving, or touches another model.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edgefleet.agent import artifacts, homes, machine, slots, trt_engine
from edgefleet.agent import journal as journal_io
from edgefleet.agent.errors import AgentError
from edgefleet.agent.homes import Home
from edgefleet.agent.journal import Generation, Journal
from edgefleet.agent.registry import Registry
from edgefleet.agent.runner import AcceleratorUnavailable, Runner, load_runner

TEST_KILL_AT = "EDGEFLEET_AGENT_TEST_KILL_AT"
JOURNAL = "journal.json"
PROBE_CODES = ("E608", "E609", "E610")


@dataclass
class AgentConfig:
    state_dir: Path
    device: str
    remote: str
    trusted_root: bytes
    branch: str = "desired-state"
    store: str | None = None
    status_remote: str | None = None
    confirm_inferences: int = 20
    soak_s: float = 30.0
    probe_runs: int = 10
    free_margin: int = artifacts.FREE_MARGIN
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)


@dataclass
class WorkloadResult:
    """One model's outcome of a cycle."""

    model: str
    in_sync: bool
    reason: str
    code: str | None = None


@dataclass
class CycleResult:
    in_sync: bool                      # serving what the verified desired state asks (every workload)
    reason: str                        # why not (or what happened)
    changed: bool = False              # the remote moved
    code: str | None = None            # E6xx/E5xx of the failure, if any (the first workload's that failed)
    offline: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)   # (condition type, status/reason)
    workloads: list[WorkloadResult] = field(default_factory=list)  # per model, in the desired state's order


@dataclass
class WorkloadObserved:
    """What the cycle learned about one workload (its report entry)."""

    model: str
    rollout: str | None = None
    wave: str | None = None
    want_version: str | None = None
    update_status: str = "Idle"
    update_error: AgentError | None = None
    rolled_back: AgentError | None = None
    degraded: str | None = None
    in_sync: bool = False
    reason: str = ""
    code: str | None = None


@dataclass
class Observed:
    """What the cycle learned, for conditions and the report.

    The device-wide fields sum the workloads up: `update_error` / `rolled_back` are the
    first workload's that has one, `update_status` / `want_version` the first workload's
    (the primary one), `degraded` says which models are degraded. `workloads` has each.
    """

    generation: Generation | None = None
    desired: object = None             # the verified DesiredState
    offline_error: AgentError | None = None
    frozen: AgentError | None = None
    refused: AgentError | None = None
    update_error: AgentError | None = None
    rolled_back: AgentError | None = None
    degraded: str | None = None
    update_status: str = "Idle"
    want_version: str | None = None
    workloads: list[WorkloadObserved] = field(default_factory=list)


@dataclass
class _Work:
    """One workload being reconciled in this cycle."""

    home: Home
    workload: object                   # the desired state's Workload
    obs: WorkloadObserved

    @property
    def model(self) -> str:
        return self.home.model


def _drop_downloads(files: dict) -> None:
    """Staged copies are the durable ones; the download cache would double the storage."""
    for path in [files["artifact"], files["golden"], *files["extra"].values()]:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _kill_point(step: str, model: str | None = None) -> None:
    want = os.environ.get(TEST_KILL_AT)
    if want and (want == step or (model is not None and want == f"{model}:{step}")):
        os.kill(os.getpid(), signal.SIGKILL)


def _os_error(exc: OSError, model: str) -> AgentError:
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return AgentError("E607", f"disk full while installing {model}{where}: {exc.strerror}",
                          "free space in the state directory; the old model keeps serving",
                          reason="InsufficientSpace")
    return AgentError("E613", f"cannot write the state directory while installing {model}{where}: "
                      f"{exc.strerror or exc}", "check the state directory's disk and permissions")


def _prefixed(exc: AgentError, model: str) -> AgentError:
    err = AgentError(exc.code, f"{model}: {exc.message}", exc.hint, reason=exc.reason)
    return err


class Agent:
    def __init__(self, config: AgentConfig, registry: Registry | None = None):
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.registry = registry or Registry()
        self.journal_path = self.state_dir / JOURNAL  # the root journal: the device's steps and the root home's
        self._degraded: dict[str, str] = {}           # model -> why it is degraded
        self.observed = Observed()
        self._tree: Path | None = None  # the fetched desired-state tree of this cycle

    @property
    def degraded(self) -> str | None:
        """Why the device is degraded (each degraded model's reason), or None."""
        if not self._degraded:
            return None
        if len(self._degraded) == 1:
            return next(iter(self._degraded.values()))
        return "; ".join(f"{model}: {why}" for model, why in sorted(self._degraded.items()))

    @degraded.setter
    def degraded(self, value: str | None) -> None:
        if value is None:
            self._degraded.clear()
        else:
            self._degraded[self.registry.primary or ""] = value

    def homes(self) -> list[Home]:
        """Every model's home on disk (the root first)."""
        return homes.homes(self.state_dir)

    # -- journal -------------------------------------------------------------------------
    def _save(self, journal: Journal, path: Path | None = None) -> Journal:
        journal_io.save(path or self.journal_path, journal)
        return journal

    def _enter(self, journal: Journal, step: str, path: Path | None = None, model: str | None = None) -> Journal:
        journal = self._save(machine.enter(journal, step), path)
        _kill_point(step, model)
        return journal

    # -- start: replay the journals, then serve ---------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        homes.adopt_root(self.state_dir)  # the upgrade of a one-model state dir: one atomic write
        found = self.homes()
        if not any(h.root for h in found):
            self._settle_root_journal()
        for home in found:
            self._recover(home)
        if self.registry.primary is None and found:
            self.registry.primary = found[0].model
        self.serve_active()

    def _settle_root_journal(self) -> None:
        """A root home with no model yet (a fresh device killed in fetch or verify): just go idle."""
        before = journal_io.load(self.journal_path)
        journal = machine.recover(before).journal
        if journal != before:
            self._save(journal)

    def _recover(self, home: Home) -> None:
        before = journal_io.load(home.journal_path)
        recovery = machine.recover(before)
        journal = recovery.journal
        if recovery.action == "rollback":
            slots.activate(home.path, recovery.restore_slot)
        elif recovery.action == "finish_commit":
            slots.activate(home.path, journal.install.slot)  # already switched: idempotent
            journal = machine.commit(journal)
        if journal != before:
            self._save(journal, home.journal_path)
        active = slots.active_slot(home.path)
        if active is not None and active != journal.committed and journal.committed is not None:
            slots.activate(home.path, journal.committed)  # a switch not yet committed

    def serve_active(self) -> None:
        """Load what every model's active slot holds (or the class's fallback path) into the registry."""
        for home in self.homes():
            self._serve_home(home)

    def _serve_home(self, home: Home) -> None:
        """Load what the home's active slot holds into the registry, under its model's name.

        An active slot whose files no longer match their digests (disk corruption) is not
        served; the other slot's model is, degraded, until the next cycle re-installs.
        """
        active = slots.active_slot(home.path)
        info = slots.read_slot(home.path, active) if active else None
        if info is None:
            other = slots.read_slot(home.path, machine.other(active)) if active else None
            if other is not None:
                self._degraded[home.model] = f"slot {active} failed its digest check; serving slot {other.slot}"
                try:
                    self.registry.set(load_runner(other.path, other.meta, other.meta["runtime"],
                                                  other.meta["runtime_config"], cpu=True), home.model)
                    return
                except AgentError:
                    pass
            self.registry.set(None, home.model)
            return
        self.registry.set(self._load_for_serving(home, info), home.model)

    def _load_for_serving(self, home: Home, info: slots.SlotInfo) -> Runner | None:
        meta = info.meta
        try:
            runner = load_runner(info.path, meta, meta["runtime"], meta["runtime_config"])
            self._degraded.pop(home.model, None)
            return runner
        except AcceleratorUnavailable as exc:
            policy = (meta.get("offline") or {}).get("on_accelerator_failure", "cpu")
            self._degraded[home.model] = f"{exc.message}; on_accelerator_failure: {policy}"
            if policy == "stop":
                return None
            if policy == "fallback_model":
                other = slots.read_slot(home.path, machine.other(info.slot))
                if other is not None:
                    try:
                        return load_runner(other.path, other.meta, other.meta["runtime"],
                                           other.meta["runtime_config"], cpu=True)
                    except AgentError:
                        pass
            return load_runner(info.path, meta, meta["runtime"], meta["runtime_config"], cpu=True)

    # -- one cycle -----------------------------------------------------------------------
    def cycle(self) -> CycleResult:
        from edgefleet.signing.verify import VerifyError, verify_device

        self.observed = obs = Observed()
        cfg = self.config
        journal = journal_io.load(self.journal_path)
        if self._degraded:
            for home in self.homes():  # the accelerator may be back
                if home.model in self._degraded:
                    self._serve_home(home)
        journal = self._enter(journal, "fetch")
        try:
            fetched = self._fetch()
        except AgentError as exc:
            obs.offline_error = exc
            self._save(machine.finish(journal))
            return self._result(False, f"{exc.message}; serving {self._serving_text()}", exc.code, offline=True)
        journal = self._enter(journal, "verify")
        self._tree = fetched.tree
        try:
            verified = verify_device(fetched.tree, cfg.device, cfg.trusted_root, cfg.clock(),
                                     last_counter=self._floor(journal),
                                     metadata_cache=self.state_dir / "tuf")
        except VerifyError as exc:
            err = AgentError(exc.code, exc.reason, exc.hint, reason="Frozen" if exc.code == "E552" else "Refused")
            if exc.code == "E552":
                obs.frozen = err
            else:
                obs.refused = err
            self._save(machine.finish(journal))
            return self._result(False, f"desired state refused: {exc.reason}", exc.code)
        import hashlib

        generation = Generation(target_sha256=hashlib.sha256(verified.data).hexdigest(),
                                release_counter=int(verified.custom["release_counter"]))
        obs.generation = generation
        journal = machine.verified(journal, generation)
        try:
            desired = self._parse(verified.data)
            works = [_Work(homes.home_of(self.state_dir, w.model), w,
                           WorkloadObserved(w.model, w.rollout.name, w.rollout.wave)) for w in desired.workloads]
        except AgentError as exc:
            obs.refused = exc
            self._save(machine.finish(journal))
            return self._result(False, exc.message, exc.code)
        obs.desired = desired
        obs.workloads = [w.obs for w in works]
        self.registry.primary = works[0].model
        for work in works:
            self._reconcile_workload(work, desired, journal if work.home.root else None, generation)
        self._retire(works)
        self._settle_device_journal(works, generation)
        return self._summary(works, fetched.changed)

    def _floor(self, root: Journal) -> int | None:
        """The device's rollback floor: the highest release counter any of its journals installed."""
        counters = [root.last_counter]
        for home in self.homes():
            if not home.root:
                try:
                    counters.append(journal_io.load(home.journal_path).last_counter)
                except AgentError:
                    pass  # a damaged journal is that workload's failure, in its own reconcile
        known = [c for c in counters if c is not None]
        return max(known) if known else None

    def _verified_journal(self, home: Home, generation: Generation) -> Journal:
        """A further home's journal, through fetch and verify in memory (the device's journal saved those)."""
        journal = journal_io.load(home.journal_path)
        journal = machine.enter(machine.enter(journal, "fetch"), "verify")
        return machine.verified(journal, generation)

    def _reconcile_workload(self, work: _Work, desired, journal: Journal | None, generation: Generation) -> None:
        """One model through the update machine; its failure stays its own (recorded, reported).

        `journal` is the root journal (already through fetch and verify) for the root home;
        None for a further home, whose journal is read here, so a damaged one (E613) is
        this model's failure and not the device's.
        """
        wobs, home = work.obs, work.home
        want, role = self._choose(work)
        wobs.want_version = want.version
        try:
            try:
                if journal is None:
                    journal = self._verified_journal(home, generation)
                self._reconcile(work, journal, desired, want, role, generation)
            except OSError as exc:
                # The disk (full, failing) before the switch: this update's failure, the other models go
                # on. After the switch it is left to crash the cycle: the restart's recovery rolls back.
                if journal_io.load(home.journal_path).step in ("switch", "confirm", "commit"):
                    raise
                raise _os_error(exc, work.model) from None
        except AgentError as exc:
            wobs.update_error = exc
            wobs.update_status = "ProbeFailed" if exc.code in PROBE_CODES else "UpdateFailed"
            probe_failed = exc.code in ("E608", "E609")  # E610 (slow) is retried: load varies
            try:
                journal = journal_io.load(home.journal_path)
            except AgentError:
                journal = None  # damaged: left as it is for a person to look at (E613's hint)
            if journal is not None:
                if journal.install is not None and journal.step in ("download", "stage", "probe"):
                    held = slots.read_slot(home.path, journal.install.slot, check_digests=False)
                    if held is not None and held.digest == journal.install.digest and probe_failed:
                        slots.clear(home.path, journal.install.slot)  # never leave a refused build staged
                self._save(machine.fail(journal, exc.message, permanent=probe_failed), home.journal_path)
                self._restage_fallback(work, generation)
            wobs.degraded = self._degraded.get(work.model)
            wobs.in_sync, wobs.code = False, exc.code
            wobs.reason = f"{exc.message}; serving {self._serving_text(work.model)}"
            return
        in_sync = self._serves(home, work.model, want.artifact.digest)
        journal = journal_io.load(home.journal_path)
        settled = machine.finish(machine.in_sync(journal, generation) if in_sync else journal)
        if settled != journal:  # a further home's journal is not rewritten by a no-op poll
            self._save(settled, home.journal_path)
        if in_sync:
            self._restage_fallback(work, generation)
        degraded = self._degraded.get(work.model)
        why = machine.given_up(journal, want.artifact.digest, generation) or degraded or "pending"
        wobs.degraded = degraded
        wobs.in_sync = in_sync
        wobs.reason = (f"serving {self._serving_text(work.model)}" if in_sync else
                       f"not serving {want.version}: {why}; serving {self._serving_text(work.model)}")
        if not in_sync:
            wobs.code = wobs.rolled_back.code if wobs.rolled_back else ("E612" if degraded else None)

    def _retire(self, works: list[_Work]) -> None:
        """Models the desired state no longer names stop serving; their slots stay on disk."""
        wanted = {w.model for w in works}
        for home in self.homes():
            if home.model in wanted:
                continue
            if slots.active_slot(home.path) is not None:
                slots.activate(home.path, None)
            self.registry.set(None, home.model)
            self._degraded.pop(home.model, None)

    def _settle_device_journal(self, works: list[_Work], generation: Generation) -> None:
        """The root journal leaves `verify`; its floor rises once any model serves this generation."""
        journal = journal_io.load(self.journal_path)
        done = machine.finish(journal)
        if any(w.obs.in_sync for w in works) and (done.last_counter or 0) < generation.release_counter:
            done = done.model_copy(update={"last_counter": generation.release_counter})
        if done != journal:
            self._save(done)

    def _summary(self, works: list[_Work], changed: bool) -> CycleResult:
        obs = self.observed
        first = works[0].obs
        obs.update_status, obs.want_version = first.update_status, first.want_version
        several = len(works) > 1
        for w in works:
            if w.obs.update_error is not None and obs.update_error is None:
                obs.update_error = _prefixed(w.obs.update_error, w.model) if several else w.obs.update_error
            if w.obs.rolled_back is not None and obs.rolled_back is None:
                obs.rolled_back = _prefixed(w.obs.rolled_back, w.model) if several else w.obs.rolled_back
        results = [WorkloadResult(w.model, w.obs.in_sync, w.obs.reason, w.obs.code) for w in works]
        in_sync = all(r.in_sync for r in results)
        reason = results[0].reason if not several else " | ".join(f"{r.model}: {r.reason}" for r in results)
        code = next((r.code for r in results if r.code), None)
        result = self._result(in_sync, reason, code, changed=changed)
        result.workloads = results
        return result

    def _result(self, ok: bool, reason: str, code: str | None, offline: bool = False,
                changed: bool = False) -> CycleResult:
        self.observed.degraded = self.degraded
        return CycleResult(ok, reason, changed, code, offline)

    def _serving_text(self, model: str | None = None) -> str:
        """What serves `model`; without one, every model that serves (one model: as before)."""
        if model is None:
            served = self.registry.models()
            if len(served) > 1 or (served and self.registry.runner is None):
                return ", ".join(self._serving_text(name) for name in served)
        r = self.registry.runner_of(model) if model is not None else self.registry.runner
        return f"{r.name}@{r.version} ({r.variant}, slot {r.slot})" if r else "nothing"

    def _active_holds(self, home: Home, digest: str) -> bool:
        """The home's active slot holds `digest`, its files intact (hashing them costs milliseconds per poll)."""
        active = slots.active_slot(home.path)
        info = slots.read_slot(home.path, active) if active else None
        return info is not None and info.digest == digest

    def _serves(self, home: Home, model: str, digest: str) -> bool:
        """The active slot holds `digest` and it is what answers (not a fallback of a degraded device)."""
        runner = self.registry.runner_of(model)
        return self._active_holds(home, digest) and runner is not None and runner.digest == digest

    # -- steps -----------------------------------------------------------------------------
    def _fetch(self):
        cfg = self.config
        if cfg.remote.startswith(("http://", "https://")):
            from edgefleet.agent.fetch_http import fetch_mirror

            return fetch_mirror(cfg.remote, self.state_dir / "mirror", self.state_dir / "tuf", cfg.device,
                                cfg.trusted_root)
        from edgefleet.agent.fetch_git import fetch_tree

        return fetch_tree(cfg.remote, cfg.branch, self.state_dir / "desired", cfg.device)

    def _parse(self, data: bytes):
        from pydantic import ValidationError

        from edgefleet.desired.state import DesiredState

        try:
            desired = DesiredState.model_validate_json(data)
        except ValidationError as exc:
            raise AgentError("E603", f"the verified desired state does not parse: {str(exc).splitlines()[0]}",
                             "the tree was compiled by another edgefleet version; upgrade the agent",
                             reason="Unparseable") from None
        if desired.device.id != self.config.device:
            raise AgentError("E603", f"the desired state is for {desired.device.id}", reason="WrongDevice")
        if not desired.workloads:
            raise AgentError("E603", "the desired state has no workload", "the device runs nothing new",
                             reason="NoWorkload")
        models = [w.model for w in desired.workloads]
        if len(set(models)) != len(models):
            raise AgentError("E603", f"the desired state names a model twice ({', '.join(models)})",
                             "one workload per model; the compiler refuses two rollouts of one model on a device",
                             reason="Unparseable")
        return desired

    def _choose(self, work: _Work):
        """The run version, or the fallback while the activation window is closed."""
        workload = work.workload
        activation = getattr(workload, "activation", None)
        if activation is not None and workload.fallback is not None:
            from edgefleet.desired.activation import activation_allowed

            if not activation_allowed(activation, self.config.clock()):
                work.obs.update_status = "Waiting"
                return workload.fallback, "fallback"
        return workload.run, "run"

    def _meta(self, desired, workload, ref, generation: Generation) -> dict:
        return {"model": workload.model, "version": ref.version, "variant": ref.variant,
                "digest": ref.artifact.digest, "size": ref.artifact.size, "name": ref.artifact.name or "model.onnx",
                "runtime": desired.runtime.model_dump(mode="json"), "runtime_config": ref.runtime_config,
                "probe": ref.probe.model_dump(mode="json") if ref.probe else None,
                "offline": desired.offline.model_dump(mode="json"),
                "poll_interval": desired.agent.poll_interval,
                "generation": generation.model_dump(mode="json")}

    def _store(self, desired) -> str:
        store = self.config.store or desired.artifact_store.url
        if not store:
            raise AgentError("E604", "no artifact store: the desired state names none and --store is not given",
                             "pass --store DIR|URL (the fleet's artifact store or a mirror of it)",
                             reason="NoStore")
        return store

    def _reconcile(self, work: _Work, journal: Journal, desired, want, role, generation) -> Journal:
        home, model, wobs = work.home, work.model, work.obs
        path = home.journal_path
        if self._active_holds(home, want.artifact.digest):
            return journal  # installed; a degraded device retries its accelerator each cycle
        why = machine.given_up(journal, want.artifact.digest, generation)
        if why is not None:
            wobs.update_status = "RolledBack" if "after the switch" in why else "UpdateFailed"
            return journal
        journal = machine.retry(journal, want.artifact.digest)
        if want.probe is None or want.artifact.digest is None:
            raise AgentError("E603", f"{model}@{want.version} has no built artifact or probe",
                             reason="NotBuilt")
        active = slots.active_slot(home.path)
        meta = self._meta(desired, work.workload, want, generation)
        journal = self._save(machine.begin_install(
            journal, model=model, version=want.version, variant=want.variant,
            digest=want.artifact.digest, size=want.artifact.size, generation=generation, active=active,
            role=role), path)
        _kill_point("download", model)
        wobs.update_status = "Downloading"
        slot = journal.install.slot
        staged = slots.read_slot(home.path, slot)
        reuse = staged is not None and staged.digest == want.artifact.digest
        if not reuse:
            files = self._download(desired, want)
        journal = self._enter(journal, "stage", path, model)
        if not reuse:
            staged = slots.stage(home.path, slot, meta, files["artifact"], files["golden"], files["extra"])
            _drop_downloads(files)
        trt_engine.stage_engine(staged.path, staged.meta)  # TensorRT classes: the engine, built once per slot
        wobs.update_status = "Staged"
        journal = self._enter(journal, "probe", path, model)
        wobs.update_status = "Probing"
        runner = self._probe(staged, model)
        journal = self._enter(journal, "switch", path, model)
        previous = self.registry.runner_of(model)
        slots.activate(home.path, slot)
        self.registry.set(runner, model)
        wobs.update_status = "Switched"
        journal = self._enter(journal, "confirm", path, model)
        try:
            self._confirm(runner, staged, model)
        except AgentError as exc:
            slots.activate(home.path, journal.install.previous_slot)
            self.registry.set(previous, model)
            if previous is None:
                self._serve_home(home)
            self._save(machine.fail(journal, f"failed after the switch: {exc.message}"), path)
            wobs.rolled_back = exc
            wobs.update_status = "RolledBack"
            return journal_io.load(path)
        journal = self._enter(journal, "commit", path, model)
        journal = self._save(machine.commit(journal), path)
        wobs.update_status = "Committed"
        return journal

    def _download(self, desired, ref) -> dict:
        store = self._store(desired)
        cache = self.state_dir / "downloads"
        cache.mkdir(parents=True, exist_ok=True)
        margin = self.config.free_margin
        total = ref.artifact.size + sum(f.size for f in ref.artifact.files)
        artifacts.check_free_space(cache, 2 * total, margin)  # the download and its staged copy
        art = artifacts.fetch_blob(store, ref.artifact.digest, ref.artifact.size, cache, margin=margin)
        self._check_provenance(desired, ref, store, cache)
        extra = {f.name: artifacts.fetch_blob(store, f.digest, f.size, cache, margin=margin)
                 for f in ref.artifact.files}
        golden = artifacts.fetch_blob(store, ref.probe.golden_input_sha256, 64 * 1024 * 1024, cache,
                                      margin=margin, exact=False)
        return {"artifact": art, "golden": golden, "extra": extra}

    def _check_provenance(self, desired, ref, store: str, cache: Path) -> None:
        """Before anything is staged: the artifact's Sigstore provenance, when the fleet requires it,
        verified offline against the trusted root the device got through TUF (and no other)."""
        from edgefleet.build.store import SIGNATURE
        from edgefleet.pipeline.verify_artifact import staging_refusal
        from edgefleet.signing.verify import VerifyError, verify_fleet_target

        policy = desired.provenance
        if not policy.required:
            return
        root = None
        if policy.trusted_root:
            try:
                root = verify_fleet_target(self._tree, policy.trusted_root, self.config.trusted_root,
                                           self.config.clock(), metadata_cache=self.state_dir / "tuf").data
            except VerifyError as exc:
                raise AgentError("E620", f"the Sigstore trusted root does not verify through TUF: {exc.reason}",
                                 exc.hint, reason="ProvenanceRefused") from None
        bundle = artifacts.fetch_store_file(store, f"keys/{ref.artifact.key}/{SIGNATURE}", cache)
        refusal = staging_refusal(policy, ref.artifact.digest, bundle, root)
        if refusal is not None:
            raise AgentError("E620", f"provenance of {ref.version} refused: {refusal}",
                             "the artifact is not staged; build it in CI (keyless Sigstore signing) or set "
                             "fleet.yaml signing.require_provenance: false", reason="ProvenanceRefused")

    def _probe(self, staged: slots.SlotInfo, model: str) -> Runner:
        from edgefleet.agent.probe import load_golden, run_probe

        meta = staged.meta
        try:
            runner = load_runner(staged.path, meta, meta["runtime"], meta["runtime_config"])
        except AcceleratorUnavailable as exc:
            policy = (meta.get("offline") or {}).get("on_accelerator_failure", "cpu")
            if policy == "stop":
                raise
            self._degraded[model] = f"{exc.message}; probing and serving on the CPU path"
            runner = load_runner(staged.path, meta, meta["runtime"], meta["runtime_config"], cpu=True)
        run_probe(runner, load_golden(staged.path / slots.GOLDEN), meta["probe"], runs=self.config.probe_runs)
        return runner

    def _confirm(self, runner: Runner, staged: slots.SlotInfo, model: str) -> None:
        from edgefleet.agent.probe import confirm, load_golden

        reg = self.registry
        confirm(lambda inputs: reg.infer(inputs, model=model), runner, load_golden(staged.path / slots.GOLDEN),
                self.config.confirm_inferences, self.config.soak_s,
                served=lambda: reg.served_of(model), failures=lambda: reg.failures_of(model))

    def _restage_fallback(self, work: _Work, generation: Generation) -> None:
        """Keep the workload's fallback model staged in its idle slot (never the active one)."""
        home, fb = work.home, work.workload.fallback
        if fb is None or fb.artifact.digest is None or fb.probe is None:
            return
        active = slots.active_slot(home.path)
        info = slots.read_slot(home.path, active, check_digests=False) if active else None
        if info is not None and info.digest == fb.artifact.digest:
            return  # the fallback is what serves
        idle = machine.other(active)
        held = slots.read_slot(home.path, idle)
        if held is not None and held.digest == fb.artifact.digest:
            return
        desired = self.observed.desired
        try:
            files = self._download(desired, fb)
            staged = slots.stage(home.path, idle, self._meta(desired, work.workload, fb, generation),
                                 files["artifact"], files["golden"], files["extra"])
            _drop_downloads(files)
            try:
                self._probe(staged, work.model)
            except AgentError:
                slots.clear(home.path, idle)  # a fallback that fails its probe is no fallback
                raise
        except AgentError as exc:
            work.obs.update_error = work.obs.update_error or exc
        except OSError as exc:  # only the idle slot was written, slot.json last: it reads as empty
            work.obs.update_error = work.obs.update_error or _os_error(exc, work.model)
