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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

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


def _walk_tree(read: Callable[[str], tuple[str, bytes] | None], into: GivenGenerations,
               parsed: dict[str, list[tuple[str, Generation]]]) -> None:
    """Add the generations one tree publishes. `read(path)` gives (blob id, bytes) or None."""
    found = read("metadata/timestamp.json")
    if found is None:
        return
    timestamp = json.loads(found[1])
    snapshot_version = timestamp["signed"]["meta"]["snapshot.json"]["version"]
    found = read(f"metadata/{snapshot_version}.snapshot.json")
    if found is None:
        raise SourceError(f"snapshot v{snapshot_version} named by timestamp.json is missing")
    meta = json.loads(found[1])["signed"]["meta"]
    for role, info in meta.items():
        if role in ("targets.json",):
            continue
        name = f"{info['version']}.{role}"
        blob = None
        for path in _metadata_paths(name):
            blob = read(path)
            if blob is not None:
                break
        if blob is None:
            raise SourceError(f"metadata {name} named by snapshot v{snapshot_version} is missing")
        blob_id, data = blob
        if blob_id not in parsed:
            entries = []
            for info_t in json.loads(data)["signed"]["targets"].values():
                custom = info_t.get("custom") or {}
                entries.append((str(custom[CUSTOM_DEVICE_ID]),
                                (info_t["hashes"]["sha256"], int(custom[CUSTOM_RELEASE_COUNTER]))))
            parsed[blob_id] = entries
        for device_id, generation in parsed[blob_id]:
            into.by_device.setdefault(device_id, set()).add(generation)


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
            for commit in repo.iter_commits(branch):
                tree = commit.tree

                def read(path: str, tree=tree):
                    try:
                        blob = tree / path
                    except KeyError:
                        return None
                    return blob.hexsha, blob.data_stream.read()

                _walk_tree(read, out, parsed)
                out.commits += 1
            return out
        if (location / "metadata" / "timestamp.json").is_file():
            def read_file(path: str):
                file = location / path
                return (path, file.read_bytes()) if file.is_file() else None

            _walk_tree(read_file, out, parsed)
            out.commits = 1
            return out
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise SourceError(f"{location}: cannot read the desired-state tree: {type(exc).__name__}: {exc}") from None
    raise SourceError(f"{location}: no branch '{branch}' and no desired-state tree (metadata/timestamp.json)")


def read_envelopes(source: str) -> Iterator[tuple[str, bytes]]:
    """(device id, envelope) for every report at `source`, oldest first per device."""
    from edgefleet.agent.status_remote import StatusRemoteError, read_reports

    try:
        yield from read_reports(source)
    except StatusRemoteError as exc:
        raise SourceError(f"{source}: cannot read reports: {exc.message}") from None
    except (OSError, git.GitCommandError, ValueError) as exc:
        raise SourceError(f"{source}: cannot read reports: {type(exc).__name__}: {exc}") from None
