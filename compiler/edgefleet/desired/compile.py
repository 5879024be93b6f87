"""Compiling a validated fleet and its artifacts into each device's desired state. Pure.

`compile_fleet` prepares everything that can fail once, up front (a missing artifact,
a runtime template that does not render), and reports it all together; then it
returns a generator that walks the devices once and cannot fail. That split is what
lets `edgefleet compile` refuse before writing anything, and stream a million devices
into the TUF publisher without holding them.

Devices of a class share almost everything (runtime, agent settings, the model
builds of each wave), so those parts are serialised to canonical JSON once and each
device's file is assembled from them around its own identity. `join_object` keeps the
result byte-identical to serialising the whole `DesiredState` (a test checks it).

A workload's `activation` (when the device may switch: its spread time and maintenance
windows, see desired/activation.py) is the one member that differs per device; it is
spliced in front of the shared members, and depends only on the rollout, the device and
the time its wave went live, so a later promote leaves the device's bytes alone.

Release counters (Uptane-style, in the target's custom metadata, not in the bytes):
a device whose bytes did not change keeps its counter; one whose bytes changed gets
max(previous + 1, next_release). The caller passes next_release above every counter it
ever issued (the previous tree's snapshot version + 1), so a device removed and added
back never sees its counter go down.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol

from edgefleet.desired.activation import activation_for, windows_for
from edgefleet.desired.canonical import canonical, join_object
from edgefleet.desired.runtime_config import RuntimeConfigError, render_runtime_config, templates_dir
from edgefleet.desired.state import (FORMAT, ArtifactFile, ArtifactRef, ArtifactStoreRef, HealthProbe, ModelRef,
                                     ProvenancePolicy, RolloutRef, RuntimeRef)
from edgefleet.desired.waves import RolloutWaves
from edgefleet.core.diagnostics import Diagnostic, DiagnosticError, error, has_errors
from edgefleet.rules.needs import BuildNeed, needed_builds
from edgefleet.load.repo import FleetRepo
from edgefleet.rules.selectors import matches
from edgefleet.signing import (CUSTOM_DEVICE_ID, CUSTOM_HARDWARE_CLASS, CUSTOM_RELEASE_COUNTER,
                               device_target_path)
from edgefleet.signing.layout import SIGSTORE_TRUSTED_ROOT
from edgefleet.spec import Device, duration_seconds
from edgefleet.spec.fleet import FleetSpec


class ArtifactLike(Protocol):
    """What compile reads of an artifact: `build.index.BuiltArtifact` or `UnbuiltArtifact`."""

    model: str
    version: str
    variant: str
    hardware_class: str
    key: str
    digest: str | None
    size: int
    path: str | None
    precision: str | None
    recipe: str | None


@dataclass(frozen=True, slots=True)
class UnbuiltArtifact:
    """An artifact `plan` previews without building it: key known, bytes not.

    `size` is an estimate (the source model scaled by the preferred recipe's precision).
    """

    model: str
    version: str
    variant: str
    hardware_class: str
    key: str
    size: int
    precision: str | None = None
    recipe: str | None = None
    digest: None = None
    path: None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one rollout gives one device, in short: what `plan` compares."""

    model: str
    rollout: str
    wave: str | None
    wave_index: int | None
    live: bool
    version: str
    variant: str
    artifact: str  # the artifact's digest, or "key:<key>" when not built
    size: int
    fallback: str | None  # the fallback artifact, same form
    fallback_size: int


@dataclass(frozen=True, slots=True)
class CompiledDevice:
    device_id: str
    hardware_class: str
    site: str
    data: bytes  # canonical JSON of the DesiredState, with a trailing newline
    sha256: bytes
    release: int
    assignments: tuple[Assignment, ...]

    @property
    def path(self) -> str:
        return device_target_path(self.device_id)

    @property
    def rollout(self) -> str | None:
        """The rollout(s) that select the device ('a+b' when several models)."""
        return "+".join(a.rollout for a in self.assignments) or None

    @property
    def wave(self) -> str | None:
        waves = [a.wave or "-" for a in self.assignments]
        return "+".join(waves) if waves else None

    def custom(self) -> dict[str, Any]:
        """The Uptane-style custom fields of the device's TUF target."""
        return {CUSTOM_DEVICE_ID: self.device_id, CUSTOM_HARDWARE_CLASS: self.hardware_class,
                CUSTOM_RELEASE_COUNTER: self.release}


# device id -> (its last published release counter, sha256 of its last published bytes);
# (0, None) for a device never published.
PreviousRelease = Callable[[str], tuple[int, bytes | None]]


def no_previous(device_id: str) -> tuple[int, bytes | None]:
    return 0, None


def artifact_id(artifact: ArtifactLike) -> str:
    return artifact.digest or f"key:{artifact.key}"


def compile_fleet(repo: FleetRepo, artifacts: Mapping[BuildNeed, ArtifactLike],
                  previous_release: PreviousRelease = no_previous, *,
                  next_release: int = 1) -> Iterator[CompiledDevice]:
    """Desired state per device, streamed in inventory order.

    Raises DiagnosticError before yielding anything when an artifact is missing or a
    runtime config cannot be rendered; after that, iteration cannot fail.
    """
    compiler, diags = prepare(repo, artifacts)
    if compiler is None:
        raise DiagnosticError(diags)
    return compiler.stream(previous_release, next_release)


def prepare(repo: FleetRepo,
            artifacts: Mapping[BuildNeed, ArtifactLike]) -> tuple[FleetCompiler | None, list[Diagnostic]]:
    """Everything shared by devices, rendered once; or the reasons it cannot be."""
    diags: list[Diagnostic] = []
    refs: dict[BuildNeed, _Build] = {}
    for need in needed_builds(repo):
        artifact = artifacts.get(need)
        if artifact is None:
            diags.append(missing_artifact(repo, need))
            continue
        try:
            refs[need] = _model_ref(repo, need, artifact)
        except RuntimeConfigError as exc:
            diags.append(error(
                "E512", f"runtime config for {need} does not render: {exc}",
                repo.hardware[need.hardware_class].source.at("spec", "runtime", "name"),
                f"fix {templates_dir().name}/{exc.template} (a jinja2 template that must render a JSON object)"))
    if has_errors(diags):
        return None, diags
    return FleetCompiler(repo, refs), diags


def missing_artifact(repo: FleetRepo, need: BuildNeed) -> Diagnostic:
    where = None
    for name in sorted(repo.rollouts):
        spec, src = repo.rollouts[name].doc.spec, repo.rollouts[name].source
        if spec.model == need.model and need.version in (spec.from_version, spec.to_version):
            key = "to_version" if spec.to_version == need.version else "from_version"
            where = src.at("spec", key)
            break
    hardware = repo.hardware[need.hardware_class].source.at("metadata", "name")
    return error("E511", f"artifact {need} is not built", where or hardware,
                 f"run `edgefleet build {repo.display_root}` first (compile never builds)",
                 related=[(hardware, "the hardware class")])


@dataclass(frozen=True, slots=True)
class _Build:
    """One (model, version, class) build as devices get it, serialised once."""

    fragment: bytes  # canonical JSON of its ModelRef
    artifact: str  # artifact_id()
    download: int  # bytes a device fetches for it: the artifact and its extra files
    variant: str


def _model_ref(repo: FleetRepo, need: BuildNeed, artifact: ArtifactLike) -> _Build:
    hardware = repo.hardware[need.hardware_class].doc.spec
    files = [ArtifactFile(name=f.name, digest=f.digest, size=f.size, path=f.path)
             for f in getattr(artifact, "files", ())]
    ref = ArtifactRef(key=artifact.key, name=getattr(artifact, "artifact_name", None), digest=artifact.digest,
                      size=artifact.size, path=artifact.path, precision=artifact.precision,
                      recipe=artifact.recipe, files=sorted(files, key=lambda f: f.name))
    config = render_runtime_config(hardware, ref.model_dump(mode="json"), model=need.model,
                                   version=need.version, variant=artifact.variant)
    model_ref = ModelRef(version=need.version, variant=artifact.variant, artifact=ref, runtime_config=config,
                         probe=_probe(artifact))
    return _Build(canonical(model_ref.model_dump(mode="json")), artifact_id(artifact),
                  artifact.size + sum(f.size for f in files), artifact.variant)


def _probe(artifact: ArtifactLike) -> HealthProbe | None:
    probe = getattr(artifact, "probe", None)
    if probe is None:
        return None
    return HealthProbe.model_validate(probe if isinstance(probe, dict) else probe.model_dump(mode="json"))


@dataclass(frozen=True, slots=True)
class _Rollout:
    name: str
    model: str
    selector: Any
    from_version: str | None
    to_version: str
    waves: RolloutWaves
    spread_seconds: int
    maintenance: tuple  # the spec's MaintenanceWindows
    wave_live_since: tuple[str | None, ...]  # per wave, when it went live (status)
    beyond_live_since: str | None  # devices beyond the last wave: when the rollout completed

    @classmethod
    def of(cls, name: str, doc) -> _Rollout:
        spec, status = doc.spec, doc.status
        since = tuple(status.wave_started.get(w.name) or (status.since if i == status.current_wave else None)
                      for i, w in enumerate(spec.waves))
        return cls(name, spec.model, spec.selector, spec.from_version, spec.to_version,
                   RolloutWaves.of(name, spec, status), duration_seconds(spec.spread), tuple(spec.maintenance),
                   since, status.since if status.phase == "complete" else None)

    def activation(self, device: Device, wave: int | None) -> bytes:
        """Canonical JSON of the device's activation (a device with a switch to make)."""
        since = self.beyond_live_since if wave is None else self.wave_live_since[wave]
        windows = windows_for(device, self.maintenance) if self.maintenance else []
        activation = activation_for(self.name, device.id, since, self.spread_seconds, windows)
        return b"null" if activation is None else canonical(activation.model_dump(mode="json"))


class _Template:
    """A canonical JSON object with holes: the parts every device of a class shares."""

    def __init__(self, members: Mapping[str, bytes | None]):
        marker = {name: b"\0" if value is None else value for name, value in members.items()}
        self.holes = [name for name in sorted(members, key=lambda n: n.encode("utf-16-be")) if members[name] is None]
        self.parts = join_object(marker).split(b"\0")
        assert len(self.parts) == len(self.holes) + 1

    def fill(self, *values: bytes) -> bytes:
        out = [self.parts[0]]
        for value, part in zip(values, self.parts[1:]):
            out += (value, part)
        return b"".join(out)


class FleetCompiler:
    """Prepared state of one compile; `device()` assembles one device's file."""

    def __init__(self, repo: FleetRepo, refs: Mapping[BuildNeed, _Build]):
        self.repo = repo
        self.refs = refs
        spec: FleetSpec = repo.fleet.doc.spec
        store = ArtifactStoreRef(kind=spec.artifact_store.kind, url=spec.artifact_store.url)
        signing = spec.signing
        provenance = ProvenancePolicy(
            required=signing.require_provenance, identity=signing.identity, issuer=signing.issuer,
            repository=signing.repository, trusted_root=SIGSTORE_TRUSTED_ROOT if signing.trusted_root else None)
        shared = {
            "agent": canonical(spec.agent.model_dump(mode="json")),
            "artifact_store": canonical(store.model_dump(mode="json")),
            "fleet": canonical(repo.fleet.doc.metadata.name),
            "format": canonical(FORMAT),
            "provenance": canonical(provenance.model_dump(mode="json")),
        }
        self.templates: dict[str, _Template] = {}
        for name, loaded in repo.hardware.items():
            hw = loaded.doc.spec
            runtime = RuntimeRef(name=hw.runtime.name, version=hw.runtime.version, device=hw.runtime.device)
            template = _Template({**shared, "device": None, "workloads": None,
                                  "offline": canonical(hw.offline.model_dump(mode="json")),
                                  "runtime": canonical(runtime.model_dump(mode="json"))})
            assert template.holes == ["device", "workloads"]
            self.templates[name] = template
        self.rollouts = [
            _Rollout.of(name, r.doc)
            for name, r in sorted(repo.rollouts.items(), key=lambda item: (item[1].doc.spec.model, item[0]))
        ]
        self._workloads: dict[tuple, tuple[bytes, Assignment] | None] = {}

    def stream(self, previous_release: PreviousRelease, next_release: int) -> Iterator[CompiledDevice]:
        """Every device in inventory order; reads the inventory, never changes it.

        Each state is made as it is asked for and not kept, so the caller (the publisher)
        holds one device's bytes at a time beside the inventory.
        """
        for loaded in self.repo.devices:
            yield self.device(loaded.doc, previous_release, next_release)

    def device(self, device: Device, previous_release: PreviousRelease = no_previous,
               next_release: int = 1) -> CompiledDevice:
        fragments: list[bytes] = []
        assignments: list[Assignment] = []
        for rollout in self.rollouts:
            if not matches(rollout.selector, device):
                continue
            place = rollout.waves.place(device)
            workload = self._workload(rollout, device.hardware_class, place.wave, place.live)
            if workload is not None:
                rest, assignment = workload
                # "activation" sorts before every other member: the object starts with it.
                switching = place.live and rollout.from_version is not None
                activation = rollout.activation(device, place.wave) if switching else b"null"
                fragments.append(b'{"activation":' + activation + b"," + rest[1:])
                assignments.append(assignment)
        identity = identity_json(device)
        data = self.templates[device.hardware_class].fill(identity, b"[" + b",".join(fragments) + b"]") + b"\n"
        digest = hashlib.sha256(data).digest()
        counter, before = previous_release(device.id)
        release = counter if (counter > 0 and before == digest) else max(counter + 1, next_release)
        return CompiledDevice(device.id, device.hardware_class, device.site, data, digest, release,
                              tuple(assignments))

    def _workload(self, rollout: _Rollout, hardware_class: str, wave: int | None,
                  live: bool) -> tuple[bytes, Assignment] | None:
        key = (rollout.name, hardware_class, wave, live)
        if key not in self._workloads:
            self._workloads[key] = self._make_workload(rollout, hardware_class, wave, live)
        return self._workloads[key]

    def _make_workload(self, rollout: _Rollout, hardware_class: str, wave: int | None,
                       live: bool) -> tuple[bytes, Assignment] | None:
        run_version = rollout.to_version if live else rollout.from_version
        if run_version is None:
            return None  # no from_version: the device runs nothing of this model before its wave
        run = self.refs[BuildNeed(rollout.model, run_version, hardware_class)]
        fallback = None
        if live and rollout.from_version is not None:
            fallback = self.refs[BuildNeed(rollout.model, rollout.from_version, hardware_class)]
        wave_name = rollout.waves.wave_name(wave)
        data = join_object({  # every member but "activation", which is per device
            "model": canonical(rollout.model),
            "rollout": canonical(RolloutRef(name=rollout.name, wave=wave_name).model_dump(mode="json")),
            "run": run.fragment,
            "fallback": fallback.fragment if fallback else b"null",
        })
        assignment = Assignment(
            model=rollout.model, rollout=rollout.name, wave=wave_name, wave_index=wave, live=live,
            version=run_version, variant=run.variant, artifact=run.artifact, size=run.download,
            fallback=fallback.artifact if fallback else None, fallback_size=fallback.download if fallback else 0)
        return data, assignment


# Printable ASCII without '"' and '\\': such strings are their own JSON, under RFC 8785 too.
_PLAIN = re.compile(r'[ !#-\[\]-~]*')


def identity_json(device: Device) -> bytes:
    """Canonical JSON of the device's identity member; the per-device hot path.

    Ids, classes and sites are plain by their schema patterns; labels usually are. For
    plain strings, sorted keys (ASCII: code point order = UTF-16 order) and quoted
    values are exactly RFC 8785, at a fifth of the cost; anything else goes through
    rfc8785 itself (a test compares the two).
    """
    labels = device.labels
    if all(_PLAIN.fullmatch(k) and _PLAIN.fullmatch(v) for k, v in labels.items()):
        pairs = ",".join(f'"{k}":"{labels[k]}"' for k in sorted(labels))
        return (f'{{"hardware_class":"{device.hardware_class}","id":"{device.id}","labels":{{{pairs}}},'
                f'"site":"{device.site}"}}').encode()
    return canonical({"id": device.id, "hardware_class": device.hardware_class, "site": device.site,
                      "labels": labels})


def compile_all(repo: FleetRepo, artifacts: Mapping[BuildNeed, ArtifactLike]) -> dict[str, CompiledDevice]:
    """Every device's state in memory, by id (tests and `plan`; compile itself streams)."""
    return {d.device_id: d for d in compile_fleet(repo, artifacts)}
