"""The thin driver: one reconcile cycle of the device, doing the I/O the pure machine asks for.

    fetch -> verify -> download -> stage -> probe -> switch -> confirm -> commit

Each step is entered through `machine.enter` and the journal is saved (durably) before the
step's work starts; `EDGEFLEET_AGENT_TEST_KILL_AT=<step>` (test-only) makes the agent
SIGKILL itself right after that save, which is how the crash tests kill it in every state.
On start, `Agent.start` replays the journal (`machine.recover`) before serving.

What never happens: the active slot changes outside `switch` or a rollback; a model that
did not pass its probe serves; a model is last-known-good before `confirm`; a failure of any
step stops the current model from serving.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from edgefleet.agent import artifacts, machine, slots, trt_engine
from edgefleet.agent import journal as journal_io
from edgefleet.agent.errors import AgentError
from edgefleet.agent.journal import Generation, Journal
from edgefleet.agent.registry import Registry
from edgefleet.agent.runner import AcceleratorUnavailable, Runner, load_runner

TEST_KILL_AT = "EDGEFLEET_AGENT_TEST_KILL_AT"
JOURNAL = "journal.json"


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
class CycleResult:
    in_sync: bool                      # serving what the verified desired state asks
    reason: str                        # why not (or what happened)
    changed: bool = False              # the remote moved
    code: str | None = None            # E6xx/E5xx of the failure, if any
    offline: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)   # (condition type, status/reason)


@dataclass
class Observed:
    """What the cycle learned, for conditions and the report."""

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


def _drop_downloads(files: dict) -> None:
    """Staged copies are the durable ones; the download cache would double the storage."""
    for path in [files["artifact"], files["golden"], *files["extra"].values()]:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _kill_point(step: str) -> None:
    if os.environ.get(TEST_KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class Agent:
    def __init__(self, config: AgentConfig, registry: Registry | None = None):
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.registry = registry or Registry()
        self.journal_path = self.state_dir / JOURNAL
        self.degraded: str | None = None
        self.observed = Observed()
        self._tree: Path | None = None  # the fetched desired-state tree of this cycle

    # -- journal -------------------------------------------------------------------------
    def _save(self, journal: Journal) -> Journal:
        journal_io.save(self.journal_path, journal)
        return journal

    def _enter(self, journal: Journal, step: str) -> Journal:
        journal = self._save(machine.enter(journal, step))
        _kill_point(step)
        return journal

    # -- start: replay the journal, then serve ---------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        before = journal_io.load(self.journal_path)
        recovery = machine.recover(before)
        journal = recovery.journal
        if recovery.action == "rollback":
            slots.activate(self.state_dir, recovery.restore_slot)
        elif recovery.action == "finish_commit":
            slots.activate(self.state_dir, journal.install.slot)  # already switched: idempotent
            journal = machine.commit(journal)
        if journal != before:
            self._save(journal)
        active = slots.active_slot(self.state_dir)
        if active is not None and active != journal.committed and journal.committed is not None:
            slots.activate(self.state_dir, journal.committed)  # a switch not yet committed
        self.serve_active()

    def serve_active(self) -> None:
        """Load what the active slot holds (or the class's fallback path) into the registry.

        An active slot whose files no longer match their digests (disk corruption) is not
        served; the other slot's model is, degraded, until the next cycle re-installs.
        """
        active = slots.active_slot(self.state_dir)
        info = slots.read_slot(self.state_dir, active) if active else None
        if info is None:
            other = slots.read_slot(self.state_dir, machine.other(active)) if active else None
            if other is not None:
                self.degraded = f"slot {active} failed its digest check; serving slot {other.slot}"
                try:
                    self.registry.set(load_runner(other.path, other.meta, other.meta["runtime"],
                                                  other.meta["runtime_config"], cpu=True))
                    return
                except AgentError:
                    pass
            self.registry.set(None)
            return
        self.registry.set(self._load_for_serving(info))

    def _load_for_serving(self, info: slots.SlotInfo) -> Runner | None:
        meta = info.meta
        try:
            runner = load_runner(info.path, meta, meta["runtime"], meta["runtime_config"])
            self.degraded = None
            return runner
        except AcceleratorUnavailable as exc:
            policy = (meta.get("offline") or {}).get("on_accelerator_failure", "cpu")
            self.degraded = f"{exc.message}; on_accelerator_failure: {policy}"
            if policy == "stop":
                return None
            if policy == "fallback_model":
                other = slots.read_slot(self.state_dir, machine.other(info.slot))
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
        if self.degraded:
            self.serve_active()  # the accelerator may be back
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
                                     last_counter=journal.last_counter,
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
        except AgentError as exc:
            obs.refused = exc
            self._save(machine.finish(journal))
            return self._result(False, exc.message, exc.code)
        obs.desired = desired
        workload = desired.workloads[0]
        want, role = self._choose(workload)
        obs.want_version = want.version
        try:
            journal = self._reconcile(journal, desired, workload, want, role, generation)
        except AgentError as exc:
            obs.update_error = exc
            obs.update_status = "ProbeFailed" if exc.code in ("E608", "E609", "E610") else "UpdateFailed"
            journal = journal_io.load(self.journal_path)
            probe_failed = exc.code in ("E608", "E609")  # E610 (slow) is retried: load varies
            if journal.install is not None and journal.step in ("download", "stage", "probe"):
                held = slots.read_slot(self.state_dir, journal.install.slot, check_digests=False)
                if held is not None and held.digest == journal.install.digest and probe_failed:
                    slots.clear(self.state_dir, journal.install.slot)  # never leave a refused build staged
            self._save(machine.fail(journal, exc.message, permanent=probe_failed))
            self._restage_fallback(workload, generation)
            return self._result(False, f"{exc.message}; serving {self._serving_text()}", exc.code)
        in_sync = self._serves(want.artifact.digest)
        journal = journal_io.load(self.journal_path)
        self._save(machine.finish(machine.in_sync(journal, generation) if in_sync else journal))
        if in_sync:
            self._restage_fallback(workload, generation)
        why = machine.given_up(journal, want.artifact.digest, generation) or self.degraded or "pending"
        reason = (f"serving {self._serving_text()}" if in_sync else
                  f"not serving {want.version}: {why}; serving {self._serving_text()}")
        code = None
        if not in_sync:
            code = self.observed.rolled_back.code if self.observed.rolled_back else ("E612" if self.degraded else None)
        return self._result(in_sync, reason, code, changed=fetched.changed)

    def _result(self, ok: bool, reason: str, code: str | None, offline: bool = False,
                changed: bool = False) -> CycleResult:
        self.observed.degraded = self.degraded
        return CycleResult(ok, reason, changed, code, offline)

    def _serving_text(self) -> str:
        r = self.registry.runner
        return f"{r.name}@{r.version} ({r.variant}, slot {r.slot})" if r else "nothing"

    def _active_holds(self, digest: str) -> bool:
        """The active slot holds `digest`, its files intact (hashing them costs milliseconds per poll)."""
        active = slots.active_slot(self.state_dir)
        info = slots.read_slot(self.state_dir, active) if active else None
        return info is not None and info.digest == digest

    def _serves(self, digest: str) -> bool:
        """The active slot holds `digest` and it is what answers (not a fallback of a degraded device)."""
        runner = self.registry.runner
        return self._active_holds(digest) and runner is not None and runner.digest == digest

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
        return desired

    def _choose(self, workload):
        """The run version, or the fallback while the activation window is closed."""
        activation = getattr(workload, "activation", None)
        if activation is not None and workload.fallback is not None:
            from edgefleet.desired.activation import activation_allowed

            if not activation_allowed(activation, self.config.clock()):
                self.observed.update_status = "Waiting"
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

    def _reconcile(self, journal: Journal, desired, workload, want, role, generation) -> Journal:
        if self._active_holds(want.artifact.digest):
            return journal  # installed; a degraded device retries its accelerator each cycle
        why = machine.given_up(journal, want.artifact.digest, generation)
        if why is not None:
            self.observed.update_status = "RolledBack" if "after the switch" in why else "UpdateFailed"
            return journal
        journal = machine.retry(journal, want.artifact.digest)
        if want.probe is None or want.artifact.digest is None:
            raise AgentError("E603", f"{workload.model}@{want.version} has no built artifact or probe",
                             reason="NotBuilt")
        active = slots.active_slot(self.state_dir)
        meta = self._meta(desired, workload, want, generation)
        journal = self._save(machine.begin_install(
            journal, model=workload.model, version=want.version, variant=want.variant,
            digest=want.artifact.digest, size=want.artifact.size, generation=generation, active=active, role=role))
        _kill_point("download")
        self.observed.update_status = "Downloading"
        slot = journal.install.slot
        staged = slots.read_slot(self.state_dir, slot)
        reuse = staged is not None and staged.digest == want.artifact.digest
        if not reuse:
            files = self._download(desired, want)
        journal = self._enter(journal, "stage")
        if not reuse:
            staged = slots.stage(self.state_dir, slot, meta, files["artifact"], files["golden"], files["extra"])
            _drop_downloads(files)
        trt_engine.stage_engine(staged.path, staged.meta)  # TensorRT classes: the engine, built once per slot
        self.observed.update_status = "Staged"
        journal = self._enter(journal, "probe")
        self.observed.update_status = "Probing"
        runner = self._probe(staged)
        journal = self._enter(journal, "switch")
        previous = self.registry.runner
        slots.activate(self.state_dir, slot)
        self.registry.set(runner)
        self.observed.update_status = "Switched"
        journal = self._enter(journal, "confirm")
        try:
            self._confirm(runner, staged)
        except AgentError as exc:
            slots.activate(self.state_dir, journal.install.previous_slot)
            self.registry.set(previous)
            if previous is None:
                self.serve_active()
            self._save(machine.fail(journal, f"failed after the switch: {exc.message}"))
            self.observed.rolled_back = exc
            self.observed.update_status = "RolledBack"
            return journal_io.load(self.journal_path)
        journal = self._enter(journal, "commit")
        journal = self._save(machine.commit(journal))
        self.observed.update_status = "Committed"
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

    def _probe(self, staged: slots.SlotInfo) -> Runner:
        from edgefleet.agent.probe import load_golden, run_probe

        meta = staged.meta
        try:
            runner = load_runner(staged.path, meta, meta["runtime"], meta["runtime_config"])
        except AcceleratorUnavailable as exc:
            policy = (meta.get("offline") or {}).get("on_accelerator_failure", "cpu")
            if policy == "stop":
                raise
            self.degraded = f"{exc.message}; probing and serving on the CPU path"
            runner = load_runner(staged.path, meta, meta["runtime"], meta["runtime_config"], cpu=True)
        run_probe(runner, load_golden(staged.path / slots.GOLDEN), meta["probe"], runs=self.config.probe_runs)
        return runner

    def _confirm(self, runner: Runner, staged: slots.SlotInfo) -> None:
        from edgefleet.agent.probe import confirm, load_golden

        reg = self.registry
        confirm(reg.infer, runner, load_golden(staged.path / slots.GOLDEN), self.config.confirm_inferences,
                self.config.soak_s, served=lambda: reg.served, failures=lambda: reg.failures)

    def _restage_fallback(self, workload, generation: Generation) -> None:
        """Keep the desired state's fallback model staged in the idle slot (never the active one)."""
        fb = workload.fallback
        if fb is None or fb.artifact.digest is None or fb.probe is None:
            return
        active = slots.active_slot(self.state_dir)
        info = slots.read_slot(self.state_dir, active, check_digests=False) if active else None
        if info is not None and info.digest == fb.artifact.digest:
            return  # the fallback is what serves
        idle = machine.other(active)
        held = slots.read_slot(self.state_dir, idle)
        if held is not None and held.digest == fb.artifact.digest:
            return
        desired = self.observed.desired
        try:
            files = self._download(desired, fb)
            staged = slots.stage(self.state_dir, idle, self._meta(desired, workload, fb, generation),
                                 files["artifact"], files["golden"], files["extra"])
            _drop_downloads(files)
            try:
                self._probe(staged)
            except AgentError:
                slots.clear(self.state_dir, idle)  # a fallback that fails its probe is no fallback
                raise
        except AgentError as exc:
            self.observed.update_error = self.observed.update_error or exc
