"""The content address of an artifact: a hash of everything that can change its bytes.

key = sha256(JCS(KeyInputs)), where KeyInputs holds the source model's sha256, the
variant, the resolved recipe chain, the sha256 of the calibration and evaluation data,
the class's runtime and every limit a gate judges, the toolchain versions, and a format
version. Names (model, version, class) are part of it too, so one key is one need and
its build record and provenance can name them exactly; identical artifact bytes are
still stored once, by digest.

`artifact_key` is the one place a key is derived (from `key_inputs`/`key_of`, which are
pure); file hashes come in through `FileDigests`, the only place that reads files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping

import rfc8785
from pydantic import BaseModel, ConfigDict

from edgefleet.build.resolve import ResolvedNeed
from edgefleet.core.fsutil import sha256_file  # noqa: F401 - re-exported for the build's callers
from edgefleet.core.paths import resolve_inside

# Bump when the meaning of a key changes (new input, different recipe semantics):
# every artifact is then rebuilt once instead of a stale one being reused.
KEY_FORMAT = "edgefleet/artifact-key/v1"


class KeyInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = KEY_FORMAT
    model: str
    version: str
    hardware_class: str
    variant: str
    source_sha256: str
    recipes: list[dict[str, Any]]
    calibration_sha256: str | None
    evaluation_sha256: str | None
    accuracy: dict[str, Any] | None
    runtime: dict[str, Any]
    precisions: list[str]
    limits: dict[str, Any]
    toolchain: dict[str, str]




class FileDigests:
    """sha256 of repository files, each read once per run (the I/O edge of keys)."""

    def __init__(self, root: Path):
        self.root = root
        self._cache: dict[str, str] = {}

    def __call__(self, relative: str) -> str:
        if relative not in self._cache:
            self._cache[relative] = sha256_file(resolve_inside(self.root, relative))
        return self._cache[relative]


def key_inputs(resolved: ResolvedNeed, file_sha256: Callable[[str], str],
               toolchain: Mapping[str, str]) -> KeyInputs:
    """Everything that decides the artifact's bytes and whether it passes its gates. Pure."""
    need = resolved.need
    return KeyInputs(
        model=need.model,
        version=need.version,
        hardware_class=need.hardware_class,
        variant=resolved.variant.name,
        # The bytes' real hash, not the declared one: a wrong declaration is caught
        # before building, and the key must never trust a YAML claim.
        source_sha256=file_sha256(resolved.variant.source),
        recipes=[r.model_dump(mode="json") for r in resolved.recipes],
        calibration_sha256=file_sha256(resolved.calibration.path) if resolved.calibration else None,
        evaluation_sha256=file_sha256(resolved.evaluation.path) if resolved.evaluation else None,
        accuracy=resolved.accuracy.model_dump(mode="json") if resolved.accuracy else None,
        runtime=resolved.runtime.model_dump(mode="json"),
        precisions=list(resolved.precisions),
        limits={
            "max_artifact_bytes": resolved.max_artifact_bytes,
            "latency_budget_ms": resolved.latency_budget_ms,
            "batch_size": resolved.batch_size,
            "input": resolved.input.model_dump(mode="json") if resolved.input else None,
            "model_ram_budget_mb": resolved.model_ram_budget_mb,
            "requires_accuracy_gate": resolved.requires_accuracy_gate,
            # reduce_range defaults by CPU; TensorRT build specs name the GPU generation
            "cpu_arch": resolved.cpu_arch,
            "compute_capability": resolved.compute_capability,
        },
        toolchain=dict(toolchain),
    )


def key_of(inputs: KeyInputs) -> str:
    return hashlib.sha256(rfc8785.dumps(inputs.model_dump(mode="json"))).hexdigest()


def toolchain_for(resolved: ResolvedNeed) -> dict[str, str]:
    from edgefleet.build.engine import toolchain_versions

    return dict(toolchain_versions(resolved.runtime))


def artifact_key(resolved: ResolvedNeed, file_sha256: Callable[[str], str],
                 toolchain: Mapping[str, str] | None = None) -> str:
    """The content address of a resolved need: the one derivation build, plan, compile and
    explain use (`toolchain`: pass the versions already asked for this runtime, else they are read)."""
    return key_of(key_inputs(resolved, file_sha256, toolchain_for(resolved) if toolchain is None else toolchain))
