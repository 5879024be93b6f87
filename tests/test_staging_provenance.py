"""The agent's provenance check before staging (pipeline.verify_artifact.staging_refusal), on the
real Sigstore bundles: a device stages only what the fleet's policy and TUF-shipped root accept."""

from __future__ import annotations

import hashlib

import pytest

from conftest import SIGSTORE_TESTDATA
from edgefleet.desired.state import ProvenancePolicy
from edgefleet.pipeline.verify_artifact import staging_refusal

if not (SIGSTORE_TESTDATA / "README.md").is_file():
    pytest.skip(f"Sigstore test bundles not found at {SIGSTORE_TESTDATA}", allow_module_level=True)

RELEASE = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GITHUB = "https://token.actions.githubusercontent.com"
WHEEL = (SIGSTORE_TESTDATA / "bundle_v3_github.whl").read_bytes()
BUNDLE = (SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore").read_bytes()
CHANGED = WHEEL[:len(WHEEL) // 2] + bytes([WHEEL[len(WHEEL) // 2] ^ 1]) + WHEEL[len(WHEEL) // 2 + 1:]
PROD = (SIGSTORE_TESTDATA / "prod_trusted_root.json").read_bytes()
STAGING = (SIGSTORE_TESTDATA / "staging_trusted_root.json").read_bytes()


def policy(**overrides) -> ProvenancePolicy:
    fields = {"required": True, "identity": RELEASE, "issuer": GITHUB, "repository": "trailofbits/rfc8785.py",
              "trusted_root": "fleet/sigstore/trusted_root.json", **overrides}
    return ProvenancePolicy(**fields)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_bundle_that_verifies_under_the_policy_may_be_staged():
    assert staging_refusal(policy(), sha(WHEEL), BUNDLE, PROD) is None


def test_not_required_means_no_check():
    assert staging_refusal(policy(required=False), sha(b"anything"), None, None) is None


@pytest.mark.parametrize("kwargs, artifact, bundle, root, reason", [
    ({}, CHANGED, BUNDLE, PROD, "signature rejected"),
    ({"identity": RELEASE.replace("v0.1.2", "v9.9.9")}, WHEEL, BUNDLE, PROD, "signature rejected"),
    ({"repository": "acme/meter-fleet"}, WHEEL, BUNDLE, PROD, "signature rejected"),
    ({}, WHEEL, BUNDLE, STAGING, "signature rejected"),
    ({}, WHEEL, None, PROD, "no Sigstore provenance bundle"),
    ({}, WHEEL, BUNDLE, None, "ships no Sigstore trusted root"),
    ({"identity": None}, WHEEL, BUNDLE, PROD, "names no signer identity"),
    ({}, WHEEL, b"{not json", PROD, "malformed Sigstore bundle"),
], ids=["changed-byte", "wrong-identity", "wrong-repository", "wrong-trusted-root", "no-bundle", "no-root",
        "no-identity", "malformed-bundle"])
def test_each_failure_refuses_staging_with_its_reason(kwargs, artifact, bundle, root, reason):
    refusal = staging_refusal(policy(**kwargs), sha(artifact), bundle, root)
    assert refusal is not None and reason in refusal
