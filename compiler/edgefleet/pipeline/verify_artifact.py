"""`edgefleet verify-artifact`: an artifact's Sigstore provenance, verified offline.

The same check the agent runs before staging an artifact when fleet.yaml requires
provenance: the bundle's signature chains to the pinned trusted root, the signer is the
expected CI identity (and, when given, a run from the expected repository), and the
signed in-toto statement names the artifact's sha256 as a subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefleet.core.fsutil import sha256_file
from edgefleet.build.signing import GITHUB_ISSUER, ProvenanceError, VerifiedProvenance, verify_provenance


@dataclass(frozen=True)
class ArtifactVerdict:
    path: str
    sha256: str
    provenance: VerifiedProvenance | None
    reason: str | None          # why it was refused; None when verified

    @property
    def ok(self) -> bool:
        return self.reason is None




def verify_artifact(artifact: Path, bundle: bytes, trusted_root: Path, identity: str,
                    issuer: str = GITHUB_ISSUER, repository: str | None = None) -> ArtifactVerdict:
    digest = sha256_file(artifact)
    try:
        verified = verify_provenance(bundle, digest, trusted_root, identity, issuer, repository=repository)
    except ProvenanceError as exc:
        return ArtifactVerdict(str(artifact), digest, None, str(exc))
    return ArtifactVerdict(str(artifact), digest, verified, None)


def staging_refusal(policy, artifact_sha256: str, bundle: bytes | None, trusted_root: bytes | None) -> str | None:
    """Why the agent must not stage an artifact under the desired state's provenance policy; None when
    it may. `policy` is desired.state.ProvenancePolicy; `trusted_root` the bytes of the Sigstore trusted
    root as the device verified them through TUF (never a file of its own)."""
    import tempfile

    if policy is None or not policy.required:
        return None
    if not policy.identity:
        return "the fleet requires provenance but names no signer identity (fleet.yaml signing.identity)"
    if trusted_root is None:
        return "the fleet requires provenance but its desired state ships no Sigstore trusted root"
    if bundle is None:
        return "the artifact has no Sigstore provenance bundle in the store (was it built in CI?)"
    with tempfile.NamedTemporaryFile(prefix="edgefleet-trusted-root-", suffix=".json") as f:
        f.write(trusted_root)
        f.flush()
        try:
            verify_provenance(bundle, artifact_sha256, f.name, policy.identity, policy.issuer,
                              repository=policy.repository)
        except ProvenanceError as exc:
            return str(exc)
    return None
