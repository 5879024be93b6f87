"""The build record: what went into an artifact, how it was made, and how it was judged.

One record per key, stored as canonical JSON (RFC 8785 / JCS) beside the artifact. It
lists the input files with their hashes, the recipe chain tried and the one chosen,
every attempt with its gate numbers, the measured metrics, the toolchain, the health
probe, and every output file by digest. Measured values (latency) differ from run to
run; the artifact bytes and the provenance statement do not.
"""

from __future__ import annotations

import base64
import hashlib
import dataclasses
import enum
import math
from pathlib import PurePath
from typing import Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

RECORD_FORMAT = "edgefleet/build-record/v1"


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Rec):
    name: str
    sha256: str
    size: int


class InputRef(_Rec):
    role: Literal["source", "calibration", "evaluation"]
    path: str  # relative to the fleet repository root
    sha256: str


class GateRecord(_Rec):
    name: str
    value: Any = None
    limit: Any = None
    passed: bool
    detail: str = ""


class AttemptRecord(_Rec):
    recipe: str
    passed: bool
    reason: str = ""
    gates: list[GateRecord] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)  # sizes, latency, accuracy, notes


class ProbeRecord(_Rec):
    """The device's health probe: a golden input (stored by digest) and what it must give."""

    input: FileRef  # the golden input, an .npy file
    expected_output: Any
    tolerance: float
    latency_budget_ms: float
    extra: dict[str, Any] = Field(default_factory=dict)  # anything else the engine states about it


class BuildRecord(_Rec):
    format: Literal["edgefleet/build-record/v1"] = RECORD_FORMAT
    key: str
    model: str
    version: str
    variant: str
    hardware_class: str
    runtime: dict[str, Any]
    precisions: list[str]
    inputs: list[InputRef]
    recipes: list[dict[str, Any]]  # the resolved chain, in the order it was tried
    recipe: dict[str, Any]  # the one that passed
    artifact: FileRef
    files: list[FileRef] = Field(default_factory=list)  # extra output files, by name
    attempts: list[AttemptRecord]
    metrics: dict[str, Any] = Field(default_factory=dict)
    toolchain: dict[str, str]
    probe: ProbeRecord | None = None

    @property
    def precision(self) -> str:
        return str(self.recipe.get("precision", ""))

    def blobs(self) -> list[FileRef]:
        out = [self.artifact, *self.files]
        if self.probe is not None:
            out.append(self.probe.input)
        return out


def record_bytes(record: BuildRecord) -> bytes:
    return rfc8785.dumps(record.model_dump(mode="json"))


def parse_record(raw: bytes) -> BuildRecord:
    return BuildRecord.model_validate_json(raw)


def plain(value: Any) -> Any:
    """JSON-ready form of engine values (dataclasses, pydantic, numpy, bytes).

    JCS has no NaN or infinity; a gate that could not measure reports None instead.
    """
    if isinstance(value, BaseModel):
        return plain(value.model_dump(mode="python"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, PurePath):
        return value.as_posix()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


# -- from the engine's outcome ----------------------------------------------------------

PROBE_INPUT_NAME = "probe-input.npy"


def _ref(name: str, data: bytes) -> FileRef:
    return FileRef(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def attempt_records(attempts) -> list[AttemptRecord]:
    return [
        AttemptRecord(
            recipe=str(getattr(a.recipe, "name", a.recipe)),
            passed=bool(a.passed),
            reason=str(a.reason or ""),
            gates=[GateRecord(name=str(g.name), value=plain(g.value), limit=plain(g.limit),
                              passed=bool(g.passed), detail=str(g.detail or "")) for g in a.gates],
            metrics=plain(dict(getattr(a, "metrics", None) or {})),
        )
        for a in attempts
    ]


def record_from_outcome(key: str, resolved, inputs, toolchain, outcome) -> tuple[BuildRecord | None, dict[str, bytes]]:
    """The record and the files (name -> bytes) of a build that passed; (None, {}) if none did."""
    if outcome.artifact is None or outcome.chosen is None:
        return None, {}
    files: dict[str, bytes] = {outcome.artifact_name: bytes(outcome.artifact)}
    for name, data in sorted(outcome.extra_files.items()):
        files[name] = bytes(data)
    probe = None
    if outcome.probe is not None:
        probe, golden = _probe_record(outcome.probe)
        files[probe.input.name] = golden
    need = resolved.need
    record = BuildRecord(
        key=key,
        model=need.model,
        version=need.version,
        variant=resolved.variant.name,
        hardware_class=need.hardware_class,
        runtime=resolved.runtime.model_dump(mode="json"),
        precisions=list(resolved.precisions),
        inputs=list(inputs),
        recipes=[r.model_dump(mode="json") for r in resolved.recipes],
        recipe=outcome.chosen.model_dump(mode="json"),
        artifact=_ref(outcome.artifact_name, files[outcome.artifact_name]),
        files=[_ref(name, files[name]) for name in sorted(outcome.extra_files)],
        attempts=attempt_records(outcome.attempts),
        metrics=plain(dict(outcome.metrics)),
        toolchain=dict(toolchain),
        probe=probe,
    )
    return record, files


def _probe_record(probe) -> tuple[ProbeRecord, bytes]:
    data = plain(probe)
    golden = bytes(probe.input_npy)
    for known in ("input_npy", "input_sha256", "expected_output", "tolerance", "latency_budget_ms"):
        data.pop(known, None)
    record = ProbeRecord(
        input=_ref(PROBE_INPUT_NAME, golden),
        expected_output=plain(probe.expected_output),
        tolerance=float(probe.tolerance),
        latency_budget_ms=float(probe.latency_budget_ms),
        extra=data,
    )
    return record, golden
