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


# -- the private-key guard: every encoding, the whole file, every command -------------


def _key_encodings() -> dict[str, bytes]:
    import base64

    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ecc = ec.generate_private_key(ec.SECP256R1())
    enc = ser.BestAvailableEncryption(b"passphrase")
    none = ser.NoEncryption()
    seed = ed.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, none)
    return {
        "pem-pkcs8-ed25519": ed.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, none),
        "pem-encrypted-pkcs8": ed.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, enc),
        "pem-openssh": ed.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, none),
        "pem-rsa-pkcs1": rs.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, none),
        "pem-rsa-legacy-encrypted": rs.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, enc),
        "pem-ec-sec1": ecc.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, none),
        "pem-crlf": ed.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, none).replace(b"\n", b"\r\n"),
        "der-pkcs8-ed25519": ed.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, none),
        "der-encrypted-pkcs8": ed.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, enc),
        "der-rsa-pkcs1": rs.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, none),
        "der-ec-sec1": ecc.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, none),
        "raw-seed-hex": seed.hex().encode() + b"\n",
        "raw-seed-hex-upper-indented": b"  " + seed.hex().upper().encode() + b"  \n",
        "raw-seed-and-public-hex": (seed + ed.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)).hex().encode(),
        "raw-seed-base64": b"# the bins key\n" + base64.b64encode(seed) + b"\n",
        "raw-seed-in-yaml-file": b"apiVersion: edgefleet/v1\n" + seed.hex().encode() + b"\nkind: Fleet\n",
    }


KEY_ENCODINGS = _key_encodings()


@pytest.mark.parametrize("name", sorted(KEY_ENCODINGS))
def test_guard_finds_every_key_encoding(tmp_path, name):
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "note.txt").write_bytes(KEY_ENCODINGS[name])
    assert find_private_keys(tmp_path) == [tmp_path / "devices" / "note.txt"]


@pytest.mark.parametrize("where", ["start", "middle-of-a-large-file", "end-of-a-large-file", "across-a-chunk-boundary"])
def test_guard_reads_the_whole_file(tmp_path, where):
    pem = KEY_ENCODINGS["pem-pkcs8-ed25519"]
    filler = os.urandom(3 * 1024 * 1024).replace(b"-", b"_")
    if where == "start":
        data = pem + filler
    elif where == "middle-of-a-large-file":
        data = filler + b"\n" + pem + filler
    elif where == "end-of-a-large-file":
        data = filler + b"\n" + pem
    else:
        boundary = 1 << 20
        data = filler[: boundary - 40] + b"\n" + pem + filler
    (tmp_path / "model.onnx").write_bytes(data)
    assert find_private_keys(tmp_path) == [tmp_path / "model.onnx"]


def test_seed_line_split_across_a_chunk_boundary_is_found(tmp_path):
    seed_line = KEY_ENCODINGS["raw-seed-hex"]
    data = b"x" * ((1 << 20) - 30) + b"\n" + seed_line + b"y" * 1000
    (tmp_path / "blob").write_bytes(data)
    assert find_private_keys(tmp_path) == [tmp_path / "blob"]


NOT_KEYS = {
    "yaml-sha256-value": b"sha256: " + b"ab" * 32 + b"\n",
    "yaml-public-key": b"public_key: ed25519:" + b"cd" * 32 + b"\n",
    "yaml-list-of-digests": b"digests:\n  - " + b"ef" * 32 + b"\n",
    "sha256sum-line": b"ab" * 32 + b"  models/full.onnx\n",
    "csv-inventory-row": b"d1,cls,site,,ed25519:" + b"12" * 32 + b"\n",
    "hex-too-short": b"ab" * 31 + b"\n",
    "hex-too-long": b"ab" * 33 + b"\n",
    "pem-public-key": b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA" + b"A" * 40 + b"\n-----END PUBLIC KEY-----\n",
    "pem-certificate": b"-----BEGIN CERTIFICATE-----\n" + b"MIIB" * 16 + b"\n-----END CERTIFICATE-----\n",
    "documentation-of-the-header": b"A key file starts with -----BEGIN PRIVATE KEY----- and is never committed.\n",
    "documentation-with-elided-body": b"-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
    "der-certificate-like": b"\x30\x82\x01\x00" + os.urandom(256),
    "random-binary": os.urandom(50_000).replace(b"\n", b" "),
}


@pytest.mark.parametrize("name", sorted(NOT_KEYS))
def test_guard_does_not_flag_digests_and_public_material(tmp_path, name):
    (tmp_path / "file").write_bytes(NOT_KEYS[name])
    assert find_private_keys(tmp_path) == []


@pytest.mark.parametrize("command", ["validate", "build", "compile"])
def test_every_command_that_reads_the_repository_refuses_a_key(command, fleet_copy, run_cli, tmp_path):
    (fleet_copy / "models" / "bins.key").write_bytes(KEY_ENCODINGS["der-pkcs8-ed25519"])
    args = [command, fleet_copy]
    if command in ("build", "compile"):
        args += ["--store", tmp_path / "store"]
    if command == "compile":
        args += ["--keys", tmp_path / "keys", "--out", tmp_path / "out"]
    res = run_cli(*args)
    assert res.code == 1, res.err
    assert res.err.count("error[E510]") == 1, res.err  # once, even where compile checks as well
    assert "models/bins.key:1:1" in res.err
    assert not (tmp_path / "store").exists() and not (tmp_path / "out" / "metadata").exists()
