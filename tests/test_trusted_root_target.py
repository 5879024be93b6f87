"""The Sigstore trusted root reaches devices as a TUF target: it rotates like any update, and a
device never trusts one that did not come through TUF."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import SIGSTORE_TESTDATA
from edgefleet.signing.keys import init_keys
from edgefleet.signing.layout import SIGSTORE_TRUSTED_ROOT, target_file
from edgefleet.signing.verify import VerifyError, verify_device, verify_fleet_target
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

NOW = "2026-11-20T09:00:00Z"
CHECK = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
pytestmark = pytest.mark.slow

if not (SIGSTORE_TESTDATA / "prod_trusted_root.json").is_file():
    pytest.skip(f"Sigstore trusted roots not found at {SIGSTORE_TESTDATA}", allow_module_level=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    init_keys(path)
    return path


def fleet_with(tmp_path: Path, signing: str) -> Path:
    dest = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    text = (dest / "fleet.yaml").read_text()
    (dest / "fleet.yaml").write_text(text.replace("  signing:\n", "  signing:\n" + signing, 1))
    return dest


def compile_(run_cli, fleet: Path, out: Path, keys: Path, store: Path):
    return run_cli("compile", fleet, "--out", out, "--keys", keys, "--store", store, "--now", NOW,
                   "--allow-clock-skew")


def test_the_trusted_root_is_a_verified_target_of_the_top_level_role(run_cli, tmp_path, keys, store):
    fleet = fleet_with(tmp_path, "    trusted_root: sigstore/trusted_root.json\n    require_provenance: true\n")
    (fleet / "sigstore").mkdir()
    shutil.copy(SIGSTORE_TESTDATA / "prod_trusted_root.json", fleet / "sigstore/trusted_root.json")
    out = tmp_path / "out"
    res = compile_(run_cli, fleet, out, keys, store)
    assert res.code == 0, res.err
    root = (out / "metadata/1.root.json").read_bytes()
    got = verify_fleet_target(out, SIGSTORE_TRUSTED_ROOT, root, CHECK)
    assert got.data == (SIGSTORE_TESTDATA / "prod_trusted_root.json").read_bytes()
    targets_role = json.loads((out / "metadata/1.targets.json").read_bytes())["signed"]["targets"]
    assert list(targets_role) == [SIGSTORE_TRUSTED_ROOT]
    state = json.loads(verify_device(out, "sm-cart-001", root, CHECK).data)
    assert state["provenance"] == {
        "required": True, "identity": "https://github.com/acme/meter-fleet/.github/workflows/build.yml@refs/heads/main",
        "issuer": "https://token.actions.githubusercontent.com", "repository": None,
        "trusted_root": SIGSTORE_TRUSTED_ROOT}

    # Tampered on the shared branch: refused, naming the file.
    digest = targets_role[SIGSTORE_TRUSTED_ROOT]["hashes"]["sha256"]
    planted = out / target_file(SIGSTORE_TRUSTED_ROOT, digest)
    original = planted.read_bytes()
    planted.write_bytes(original.replace(b'"', b"'", 1))
    with pytest.raises(VerifyError) as exc:
        verify_fleet_target(out, SIGSTORE_TRUSTED_ROOT, root, CHECK)
    assert exc.value.code == "E555"
    planted.write_bytes(original)

    # Rotation: a new root is a new targets version; no device's own state changes.
    before = {p.name for p in (out / "targets/devices").rglob("*.json")}
    shutil.copy(SIGSTORE_TESTDATA / "staging_trusted_root.json", fleet / "sigstore/trusted_root.json")
    res = compile_(run_cli, fleet, out, keys, store)
    assert res.code == 0, res.err
    rotated = verify_fleet_target(out, SIGSTORE_TRUSTED_ROOT, root, CHECK, metadata_cache=tmp_path / "cache")
    assert rotated.data == (SIGSTORE_TESTDATA / "staging_trusted_root.json").read_bytes()
    assert rotated.versions["targets"] == 2
    assert {p.name for p in (out / "targets/devices").rglob("*.json")} == before
    assert planted.exists()  # the previous version's, kept for devices mid-update
    assert compile_(run_cli, fleet, out, keys, store).code == 0
    assert not planted.exists()  # referenced by neither version now: pruned


@pytest.mark.parametrize("signing, content, message", [
    ("    require_provenance: true\n", None, "no signing.trusted_root"),
    ("    trusted_root: sigstore/trusted_root.json\n", b'{"mediaType": "nonsense"}', "not a Sigstore trusted root"),
    ("    trusted_root: sigstore/missing.json\n", None, "No such file"),
    ("    trusted_root: ../outside.json\n", None, "outside"),
], ids=["required-without-root", "not-a-trusted-root", "missing", "outside-the-repository"])
def test_a_bad_trusted_root_setting_is_refused_and_nothing_is_written(run_cli, tmp_path, keys, store, signing,
                                                                      content, message):
    fleet = fleet_with(tmp_path, signing)
    if content is not None:
        (fleet / "sigstore").mkdir()
        (fleet / "sigstore/trusted_root.json").write_bytes(content)
    (tmp_path / "outside.json").write_bytes((SIGSTORE_TESTDATA / "prod_trusted_root.json").read_bytes())
    res = compile_(run_cli, fleet, tmp_path / "out", keys, store)
    assert res.code == 1 and message in res.err and "fleet.yaml:" in res.err, res.err
    assert not (tmp_path / "out" / "metadata").exists()
