"""Fetch the desired-state tree from a static HTTP(S) mirror: plain GETs of the same files.

TUF makes mirrors untrusted, so any static host, object store or CDN can serve the tree.
`MirrorFetcher` is a python-tuf `FetcherInterface` that maps the names TUF asks for onto
tree files with `edgefleet.signing.layout.metadata_file` / `target_file`, GETs them and
keeps a copy in a local mirror directory (same layout). A pre-pass runs TUF's client
workflow over a scratch copy of the device's metadata cache only to learn which files are
needed (root chain, timestamp, snapshot, targets, this device's bin, its target): a no-op
poll is the next root's 404 and `timestamp.json`. Then `verify_device` verifies the
mirror directory offline, as for a git checkout. Lengths are bounded by TUF's limits
(its `download_bytes(max_length)`) and by `MAX_FILE` here.

Every GET asks for `Accept-Encoding: gzip`: CDNs, object stores (an object stored with
`Content-Encoding: gzip`) and web servers (nginx `gzip_static`/`gzip`) serve the JSON
metadata compressed, and the bins and the snapshot, most of an update's bytes, shrink to
well under half. The body is decoded here, in bounded steps (a small compressed body
cannot grow past the limits: a decompression bomb stops at `MAX_FILE`), and TUF checks
lengths, hashes and signatures on the decoded bytes, as if none was used; a server that
ignores the header sends the plain file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface

from edgefleet.agent.errors import AgentError

MAX_FILE = 64 * 1024 * 1024
_STEP = 64 * 1024
TIMEOUT = 30
_SCHEME = "edgefleet-tree:"


class MirrorFetcher(FetcherInterface):
    def __init__(self, base_url: str, mirror_dir: Path):
        self.base = base_url.rstrip("/") + "/"
        self.mirror = Path(mirror_dir)
        self.bytes_fetched = 0
        self.unreachable: str | None = None
        self.fetched: set[str] = set()

    def _rel(self, url: str) -> str:
        from edgefleet.signing.layout import metadata_file

        if not url.startswith(_SCHEME):
            raise tuf_errors.DownloadError(f"not a tree URL: {url}")
        rel = unquote(url[len(_SCHEME):])
        if any(p in ("", ".", "..") for p in rel.split("/")):
            raise tuf_errors.DownloadHTTPError(f"{rel}: not a tree path", 404)
        if rel.startswith("metadata/"):
            return metadata_file(rel[len("metadata/"):])
        return rel  # targets/<dir>/<hash>.<base>: target_file() already applied by TUF's naming

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = self._rel(url)
        request = urllib.request.Request(self.base + rel, headers={"Accept-Encoding": "gzip"})
        try:
            resp = urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raise tuf_errors.DownloadHTTPError(f"{rel}: HTTP {exc.code}", exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            self.unreachable = f"{self.base}: {getattr(exc, 'reason', exc)}"
            raise tuf_errors.DownloadError(self.unreachable) from None
        return self._record(resp, rel)

    def _record(self, resp, rel: str) -> Iterator[bytes]:
        dest = self.mirror / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".get.", dir=dest.parent)
        complete = False
        try:
            with resp, os.fdopen(fd, "wb") as out:
                total = 0
                for chunk in self._decoded(resp, rel):
                    total += len(chunk)
                    if total > MAX_FILE:
                        raise tuf_errors.DownloadLengthMismatchError(f"{rel}: more than {MAX_FILE} bytes")
                    out.write(chunk)
                    yield chunk
                complete = True
            os.replace(tmp, dest)
            self.fetched.add(rel)
        finally:
            if not complete and os.path.exists(tmp):
                os.unlink(tmp)

    def _decoded(self, resp, rel: str) -> Iterator[bytes]:
        """The body's bytes, gunzipped when the server says `Content-Encoding: gzip`."""
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise tuf_errors.DownloadError(f"{rel}: unsupported Content-Encoding {encoding!r}")
        inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        while raw := resp.read(_STEP):
            self.bytes_fetched += len(raw)
            if inflate is None:
                yield raw
                continue
            data = raw
            while not inflate.eof:
                try:
                    chunk = inflate.decompress(data, _STEP)  # bounded: never more than _STEP at once
                except zlib.error as exc:
                    raise tuf_errors.DownloadError(f"{rel}: bad gzip body: {exc}") from None
                data = inflate.unconsumed_tail
                if chunk:
                    yield chunk
                if not data and len(chunk) < _STEP:
                    break  # this read is used up (after a full step zlib may hold more: loop again)
        if inflate is not None and not inflate.eof:
            raise tuf_errors.DownloadError(f"{rel}: truncated gzip body")


@dataclass(frozen=True)
class MirrorFetch:
    tree: Path
    revision: str        # sha256 of timestamp.json: what changed when the tree changed
    changed: bool
    bytes_fetched: int


def fetch_mirror(base_url: str, mirror_dir: Path, metadata_cache: Path, device_id: str,
                 trusted_root: bytes) -> MirrorFetch:
    from tuf.ngclient import Updater

    from edgefleet.signing import device_target_path
    from edgefleet.signing.layout import target_file
    from edgefleet.signing.verify import METADATA_URL, TARGETS_URL

    mirror_dir = Path(mirror_dir)
    mirror_dir.mkdir(parents=True, exist_ok=True)
    before = _digest(mirror_dir / "metadata" / "timestamp.json")
    fetcher = MirrorFetcher(base_url, mirror_dir)
    with tempfile.TemporaryDirectory(prefix="edgefleet-mirror-") as scratch:
        meta = Path(scratch, "metadata")
        if Path(metadata_cache).is_dir():
            shutil.copytree(metadata_cache, meta)
        else:
            meta.mkdir()
        try:
            updater = Updater(str(meta), METADATA_URL, target_dir=str(Path(scratch, "t")),
                              target_base_url=TARGETS_URL, fetcher=fetcher, bootstrap=trusted_root)
            path = device_target_path(device_id)
            info = updater.get_targetinfo(path)
            if info is not None:
                digest = info.hashes.get("sha256")
                local = mirror_dir / target_file(path, digest)
                local.parent.mkdir(parents=True, exist_ok=True)
                if updater.find_cached_target(info, str(local)) is None:
                    updater.download_target(info, filepath=str(local))
                _prune(mirror_dir, fetcher.fetched | {target_file(path, digest), "metadata/timestamp.json"})
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, ValueError):
            pass  # the verdict is verify_device's, over what was fetched
    if fetcher.unreachable:
        raise AgentError("E601", f"mirror unreachable: {fetcher.unreachable}",
                         "the device keeps serving and polls again", reason="RemoteUnreachable")
    after = _digest(mirror_dir / "metadata" / "timestamp.json")
    if after is None:
        raise AgentError("E602", f"{base_url} serves no metadata/timestamp.json",
                         "point --remote at the tree's root (the folder with metadata/ and targets/)",
                         reason="TreeMissing")
    return MirrorFetch(mirror_dir, after, changed=after != before, bytes_fetched=fetcher.bytes_fetched)


def _prune(mirror_dir: Path, keep: set[str]) -> None:
    """Drop files of older tree versions: the trusted copies live in the metadata cache.

    After a complete pass, verify_device needs only what this pass fetched (metadata the
    cache does not hold yet) and the device's target, so the mirror stays one version big.
    """
    for path in list(mirror_dir.rglob("*")):
        if path.is_file() and path.relative_to(mirror_dir).as_posix() not in keep:
            path.unlink()


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
