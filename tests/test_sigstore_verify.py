"""Offline verification of real Sigstore bundles (the outcomes of testdata/sigstore/README.md).

The bundles were produced by the public Sigstore services and are verified here with no
network, as a device does against its pinned trusted_root.json.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import SIGSTORE_TESTDATA
from edgefleet.build.signing import ProvenanceError, sign_statement, verify_provenance

if not (SIGSTORE_TESTDATA / "README.md").is_file():
    pytest.skip(f"Sigstore test bundles not found at {SIGSTORE_TESTDATA} (copied from sigstore-python's "
                "test assets); offline verification cannot be tested without them", allow_module_level=True)

PROD = SIGSTORE_TESTDATA / "prod_trusted_root.json"
STAGING = SIGSTORE_TESTDATA / "staging_trusted_root.json"
GITHUB = "https://token.actions.githubusercontent.com"
RFC8785_RELEASE = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
# The DSSE bundle signs an in-toto statement whose one subject is "a.txt" with this digest.
DSSE_SUBJECT = "a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"


def read(name: str) -> bytes:
    return (SIGSTORE_TESTDATA / name).read_bytes()


def test_github_bundle_verifies_for_its_workflow_identity():
    artifact = read("bundle_v3_github.whl")
    result = verify_provenance(read("bundle_v3_github.whl.sigstore"), artifact, PROD, RFC8785_RELEASE, GITHUB)
    assert result.kind == "message_signature" and result.identity == RFC8785_RELEASE


def test_github_bundle_verifies_against_the_artifact_digest():
    digest = hashlib.sha256(read("bundle_v3_github.whl")).hexdigest()
    result = verify_provenance(read("bundle_v3_github.whl.sigstore"), f"sha256:{digest}", PROD, RFC8785_RELEASE,
                               GITHUB)
    assert result.kind == "message_signature" and result.identity == RFC8785_RELEASE


def test_one_changed_byte_is_rejected():
    artifact = bytearray(read("bundle_v3_github.whl"))
    artifact[len(artifact) // 2] ^= 0x01
    with pytest.raises(ProvenanceError, match="signature rejected"):
        verify_provenance(read("bundle_v3_github.whl.sigstore"), bytes(artifact), PROD, RFC8785_RELEASE, GITHUB)


@pytest.mark.parametrize("identity, issuer", [
    pytest.param("https://github.com/acme/other/.github/workflows/release.yml@refs/tags/v0.1.2", GITHUB,
                 id="another-repository"),
    pytest.param(RFC8785_RELEASE, "https://accounts.google.com", id="another-issuer"),
])
def test_wrong_signer_is_rejected(identity, issuer):
    with pytest.raises(ProvenanceError, match="signature rejected"):
        verify_provenance(read("bundle_v3_github.whl.sigstore"), read("bundle_v3_github.whl"), PROD,
                          identity, issuer)


def test_cve_2022_36056_bundle_is_rejected():
    # The log entry does not match the certificate: a bundle that once fooled verifiers.
    with pytest.raises(ProvenanceError, match="inconsistent"):
        verify_provenance(read("bundle_cve_2022_36056.txt.sigstore"), read("bundle_cve_2022_36056.txt"),
                          STAGING, "william@yossarian.net", "https://github.com/login/oauth")


def test_staging_rekor_v2_bundle_verifies():
    result = verify_provenance(read("staging-rekor-v2.txt.sigstore.json"), read("staging-rekor-v2.txt"),
                               STAGING, "jku@goto.fi", "https://github.com/login/oauth")
    assert result.kind == "message_signature"


def test_dsse_bundle_is_accepted_and_its_subject_digest_checked():
    result = verify_provenance(read("a.dsse.staging-rekor-v2.txt.sigstore.json"), DSSE_SUBJECT,
                               STAGING, BEACON, GITHUB)
    assert result.kind == "dsse"
    assert result.subjects == {"a.txt": DSSE_SUBJECT}
    assert result.statement["predicateType"] == "https://slsa.dev/provenance/v1"


def test_dsse_bundle_about_another_artifact_is_rejected():
    other = hashlib.sha256(read("a.dsse.staging-rekor-v2.txt")).hexdigest()
    assert other != DSSE_SUBJECT
    with pytest.raises(ProvenanceError, match=f"not about sha256:{other}"):
        verify_provenance(read("a.dsse.staging-rekor-v2.txt.sigstore.json"), other, STAGING, BEACON, GITHUB)


def test_dsse_bundle_checks_exact_statement_bytes():
    bundle = read("a.dsse.staging-rekor-v2.txt.sigstore.json")
    with pytest.raises(ProvenanceError, match="differs"):
        verify_provenance(bundle, b'{"_type": "https://in-toto.io/Statement/v1"}', STAGING, BEACON, GITHUB)


@pytest.mark.parametrize("bundle, expected, identity, issuer, root", [
    pytest.param("bundle_v3_github.whl.sigstore", "bundle_v3_github.whl", RFC8785_RELEASE, GITHUB, STAGING,
                 id="prod-bundle-staging-root"),
    pytest.param("staging-rekor-v2.txt.sigstore.json", "staging-rekor-v2.txt", "jku@goto.fi",
                 "https://github.com/login/oauth", PROD, id="staging-bundle-prod-root"),
    pytest.param("a.dsse.staging-rekor-v2.txt.sigstore.json", DSSE_SUBJECT, BEACON, GITHUB, PROD,
                 id="dsse-bundle-prod-root"),
])
def test_other_trusted_root_is_rejected(bundle, expected, identity, issuer, root):
    signed = expected if expected == DSSE_SUBJECT else read(expected)
    with pytest.raises(ProvenanceError, match="signature rejected"):
        verify_provenance(read(bundle), signed, root, identity, issuer)


@pytest.mark.parametrize("mutate, message", [
    pytest.param(lambda raw: raw[:100], "malformed Sigstore bundle", id="truncated"),
    pytest.param(lambda raw: b"not json", "malformed Sigstore bundle", id="not-json"),
    pytest.param(lambda raw: json.dumps({**json.loads(raw), "mediaType": "x"}).encode(),
                 "malformed Sigstore bundle", id="unknown-media-type"),
])
def test_malformed_bundle_is_a_clear_error(mutate, message):
    raw = mutate(read("bundle_v3_github.whl.sigstore"))
    with pytest.raises(ProvenanceError, match=message):
        verify_provenance(raw, read("bundle_v3_github.whl"), PROD, RFC8785_RELEASE, GITHUB)


def test_missing_trusted_root_is_a_clear_error(tmp_path):
    with pytest.raises(ProvenanceError, match="cannot read trusted root"):
        verify_provenance(read("bundle_v3_github.whl.sigstore"), read("bundle_v3_github.whl"),
                          tmp_path / "absent.json", RFC8785_RELEASE, GITHUB)


# Signing needs public Sigstore (Fulcio, Rekor) and a GitHub OIDC token, so only the
# decision of whether to sign is tested here; the signing call itself runs in CI.
def test_signing_is_skipped_outside_github_actions():
    outcome = sign_statement(b"{}", "sigstore", {})
    assert outcome.bundle is None and not outcome.warning
    assert "GitHub Actions" in outcome.note and "id-token: write" in outcome.note


def test_signing_off_by_fleet_policy():
    outcome = sign_statement(b"{}", "none", {"GITHUB_ACTIONS": "true"})
    assert outcome.bundle is None and "signing.provenance: none" in outcome.note


def test_actions_without_id_token_permission_warns(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    outcome = sign_statement(b"{}", "sigstore", {"GITHUB_ACTIONS": "true"})
    assert outcome.bundle is None and outcome.warning
    assert "id-token: write" in outcome.note
