"""Publish one version of the signed desired-state tree (a TUF repository) into a directory.

`publish(out_dir, targets, keys, expiry, now, bins)` takes every device's desired state
as bytes with its custom fields, and leaves `out_dir` holding a complete, consistent TUF
repository that python-tuf's ngclient can update from (see edgefleet.signing for the
layout). The clock and the keys are arguments; nothing here reads the time or the
environment.

This module is the I/O driver; what the new version contains is decided by
`publication.Planner` (pure), from the previous version as `tree.read_tree` reads it.
The driver locks the directory, scans it (refusing links, E544), feeds the planner the
targets while writing each target file it asks for, then writes the metadata, commits,
and prunes. Every file operation goes through `treefs` (no-follow, relative to directory
descriptors, O_EXCL creates): nothing outside `out_dir` is ever written, truncated or
removed, whatever the tree holds.

Invariants:
- Atomic: every file of the new version goes under a name the live tree does not use
  (content-addressed targets, version-prefixed metadata), and the single mutable file,
  metadata/timestamp.json, is replaced last (temporary file, fsync, rename; roots too). A failure
  before that removes what this run wrote, so the previous tree is as it was; a crash
  leaves only unreferenced files, which the next publish rewrites or prunes. A new root
  version is written just before the timestamp (clients fetch N+1.root.json without
  asking the timestamp) and is removed on failure too.
- Incremental and self-repairing: a target file is written only if its bytes are new or
  the file in the tree does not hold them (every kept target is compared with its bytes,
  so a corrupted target is rewritten); a role gets a new version only if its content,
  its signing key or its file's integrity changed, or its expiry is within half a window.
  A no-change publish of an intact tree writes nothing.
- Monotonic: a device's release counter never decreases against the previous bins
  (E541), and every role's version only grows, across bin-count changes too.
- Superseded files are pruned after the new timestamp is in place, keeping the
  previous version's files for devices that are mid-update; only names the publisher
  writes, in its own folders, are ever pruned. Root versions are never pruned: an
  offline device walks the whole chain.

Scale: one pass over the targets (hashing, writing new files, comparing kept ones), then
one signature per changed bin. Hash bins are python-tuf's SuccinctRoles, sized so a bin
lists about 256 devices (at most 16384 bins), so a device's poll fetches its own bin only.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edgefleet.signing import ROLES, TOP_LEVEL_ROLES, SigningError
from edgefleet.signing.keys import RoleKeys
from edgefleet.signing.publication import (  # noqa: F401 - the publisher's public names
    MAX_BIT_LENGTH,
    TARGETS_PER_BIN,
    FastCanonicalJSON,
    MetaWrite,
    Planner,
    Publication,
    PublishReport,
    TargetFile,
    TargetWrite,
    bit_length_for,
)
from edgefleet.signing.tree import read_tree_at
from edgefleet.signing.treefs import Tree, scan
from edgefleet.spec.common import duration_seconds
from edgefleet.spec.fleet import ExpiryWindows


def publish(out_dir: Path, targets: Iterable[TargetFile], keys: RoleKeys, expiry: ExpiryWindows,
            now: datetime, bins: int | None = None,
            fleet_targets: Mapping[str, bytes] | None = None) -> PublishReport:
    """Write the tree for `targets` into `out_dir` (see the module docstring).

    `fleet_targets` ({layout.FLEET_TARGETS path: bytes}) are listed by the top-level
    targets role itself, e.g. the Sigstore trusted root devices check provenance with.

    Raises SigningError/DiagnosticError (E54x) on bad input or an unusable previous
    tree; the previous tree is then left intact.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    out_dir = Path(out_dir)
    windows = {role: timedelta(seconds=duration_seconds(getattr(expiry, role))) for role in TOP_LEVEL_ROLES}
    windows["bins"] = windows["targets"]
    with Tree(out_dir, create=True) as tree:
        try:
            fcntl.flock(tree.top.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SigningError("E543", f"another publish is writing {out_dir}",
                               "wait for it to finish; one compile per output directory at a time",
                               str(out_dir)) from None
        listing = scan(tree)  # refuses a tree holding links before anything is written
        previous = read_tree_at(tree, expect={role: keys.public(role) for role in ROLES})
        planner = Planner(previous, listing, keys, windows, now.astimezone(timezone.utc).replace(microsecond=0),
                          bins, str(out_dir))
        return _Applier(tree).run(planner, targets, fleet_targets or {})


class _Applier:
    """Writes what the planner decides, in commit order, and undoes it on failure."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.written: list[str] = []     # tree-relative files this run wrote (targets first, then metadata)
        self.keep_on_failure: set[str] = set()  # rewritten files the previous version references
        self.unchanged = 0

    def run(self, planner: Planner, targets: Iterable[TargetFile], fleet_targets: Mapping[str, bytes]) -> PublishReport:
        committed = False
        try:
            for path, data in sorted(fleet_targets.items()):
                write = planner.add_fleet_target(path, data)
                if write is not None:
                    self.target(write)
            for t in targets:
                write = planner.add(t)
                if write is not None:
                    self.target(write)
            publication = planner.finish(emit=self.meta)  # each signed file is written at once
            self.commit(publication)
            committed = True
        finally:
            if not committed:
                self.roll_back()
        report = publication.report
        targets_written = [p for p in self.written if p.startswith("targets/")]
        report.written = sorted(report.written + targets_written)
        report.unchanged += self.unchanged
        report.repaired = sorted(report.repaired + [p for p in targets_written if p in self.keep_on_failure])
        report.removed = self.prune(publication.prune)
        return report

    def target(self, w: TargetWrite) -> None:
        folder = self.tree.dir(w.dir, create=True)
        if w.exists:
            if folder.holds(w.name, w.data):
                self.unchanged += 1
                return
            rel = f"{w.dir}/{w.name}"
            if w.referenced:  # damaged (a file the previous version lists): repaired, kept even on failure
                self.keep_on_failure.add(rel)
            self.written.append(rel)
            folder.rewrite(w.name, w.data)
            return
        rel = f"{w.dir}/{w.name}"
        if w.referenced:  # missing, though the previous version lists it: restored, kept even on failure
            self.keep_on_failure.add(rel)
        self.written.append(rel)  # before the write: a failed write is cleaned up too
        folder.create(w.name, w.data)

    def meta(self, w: MetaWrite, durable: bool = False) -> None:
        parent, _, name = w.path.rpartition("/")
        folder = self.tree.dir(parent, create=True)
        if durable:  # a root: never half-written (a device fetches N+1.root.json without asking)
            if w.exists:  # a repaired root: the live chain names it
                self.keep_on_failure.add(w.path)
            else:
                self.written.append(w.path)
            folder.replace(name, w.data)
            return
        self.written.append(w.path)
        if w.exists:  # a leftover of a killed run under the name this version uses
            folder.rewrite(name, w.data)
        else:
            folder.create(name, w.data)

    def commit(self, publication: Publication) -> None:
        for w in publication.metadata:
            self.meta(w)
        if publication.root is not None:
            self.meta(publication.root, durable=True)
        if publication.timestamp is not None:
            self.tree.dir("metadata", create=True).replace("timestamp.json", publication.timestamp)  # commit

    def roll_back(self) -> None:
        for rel in reversed(self.written):
            if rel in self.keep_on_failure:
                continue
            parent, _, name = rel.rpartition("/")
            try:
                folder = self.tree.dir(parent)
                if folder is not None:
                    folder.unlink(name)
            except (OSError, SigningError):
                pass

    def prune(self, paths: tuple[str, ...]) -> list[str]:
        """Best effort: the new version is already live, a file left over is pruned next time."""
        removed = []
        for rel in paths:
            parent, _, name = rel.rpartition("/")
            try:
                folder = self.tree.dir(parent)
                if folder is not None and folder.unlink(name):
                    removed.append(rel)
            except (OSError, SigningError):
                pass
        return removed
