"""The I/O edge of model analysis: hashing model files, reading them, caching the results.

Everything derived from a model file is a pure function of its bytes, so results are
kept per sha256 in `<repo>/.edgefleet/cache/analysis/<sha256>.json`: the `ModelFacts`,
the activation estimate per set of input shapes, and each runtime's support answer
(keyed by the runtime versions that gave it). A second `validate` reads that file and
neither parses the model nor imports onnx, onnxruntime or OpenVINO.

The cache is an optimisation, never a source of truth: a file that is missing,
unreadable, from another cache schema or another onnx version, that does not validate, that
is about another model's digest, or whose own digest (`entry_sha256`, over the canonical JSON
of the rest of the entry) does not match, is ignored and rewritten; a cache directory that
cannot be written is skipped. So an edited cache file cannot change a verdict, only cost a
re-analysis. (The digest catches edits and corruption, not a forger who recomputes it: treat
`.edgefleet/` like the checkout it sits in.) Writes go through a temporary file and
`os.replace`, so a reader never sees half a record.

In memory, an `AnalysisMemory` keeps hashes, records and parsed models between analyses of one
run. It is an explicit object with bounds, owned by the `Analyzer` (one per run by default) or
passed in by a caller that wants to share it; nothing is kept at module level, so a long-running
process (the agent, the simulator) does not grow with every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from edgefleet.analysis.onnx_facts import (ActivationEstimate, ModelFacts, ModelReadError, activation_estimate,
                                           model_facts, read_model)
from edgefleet.analysis.runtime_support import KernelIndex, installed_onnxruntime_kernels
from edgefleet.core.paths import PathRefused, resolve_inside

CACHE_SCHEMA = 2  # 2: entries carry their own digest
CACHE_DIR = Path(".edgefleet") / "cache" / "analysis"
_CHUNK = 1 << 20

M = TypeVar("M", bound=BaseModel)
K = TypeVar("K")
V = TypeVar("V")


def tool_version(package: str) -> str:
    """The installed version of `package` ("" when it is not installed); not memoised here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


class BoundedMemo(Generic[K, V]):
    """A least-recently-used map that holds at most `limit` entries."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return value

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


_NO_KERNELS = object()


class AnalysisMemory:
    """What analyses keep in memory between calls: file hashes, cache records, parsed models
    (the largest: a stripped ModelProto per model), tool versions and the onnxruntime kernels.
    Every part is bounded."""

    def __init__(self, records: int = 256, models: int = 4, hashes: int = 4096):
        self.records: BoundedMemo[str, dict] = BoundedMemo(records)  # sha256 -> cache record
        self.models: BoundedMemo[str, object] = BoundedMemo(models)  # sha256 -> stripped ModelProto
        # resolved path -> ((size, mtime_ns, inode), sha256)
        self.hashes: BoundedMemo[str, tuple[tuple[int, int, int], str]] = BoundedMemo(hashes)
        self.versions: BoundedMemo[str, str] = BoundedMemo(64)  # package -> version
        self._kernels: object = _NO_KERNELS

    def tool_version(self, package: str) -> str:
        hit = self.versions.get(package)
        return hit if hit is not None else self.versions.put(package, tool_version(package))

    def kernels(self) -> KernelIndex | None:
        """The onnxruntime CPU kernels installed here, asked once per memory."""
        if self._kernels is _NO_KERNELS:
            self._kernels = installed_onnxruntime_kernels()
        return self._kernels  # type: ignore[return-value]


def sha256_file(path: Path, hashes: BoundedMemo | None = None) -> str:
    """Hex sha256 of a file, read in chunks (memoised in `hashes` per path, size, mtime and inode)."""
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    key = str(path.resolve())
    hit = hashes.get(key) if hashes is not None else None
    if hit and hit[0] == stamp:
        return hit[1]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    if hashes is not None:
        hashes.put(key, (stamp, digest.hexdigest()))
    return digest.hexdigest()


def entry_digest(record: dict) -> str:
    """sha256 of an entry's canonical JSON without its own digest field."""
    body = {k: v for k, v in record.items() if k != "entry_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AnalysisCache:
    """JSON records per sha256 in one directory (None: keep nothing on disk)."""

    def __init__(self, directory: Path | None, onnx_version: Callable[[], str] = lambda: tool_version("onnx")):
        self.directory = directory
        self._onnx_version = onnx_version

    def _path(self, sha256: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{sha256}.json"

    def load(self, sha256: str) -> dict | None:
        path = self._path(sha256)
        if path is None:
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if (not isinstance(record, dict) or record.get("schema") != CACHE_SCHEMA
                or record.get("sha256") != sha256 or record.get("entry_sha256") != entry_digest(record)
                or record.get("onnx") != self._onnx_version()
                or not isinstance(record.get("facts"), dict) or record["facts"].get("sha256") != sha256
                or not all(isinstance(record.get(key), dict) for key in ("activations", "support"))):
            return None
        del record["entry_sha256"]
        return record

    def store(self, sha256: str, record: dict) -> None:
        path = self._path(sha256)
        if path is None:
            return
        sealed = {**record, "entry_sha256": entry_digest(record)}
        data = json.dumps(sealed, sort_keys=True, separators=(",", ":")).encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{sha256[:16]}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a read-only checkout still validates; it just analyses again next time


@dataclass(frozen=True)
class FileAnalysis:
    """One model file: its real sha256 and its facts, or why it could not be read."""

    rel: str
    sha256: str | None  # None: the file does not exist
    facts: ModelFacts | None
    error: str = ""


class Analyzer:
    """Analysis of the model files of one repository, cached by content."""

    def __init__(self, root: Path, cache_dir: Path | None | bool = True, memory: AnalysisMemory | None = None):
        self.root = root
        self.memory = memory if memory is not None else AnalysisMemory()
        directory = (root / CACHE_DIR) if cache_dir is True else (cache_dir or None)
        self.cache = AnalysisCache(directory if isinstance(directory, Path) else None,
                                   lambda: self.memory.tool_version("onnx"))

    def tool_version(self, package: str) -> str:
        return self.memory.tool_version(package)

    def path(self, rel: str) -> Path:
        return resolve_inside(self.root, rel, "model source")  # never a file outside the repository

    def analyse(self, rel: str) -> FileAnalysis:
        try:
            path = self.path(rel)
        except PathRefused as exc:
            return FileAnalysis(rel, None, None, str(exc))
        if not path.is_file():
            return FileAnalysis(rel, None, None, "file does not exist")
        try:
            sha = sha256_file(path, self.memory.hashes)
        except OSError as exc:
            return FileAnalysis(rel, None, None, f"cannot be read: {exc.strerror or exc}")
        record = self._record(sha)
        if record is not None:
            try:
                return FileAnalysis(rel, sha, ModelFacts.model_validate(record["facts"]))
            except ValidationError:
                self.memory.records.pop(sha)
        try:
            proto, size, checker_error = read_model(path)
        except ModelReadError as exc:
            return FileAnalysis(rel, sha, None, str(exc))
        try:
            facts = model_facts(proto, sha256=sha, file_size=size, checker_error=checker_error)
        except Exception as exc:  # a file that parses but holds nonsense is bad input, not a crash
            return FileAnalysis(rel, sha, None, f"not an analysable ONNX model ({type(exc).__name__}: {exc})")
        self.memory.models.put(sha, proto)
        record = {"schema": CACHE_SCHEMA, "sha256": sha, "onnx": self.tool_version("onnx"),
                  "facts": facts.model_dump(mode="json"), "activations": {}, "support": {}}
        self.memory.records.put(sha, record)
        self.cache.store(sha, record)
        return FileAnalysis(rel, sha, facts)

    def activations(self, analysis: FileAnalysis, shapes: dict[str, tuple[int, ...]]) -> ActivationEstimate:
        assert analysis.sha256 is not None and analysis.facts is not None
        key = ";".join(f"{name}={'x'.join(map(str, dims))}" for name, dims in sorted(shapes.items()))

        def compute() -> ActivationEstimate:
            proto = self.memory.models.get(analysis.sha256)
            try:
                if proto is None:
                    proto, size, _ = read_model(self.path(analysis.rel))
                    model_facts(proto, sha256=analysis.sha256, file_size=size)  # strips the payloads
                    self.memory.models.put(analysis.sha256, proto)
                return activation_estimate(proto, shapes)
            except Exception as exc:  # the file changed since it was hashed, or inference broke
                return ActivationEstimate(input_shapes=tuple(sorted(shapes.items())), peak_bytes={}, tensors=0,
                                          unknown_tensors=0, error=f"{type(exc).__name__}: {exc}"[:200])

        return self.memo(analysis.sha256, "activations", key, ActivationEstimate, compute)

    def memo(self, sha256: str, section: str, key: str, kind: type[M], compute: Callable[[], M]) -> M:
        """A result derived from a model, computed once per (sha256, key) and kept."""
        record = self._record(sha256)
        if record is None:  # analyse() was not called for this sha: compute, keep nothing
            return compute()
        cached = record[section].get(key)
        if cached is not None:
            try:
                return kind.model_validate(cached)
            except ValidationError:
                pass
        value = compute()
        if not getattr(value, "error", ""):  # a failure may be passing (a file being replaced): retry next time
            record[section][key] = value.model_dump(mode="json")
            self.cache.store(sha256, record)
        return value

    def _record(self, sha256: str) -> dict | None:
        record = self.memory.records.get(sha256)
        if record is None:
            record = self.cache.load(sha256)
            if record is not None:
                self.memory.records.put(sha256, record)
        elif self.cache.directory is not None and not (self.cache.directory / f"{sha256}.json").is_file():
            self.cache.store(sha256, record)  # known in this process; give this repository its copy
        return record
