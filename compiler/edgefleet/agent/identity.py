"""The device's identity: an ed25519 key made on the device at first boot.

Layout in the state directory (all of it stays on the device):

    identity/device.key    the private key, PEM PKCS#8, mode 0600 (owner only)
    identity/device.json   {"device": ID, "public_key": "ed25519:<64 hex>"} for people and tools

The public key is written in the inventory's format (`ed25519:` and the 32 raw key bytes
in hex, as `fleet/devices/*.yaml` hold it); the fleet learns it from `enroll`'s output
by pull request, never from the device over the network.

`enroll` refuses to overwrite an existing key: a new key would orphan the device from
the inventory entry that names the old one. The key file is created with O_EXCL and
O_NOFOLLOW at mode 0600, so it is never readable by others even for an instant, and
a symlink planted at its path is not followed. `device.json` is written first: a crash
between the two files leaves no key, and `enroll` may simply run again.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import CryptoError

from edgefleet.core.ids import is_device_id
from edgefleet.core.fsutil import fsync_dir

IDENTITY_DIR = "identity"
KEY_FILE = "device.key"
INFO_FILE = "device.json"
PUBLIC_KEY = re.compile(r"^ed25519:([0-9a-f]{64})$")  # spec.device.PublicKey
_MAX_KEY_FILE = 4096


class IdentityError(Exception):
    """A device identity cannot be made or used. `code` is a stable E65x code."""

    def __init__(self, code: str, message: str, hint: str = "", path: str = ""):
        self.code, self.message, self.hint, self.path = code, message, hint, path
        super().__init__(f"{path + ': ' if path else ''}error[{code}]: {message}")


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    public_key: str  # "ed25519:<64 hex>"
    _private: Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte ed25519 signature of `data`."""
        return self._private.sign(data)

    def __repr__(self) -> str:  # never print key material
        return f"DeviceIdentity(device_id={self.device_id!r}, public_key={self.public_key!r})"


def identity_dir(state_dir: Path) -> Path:
    return Path(state_dir) / IDENTITY_DIR


def key_file(state_dir: Path) -> Path:
    return identity_dir(state_dir) / KEY_FILE


def public_key_string(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + raw.hex()


def parse_public_key(value: str) -> Ed25519PublicKey:
    """An inventory public key (`ed25519:<64 hex>`) as a cryptography key; ValueError if malformed."""
    match = PUBLIC_KEY.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError("a public key is 'ed25519:' and 64 lower-case hex digits")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(match.group(1)))


def verify_signature(public_key: str, signature: bytes, data: bytes) -> bool:
    """True when `signature` is `public_key`'s ed25519 signature of `data`.

    libsodium (PyNaCl) checks it, not OpenSSL (cryptography, which makes and signs with the
    device key): besides what every ed25519 verifier refuses it refuses small-order and
    non-canonical keys and R values, for which OpenSSL accepts forgeries (with the identity
    point as the key, `01 00..00` and 32 zero bytes "sign" every message); and it takes
    43 µs where OpenSSL takes 67 (`python bench/bench_status.py` verifies 100k of them).
    """
    match = PUBLIC_KEY.fullmatch(public_key) if isinstance(public_key, str) else None
    if match is None or not isinstance(signature, (bytes, bytearray)) or len(signature) != 64:
        return False
    try:
        crypto_sign_open(bytes(signature) + bytes(data), bytes.fromhex(match.group(1)))
    except (CryptoError, TypeError, ValueError):
        return False
    return True


def is_usable_public_key(public_key: str) -> bool:
    """False for a well-formed key no signature verifies under: not a point on the curve (a
    mistyped key), or a small-order or non-canonical one (a key anyone could forge for). 32 µs:
    asked only when a signature failed."""
    match = PUBLIC_KEY.fullmatch(public_key) if isinstance(public_key, str) else None
    return match is not None and crypto_core_ed25519_is_valid_point(bytes.fromhex(match.group(1)))


def enroll(state_dir: Path, device_id: str) -> DeviceIdentity:
    """Make the device's key in `state_dir`; refuse if one exists (E650) or the id is invalid (E654)."""
    if not is_device_id(device_id):
        raise IdentityError("E654", f"invalid device id {device_id!r}",
                            "use lower-case letters, digits, '.', '_' and '-' (at most 63), as in the inventory")
    folder = identity_dir(state_dir)
    path = folder / KEY_FILE
    if os.path.lexists(path):
        raise IdentityError("E650", "this device already has a key; refusing to overwrite it",
                            "keep it (the inventory names its public key); `edgefleet agent state` shows the device, "
                            "delete the key only to re-enroll the device under a new inventory entry", str(path))
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    private = Ed25519PrivateKey.generate()
    public = public_key_string(private.public_key())
    _write_info(folder, device_id, public)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:  # another enroll won the race
        raise IdentityError("E650", "this device already has a key; refusing to overwrite it", "", str(path)) from exc
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(folder)
    return DeviceIdentity(device_id, public, private)


def load_identity(state_dir: Path) -> DeviceIdentity:
    """The device's identity from `state_dir`: E651 missing, E652 readable by others, E653 damaged."""
    folder = identity_dir(state_dir)
    path = folder / KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise IdentityError("E651", "this device has no key", "run `edgefleet agent enroll --state-dir DIR --device ID` "
                            "and add the printed entry to the inventory", str(path)) from exc
    except OSError as exc:
        raise IdentityError("E653", f"cannot open the device key: {exc.strerror}", "", str(path)) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IdentityError("E653", "the device key is not a regular file", "", str(path))
        if info.st_mode & 0o077:
            raise IdentityError("E652", f"the device key is readable by others (mode {stat.S_IMODE(info.st_mode):04o})",
                                f"chmod 600 {path}", str(path))
        pem = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    try:
        private = serialization.load_pem_private_key(pem, password=None) if len(pem) <= _MAX_KEY_FILE else None
    except (ValueError, TypeError) as exc:
        raise IdentityError("E653", f"the device key is not a PEM private key: {exc}", "", str(path)) from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise IdentityError("E653", "the device key is not an unencrypted ed25519 key", "", str(path))
    public = public_key_string(private.public_key())
    info_path = folder / INFO_FILE
    try:
        data = json.loads(info_path.read_bytes()[:_MAX_KEY_FILE])
        device_id, recorded = data["device"], data["public_key"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError("E653", f"cannot read {INFO_FILE}: {exc}", "", str(info_path)) from exc
    if not is_device_id(device_id):
        raise IdentityError("E653", f"{INFO_FILE} holds an invalid device id", "", str(info_path))
    if recorded != public:
        raise IdentityError("E653", f"{INFO_FILE} names another public key than the key file holds", "", str(info_path))
    return DeviceIdentity(device_id, public, private)


def inventory_entry(identity: DeviceIdentity) -> dict[str, str]:
    """What `enroll` prints for the fleet repository's inventory."""
    return {"id": identity.device_id, "public_key": identity.public_key}


def _write_info(folder: Path, device_id: str, public: str) -> None:
    data = (json.dumps({"device": device_id, "public_key": public}, sort_keys=True) + "\n").encode()
    tmp = folder / f".{INFO_FILE}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / INFO_FILE)
    fsync_dir(folder)
