"""Fetch a blob by digest from the artifact store into the state directory's download cache.

    downloads/<digest>.part    bytes so far (a restart resumes from its length)
    downloads/<digest>         complete and checked: the digest matched

Sources: a local store directory or `file://` URL, an `http(s)://` store (plain GETs; a
partial file is resumed with a `Range` request), or an `s3://bucket/prefix` object store
(the bucket and prefix parsed by `edgefleet.build.store.ObjectStore`, imported only then;
boto3 streams the object with a ranged GET, so a partial file resumes there too, and an
object larger than the declared size is refused from its Content-Length before a byte is
read). The S3 endpoint and credentials come from boto3's usual chain: `AWS_ENDPOINT_URL`
(or `AWS_ENDPOINT_URL_S3`) for MinIO, Ceph and other S3-compatible stores. Every source reads the same
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
            _get_object(store, rel, part, have, size)
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
                _get_object(store, rel, part, 0, cap)
            except AgentError as exc:
                if exc.reason == "BlobMissing":  # absent; an unreachable store is an error
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


S3_ATTEMPTS = 3  # botocore's standard retry mode: throttling and 5xx retried, with backoff


def _s3_client():
    """A client with bounded timeouts and retries: a device must not hang on a dead store."""
    import boto3  # type: ignore[import-not-found]
    from botocore.config import Config  # type: ignore[import-not-found]

    return boto3.client("s3", config=Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT,
                                            retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"}))


def _get_object(store: str, rel: str, part: Path, have: int, size: int) -> None:
    """Stream `rel` of an s3:// store into `part`, resuming after its first `have` bytes."""
    from edgefleet.build.store import ObjectStore, StoreError

    try:
        backend = ObjectStore.from_url(store).backend
    except StoreError as exc:
        raise AgentError("E604", str(exc), "give --store a directory, http(s):// or s3://bucket/prefix URL",
                         reason="NoStore") from None
    bucket, key = getattr(backend, "bucket", None), getattr(backend, "_name", None)
    if bucket is None or key is None:  # a file:// URL is read as a local path before this
        raise AgentError("E604", f"{store}: not an s3:// store", "give --store s3://bucket/prefix")
    key = key(rel)
    where = f"s3://{bucket}/{key}"
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-not-found]

    try:
        client = _s3_client()
        args = {"Bucket": bucket, "Key": key, **({"Range": f"bytes={have}-"} if have else {})}
        try:
            resp = client.get_object(**args)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if err.get("Code") == "InvalidRange" or status == 416:
                if have == size:
                    return  # the part file is already whole
                part.unlink()  # the object is shorter than the part file: start over next poll
                raise AgentError("E605", f"{where}: holds fewer bytes than the {have} already downloaded",
                                 "the download restarts on the next poll", reason="Truncated") from None
            if err.get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise AgentError("E618", f"no object {where} (the store has no blob {rel})",
                                 "check --store (or the fleet's artifact_store.url) names the store the fleet "
                                 "was built into; the current model keeps serving", reason="BlobMissing") from None
            raise AgentError("E618", f"GET {where}: {err.get('Code') or status}: {err.get('Message', '')}".rstrip(": "),
                             "check the bucket, the device's credentials (AWS_* or its instance role) and "
                             "AWS_ENDPOINT_URL for a non-AWS store", reason="StoreUnavailable") from None
        length = int(resp.get("ContentLength") or 0)
        if have and "ContentRange" not in resp:
            part.unlink()  # the store ignored the range: start over
            have = 0
        if have + length > size:
            resp["Body"].close()
            raise AgentError("E606", f"{where}: the object has {have + length} bytes, more than the declared {size}",
                             "the signed state's size is a hard cap; the store holds other bytes", reason="Oversized")
        body = resp["Body"]
        try:
            _append(part, iter(lambda: body.read(CHUNK), b""), have, size)
        finally:
            body.close()
    except BotoCoreError as exc:
        got = part.stat().st_size if part.exists() else 0
        if got > have:  # the body broke off: keep what arrived, resume with a ranged GET
            raise AgentError("E605", f"GET {where}: the download broke off after {got} of {size} bytes "
                             f"({type(exc).__name__})", "a truncated download; it resumes with a ranged GET "
                             "on the next poll", reason="Truncated") from None
        raise AgentError("E618", f"GET {where}: {exc}", "the store is unreachable; the download resumes "
                         "on the next poll", reason="StoreUnavailable") from None
