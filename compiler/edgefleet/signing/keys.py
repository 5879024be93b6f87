"""Role keys for the desired-state TUF repository: make, load, rotate, and keep out of git.

One ed25519 key per role: root, targets, snapshot, timestamp, and bins (the key that
signs every hash-bin delegation). A key directory holds `<role>.key` (PEM PKCS#8, mode
0600) and `<role>.pub` (the public key as TUF writes it, for people and offline
tooling). Keys come from exactly one place per run: a directory, or, when no directory
is given, the environment (`EDGEFLEET_KEY_<ROLE>` holding the PEM), as a CI secret
would. Never from the fleet repository: `find_private_keys` is what `compile` uses to
refuse one found there.

Rotation (`rotate_key`) only changes the key directory; the next publish notices that
the keys differ from the published root and writes the next root version. Rotating
root keeps the old root key in `previous/root-<keyid>.key` because the transition root
must be signed by the old key as well as the new one (a device trusts a new root only
if the root it already trusts signed it); delete it once that root is published.
The old key of any other role is deleted: the new root revokes it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from securesystemslib.signer import CryptoSigner, SSlibKey

from edgefleet.signing import ROLES, SigningError
from edgefleet.signing.key_scan import find_private_keys  # noqa: F401 - part of this module's API

ENV_PREFIX = "EDGEFLEET_KEY_"
PREVIOUS_ROOT_ENV = "EDGEFLEET_KEY_ROOT_PREVIOUS"
PREVIOUS_DIR = "previous"


@dataclass(frozen=True)
class RoleKeys:
    """The signers of every role, and old root keys still needed to sign a root rotation."""

    signers: Mapping[str, CryptoSigner]
    previous_root: tuple[CryptoSigner, ...] = field(default=())

    def signer(self, role: str) -> CryptoSigner:
        return self.signers[role]

    def public(self, role: str) -> SSlibKey:
        return self.signers[role].public_key

    def keyid(self, role: str) -> str:
        return self.signers[role].public_key.keyid


def key_path(keys_dir: Path, role: str) -> Path:
    return Path(keys_dir) / f"{role}.key"


def init_keys(keys_dir: Path) -> RoleKeys:
    """Make a new key for every role in `keys_dir` (created 0700); refuse to overwrite."""
    keys_dir = Path(keys_dir)
    existing = [key_path(keys_dir, r) for r in ROLES if key_path(keys_dir, r).exists()]
    if existing:
        raise SigningError(
            "E504", f"{keys_dir} already holds signing keys ({', '.join(p.name for p in existing)})",
            "keep them, or use `edgefleet keys rotate ROLE --keys DIR` to replace one; "
            "new keys for a published tree strand every device", str(keys_dir))
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    signers = {}
    for role in ROLES:
        signer = CryptoSigner.generate_ed25519()
        _write_private(key_path(keys_dir, role), signer.private_bytes, exclusive=True)
        _write_public(keys_dir / f"{role}.pub", signer.public_key)
        signers[role] = signer
    return RoleKeys(signers)


def load_keys(dir: Path | None = None, env: Mapping[str, str] = os.environ) -> RoleKeys:  # noqa: A002
    """Every role's signer, from directory `dir` if given, else from `EDGEFLEET_KEY_<ROLE>`.

    Raises SigningError (E501 missing, E502 readable by others, E503 not an ed25519 key).
    """
    signers: dict[str, CryptoSigner] = {}
    missing: list[str] = []
    previous: list[CryptoSigner] = []
    keys_dir = dir
    if keys_dir is not None:
        keys_dir = Path(keys_dir)
        if not keys_dir.is_dir():
            raise SigningError("E501", f"key directory {keys_dir} does not exist",
                               "create keys with `edgefleet keys init DIR`", str(keys_dir))
        for role in ROLES:
            path = key_path(keys_dir, role)
            if path.exists():
                signers[role] = _signer_from_pem(_read_private(path), str(path))
            else:
                missing.append(str(path))
        prev_dir = keys_dir / PREVIOUS_DIR
        if prev_dir.is_dir():
            for path in sorted(prev_dir.glob("root-*.key")):
                previous.append(_signer_from_pem(_read_private(path), str(path)))
        where = str(keys_dir)
    else:
        for role in ROLES:
            name = ENV_PREFIX + role.upper()
            pem = env.get(name)
            if pem:
                signers[role] = _signer_from_pem(pem.encode(), f"${name}")
            else:
                missing.append(f"${name}")
        if env.get(PREVIOUS_ROOT_ENV):
            previous.append(_signer_from_pem(env[PREVIOUS_ROOT_ENV].encode(), f"${PREVIOUS_ROOT_ENV}"))
        where = "environment"
    if missing:
        raise SigningError(
            "E501", f"signing key missing for {len(missing)} role(s): {', '.join(missing)}",
            "pass --keys DIR made by `edgefleet keys init DIR`, or set EDGEFLEET_KEY_<ROLE> "
            "to the PEM of each role's key (roles: " + ", ".join(ROLES) + ")", where)
    return RoleKeys(signers, tuple(previous))


def rotate_key(keys_dir: Path, role: str) -> SSlibKey:
    """Replace `role`'s key with a new one; return the new public key.

    For root the old key moves to previous/ (still needed to sign the transition root).
    """
    keys_dir = Path(keys_dir)
    if role not in ROLES:
        raise SigningError("E506", f"unknown role {role!r}", f"rotate one of: {', '.join(ROLES)}")
    path = key_path(keys_dir, role)
    if not path.exists():
        raise SigningError("E501", f"no {role} key to rotate at {path}",
                           "create keys first with `edgefleet keys init DIR`", str(path))
    old = _signer_from_pem(_read_private(path), str(path))
    new = CryptoSigner.generate_ed25519()
    if role == "root":
        prev_dir = keys_dir / PREVIOUS_DIR
        prev_dir.mkdir(mode=0o700, exist_ok=True)
        prev_path = prev_dir / f"root-{old.public_key.keyid}.key"
        if not prev_path.exists():
            _write_private(prev_path, old.private_bytes, exclusive=True)
    # Replace, never truncate in place: a crash leaves the old or the new key, not neither.
    _write_private(path, new.private_bytes, exclusive=False)
    _write_public(keys_dir / f"{role}.pub", new.public_key)
    return new.public_key


def _read_private(path: Path) -> bytes:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SigningError("E501", f"cannot read key {path}: {exc.strerror}", "", str(path)) from None
    if st.st_mode & 0o077:
        raise SigningError(
            "E502", f"private key {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod 600 {path}", str(path))
    with open(path, "rb") as f:
        return f.read()


def _signer_from_pem(pem: bytes, where: str) -> CryptoSigner:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError("E503", f"{where} is not an unencrypted PEM private key ({exc})",
                           "regenerate it with `edgefleet keys init DIR` or `keys rotate`", where) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError("E503", f"{where} is a {type(private).__name__}, not an ed25519 key",
                           "edgefleet signs with ed25519 keys only", where)
    return CryptoSigner(private)


def _write_private(path: Path, data: bytes, exclusive: bool) -> None:
    tmp = path if exclusive else path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by umask; make it exact
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(tmp, path)


def _write_public(path: Path, key: SSlibKey) -> None:
    doc = {"keyid": key.keyid, **key.to_dict()}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
