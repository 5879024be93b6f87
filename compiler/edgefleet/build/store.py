"""The content-addressed artifact store: one interface, three backends.

Layout (the same in every backend):

    keys/<key>/record.json               build record (canonical JSON); its presence commits the key
    keys/<key>/provenance.intoto.json    in-toto Statement v1 with SLSA Provenance v1
    keys/<key>/provenance.sigstore.json  Sigstore bundle of the statement (when signed in CI)
    blobs/sha256/<digest>                artifacts and extra files, by content

Reads are verified, not trusted: `get_record` (every backend) parses the record and
re-hashes every blob it names before returning it, so an edited blob, a truncated
record or a deleted blob is `StoreCorrupt` (E416, a reported input error), never a cache
hit and never a digest signed into a desired state.

Invariants: a key is either absent or complete (record, documents and every blob it
names); `put` is atomic and first-writer-wins, so CI jobs sharing one store may race
safely; nothing but `put` writes, so a failed build leaves the store as it was.

- `LocalStore`: a directory (default `<repo>/.edgefleet/artifacts`). A key is staged in a
  temporary directory on the same filesystem, fsynced and renamed into place.
- `RepoStore`: a LocalStore inside the fleet repository, committed with it.
- `ObjectStore`: object storage (`s3://bucket/prefix`), over a small `ObjectBackend`
  protocol whose writes are whole-object (as S3 PUT is). Blobs and documents go first and
  record.json last, so a reader never sees a key without its parts. `FileObjectBackend`
  (`file://` URLs) runs the same code path locally.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Mapping, Protocol
from urllib.parse import urlparse

from pydantic import ValidationError

from edgefleet.build.record import BuildRecord, parse_record, record_bytes
from edgefleet.core.diagnostics import DiagnosticError, error
from edgefleet.core.source import Location
from edgefleet.core.fsutil import fsync_dir, write_durable
from edgefleet.core.paths import PathRefused, resolve_inside

RECORD = "record.json"
PROVENANCE = "provenance.intoto.json"
SIGNATURE = "provenance.sigstore.json"
DOCUMENTS = (PROVENANCE, SIGNATURE)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class StoreError(Exception):
    """The store cannot be used (misconfigured, unreachable, or inconsistent input)."""


class StoreCorrupt(DiagnosticError, StoreError):
    """A stored key whose record or blobs are not what was written (E416).

    A DiagnosticError, so any command that meets one reports it (exit 1) instead of
    crashing, and a StoreError for callers that handle store problems as such.
    """

    def __init__(self, location: str, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__([error(
            "E416", f"artifact store entry {key[:16]}… is corrupt: {problem}",
            Location(f"{location.rstrip('/')}/{key_path(key, RECORD)}"),
            f"the store was changed outside edgefleet: delete keys/{key}/ (and any blob named here) "
            "from the store, then run `edgefleet build` to rebuild it")])


def verified_record(store: "Store", key: str, raw: bytes | None) -> BuildRecord | None:
    """The one verified read: `raw` (a record.json) parsed, and every blob it names present
    with exactly its recorded sha256 and size. None when there is no record."""
    if raw is None:
        return None
    try:
        record = parse_record(raw)
    except (ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreCorrupt(store.location, key, f"its record.json cannot be read ({first})") from None
    if record.key != key:
        raise StoreCorrupt(store.location, key, f"its record.json is for key {record.key[:16]}…")
    for ref in record.blobs():
        try:
            fh = store.open_artifact(ref.sha256)
        except (KeyError, StoreError):
            raise StoreCorrupt(store.location, key, f"blob sha256:{ref.sha256} ({ref.name}) is missing") from None
        digest, size = hashlib.sha256(), 0
        with fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        if digest.hexdigest() != ref.sha256 or size != ref.size:
            raise StoreCorrupt(store.location, key, f"blob sha256:{ref.sha256} ({ref.name}) does not match "
                                                    "its digest: it was edited or truncated")
    return record


def blob_path(digest: str) -> str:
    """Store-relative path of a blob (the same in every backend)."""
    return f"blobs/sha256/{_check_hex(digest, 'digest')}"


def key_path(key: str, name: str) -> str:
    return f"keys/{_check_hex(key, 'key')}/{name}"


def _check_hex(value: str, what: str) -> str:
    if not _HEX64.match(value):
        raise StoreError(f"not a sha256 {what}: {value!r}")
    return value


class Store(Protocol):
    location: str  # how the store is shown to people

    def has(self, key: str) -> bool: ...

    def get_record(self, key: str) -> BuildRecord | None:
        """The key's record, verified against its blobs (StoreCorrupt if they differ)."""
        ...

    def get_document(self, key: str, name: str) -> bytes | None: ...

    def put(self, key: str, files: Mapping[str, bytes], record: BuildRecord,
            documents: Mapping[str, bytes]) -> bool:
        """Store a built key; False when it was already there (another writer won)."""
        ...

    def open_artifact(self, digest: str) -> BinaryIO: ...


def _checked_blobs(key: str, files: Mapping[str, bytes], record: BuildRecord,
                   documents: Mapping[str, bytes]) -> dict[str, bytes]:
    """digest -> bytes of every file the record names, refusing any mismatch before writing."""
    _check_hex(key, "key")
    if record.key != key:
        raise StoreError(f"record is for key {record.key}, not {key}")
    unknown = set(documents) - set(DOCUMENTS)
    if unknown:
        raise StoreError(f"unknown document(s) {sorted(unknown)}; allowed: {list(DOCUMENTS)}")
    blobs: dict[str, bytes] = {}
    for ref in record.blobs():
        data = files.get(ref.name)
        if data is None:
            raise StoreError(f"record names file {ref.name!r} that was not given")
        if hashlib.sha256(data).hexdigest() != ref.sha256 or len(data) != ref.size:
            raise StoreError(f"file {ref.name!r} does not match its record entry")
        blobs[ref.sha256] = data
    return blobs


class LocalStore:
    """A directory on this machine."""

    def __init__(self, root: Path, location: str | None = None):
        self.root = Path(root)
        self.location = location or str(self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def has(self, key: str) -> bool:
        return (self.root / key_path(key, RECORD)).is_file()

    def get_record(self, key: str) -> BuildRecord | None:
        return verified_record(self, key, self.get_document(key, RECORD))

    def get_document(self, key: str, name: str) -> bytes | None:
        path = self.root / key_path(key, name)
        return path.read_bytes() if path.is_file() else None

    def open_artifact(self, digest: str) -> BinaryIO:
        path = self.root / blob_path(digest)
        if not path.is_file():
            raise KeyError(f"no blob sha256:{digest} in {self.location}")
        return path.open("rb")

    def put(self, key: str, files: Mapping[str, bytes], record: BuildRecord,
            documents: Mapping[str, bytes]) -> bool:
        blobs = _checked_blobs(key, files, record, documents)
        final = self.root / "keys" / key
        if final.is_dir():
            return False
        staging = self.root / "tmp"
        for folder in (staging, self.root / "blobs" / "sha256", self.root / "keys"):
            folder.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():  # a crash's leftovers in tmp/ must never be committed (RepoStore)
            ignore.write_text("tmp/\n", encoding="utf-8")
        for digest, data in blobs.items():
            self._put_blob(staging, digest, data)
        work = Path(tempfile.mkdtemp(prefix=f"{key[:16]}.", dir=staging))
        try:
            for name, data in {**documents, RECORD: record_bytes(record)}.items():
                write_durable(work / name, data)
            fsync_dir(work)
            try:
                os.rename(work, final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False  # another job committed the same key first
                raise
            fsync_dir(final.parent)
            return True
        finally:
            if work.exists():
                shutil.rmtree(work)

    def _put_blob(self, staging: Path, digest: str, data: bytes) -> None:
        target = self.root / blob_path(digest)
        if target.is_file():
            return  # content-addressed: the same digest is the same bytes
        fd, tmp = tempfile.mkstemp(prefix=f"{digest[:16]}.", dir=staging)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)  # blobs are immutable
            os.replace(tmp, target)
            fsync_dir(target.parent)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class RepoStore(LocalStore):
    """A LocalStore inside the fleet repository: artifacts are committed with the fleet.

    Suits small fleets and air-gapped sites where git is the only channel; large
    artifacts belong in an object store.
    """


class ObjectBackend(Protocol):
    """Whole-object reads and writes, as object stores offer them (S3, GCS, MinIO)."""

    url: str

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...

    def exists(self, name: str) -> bool: ...


class FileObjectBackend:
    """Objects as files under a directory: `file://` URLs (tests, shared NFS caches)."""

    def __init__(self, root: Path, url: str | None = None):
        self.root = Path(root)
        self.url = url or self.root.as_uri()

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def write(self, name: str, data: bytes) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".put.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)  # readers see the old object or the whole new one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class S3Backend:
    """Amazon S3 and compatibles through boto3 (optional; credentials from its usual chain)."""

    def __init__(self, bucket: str, prefix: str, url: str):
        try:
            import boto3  # type: ignore[import-not-found]  # noqa: F401
        except ImportError as exc:
            raise StoreError(f"{url}: the S3 backend needs boto3 (pip install boto3)") from exc
        self.bucket, self.prefix, self.url = bucket, prefix.strip("/"), url
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}  # clients do not cross process boundaries

    @property
    def client(self):
        if self._client is None:
            import boto3  # type: ignore[import-not-found]

            self._client = boto3.client("s3")
        return self._client

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._name(name))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError  # type: ignore[import-not-found]

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(name))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._name(name), Body=data)


class ObjectStore:
    """The store over an object backend; record.json is written last and commits the key."""

    def __init__(self, backend: ObjectBackend):
        self.backend = backend
        self.location = backend.url

    def __repr__(self) -> str:
        return f"ObjectStore({self.location!r})"

    @classmethod
    def from_url(cls, url: str) -> ObjectStore:
        parsed = urlparse(url)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise StoreError(f"{url}: a file:// URL names a local path (file:///abs/path)")
            return cls(FileObjectBackend(Path(parsed.path), url))
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise StoreError(f"{url}: give the bucket, s3://bucket/prefix")
            return cls(S3Backend(parsed.netloc, parsed.path, url))
        raise StoreError(f"{url}: unsupported object store URL (use s3://bucket/prefix or file:///path)")

    def has(self, key: str) -> bool:
        return self.backend.exists(key_path(key, RECORD))

    def get_record(self, key: str) -> BuildRecord | None:
        return verified_record(self, key, self.backend.read(key_path(key, RECORD)))

    def get_document(self, key: str, name: str) -> bytes | None:
        return self.backend.read(key_path(key, name))

    def open_artifact(self, digest: str) -> BinaryIO:
        raw = self.backend.read(blob_path(digest))
        if raw is None:
            raise KeyError(f"no blob sha256:{digest} in {self.location}")
        return io.BytesIO(raw)

    def put(self, key: str, files: Mapping[str, bytes], record: BuildRecord,
            documents: Mapping[str, bytes]) -> bool:
        blobs = _checked_blobs(key, files, record, documents)
        if self.has(key):
            return False
        for digest, data in blobs.items():
            if not self.backend.exists(blob_path(digest)):
                self.backend.write(blob_path(digest), data)
        for name, data in documents.items():
            self.backend.write(key_path(key, name), data)
        # Two racing writers commit identical artifacts (builds are deterministic), so the
        # last record.json written is as good as the first.
        self.backend.write(key_path(key, RECORD), record_bytes(record))
        return True


def open_store(repo_root: Path, config, override: str | None = None, display_root: str = ".") -> Store:
    """The store a repository's fleet.yaml names (`config` = spec.artifact_store), or `override`.

    `override` is a directory, or a `file://` / `s3://` URL (`edgefleet build --store`).
    """
    if override:
        if "://" in override:
            return ObjectStore.from_url(override)
        return LocalStore(Path(override), override)
    kind = getattr(config, "kind", "local")
    if kind == "object":
        if not config.url:
            raise StoreError("fleet.yaml: artifact_store.kind is object but no url is set")
        return ObjectStore.from_url(config.url)
    path = getattr(config, "path", ".edgefleet/artifacts")
    try:  # fleet.yaml is repository input: its store stays inside the repository
        directory = resolve_inside(repo_root, path, "artifact store")
    except PathRefused as exc:
        raise StoreError(f"fleet.yaml: artifact_store.path: {exc}; {exc.hint}") from None
    shown = path if display_root in ("", ".") else f"{display_root.rstrip('/')}/{path}"
    cls = RepoStore if kind == "repo" else LocalStore
    return cls(directory, shown)
