"""What the compile step needs to know of built artifacts, looked up by need.

`lookup_artifact` computes a need's key from the repository as it is now (so an edited
model, recipe or toolchain finds nothing instead of a stale artifact) and reads that
key's build record from the store. That read is the store's verified one (`Store.get_record`
re-hashes every blob the record names), so a digest signed into a desired state is the
digest of bytes that are really in the store; a corrupt entry raises `StoreCorrupt` (E416),
which the commands report as an input error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from edgefleet.build.key import FileDigests, artifact_key
from edgefleet.build.record import BuildRecord
from edgefleet.build.resolve import resolve_need
from edgefleet.build.store import Store, blob_path, open_store
from edgefleet.rules.needs import BuildNeed, needed_builds
from edgefleet.load.repo import FleetRepo


class ArtifactProbe(BaseModel):
    """The health probe as the desired state carries it (desired.state.HealthProbe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    golden_input_sha256: str
    golden_input_path: str  # relative to the artifact store
    expected_output: Any
    tolerance: float
    latency_budget_ms: float


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    digest: str
    size: int
    path: str  # relative to the artifact store


@dataclass(frozen=True, slots=True)
class BuiltArtifact:
    model: str
    version: str
    variant: str
    hardware_class: str
    runtime: str
    runtime_version: str
    precision: str
    recipe: str
    key: str
    digest: str
    size: int
    path: str  # relative to the artifact store: blobs/sha256/<digest>
    artifact_name: str
    probe: ArtifactProbe | None
    files: tuple[StoredFile, ...] = ()  # extra output files (e.g. a TensorRT build spec)


def artifact_from_record(record: BuildRecord) -> BuiltArtifact:
    probe = None
    if record.probe is not None:
        probe = ArtifactProbe(
            golden_input_sha256=record.probe.input.sha256,
            golden_input_path=blob_path(record.probe.input.sha256),
            expected_output=record.probe.expected_output,
            tolerance=record.probe.tolerance,
            latency_budget_ms=record.probe.latency_budget_ms,
        )
    return BuiltArtifact(
        model=record.model,
        version=record.version,
        variant=record.variant,
        hardware_class=record.hardware_class,
        runtime=str(record.runtime.get("name", "")),
        runtime_version=str(record.runtime.get("version", "")),
        precision=record.precision,
        recipe=str(record.recipe.get("name", "")),
        key=record.key,
        digest=record.artifact.sha256,
        size=record.artifact.size,
        path=blob_path(record.artifact.sha256),
        artifact_name=record.artifact.name,
        probe=probe,
        files=tuple(StoredFile(f.name, f.sha256, f.size, blob_path(f.sha256)) for f in record.files),
    )


def default_store(repo: FleetRepo) -> Store:
    config = repo.fleet.doc.spec.artifact_store if repo.fleet else None
    return open_store(repo.root, config, display_root=repo.display_root)


def lookup_artifact(repo: FleetRepo, need: BuildNeed, store: Store | None = None,
                    file_sha256: Callable[[str], str] | None = None) -> BuiltArtifact | None:
    """The stored artifact for a need of a validated repository, or None if not built."""
    resolved, diags = resolve_need(repo, need)
    if resolved is None or any(d.is_error for d in diags):
        return None
    try:
        key = artifact_key(resolved, file_sha256 or FileDigests(repo.root))
    except OSError:
        return None  # an input file is missing: nothing can have been built from it
    record = (store or default_store(repo)).get_record(key)
    return artifact_from_record(record) if record is not None else None


def built_artifacts(repo: FleetRepo, store: Store | None = None) -> dict[BuildNeed, BuiltArtifact]:
    """Every needed build that is in the store (missing ones are left out)."""
    store = store or default_store(repo)
    digests = FileDigests(repo.root)
    out: dict[BuildNeed, BuiltArtifact] = {}
    for need in needed_builds(repo):
        found = lookup_artifact(repo, need, store, digests)
        if found is not None:
            out[need] = found
    return out
