"""fleet.yaml: fleet-wide settings (one per repository)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgefleet.spec.common import Document, Duration, Int, Strict, duration_seconds


class ArtifactStore(Strict):
    kind: Literal["local", "repo", "object"] = Field(
        "local", description="local: a directory; repo: inside the fleet repository; object: an object-store URL")
    path: str = Field(".edgefleet/artifacts", description="directory for kind local/repo, relative to the repository")
    url: str | None = Field(None, description="object store URL (s3://bucket/prefix) for kind object")


class Signing(Strict):
    provenance: Literal["sigstore", "none"] = Field(
        "sigstore", description="how build provenance is signed: keyless Sigstore in CI, or not at all")
    identity: str | None = Field(
        None, description="expected signer: the CI workflow identity (certificate SAN) devices accept")
    issuer: str = Field("https://token.actions.githubusercontent.com", description="expected OIDC issuer")
    repository: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="GitHub repository (OWNER/NAME) the signing workflow must run in; with a reusable "
                    "workflow as identity this is what ties provenance to this fleet")
    trusted_root: str | None = Field(
        None, description="path (in the repository) of the Sigstore trusted_root.json devices verify "
                          "provenance against; compile ships it to devices as a TUF target")
    require_provenance: bool = Field(
        False, description="devices refuse to stage an artifact whose Sigstore provenance does not verify "
                           "offline against trusted_root and this identity (local builds are never signed)")
    hash_bins: Int | None = Field(
        None, ge=1, le=16384, description="TUF hash-bin delegations; default sized from the fleet")


class ExpiryWindows(Strict):
    """How long each role's signed metadata stays valid after a compile."""

    root: Duration = "365d"
    targets: Duration = "30d"
    snapshot: Duration = "7d"
    timestamp: Duration = "1d"

    @field_validator("root", "targets", "snapshot", "timestamp")
    @classmethod
    def _not_expired_at_birth(cls, value: str) -> str:
        # A zero window signs metadata that is already expired: every device would freeze.
        if duration_seconds(value) <= 0:
            raise ValueError(f"an expiry window of {value} makes the metadata expire when it is signed; "
                             "give a positive duration such as 1d")
        return value


class AgentSettings(Strict):
    poll_interval: Duration = Field("5m", description="how often a device fetches desired state")
    probe_timeout: Duration = Field("60s", description="limit for one health probe")
    telemetry_buffer_rows: Int = Field(10000, ge=100, description="bound of the on-device telemetry buffer")
    status_remote: str | None = Field(None, description="git URL where devices push status reports")


class FleetSpec(Strict):
    desired_state_branch: str = Field("desired-state", description="branch holding the compiled, signed tree")
    artifact_store: ArtifactStore = ArtifactStore()
    signing: Signing = Signing()
    expiry: ExpiryWindows = ExpiryWindows()
    agent: AgentSettings = AgentSettings()


class Fleet(Document):
    """fleet.yaml: one per repository."""

    kind: Literal["Fleet"]
    spec: FleetSpec = FleetSpec()
