"""`edgefleet verify-artifact`: exit 0 verified, 1 refused with the reason, 2 usage.

Uses the real Sigstore bundles of ../shared/testdata/sigstore (their README lists the outcomes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SIGSTORE_TESTDATA

if not (SIGSTORE_TESTDATA / "README.md").is_file():
    pytest.skip(f"Sigstore test bundles not found at {SIGSTORE_TESTDATA}; offline provenance "
                "verification cannot be tested without them", allow_module_level=True)

PROD = SIGSTORE_TESTDATA / "prod_trusted_root.json"
STAGING = SIGSTORE_TESTDATA / "staging_trusted_root.json"
GITHUB = "https://token.actions.githubusercontent.com"
RELEASE = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
WHEEL = SIGSTORE_TESTDATA / "bundle_v3_github.whl"


def verify(artifact: Path, bundle: Path, root: Path = PROD, identity: str = RELEASE, *extra: str):
    return subprocess.run([sys.executable, "-m", "edgefleet", "verify-artifact", str(artifact), "--bundle", str(bundle),
                           "--trusted-root", str(root), "--identity", identity, "--issuer", GITHUB, *extra],
                          capture_output=True, text=True, timeout=120)


def test_the_real_github_bundle_verifies_with_its_identity():
    proc = verify(WHEEL, SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore")
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout and RELEASE in proc.stdout


def test_json_output_names_the_digest_and_signer():
    proc = verify(WHEEL, SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore", PROD, RELEASE, "--format", "json")
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"] and out["kind"] == "message_signature" and len(out["sha256"]) == 64


def test_one_changed_byte_is_refused(tmp_path):
    changed = tmp_path / WHEEL.name
    data = bytearray(WHEEL.read_bytes())
    data[len(data) // 2] ^= 0x01
    changed.write_bytes(bytes(data))
    proc = verify(changed, SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore")
    assert proc.returncode == 1 and "error[E470]" in proc.stderr and "signature rejected" in proc.stderr


@pytest.mark.parametrize("identity", [
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.3",
    "https://github.com/acme/meter-fleet/.github/workflows/release.yml@refs/heads/main",
], ids=["another-tag", "another-repository"])
def test_a_wrong_identity_is_refused(identity):
    proc = verify(WHEEL, SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore", PROD, identity)
    assert proc.returncode == 1 and "provenance refused" in proc.stderr


def test_the_repository_policy_must_match_too():
    bundle = SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore"
    assert verify(WHEEL, bundle, PROD, RELEASE, "--repository", "trailofbits/rfc8785.py").returncode == 0
    proc = verify(WHEEL, bundle, PROD, RELEASE, "--repository", "acme/meter-fleet")
    assert proc.returncode == 1 and "provenance refused" in proc.stderr


def test_the_wrong_trusted_root_is_refused():
    proc = verify(WHEEL, SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore", STAGING)
    assert proc.returncode == 1 and "provenance refused" in proc.stderr


def test_the_cve_2022_36056_bundle_is_refused():
    proc = verify(SIGSTORE_TESTDATA / "bundle_cve_2022_36056.txt", SIGSTORE_TESTDATA / "bundle_cve_2022_36056.txt.sigstore",
                  STAGING, RELEASE)
    assert proc.returncode == 1 and "provenance refused" in proc.stderr


def test_a_malformed_bundle_is_refused_not_a_crash(tmp_path):
    bad = tmp_path / "bad.sigstore"
    bad.write_text("{not json")
    proc = verify(WHEEL, bad)
    assert proc.returncode == 1 and "malformed Sigstore bundle" in proc.stderr


@pytest.mark.parametrize("missing", ["file", "bundle", "root"])
def test_a_missing_file_is_a_usage_error(tmp_path, missing):
    paths = {"file": WHEEL, "bundle": SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore", "root": PROD}
    paths[missing] = tmp_path / "nope"
    proc = verify(paths["file"], paths["bundle"], paths["root"])
    assert proc.returncode == 2 and "no such file" in proc.stderr
