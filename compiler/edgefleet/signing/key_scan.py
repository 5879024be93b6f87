"""Private keys inside a fleet repository: every command that reads one refuses (E510).

Its own module, apart from signing/keys.py, because validate, status and promote call it on
every run and keys.py imports securesystemslib's signers (and, through them, boto3: about
half a second) that a scan never needs.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

def find_private_keys(repo_root: Path) -> list[Path]:
    """Files inside `repo_root` (outside .git) that hold a private key, sorted.

    Every regular file is read whole, in chunks (a key appended to a large file is
    found). A file holds a private key when it contains:

    - a PEM block of any private-key type: `-----BEGIN <...>PRIVATE KEY-----` (PKCS#8,
      ENCRYPTED, RSA, EC, DSA, OPENSSH; also PGP `PRIVATE KEY BLOCK`) followed by base64
      lines and the matching END line. A BEGIN line alone (documentation) is not a key;
    - DER: the whole file (up to 16 KiB, starting with an ASN.1 SEQUENCE) parses with
      `cryptography` as a PKCS#8 (plain or encrypted), PKCS#1 or SEC1 private key;
    - a raw ed25519 key on a line of its own: exactly 64 or 128 hex digits, or the 44
      base64 characters of 32 bytes (or 88 of 64), with nothing else on the line but
      blanks. Digests in YAML are never alone on their line (`sha256: <hex>`,
      `public_key: ed25519:<hex>`, `- <hex>` all carry a key or marker) and are not
      keys; a file holding a bare 64-hex line is refused, so write checksums as
      `sha256sum` does (`<hex>  <file>`).
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(repo_root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and _holds_private_key(path, st.st_size):
                    found.append(Path(path))
            except OSError:
                continue  # unreadable files are another check's business
    return sorted(found)


_PEM_BLOCK = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----[ \t]*\r?\n"
    rb"(?:[A-Za-z0-9+/=:,. \t-]*\r?\n){0,400}?"  # headers (Proc-Type, DEK-Info) and base64 lines
    rb"-----END \1-----")
_PEM_BODY = re.compile(rb"[A-Za-z0-9+/]{16,}")
# Anchored on the newline before the line (a literal prefix the regex engine scans for
# fast, ~10x a multi-line '^'); the first line of a window is checked with a newline
# prepended to its first bytes.
_SEED_LINE = re.compile(
    rb"\n[ \t]*(?:[0-9a-fA-F]{128}|[0-9a-fA-F]{64}|[A-Za-z0-9+/]{86}==|[A-Za-z0-9+/]{43}=)[ \t]*\r?(?=\n|\Z)")
_CHUNK = 1 << 20
_PEM_WINDOW = 64 * 1024  # bytes kept from the previous chunk: a PEM block split across two
_DER_LIMIT = 16 * 1024


def _holds_private_key(path: str, size: int) -> bool:
    with open(path, "rb") as fh:
        if 0 < size <= _DER_LIMIT:
            data = fh.read()
            return _is_der_key(data) or _text_holds_key(data)
        tail = b""
        while chunk := fh.read(_CHUNK):
            window = tail + chunk
            if _text_holds_key(window):
                return True
            # Carry the last 64 KiB into the next window (a PEM block or a seed line may span
            # the boundary), starting at a line start so '^' in the seed check stays true.
            tail = window[-_PEM_WINDOW:]
            newline = tail.find(b"\n")
            tail = tail[newline + 1:] if newline >= 0 else b""
    return False


def _text_holds_key(data: bytes) -> bool:
    for match in _PEM_BLOCK.finditer(data):
        if _PEM_BODY.search(match.group(0)):
            return True
    first = b"\n" + data[:256]
    head = [m for m in _SEED_LINE.finditer(first) if m.start() == 0 and (m.end() < len(first) or len(data) <= 256)]
    for match in head + list(_SEED_LINE.finditer(data)):
        token = match.group(0).strip()
        if len(token) in (64, 128):
            return True
        try:
            if len(base64.b64decode(token, validate=True)) in (32, 64):
                return True
        except ValueError:
            continue
    return False


def _is_der_key(data: bytes) -> bool:
    if not data.startswith(b"\x30"):
        return False
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    try:
        load_der_private_key(data, password=None)
        return True
    except TypeError:
        return True  # "private key is encrypted": an encrypted PKCS#8 key is still a key
    except (ValueError, Exception):  # noqa: BLE001 - cryptography raises several types for non-keys
        return False
