"""The I/O edges of status and promote: which generations each device was given, and the reports.

Generations: a report must describe a desired state its device was really given, so the
reader collects, per device, every (target sha256, release counter) pair the
desired-state tree ever published for it. From a git repository it walks every commit
of the desired-state branch (timestamp -> snapshot -> hash bins, as compile's
release.py does); bin files are immutable per version (consistent snapshots), so each
distinct bin blob is parsed once however many commits share it. A plain directory gives
its current tree only.

Reports: `edgefleet.agent.status_remote.read_reports` (agent-io) reads a git status
remote, a folder or an object store; it yields (device id, envelope bytes), oldest first
per device. Nothing read here is trusted: the pipeline verifies every envelope.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import git

from edgefleet.signing import CUSTOM_DEVICE_ID, CUSTOM_RELEASE_COUNTER

Generation = tuple[str, int]  # (target sha256 hex, release counter)


class SourceError(Exception):
    """A source cannot be read at all (not a bad report: those are rejections)."""


@dataclass
class GivenGenerations:
    """device id -> every generation the desired-state tree gave it."""

    by_device: dict[str, set[Generation]] = field(default_factory=dict)
    commits: int = 0

    def was_given(self, device_id: str, generation: Generation) -> bool:
        return generation in self.by_device.get(device_id, ())


def _metadata_paths(name: str) -> list[str]:
    """Where metadata `name` may be stored: the sharded layout first, then flat."""
    try:
        from edgefleet.signing.layout import metadata_file

        first = metadata_file(name)
    except ImportError:  # pragma: no cover - the layout module ships with the tree
        first = f"metadata/{name}"
    return [first] if first == f"metadata/{name}" else [first, f"metadata/{name}"]


def _walk_tree(objects: _Objects | _Files, into: GivenGenerations,
               parsed: dict[str, list[tuple[str, Generation]]]) -> None:
    """Add the generations one tree publishes; a bin file already parsed (by its object id) is
    not read again. The bins are looked up, then read, in one exchange each."""
    (found,) = objects.ids(["metadata/timestamp.json"])
    if found is None:
        return
    timestamp = json.loads(objects.contents([found])[0])
    snapshot_version = timestamp["signed"]["meta"]["snapshot.json"]["version"]
    (found,) = objects.ids([f"metadata/{snapshot_version}.snapshot.json"])
    if found is None:
        raise SourceError(f"snapshot v{snapshot_version} named by timestamp.json is missing")
    meta = json.loads(objects.contents([found])[0])["signed"]["meta"]
    names = [f"{info['version']}.{role}" for role, info in meta.items() if role not in ("targets.json",)]
    candidates = [_metadata_paths(name) for name in names]
    looked_up = iter(objects.ids([path for paths in candidates for path in paths]))
    chosen = []
    for paths in candidates:
        ids = [next(looked_up) for _ in paths]
        chosen.append(next((i for i in ids if i is not None), None))
    wanted = list(dict.fromkeys(i for i in chosen if i is not None and i not in parsed))
    contents = dict(zip(wanted, objects.contents(wanted)))
    for name, blob_id in zip(names, chosen):
        if blob_id is None:
            raise SourceError(f"metadata {name} named by snapshot v{snapshot_version} is missing")
        if blob_id not in parsed:
            entries = []
            for info_t in json.loads(contents[blob_id])["signed"]["targets"].values():
                custom = info_t.get("custom") or {}
                entries.append((str(custom[CUSTOM_DEVICE_ID]),
                                (info_t["hashes"]["sha256"], int(custom[CUSTOM_RELEASE_COUNTER]))))
            parsed[blob_id] = entries
        for device_id, generation in parsed[blob_id]:
            into.by_device.setdefault(device_id, set()).add(generation)


class _Files:
    """A plain directory's files, by path (the path is the id)."""

    def __init__(self, root: Path):
        self.root = root

    def ids(self, paths: list[str]) -> list[str | None]:
        return [path if (self.root / path).is_file() else None for path in paths]

    def contents(self, paths: list[str]) -> list[bytes]:
        return [(self.root / path).read_bytes() for path in paths]


class _Objects:
    """`rev:path` objects of one git repository: one `git cat-file --batch-check` process says
    which object each name is, one `--batch` process reads objects; each exchange is written
    by a thread while this one reads the answers, so a tree costs a few round trips, not one
    (or a process) per file."""

    def __init__(self, git_dir: Path, commit: str = ""):
        import subprocess

        command = ["git", "--git-dir", str(git_dir), "cat-file"]
        pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.check = subprocess.Popen(command + ["--batch-check"], **pipes)
        self.batch = subprocess.Popen(command + ["--batch"], **pipes)
        self.commit = commit

    def __enter__(self) -> _Objects:
        return self

    def __exit__(self, *exc) -> None:
        for proc in (self.check, self.batch):
            proc.stdin.close()
            proc.stdout.close()
            proc.wait(timeout=120)

    def ids(self, paths: list[str]) -> list[str | None]:
        def answer() -> str | None:
            parts = self.check.stdout.readline().split()
            return parts[0].decode() if len(parts) == 3 else None  # else "<name> missing"

        return _exchange(self.check, [f"{self.commit}:{p}".encode() for p in paths], answer)

    def contents(self, object_ids: list[str]) -> list[bytes]:
        def answer() -> bytes:
            header = self.batch.stdout.readline().split()
            if len(header) != 3:
                raise OSError(f"git cat-file cannot read {header[:1]}")
            size = int(header[2])
            data = self.batch.stdout.read(size)
            self.batch.stdout.read(1)  # the newline after the object
            if len(data) != size:
                raise OSError("git cat-file ended early")
            return data

        return _exchange(self.batch, [i.encode() for i in object_ids], answer)


def _exchange(proc, requests: list[bytes], answer: Callable[[], Any]) -> list:
    """Send every request (a line each) while reading the answers: neither pipe fills up."""
    import threading

    def send() -> None:
        try:
            proc.stdin.write(b"".join(r + b"\n" for r in requests))
            proc.stdin.flush()
        except OSError:
            pass  # git ended; reading its answers says so

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    try:
        return [answer() for _ in requests]
    finally:
        writer.join()


def read_given_generations(location: Path, branch: str) -> GivenGenerations:
    """Every generation published on `branch` of the git repository at `location`, or in the
    tree at `location` when it is a plain directory."""
    location = Path(location)
    out = GivenGenerations()
    parsed: dict[str, list[tuple[str, Generation]]] = {}
    try:
        repo = git.Repo(location, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        repo = None
    try:
        if repo is not None and any(h.name == branch for h in repo.heads):
            commits = repo.git.rev_list(f"refs/heads/{branch}", "--").split()
            with _Objects(Path(repo.git_dir)) as objects:
                for commit in commits:
                    objects.commit = commit
                    _walk_tree(objects, out, parsed)
                    out.commits += 1
            return out
        if (location / "metadata" / "timestamp.json").is_file():
            _walk_tree(_Files(location), out, parsed)
            out.commits = 1
            return out
    except (KeyError, ValueError, TypeError, OSError, git.GitCommandError) as exc:
        raise SourceError(f"{location}: cannot read the desired-state tree: {type(exc).__name__}: {exc}") from None
    raise SourceError(f"{location}: no branch '{branch}' and no desired-state tree (metadata/timestamp.json)")


def read_envelopes(source: str, devices: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(device id, envelope) for every report at `source` (of `devices` only, when given),
    oldest first per device."""
    from edgefleet.agent.status_remote import StatusRemoteError, read_reports

    try:
        yield from read_reports(source, devices=devices)
    except StatusRemoteError as exc:
        raise SourceError(f"{source}: cannot read reports: {exc.message}") from None
    except (OSError, git.GitCommandError, ValueError) as exc:
        raise SourceError(f"{source}: cannot read reports: {type(exc).__name__}: {exc}") from None


def list_report_devices(source: str | Path) -> list[str] | None:
    """The devices that have reports at `source`, when it is a folder, a `dir:` store or a
    local git repository (cheap to list, so readers can split the work by device); None for
    anything else or anything unreadable (then `read_envelopes` reads, and says what is wrong).
    Listing is not checking: `read_envelopes(source, devices)` reads what it holds."""
    import subprocess

    from edgefleet.agent.status_remote import STATUS_PREFIX, _local_git_dir

    text = str(source)
    try:
        folder = Path(text[4:]) if text.startswith("dir:") else None
        if folder is None and "://" not in text:
            if _local_git_dir(text) is not None:
                refs = subprocess.run(["git", "-C", str(_local_git_dir(text)), "for-each-ref", "--format=%(refname)",
                                       STATUS_PREFIX], capture_output=True, check=True, timeout=120).stdout
                return sorted(r[len(STATUS_PREFIX):] for r in refs.decode("utf-8", "replace").split())
            if (Path(text) / "status").is_dir():
                folder = Path(text)
        if folder is None or not (folder / "status").is_dir():
            return None
        return sorted(entry.name[:-5] for entry in os.scandir(folder / "status") if entry.name.endswith(".json"))
    except (OSError, subprocess.SubprocessError):
        return None


def object_store_folder(source: str | Path) -> Path | None:
    """The folder of a `dir:` store, or of a plain folder of reports; None for anything else."""
    from edgefleet.agent.status_remote import _local_git_dir

    text = str(source)
    if text.startswith("dir:"):
        return Path(text[4:])
    if "://" not in text and _local_git_dir(text) is None and (Path(text) / "status").is_dir():
        return Path(text)
    return None


def read_object_logs(source: str | Path, devices: list[str]) -> Iterator[tuple[str, bytes]]:
    """`read_envelopes(source, devices)` for a folder store, without reading each envelope's
    counter first: it yields the same envelopes, in the same order, plus those whose counter
    cannot be read, which the reader in agent-io leaves out. A caller drops those when they
    fail verification (`unverified_counter(envelope) is None`), and so gets the same reports
    for a fraction of the parsing. The log format is agent-io's (status_remote._log_envelopes).
    """
    import base64

    from edgefleet.agent.status_remote import LOG_FORMAT, MAX_LOG_REPORTS
    from edgefleet.agent.report import MAX_ENVELOPE
    from edgefleet.core.ids import is_device_id

    text = str(source)
    url = text if text.startswith("dir:") else f"dir:{text}"
    folder = object_store_folder(source)
    if folder is None:
        raise SourceError(f"{source}: not a folder of reports")
    status = os.path.join(folder, "status")
    for device in sorted(devices):
        if not is_device_id(device):
            continue
        path = os.path.join(status, f"{device}.json")
        try:  # as FileObjectBackend.read: a regular file (or a link to one), else nothing
            data = _read_regular(path, 64 * MAX_ENVELOPE)
        except OSError as exc:
            raise SourceError(f"{source}: cannot read reports: {url}: cannot read status/{device}.json: {exc}") \
                from None
        if not data or len(data) > 64 * MAX_ENVELOPE:
            continue
        try:
            value = json.loads(data)
            if value.get("format") != LOG_FORMAT or value.get("device") != device:
                continue
            envelopes = [base64.b64decode(entry, validate=True) for entry in value["reports"][:MAX_LOG_REPORTS]]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue  # a damaged log holds nothing (as agent-io reads it)
        for envelope in envelopes:
            yield device, envelope


def _read_regular(path: str, limit: int) -> bytes | None:
    """The file's bytes (at most `limit` + 1: the caller refuses a longer one) if it is a regular
    file (or a link to one), else None, as `Path.is_file()` then `read_bytes()` but with one path
    lookup. O_NONBLOCK: opening a FIFO planted in the store returns at once (then fstat says no)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO):  # as is_file() ignores
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
