"""Stand-in build results for compile tests and the compile benchmark.

Real builds (`edgefleet build`) take seconds to minutes per need; what compile reads
of them is the record's data: key, digest, size, path, precision, recipe, probe. These
are `build.index.BuiltArtifact` values with made-up (but well-formed, deterministic)
digests, so a test of compile or plan does not pay for builds it does not test. The
end-to-end test in test_compile.py uses real builds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgefleet.build.index import ArtifactProbe, BuiltArtifact
from edgefleet.build.store import blob_path
from edgefleet.rules.needs import BuildNeed, needed_builds
from edgefleet.load.repo import FleetRepo

PRECISION = {"onnxruntime": "int8", "openvino": "int8", "tensorrt": "fp16"}


def _hex(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def synthetic_artifact(repo: FleetRepo, need: BuildNeed, salt: str = "") -> BuiltArtifact:
    hardware = repo.hardware[need.hardware_class].doc.spec
    runtime = hardware.runtime.name
    digest = _hex("artifact", str(need), salt)
    golden = _hex("golden", str(need), salt)
    return BuiltArtifact(
        model=need.model, version=need.version, variant="student" if hardware.max_artifact_mb < 1 else "full",
        hardware_class=need.hardware_class, runtime=runtime, runtime_version=hardware.runtime.version,
        precision=PRECISION[runtime], recipe=f"{runtime}-{PRECISION[runtime]}", key=_hex("key", str(need), salt),
        digest=digest, size=100_000 + len(str(need)) * 1000, path=blob_path(digest), artifact_name="model.onnx",
        probe=ArtifactProbe(golden_input_sha256=golden, golden_input_path=blob_path(golden),
                            expected_output={"top1": 7, "logits_sha256": _hex("logits", str(need))},
                            tolerance=0.01, latency_budget_ms=hardware.latency_budget_ms),
    )


def synthetic_artifacts(repo: FleetRepo, salt: str = "") -> dict[BuildNeed, BuiltArtifact]:
    return {need: synthetic_artifact(repo, need, salt) for need in needed_builds(repo)}


def built_store(tmp_path_factory) -> Path:
    """An artifact store holding real builds of the example fleet, shared by the session.

    Keys are content addresses, so a second call (another test module) finds every
    build in the store and costs only the key computation.
    """
    import shutil

    from edgefleet.cli import main
    from tests.conftest import EXAMPLE_FLEET

    base = Path(tmp_path_factory.getbasetemp())
    store = base / "desired-built-store"
    fleet = base / "desired-built-fleet"
    if not fleet.exists():
        shutil.copytree(EXAMPLE_FLEET, fleet, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    code = main(["build", str(fleet), "--store", str(store)])
    assert code == 0, "edgefleet build of the example fleet failed"
    return store
