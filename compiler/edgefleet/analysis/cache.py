"""The I/O edge of model analysis: hashing model files, reading them, caching the results.

Everything derived from a model file is a pure function of its bytes, so results are
kept per sha256 in `<repo>/.edgefleet/cache/analysis/<sha256>.json`: the `ModelFacts`,
the activation estimate per set of input shapes, and each runtime's support answer
(keyed by the runtime versions that gave it). A second `validate` reads that file and
neither parses the model nor imports onnx, onnxruntime or OpenVINO.

The cache is an optimisation, never a source of truth: a file that is missing,
unreadable, from another cache schema or another onnx version, or that does not
validate, is ignored and rewritten; a cache directory that cannot be written is
silently skipped. Writes go through a temporary file and `os.replace`, so a reader
never sees half a record. The same results are also memoised in this process, so
validating many copies of one fleet (as tests do) analyses each model once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, TypeVar

from pydantic import BaseModel, ValidationError

from edgefleet.analysis.onnx_facts import (ActivationEstimate, ModelFacts, ModelReadError, activation_estimate,
                                           model_facts, read_model)
from edgefleet.core.paths import PathRefused, resolve_inside

CACHE_SCHEMA = 1
CACHE_DIR = Path(".edgefleet") / "cache" / "analysis"
_CHUNK = 1 << 20

M = TypeVar("M", bound=BaseModel)

# Process-wide memo: sha256 -> record (the same dict that is written to disk),
# and the path + stat of each hashed file -> its sha256.
_RECORDS: dict[str, dict] = {}
_HASHES: dict[str, tuple[tuple[int, int, int], str]] = {}
# sha256 -> stripped ModelProto, kept for activation estimates of further shapes.
_PROTOS: dict[str, object] = {}


@lru_cache(maxsize=None)
def tool_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (memoised per path, size, mtime and inode)."""
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    key = str(path.resolve())
    hit = _HASHES.get(key)
    if hit and hit[0] == stamp:
        return hit[1]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    _HASHES[key] = (stamp, digest.hexdigest())
    return _HASHES[key][1]


class AnalysisCache:
    """JSON records per sha256 in one directory (None: keep nothing on disk)."""

    def __init__(self, directory: Path | None):
        self.directory = directory

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
                or record.get("sha256") != sha256 or record.get("onnx") != tool_version("onnx")
                or not isinstance(record.get("facts"), dict)):
            return None
        for key in ("activations", "support"):
            if not isinstance(record.get(key), dict):
                record[key] = {}
        return record

    def store(self, sha256: str, record: dict) -> None:
        path = self._path(sha256)
        if path is None:
            return
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
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

    def __init__(self, root: Path, cache_dir: Path | None | bool = True):
        self.root = root
        directory = (root / CACHE_DIR) if cache_dir is True else (cache_dir or None)
        self.cache = AnalysisCache(directory if isinstance(directory, Path) else None)

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
            sha = sha256_file(path)
        except OSError as exc:
            return FileAnalysis(rel, None, None, f"cannot be read: {exc.strerror or exc}")
        record = self._record(sha)
        if record is not None:
            try:
                return FileAnalysis(rel, sha, ModelFacts.model_validate(record["facts"]))
            except ValidationError:
                _RECORDS.pop(sha, None)
        try:
            proto, size, checker_error = read_model(path)
        except ModelReadError as exc:
            return FileAnalysis(rel, sha, None, str(exc))
        try:
            facts = model_facts(proto, sha256=sha, file_size=size, checker_error=checker_error)
        except Exception as exc:  # a file that parses but holds nonsense is bad input, not a crash
            return FileAnalysis(rel, sha, None, f"not an analysable ONNX model ({type(exc).__name__}: {exc})")
        _PROTOS[sha] = proto
        record = {"schema": CACHE_SCHEMA, "sha256": sha, "onnx": tool_version("onnx"),
                  "facts": facts.model_dump(mode="json"), "activations": {}, "support": {}}
        _RECORDS[sha] = record
        self.cache.store(sha, record)
        return FileAnalysis(rel, sha, facts)

    def activations(self, analysis: FileAnalysis, shapes: dict[str, tuple[int, ...]]) -> ActivationEstimate:
        assert analysis.sha256 is not None and analysis.facts is not None
        key = ";".join(f"{name}={'x'.join(map(str, dims))}" for name, dims in sorted(shapes.items()))

        def compute() -> ActivationEstimate:
            proto = _PROTOS.get(analysis.sha256)
            try:
                if proto is None:
                    proto, size, _ = read_model(self.path(analysis.rel))
                    model_facts(proto, sha256=analysis.sha256, file_size=size)  # strips the payloads
                    _PROTOS[analysis.sha256] = proto
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
        record = _RECORDS.get(sha256)
        if record is None:
            record = self.cache.load(sha256)
            if record is not None:
                _RECORDS[sha256] = record
        elif self.cache.directory is not None and not (self.cache.directory / f"{sha256}.json").is_file():
            self.cache.store(sha256, record)  # known in this process; give this repository its copy
        return record


def clear_memory() -> None:
    """Forget this process's memo (tests use it to measure cold analysis)."""
    _RECORDS.clear()
    _HASHES.clear()
    _PROTOS.clear()
