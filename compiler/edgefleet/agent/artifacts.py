"""Fetch a blob by digest from the artifact store into the state directory's download cache.

    downloads/<digest>.part    bytes so far (a restart resumes from its length)
    downloads/<digest>         complete and checked: the digest matched

Sources: a local store directory, an `http(s)://` store (plain GETs; a partial file is
resumed with a `Range` request), or an object store URL (`s3://`, `file://`) through
`edgefleet.build.store.ObjectStore` (imported only then). Every source reads the same
content-addressed path, `blobs/sha256/<digest>`, never a path the state names, so a state
cannot point the agent at other files. The declared size is a hard cap (more bytes is
E606, stopped at the cap), the digest is checked before the file is used (E605), and free
space for the blob plus a margin is checked first (E607).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from edgefleet.core.fsutil import sha256_file
from edgefleet.agent.errors import AgentError

CHUNK = 256 * 1024
FREE_MARGIN = 8 * 1024 * 1024   # kept free beyond the blob: the journal, telemetry, the OS
TIMEOUT = 30


def blob_rel(digest: str) -> str:
    from edgefleet.build.store import blob_path

    return blob_path(digest)


def check_free_space(directory: Path, needed: int, margin: int = FREE_MARGIN) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + margin:
        raise AgentError("E607", f"not enough free space in {directory}: {free} bytes free, "
                         f"{needed} needed plus a {margin}-byte margin",
                         "free space on the device (old logs, core dumps); the current model keeps serving",
                         reason="InsufficientSpace")


def fetch_blob(store: str, digest: str, size: int, cache: Path, *, margin: int = FREE_MARGIN,
               exact: bool = True) -> Path:
    """Return the path of the checked blob `digest` (fetched now or found in the cache).

    `size` is the declared size (exact) or, with exact=False, only a cap (the golden input,
    whose size the state does not record).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    done = cache / digest
    if done.is_file():
        if (done.stat().st_size == size or not exact) and sha256_file(done) == digest:
            return done
        done.unlink()  # a corrupted cache file: fetch again
    part = cache / f"{digest}.part"
    have = part.stat().st_size if part.is_file() else 0
    if have > size:
        part.unlink()
        have = 0
    check_free_space(cache, size - have if exact else 0, margin)
    rel = blob_rel(digest)
    try:
        if "://" not in store or store.startswith("file://"):
            _copy_local(Path(_local_path(store)) / rel, part, have, size)
        elif store.startswith(("http://", "https://")):
            _get_http(store.rstrip("/") + "/" + rel, part, have, size)
        else:
            _get_object(store, rel, part, size)
    except AgentError as exc:
        if exc.code == "E606":
            _discard(part)
        raise
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC: the check raced with another writer
            _discard(part)
            raise AgentError("E607", f"disk full while downloading sha256:{digest}: {exc.strerror}",
                             "free space on the device; the current model keeps serving",
                             reason="InsufficientSpace") from None
        raise AgentError("E618", f"cannot read sha256:{digest} from {store}: {exc}",
                         "check the artifact store (--store) is reachable", reason="StoreUnavailable") from None
    got = part.stat().st_size
    if exact and got != size:
        raise AgentError("E605", f"sha256:{digest}: the store gave {got} of {size} bytes",
                         "a truncated download; it resumes on the next poll", reason="Truncated")
    actual = sha256_file(part)
    if actual != digest:
        _discard(part)
        raise AgentError("E605", f"artifact digest mismatch: expected sha256:{digest}, got sha256:{actual}",
                         "the store or the download cache holds other bytes than the signed state names "
                         "(tampered or corrupted); it was discarded and is fetched again next poll",
                         reason="DigestMismatch")
    os.replace(part, done)
    return done


BUNDLE_CAP = 1 << 20  # a Sigstore bundle is a few KB; anything larger is refused, not read


def fetch_store_file(store: str, rel: str, cache: Path, cap: int = BUNDLE_CAP) -> bytes | None:
    """A small file of the store named by path, not digest (an artifact's provenance bundle,
    `keys/<key>/provenance.sigstore.json`), capped at `cap` bytes; None when the store has none.
    Not trusted: its contents are what the caller then verifies."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    part = cache / (hashlib.sha256(rel.encode()).hexdigest() + ".part")
    _discard(part)
    try:
        if "://" not in store or store.startswith("file://"):
            src = Path(_local_path(store)) / rel
            if not src.is_file():
                return None
            _copy_local(src, part, 0, cap)
        elif store.startswith(("http://", "https://")):
            try:
                _get_http(store.rstrip("/") + "/" + rel, part, 0, cap)
            except AgentError as exc:
                if "HTTP 404" in exc.message:
                    return None
                raise
        else:
            try:
                _get_object(store, rel, part, cap)
            except AgentError as exc:
                if exc.code == "E618":
                    return None
                raise
        return part.read_bytes()
    finally:
        _discard(part)


def _local_path(store: str) -> str:
    return urlparse(store).path if store.startswith("file://") else store


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _append(part: Path, chunks, have: int, size: int) -> None:
    with open(part, "ab") as out:
        for chunk in chunks:
            if have + len(chunk) > size:
                raise AgentError("E606", f"{part.name[:-5]}: the store has more than the declared {size} bytes",
                                 "the signed state's size is a hard cap; the store holds other bytes",
                                 reason="Oversized")
            out.write(chunk)
            have += len(chunk)
        out.flush()
        os.fsync(out.fileno())


def _copy_local(src: Path, part: Path, have: int, size: int) -> None:
    if not src.is_file():
        raise AgentError("E618", f"no blob {src}", "check --store names the fleet's artifact store",
                         reason="BlobMissing")
    with open(src, "rb") as f:
        f.seek(have)
        _append(part, iter(lambda: f.read(CHUNK), b""), have, size)


def _get_http(url: str, part: Path, have: int, size: int) -> None:
    request = urllib.request.Request(url)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # noqa: S310 - http(s) only
            if have and resp.status != 206:
                part.unlink()  # the server ignored the range: start over
                have = 0
            _append(part, iter(lambda: resp.read(CHUNK), b""), have, size)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have == size:
            return
        raise AgentError("E618", f"GET {url}: HTTP {exc.code}", "check the artifact store URL",
                         reason="StoreUnavailable") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise AgentError("E618", f"GET {url}: {getattr(exc, 'reason', exc)}", "the store is unreachable; "
                         "the download resumes on the next poll", reason="StoreUnavailable") from None
    except http.client.HTTPException as exc:  # e.g. IncompleteRead: the connection broke mid-body
        got = part.stat().st_size if part.exists() else 0
        raise AgentError("E605", f"GET {url}: the download broke off after {got} of {size} bytes "
                         f"({type(exc).__name__})", "a truncated download; it resumes with a Range request "
                         "on the next poll", reason="Truncated") from None


def _get_object(store: str, rel: str, part: Path, size: int) -> None:
    from edgefleet.build.store import ObjectStore, StoreError

    try:
        backend = ObjectStore.from_url(store).backend
        data = backend.read(rel)
    except StoreError as exc:
        raise AgentError("E604", str(exc), "give --store a directory, http(s):// or s3:// URL") from None
    if data is None:
        raise AgentError("E618", f"no object {rel} in {store}", reason="BlobMissing")
    if part.exists():
        part.unlink()
    _append(part, [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)], 0, size)


