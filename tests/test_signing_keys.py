"""Role keys: made 0600, loaded from files or the environment, rotated, and kept out of fleet repositories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgefleet.signing import ROLES, SigningError
from edgefleet.signing.keys import find_private_keys, init_keys, load_keys, rotate_key
from tests.conftest import EXAMPLE_FLEET


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


def _env_from(keys_dir: Path) -> dict[str, str]:
    return {f"EDGEFLEET_KEY_{role.upper()}": (keys_dir / f"{role}.key").read_text() for role in ROLES}


def test_init_makes_one_private_0600_key_per_role_and_public_keys(tmp_path):
    keys = init_keys(tmp_path / "k")
    for role in ROLES:
        mode = stat.S_IMODE(os.stat(tmp_path / "k" / f"{role}.key").st_mode)
        assert mode == 0o600, role
        assert (tmp_path / "k" / f"{role}.pub").read_text().count(keys.keyid(role)) == 1
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o700
    assert len({keys.keyid(r) for r in ROLES}) == len(ROLES)
    assert {keys.public(r).keytype for r in ROLES} == {"ed25519"}


def test_init_refuses_to_overwrite_keys(keys_dir):
    before = (keys_dir / "root.key").read_bytes()
    with pytest.raises(SigningError) as exc:
        init_keys(keys_dir)
    assert exc.value.code == "E504"
    assert (keys_dir / "root.key").read_bytes() == before


def test_load_from_files_and_from_environment_give_the_same_keys(keys_dir):
    from_files = load_keys(keys_dir)
    from_env = load_keys(None, env=_env_from(keys_dir))
    assert {r: from_files.keyid(r) for r in ROLES} == {r: from_env.keyid(r) for r in ROLES}


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660], ids=["group-read", "world-read", "0644", "group-rw"])
def test_load_refuses_a_key_others_can_read_and_says_chmod_600(keys_dir, mode):
    path = keys_dir / "targets.key"
    os.chmod(path, mode)
    with pytest.raises(SigningError) as exc:
        load_keys(keys_dir)
    assert exc.value.code == "E502"
    assert exc.value.hint == f"chmod 600 {path}"


def test_load_names_every_missing_role(keys_dir):
    (keys_dir / "bins.key").unlink()
    (keys_dir / "timestamp.key").unlink()
    with pytest.raises(SigningError) as exc:
        load_keys(keys_dir)
    assert exc.value.code == "E501"
    assert "bins.key" in exc.value.message and "timestamp.key" in exc.value.message


def test_load_from_environment_names_missing_variables(keys_dir):
    env = _env_from(keys_dir)
    del env["EDGEFLEET_KEY_SNAPSHOT"]
    with pytest.raises(SigningError) as exc:
        load_keys(None, env=env)
    assert exc.value.code == "E501" and "$EDGEFLEET_KEY_SNAPSHOT" in exc.value.message


def _ecdsa_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.mark.parametrize("content", [b"not a key\n", b"", _ecdsa_pem()], ids=["garbage", "empty", "ecdsa-key"])
def test_load_refuses_what_is_not_an_ed25519_private_key(keys_dir, content):
    (keys_dir / "snapshot.key").write_bytes(content)
    with pytest.raises(SigningError) as exc:
        load_keys(keys_dir)
    assert exc.value.code == "E503"
    assert "snapshot.key" in exc.value.message


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp", "bins"])
def test_rotate_a_non_root_role_replaces_and_deletes_the_old_key(keys_dir, role):
    old = load_keys(keys_dir)
    new_key = rotate_key(keys_dir, role)
    new = load_keys(keys_dir)
    assert new.keyid(role) == new_key.keyid != old.keyid(role)
    assert all(new.keyid(r) == old.keyid(r) for r in ROLES if r != role)
    assert new.previous_root == ()
    assert stat.S_IMODE(os.stat(keys_dir / f"{role}.key").st_mode) == 0o600
    assert new_key.keyid in (keys_dir / f"{role}.pub").read_text()
    assert not list(keys_dir.glob(".*.tmp"))


def test_rotate_root_keeps_the_old_root_key_for_the_transition_signature(keys_dir):
    old = load_keys(keys_dir)
    rotate_key(keys_dir, "root")
    kept = keys_dir / "previous" / f"root-{old.keyid('root')}.key"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    new = load_keys(keys_dir)
    assert new.keyid("root") != old.keyid("root")
    assert [s.public_key.keyid for s in new.previous_root] == [old.keyid("root")]


def test_rotate_refuses_an_unknown_role(keys_dir):
    with pytest.raises(SigningError) as exc:
        rotate_key(keys_dir, "snapshots")
    assert exc.value.code == "E506"


def test_find_private_keys_finds_pem_keys_but_not_git_internals_or_big_files(tmp_path, keys_dir):
    repo = tmp_path / "repo"
    (repo / "hardware").mkdir(parents=True)
    (repo / ".git" / "objects").mkdir(parents=True)
    (repo / "fleet.yaml").write_text("kind: Fleet\n")
    (repo / "hardware" / "oops.pem").write_bytes((keys_dir / "root.key").read_bytes())
    (repo / "notes.txt").write_bytes(b"prefix\n" + _ecdsa_pem())
    (repo / ".git" / "objects" / "key").write_bytes((keys_dir / "bins.key").read_bytes())
    (repo / "model.onnx").write_bytes(b"-----BEGIN PRIVATE KEY-----" + b"\0" * 70_000)
    (repo / "hardware" / "root.pub").write_bytes((keys_dir / "root.pub").read_bytes())
    found = find_private_keys(repo)
    assert found == [repo / "hardware" / "oops.pem", repo / "notes.txt"]


def test_the_example_fleet_holds_no_private_key():
    assert find_private_keys(EXAMPLE_FLEET) == []


def test_cli_keys_init_and_rotate(run_cli, tmp_path):
    res = run_cli("keys", "init", tmp_path / "k")
    assert res.code == 0, res.err
    assert all(role in res.out for role in ROLES)
    before = load_keys(tmp_path / "k").keyid("root")
    res = run_cli("keys", "rotate", "root", "--keys", tmp_path / "k")
    assert res.code == 0, res.err
    assert load_keys(tmp_path / "k").keyid("root") != before
    assert "previous" in res.err


def test_cli_keys_init_refuses_a_directory_inside_a_fleet_repository(run_cli, fleet_copy):
    res = run_cli("keys", "init", fleet_copy / "keys")
    assert res.code == 1
    assert "error[E505]" in res.err
    assert not (fleet_copy / "keys").exists()


@pytest.mark.parametrize("args,code", [
    (("keys", "rotate", "targets", "--keys", "missing-dir"), 2),
    (("keys", "rotate", "nope", "--keys", "."), 2),
    (("keys", "init"), 2),
], ids=["missing-key-dir", "unknown-role", "no-dir"])
def test_cli_keys_usage_errors_exit_2(run_cli, tmp_path, args, code):
    res = run_cli(*args, cwd=tmp_path)
    assert res.code == code
