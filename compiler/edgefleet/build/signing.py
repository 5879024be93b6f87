"""Keyless Sigstore signing of provenance in CI, and offline verification on devices.

Signing: in GitHub Actions with `permissions: id-token: write`, the job's ambient OIDC
token gets a short-lived Fulcio certificate for the workflow identity; the provenance
statement is signed as a DSSE envelope and logged in Rekor, giving one Sigstore bundle.
Anywhere else there is no identity to sign as, so signing is skipped with a note (never
an invented key): a device accepts only what CI signed.

Verification is fully offline: the bundle carries the certificate, the log inclusion
proof and timestamps; `trusted_root.json` (pinned on the device) carries the Fulcio,
Rekor and TSA keys. For DSSE bundles Sigstore checks the signature over the statement;
which artifact the statement is about is our check (its subject digest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgefleet.build.provenance import PAYLOAD_TYPE, subject_digests

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


class SigningError(Exception):
    """Signing was expected but could not be done."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ProvenanceError(Exception):
    """A bundle or statement failed verification; the message says which check."""


@dataclass(frozen=True)
class SignOutcome:
    bundle: bytes | None  # Sigstore bundle JSON, or None when not signed
    note: str  # one line for the build report
    warning: bool = False  # signing was expected here but is not possible


def sign_statement(statement: bytes, mode: str, env: Mapping[str, str]) -> SignOutcome:
    """Sign a provenance statement keylessly when running in GitHub Actions.

    `mode` is fleet.yaml's signing.provenance ("sigstore" or "none").
    """
    if mode == "none":
        return SignOutcome(None, "provenance not signed (fleet.yaml: signing.provenance: none)")
    if env.get("GITHUB_ACTIONS") != "true":
        return SignOutcome(None, "provenance not signed: keyless Sigstore signing runs in GitHub Actions "
                                 "(job permission id-token: write); devices accept only CI-signed provenance")
    from sigstore.oidc import IdentityError, IdentityToken, detect_credential

    try:
        token = detect_credential()
    except IdentityError as exc:
        return SignOutcome(None, f"provenance not signed: no OIDC token ({exc}); add "
                                 "`permissions: id-token: write` to the build job", warning=True)
    if token is None:
        return SignOutcome(None, "provenance not signed: GitHub Actions gave no OIDC token; add "
                                 "`permissions: id-token: write` to the build job", warning=True)
    identity = IdentityToken(token)
    try:
        bundle = _sign_dsse(statement, identity)
    except Exception as exc:  # network, Fulcio or Rekor refusing: the artifact must not ship unsigned
        raise SigningError(f"keyless signing of the provenance failed: {type(exc).__name__}: {exc}",
                           "rerun the job; check that fulcio.sigstore.dev and rekor.sigstore.dev are "
                           "reachable from the runner") from exc
    return SignOutcome(bundle, f"provenance signed keylessly as {identity.identity}")


def _sign_dsse(statement: bytes, identity: Any) -> bytes:  # pragma: no cover - needs public Sigstore
    from sigstore import dsse

    with _signing_context().signer(identity, cache=True) as signer:
        return signer.sign_dsse(dsse.Statement(statement)).to_json().encode()


def _signing_context():  # pragma: no cover - fetches Sigstore's trust config over TUF
    # Not memoised: one signature per build job, and no process should keep it between runs.
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    return SigningContext.from_trust_config(ClientTrustConfig.production())


@dataclass(frozen=True)
class VerifiedProvenance:
    kind: str  # "dsse" or "message_signature"
    identity: str
    issuer: str
    statement: dict[str, Any] | None = None  # the in-toto statement of a DSSE bundle
    subjects: dict[str, str] = field(default_factory=dict)  # name -> sha256


def _normalize_digest(value: str) -> str:
    digest = value.removeprefix("sha256:").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ProvenanceError(f"not a sha256 digest: {value!r}")
    return digest


def verify_provenance(bundle_bytes: bytes, expected: str | bytes, trusted_root: Path | str,
                      identity: str, issuer: str = GITHUB_ISSUER, *,
                      repository: str | None = None) -> VerifiedProvenance:
    """Verify a Sigstore bundle offline against a pinned trusted root and signer policy.

    `expected` is what must have been signed: an artifact's sha256 (hex, optionally
    "sha256:"-prefixed), or the signed bytes themselves (a DSSE bundle's statement, or
    a plain bundle's artifact). `repository` (OWNER/NAME) also requires the certificate's
    GitHub Workflow Repository: a reusable workflow's identity is the same for every
    repository that calls it, so this is what ties a signature to one fleet.
    Raises ProvenanceError naming the failed check.
    """
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier, policy
    from sigstore_models.common.v1 import HashAlgorithm

    try:
        is_dsse = "dsseEnvelope" in json.loads(bundle_bytes)
        bundle = Bundle.from_json(bundle_bytes)
    except (SigstoreError, ValueError) as exc:
        raise ProvenanceError(f"malformed Sigstore bundle: {exc}") from exc
    try:
        root = TrustedRoot.from_file(str(trusted_root))
    except (SigstoreError, ValueError, OSError) as exc:
        raise ProvenanceError(f"cannot read trusted root {trusted_root}: {exc}") from exc
    verifier = Verifier(trusted_root=root)
    signer = policy.Identity(identity=identity, issuer=issuer)
    if repository:
        signer = policy.AllOf([signer, policy.GitHubWorkflowRepository(repository)])
    try:
        if not is_dsse:
            if isinstance(expected, str):
                signed: bytes | Hashed = Hashed(algorithm=HashAlgorithm.SHA2_256,
                                                digest=bytes.fromhex(_normalize_digest(expected)))
            else:
                signed = expected
            verifier.verify_artifact(signed, bundle, signer)
            return VerifiedProvenance("message_signature", identity, issuer)
        payload_type, payload = verifier.verify_dsse(bundle, signer)
    except SigstoreError as exc:
        raise ProvenanceError(f"signature rejected: {exc}") from exc
    if payload_type != PAYLOAD_TYPE:
        raise ProvenanceError(f"DSSE payload is {payload_type!r}, not an in-toto statement ({PAYLOAD_TYPE})")
    try:
        subjects = subject_digests(payload)
        statement = json.loads(payload)
    except ValueError as exc:
        raise ProvenanceError(f"signed payload is not an in-toto statement: {exc}") from exc
    if isinstance(expected, str):
        digest = _normalize_digest(expected)
        if digest not in subjects.values():
            raise ProvenanceError(f"the signed statement is not about sha256:{digest} "
                                  f"(its subjects: {', '.join(f'{n} sha256:{d}' for n, d in subjects.items())})")
    elif payload != expected:
        raise ProvenanceError("the signed statement differs from the expected statement bytes")
    return VerifiedProvenance("dsse", identity, issuer, statement, subjects)
