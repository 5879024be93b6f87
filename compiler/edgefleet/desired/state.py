"""The per-device desired state: what one device must run. The one definition of the format.

`edgefleet compile` writes one such document per device as `devices/<hh>/<h>/<id>.json` (signing/layout.py) in the
signed TUF tree; the agent reads it after verifying it offline. The JSON Schema
`schemas/desiredstate.schema.json` is generated from these models.

Rules that keep a device's file stable (same inputs, same bytes; git shows no change):
no timestamps but a workload's activation time (fixed once its wave went live), no
absolute paths, no rollout phase (pausing a rollout moves nothing),
lists in a fixed order. The monotonic release counter is not in here: it is the
Uptane-style `custom.release` of the device's TUF target, so bytes stay the same when
nothing changed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgefleet.desired.activation import Activation
from edgefleet.spec.common import Name, Precision, Runtime, SemVer, Sha256, Strict
from edgefleet.spec.device import DeviceId
from edgefleet.spec.fleet import AgentSettings
from edgefleet.spec.hardware import OfflinePolicy

FORMAT = "edgefleet/desired-state/v1"


class DeviceIdentity(Strict):
    id: DeviceId
    hardware_class: Name
    site: Name
    labels: dict[str, str] = Field(default_factory=dict)


class RuntimeRef(Strict):
    name: Runtime
    version: str = Field(description="runtime version on the device")
    device: str = Field(description="OpenVINO device, onnxruntime execution provider, or GPU for TensorRT")


class ArtifactStoreRef(Strict):
    kind: Literal["local", "repo", "object"]
    url: str | None = Field(None, description="object store URL for kind object; else the agent's configured mirror")


class ArtifactFile(Strict):
    """An extra output file of a build (e.g. OpenVINO weights, a TensorRT build spec)."""

    name: str = Field(description="file name the runtime expects beside the artifact")
    digest: Sha256
    size: int = Field(ge=0)
    path: str = Field(description="location inside the fleet's artifact store (relative)")


class ArtifactRef(Strict):
    key: str = Field(description="content address of the build inputs (source, recipe, data, toolchain)")
    name: str | None = Field(None, description="file name of the artifact as the runtime loads it")
    digest: Sha256 | None = Field(
        description="sha256 of the artifact's bytes; the agent fetches by digest and checks it. "
                    "null only in `edgefleet plan` previews of artifacts not built yet")
    size: int = Field(ge=0, description="bytes (an estimate in plan previews of artifacts not built yet)")
    path: str | None = Field(description="location inside the fleet's artifact store (relative)")
    precision: Precision | None = None
    recipe: str | None = Field(None, description="the optimization recipe that passed the gates")
    files: list[ArtifactFile] = Field(default_factory=list, description="extra files to fetch with it, by name")


class HealthProbe(Strict):
    """What the agent checks on a staged model before switching to it."""

    golden_input_sha256: Sha256 = Field(description="digest of the probe input stored beside the artifact")
    golden_input_path: str | None = Field(None, description="location of the probe input in the artifact store")
    expected_output: Any = Field(description="reference output of the probe input")
    tolerance: float = Field(ge=0, description="largest allowed absolute difference from expected_output")
    latency_budget_ms: float = Field(gt=0, description="the probe fails when one inference takes longer")


class ModelRef(Strict):
    """One model build for this device: the artifact, how to run it and how to check it."""

    version: SemVer
    variant: Name
    artifact: ArtifactRef
    runtime_config: dict[str, Any] = Field(description="rendered from templates/runtime/<runtime>.json.j2")
    probe: HealthProbe | None = Field(description="null only in plan previews of artifacts not built yet")


class RolloutRef(Strict):
    name: Name
    wave: Name | None = Field(description="the device's wave; null when beyond the last wave's share")


class Workload(Strict):
    """One model the device runs, from one rollout."""

    model: Name
    rollout: RolloutRef
    run: ModelRef = Field(description="what to run now")
    fallback: ModelRef | None = Field(
        description="last-known-good: the rollout's from_version, kept staged to restore on failure; "
                    "null while the device still runs from_version")
    activation: Activation | None = Field(
        None, description="when the agent may switch to `run`: not before `not_before`, and inside one of "
                          "`windows`; until then it serves `fallback`. null: at once")


class ProvenancePolicy(Strict):
    """What the agent checks on an artifact's Sigstore bundle before staging it (fleet.yaml `signing`)."""

    required: bool = Field(description="refuse to stage an artifact whose provenance does not verify")
    identity: str | None = Field(description="expected signer (certificate SAN)")
    issuer: str = Field(description="expected OIDC issuer")
    repository: str | None = Field(None, description="GitHub repository the signing workflow must run in")
    trusted_root: str | None = Field(
        description="TUF target path of the Sigstore trusted root (fetched and verified through TUF)")


class DesiredState(Strict):
    """devices/<hh>/<h>/<id>.json of the desired-state tree."""

    format: Literal["edgefleet/desired-state/v1"] = FORMAT
    fleet: Name
    device: DeviceIdentity
    runtime: RuntimeRef
    offline: OfflinePolicy = Field(description="from the device's hardware class")
    agent: AgentSettings = Field(description="from fleet.yaml spec.agent")
    artifact_store: ArtifactStoreRef
    provenance: ProvenancePolicy = Field(description="from fleet.yaml spec.signing")
    workloads: list[Workload] = Field(description="one per rollout that selects the device, ordered by model")
