"""Publish one version of the signed desired-state tree (a TUF repository) into a directory.

`publish(out_dir, targets, keys, expiry, now, bins)` takes every device's desired state
as bytes with its custom fields, and leaves `out_dir` holding a complete, consistent TUF
repository that python-tuf's ngclient can update from (see edgefleet.signing for the
layout). The clock and the keys are arguments; nothing here reads the time or the
environment.

Invariants:
- Atomic: every file of the new version goes under a name the live tree does not use
  (content-addressed targets, version-prefixed metadata), and the single mutable file,
  metadata/timestamp.json, is replaced last with os.replace. A failure before that
  removes what this run wrote, so the previous tree is exactly as it was; a crash
  leaves only unreferenced files, which the next publish overwrites or prunes. A new
  root version is written just before the timestamp (clients fetch N+1.root.json
  without asking the timestamp) and is removed on failure too.
- Incremental: a target file is written only if its bytes are new; a role's metadata
  gets a new version only if its content or its signing key changed, or its expiry is
  within half a window (so a no-change publish writes nothing). Whether a device's
  target changed is decided from the hashes recorded in the previous bins, never by
  re-reading target files.
- Monotonic: a device's release counter never decreases against the previous bins
  (E541), and every role's version only grows, across bin-count changes too.
- Superseded files are pruned after the new timestamp is in place, keeping the
  previous version's files for devices that are mid-update. Root versions are never
  pruned: an offline device walks the whole chain.

Scale: one pass over the targets (hashing, writing new files), then one signature per
changed bin. Hash bins are python-tuf's SuccinctRoles, sized so a bin lists about 256
devices (at most 16384 bins), so a device's poll fetches its own bin only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    Delegations,
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    SuccinctRoles,
    Targets,
    Timestamp,
)
from tuf.api.metadata import TargetFile as TufTargetFile
from tuf.api.serialization import SignedSerializer
from tuf.api.serialization.json import CanonicalJSONSerializer, JSONSerializer

from edgefleet.core.diagnostics import DiagnosticError, error
from edgefleet.signing import (
    BINS_PREFIX,
    CUSTOM_DEVICE_ID,
    CUSTOM_HARDWARE_CLASS,
    CUSTOM_RELEASE_COUNTER,
    REQUIRED_CUSTOM,
    TOP_LEVEL_ROLES,
    SigningError,
    device_target_path,
)
from edgefleet.signing.keys import RoleKeys
from edgefleet.signing.layout import metadata_file
from edgefleet.core.source import Location
from edgefleet.spec.common import duration_seconds
from edgefleet.spec.fleet import ExpiryWindows
from edgefleet.core.fsutil import write_durable

TARGETS_PER_BIN = 256
MAX_BIT_LENGTH = 14  # 16384 bins, the fleet.yaml limit
_COMPACT = JSONSerializer(compact=True)
_PRETTY = JSONSerializer(compact=False)
_CANONICAL = CanonicalJSONSerializer()
_VERSIONED = re.compile(r"^(\d+)\.(.+)\.json$")
_HASHED_TARGET = re.compile(r"^[0-9a-f]{64}\.")
_DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # edgefleet.spec.device.DeviceId
_MAX_ERRORS = 50  # enough to act on; a systematic bug would otherwise print a million


@dataclass(frozen=True, slots=True)
class TargetFile:
    """One device's desired state: its target path, bytes, and custom fields."""

    path: str
    data: bytes
    custom: Mapping[str, Any]


@dataclass
class PublishReport:
    written: list[str]          # paths (relative to out_dir) written by this publish, sorted
    unchanged: int              # files of the new version left untouched
    removed: list[str]          # superseded files pruned, sorted
    versions: dict[str, int] = field(default_factory=dict)  # root/timestamp/snapshot/targets
    bins: int = 0               # number of hash bins
    targets: int = 0            # number of targets published


def publish(out_dir: Path, targets: Iterable[TargetFile], keys: RoleKeys, expiry: ExpiryWindows,
            now: datetime, bins: int | None = None) -> PublishReport:
    """Write the tree for `targets` into `out_dir` (see the module docstring).

    Raises SigningError/DiagnosticError (E54x) on bad input or an unusable previous
    tree; the previous tree is then left intact.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SigningError("E543", f"another publish is writing {out_dir}",
                               "wait for it to finish; one compile per output directory at a time",
                               str(out_dir)) from None
        return _Publisher(out_dir, keys, expiry, now.astimezone(timezone.utc).replace(microsecond=0),
                          bins).run(targets)
    finally:
        os.close(lock)


def bit_length_for(count: int, requested_bins: int | None = None, previous: int | None = None) -> int:
    """Bits of the succinct hash-bin delegation (2**bits bins).

    An explicit bin count is rounded up to a power of two. Otherwise bins hold about
    TARGETS_PER_BIN targets, and a previous choice is kept while it is within a factor
    of two of that, so a fleet hovering near a boundary does not reshuffle every bin.
    """
    if requested_bins is not None:
        return min(MAX_BIT_LENGTH, max(1, (requested_bins - 1).bit_length()))
    ideal = min(MAX_BIT_LENGTH, max(1, (-(-count // TARGETS_PER_BIN) - 1).bit_length()))
    if previous is not None and abs(previous - ideal) <= 1:
        return previous
    return ideal


# --- reading the previous tree -------------------------------------------------------


@dataclass
class _Prev:
    """What the previous version says, reduced to what the next one is decided from."""

    roots: dict[int, str] = field(default_factory=dict)   # version -> file name
    root: Metadata[Root] | None = None
    timestamp: Metadata[Timestamp] | None = None
    snapshot: Metadata[Snapshot] | None = None
    targets: Metadata[Targets] | None = None
    bit_length: int | None = None
    # per bin: (version, expires, signer keyids, number of targets)
    bins: dict[str, tuple[int, datetime, frozenset[str], int]] = field(default_factory=dict)
    # per target path: (sha256, release counter, hardware class, other custom fields as JSON or None)
    entries: dict[str, tuple[str, int, str, str | None]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)          # metadata file names it references


def _read_previous(meta_dir: Path) -> _Prev:
    prev = _Prev()
    if not meta_dir.is_dir():
        return prev
    for name in os.listdir(meta_dir):
        m = _VERSIONED.match(name)
        if m and m.group(2) == "root":
            prev.roots[int(m.group(1))] = name
    if prev.roots:
        prev.root = _load_md(meta_dir, prev.roots[max(prev.roots)])
    if not (meta_dir / "timestamp.json").exists():
        return prev
    prev.timestamp = _load_md(meta_dir, "timestamp.json")
    snap_name = f"{prev.timestamp.signed.snapshot_meta.version}.snapshot.json"
    prev.snapshot = _load_md(meta_dir, snap_name)
    prev.files = {"timestamp.json", snap_name}
    for role_file, meta in prev.snapshot.signed.meta.items():
        prev.files.add(f"{meta.version}.{role_file}")
    targets_meta = prev.snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise _unreadable(meta_dir / snap_name, "it lists no targets.json")
    prev.targets = _load_md(meta_dir, f"{targets_meta.version}.targets.json")
    delegations = prev.targets.signed.delegations
    if delegations is None or delegations.succinct_roles is None:
        raise _unreadable(meta_dir, "its targets metadata has no hash-bin delegation")
    prev.bit_length = delegations.succinct_roles.bit_length
    for bin_name in delegations.succinct_roles.get_roles():
        meta = prev.snapshot.signed.meta.get(f"{bin_name}.json")
        if meta is None:
            raise _unreadable(meta_dir / snap_name, f"it lists no {bin_name}.json")
        # Plain JSON, not tuf objects: a million targets are read on every publish.
        path = meta_dir.parent / metadata_file(f"{meta.version}.{bin_name}.json")
        try:
            doc = json.loads(path.read_bytes())
            signed = doc["signed"]
            bin_targets = signed["targets"]
            expires = datetime.strptime(signed["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            prev.bins[bin_name] = (int(signed["version"]), expires,
                                   frozenset(s["keyid"] for s in doc["signatures"]), len(bin_targets))
            for tpath, info in bin_targets.items():
                custom = info["custom"]
                prev.entries[tpath] = (info["hashes"]["sha256"], int(custom[CUSTOM_RELEASE_COUNTER]),
                                       sys.intern(custom[CUSTOM_HARDWARE_CLASS]), _extras(custom))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _unreadable(path, f"{type(exc).__name__}: {exc}") from None
    return prev


def _load_md(meta_dir: Path, name: str) -> Metadata:
    try:
        return Metadata.from_bytes((meta_dir / name).read_bytes())
    except Exception as exc:  # OSError or tuf's DeserializationError
        raise _unreadable(meta_dir / name, f"{type(exc).__name__}: {exc}") from None


def _unreadable(path: Path, why: str) -> SigningError:
    return SigningError(
        "E542", f"the previous desired-state tree is unusable: {path}: {why}",
        "restore the output directory from the desired-state branch (git checkout -- .); "
        "starting from an empty directory restarts every version at 1, which devices refuse as a rollback",
        str(path))


def _extras(custom: Mapping[str, Any]) -> str | None:
    """Custom fields beyond the three every target has, in a comparable form (rare)."""
    if len(custom) == len(REQUIRED_CUSTOM):
        return None
    rest = {k: v for k, v in custom.items() if k not in REQUIRED_CUSTOM}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"))


# --- the publisher --------------------------------------------------------------------


class _Publisher:
    def __init__(self, out_dir: Path, keys: RoleKeys, expiry: ExpiryWindows, now: datetime,
                 bins: int | None):
        self.out = out_dir
        self.meta_dir = out_dir / "metadata"
        self.targets_dir = out_dir / "targets"
        self.keys = keys
        self.now = now
        self.windows = {role: timedelta(seconds=duration_seconds(getattr(expiry, role)))
                        for role in TOP_LEVEL_ROLES}
        self.windows["bins"] = self.windows["targets"]
        self.requested_bins = bins
        self.created: list[str] = []    # files this run created or overwrote (removed on failure)
        self.written: list[str] = []
        self.unchanged = 0
        self._listings: dict[str, set[str]] = {}   # target directory -> file names in it
        self._dirs: dict[str, str] = {}            # target directory -> its path on disk
        self._new_names: dict[str, set[str]] = defaultdict(set)  # target directory -> files of this version
        self.keep_meta: set[str] = set()

    def run(self, targets: Iterable[TargetFile]) -> PublishReport:
        prev = _read_previous(self.meta_dir)
        committed = False
        try:
            entries = self._stream_targets(targets, prev)
            bit_length = bit_length_for(len(entries), self.requested_bins, prev.bit_length)
            report = self._write_metadata(entries, bit_length, prev)
            committed = True
        finally:
            if not committed:
                self._roll_back()
        try:
            report.removed = self._prune(prev)
        except OSError:
            pass  # the new version is live; what is left over is pruned by the next publish
        return report

    # targets: one pass, writing only new bytes
    def _stream_targets(self, targets: Iterable[TargetFile], prev: _Prev) -> list[tuple]:
        entries: list[tuple] = []
        seen: set[str] = set()
        diags = []
        prev_entries = prev.entries
        sha256 = hashlib.sha256
        for t in targets:
            path = t.path
            problem = f"target {path} is given twice" if path in seen else _check_target(t)
            if problem:
                diags.append(error("E540", problem, Location(str(path) or "<target>"),
                                   "this is a bug in the caller of publish(); report it"))
                if len(diags) >= _MAX_ERRORS:
                    break
                continue
            seen.add(path)
            digest = sha256(t.data).hexdigest()
            counter = t.custom[CUSTOM_RELEASE_COUNTER]
            before = prev_entries.get(path)
            if before is not None and counter < before[1]:
                diags.append(error(
                    "E541", f"release counter of {path} would go down from {before[1]} to {counter}",
                    Location(path),
                    "devices refuse a lower counter (rollback protection); the counter must only grow "
                    "— was the desired-state output restored from an older commit?"))
                if len(diags) >= _MAX_ERRORS:
                    break
            custom = t.custom
            # Same bytes and same custom fields: its bin entry is what the previous bin says.
            same = (before is not None and before[0] == digest and before[1] == counter
                    and before[2] == custom[CUSTOM_HARDWARE_CLASS] and before[3] == _extras(custom))
            if not diags:  # after the first error nothing more is written
                self._write_target(path, t.data, digest, before)
            key = int.from_bytes(sha256(path.encode()).digest()[:4], "big")
            entries.append((key, path, len(t.data), digest, custom, same))
        if diags:
            raise DiagnosticError(diags)
        return entries

    def _write_target(self, path: str, data: bytes, digest: str, before: tuple[str, int] | None) -> None:
        dirname, _, base = path.rpartition("/")
        name = f"{digest}.{base}"
        listing = self._listing(dirname)
        self._new_names[dirname].add(name)
        if name in listing:
            if before is not None and before[0] == digest:
                self.unchanged += 1  # the previous version references it: trust it
                return
            # Present but unreferenced (left by a failed or killed run): trust only its bytes.
            try:
                with open(f"{self._dirs[dirname]}/{name}", "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() == digest:
                        self.unchanged += 1
                        return
            except OSError:
                pass
        full = f"{self._dirs[dirname]}/{name}"
        self.created.append(full)  # before the write: a failed write is cleaned up too
        _write_file(full, data)
        listing.add(name)
        self.written.append(f"targets/{dirname}/{name}" if dirname else f"targets/{name}")

    def _listing(self, dirname: str) -> set[str]:
        listing = self._listings.get(dirname)
        if listing is None:
            d = self.targets_dir / dirname
            d.mkdir(parents=True, exist_ok=True)
            self._dirs[dirname] = str(d)
            listing = self._listings[dirname] = set(os.listdir(d))
        return listing

    # metadata: bins, targets, snapshot, root, then the timestamp (the commit point)
    def _write_metadata(self, entries: list[tuple], bit_length: int, prev: _Prev) -> PublishReport:
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        keys = self.keys
        bins_key = keys.public("bins")
        succinct = SuccinctRoles([bins_key.keyid], 1, bit_length, BINS_PREFIX)
        shift = 32 - bit_length
        by_bin: dict[int, list[tuple]] = defaultdict(list)
        for entry in entries:
            by_bin[entry[0] >> shift].append(entry)

        snapshot_meta: dict[str, MetaFile] = {}
        old_meta = prev.snapshot.signed.meta if prev.snapshot else {}
        for index, bin_name in enumerate(succinct.get_roles()):
            snapshot_meta[f"{bin_name}.json"] = self._bin(bin_name, by_bin.get(index, ()), prev, old_meta,
                                                          prev.bit_length == bit_length)

        # Bins of a previous bin count stay listed: a device's snapshot update refuses
        # a new snapshot that drops a role its trusted one listed.
        for role_file, meta in old_meta.items():
            if role_file not in snapshot_meta and role_file != "targets.json":
                snapshot_meta[role_file] = meta

        targets_signed = Targets(targets={}, delegations=Delegations(
            keys={bins_key.keyid: bins_key}, roles=None, succinct_roles=succinct))
        snapshot_meta["targets.json"] = self._role(
            "targets", targets_signed, prev.targets, old_meta.get("targets.json"))

        snapshot_signed = Snapshot(meta=dict(sorted(snapshot_meta.items())))
        old_snap = prev.timestamp.signed.snapshot_meta if prev.timestamp else None
        snap_file = self._role("snapshot", snapshot_signed, prev.snapshot, old_snap, hashes=True)
        self.keep_meta = {"timestamp.json", f"{snap_file.version}.snapshot.json"}
        self.keep_meta |= {f"{m.version}.{name}" for name, m in snapshot_meta.items()}

        root_file = self._root(prev)

        timestamp_signed = Timestamp(snapshot_meta=snap_file)
        ts_version, ts_bytes = self._decide("timestamp", timestamp_signed, prev.timestamp)
        if ts_bytes is not None:
            tmp = self.meta_dir / ".timestamp.json.tmp"
            write_durable(tmp, ts_bytes)
            self.created.append(str(tmp))
            os.replace(tmp, self.meta_dir / "timestamp.json")   # the commit point
            self.created.remove(str(tmp))
            self.written.append("metadata/timestamp.json")
        else:
            self.unchanged += 1
        self.written.sort()
        return PublishReport(
            written=self.written, unchanged=self.unchanged, removed=[],
            versions={"root": root_file, "timestamp": ts_version, "snapshot": snap_file.version,
                      "targets": snapshot_meta["targets.json"].version},
            bins=succinct.number_of_bins, targets=len(entries))

    def _bin(self, bin_name: str, bin_entries, prev: _Prev, old_meta, same_bins: bool) -> MetaFile:
        old = prev.bins.get(bin_name)
        old_file = old_meta.get(f"{bin_name}.json")
        if old is not None and old_file is not None and same_bins:
            _, expires, keyids, count = old
            # With the same bin count a path stays in its bin: if every entry is as before
            # and there are as many, the bin lists exactly what it listed.
            if (keyids == {self.keys.keyid("bins")} and self._expiry_ok(expires, "bins")
                    and count == len(bin_entries) and all(e[5] for e in bin_entries)):
                self.unchanged += 1
                return old_file
        signed = Targets(targets={
            path: TufTargetFile(length, {"sha256": digest}, path, {"custom": dict(custom)})
            for _, path, length, digest, custom, _ in bin_entries})
        # A name that left the delegation earlier and comes back continues its versions.
        signed.version = (old_file.version + 1) if old_file is not None else 1
        signed.expires = self.now + self.windows["bins"]
        data = self._sign(signed, "bins")
        self._write_meta(f"{signed.version}.{bin_name}.json", data)
        return MetaFile(version=signed.version, length=len(data))

    def _role(self, role: str, signed, prev_md: Metadata | None, prev_file: MetaFile | None,
              hashes: bool = False) -> MetaFile:
        version, data = self._decide(role, signed, prev_md)
        if data is None:
            self.unchanged += 1
            return prev_file
        self._write_meta(f"{version}.{role}.json", data)
        return MetaFile(version=version, length=len(data),
                        hashes={"sha256": hashlib.sha256(data).hexdigest()} if hashes else None)

    def _decide(self, role: str, signed, prev_md: Metadata | None) -> tuple[int, bytes | None]:
        """Keep the previous version (None bytes) or sign the next one."""
        if prev_md is not None:
            old = prev_md.signed
            if (set(prev_md.signatures) == {self.keys.keyid(role)} and self._expiry_ok(old.expires, role)
                    and _content(old) == _content(signed)):
                return old.version, None
            signed.version = old.version + 1
        signed.expires = self.now + self.windows[role]
        return signed.version, self._sign(signed, role)

    def _root(self, prev: _Prev) -> int:
        root = Root(consistent_snapshot=True)
        for role in TOP_LEVEL_ROLES:
            root.add_key(self.keys.public(role), role)
        old = prev.root
        if old is not None:
            if self._expiry_ok(old.signed.expires, "root") and _content(old.signed) == _content(root):
                self.unchanged += 1
                return old.signed.version
            root.version = old.signed.version + 1
        root.expires = self.now + self.windows["root"]
        md = Metadata(root)
        md.sign(self.keys.signer("root"))
        if old is not None:
            # The root a device already trusts must sign its successor, too.
            old_role = old.signed.roles["root"]
            if self.keys.keyid("root") not in old_role.keyids:
                signers = [s for s in self.keys.previous_root if s.public_key.keyid in old_role.keyids]
                if len(signers) < old_role.threshold:
                    raise SigningError(
                        "E507", f"the root key changed, but no key of the published root v{old.signed.version} "
                        f"({', '.join(sorted(old_role.keyids))}) is available to sign root v{root.version}",
                        "keep the old root key in KEYS/previous/root-<keyid>.key (where `edgefleet keys rotate "
                        "root` puts it) or in $EDGEFLEET_KEY_ROOT_PREVIOUS until the new root is published",
                        str(self.meta_dir / prev.roots[old.signed.version]))
                for signer in signers[: old_role.threshold]:
                    md.sign(signer, append=True)
            old.signed.verify_delegate("root", md.signed_bytes, md.signatures)
        root.verify_delegate("root", md.signed_bytes, md.signatures)
        data = md.to_bytes(_PRETTY)
        path = self.meta_dir / f"{root.version}.root.json"
        write_durable(path, data)
        self.created.append(str(path))
        self.written.append(f"metadata/{path.name}")
        return root.version

    def _expiry_ok(self, expires: datetime, role: str) -> bool:
        """Still valid for over half its window, and not beyond a (perhaps shortened) window."""
        window = self.windows[role]
        return self.now + window / 2 < expires <= self.now + window

    def _sign(self, signed, role: str) -> bytes:
        md = Metadata(signed)
        md.sign(self.keys.signer(role), signed_serializer=_FAST_CANONICAL)
        return md.to_bytes(_COMPACT)

    def _write_meta(self, name: str, data: bytes) -> None:
        rel = metadata_file(name)
        path = self.out / rel
        if path.parent != self.meta_dir:
            path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(str(path), data)
        self.created.append(str(path))
        self.written.append(rel)

    def _roll_back(self) -> None:
        for path in reversed(self.created):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # after the commit: drop what neither this version nor the previous one references
    def _prune(self, prev: _Prev) -> list[str]:
        removed: list[str] = []
        keep_meta = prev.files | self.keep_meta
        for rel in _metadata_files(self.meta_dir):
            name = rel.rpartition("/")[2]
            m = _VERSIONED.match(name)
            stale_tmp = name.startswith(".") and name.endswith(".tmp")
            if ((m and m.group(2) != "root" and name not in keep_meta) or stale_tmp) \
                    and _unlink(self.out / rel):
                removed.append(rel)
        prev_entries = prev.entries
        dirs = set(self._listings) | {p.rpartition("/")[0] for p in prev_entries}
        for dirname in sorted(dirs):
            d = self.targets_dir / dirname
            names = self._listings.get(dirname)
            if names is None:
                if not d.is_dir():
                    continue
                names = set(os.listdir(d))
            for name in sorted(names - self._new_names.get(dirname, set())):
                digest, dot, base = name.partition(".")
                if not dot or not _HASHED_TARGET.match(name):
                    continue  # not a file of ours
                before = prev_entries.get(f"{dirname}/{base}" if dirname else base)
                if before is not None and before[0] == digest:
                    continue  # the previous version's: kept for devices mid-update
                if _unlink(d / name):
                    removed.append(f"targets/{dirname}/{name}" if dirname else f"targets/{name}")
        return removed


def _metadata_files(meta_dir: Path) -> list[str]:
    """Tree-relative paths of the files in metadata/ and its bin shards, sorted."""
    out = [f"metadata/{n}" for n in os.listdir(meta_dir) if not (meta_dir / n).is_dir()]
    bins = meta_dir / BINS_PREFIX
    if bins.is_dir():
        for shard in os.listdir(bins):
            if (bins / shard).is_dir():
                out += [f"metadata/{BINS_PREFIX}/{shard}/{n}" for n in os.listdir(bins / shard)]
    return sorted(out)


def _content(signed) -> dict:
    """What a role says, without its version and expiry (those follow from the content)."""
    d = signed.to_dict()
    d.pop("version")
    d.pop("expires")
    return d


def _check_target(t: TargetFile) -> str | None:
    custom = t.custom
    if type(custom) is not dict and not isinstance(custom, Mapping):
        return f"target {t.path}: custom fields must be a mapping"
    device = custom.get(CUSTOM_DEVICE_ID)
    if type(device) is not str or not _DEVICE_ID.match(device):
        return f"target {t.path}: custom field {CUSTOM_DEVICE_ID} must be a device id, not {device!r}"
    # The device id fixes the path, so a path can neither escape the tree nor name another device.
    if t.path != device_target_path(device):
        return f"target {t.path} names device {device!r}, whose path is {device_target_path(device)}"
    if type(custom.get(CUSTOM_HARDWARE_CLASS)) is not str:
        return f"target {t.path}: custom field {CUSTOM_HARDWARE_CLASS} must be a string"
    counter = custom.get(CUSTOM_RELEASE_COUNTER)
    if type(counter) is not int or counter < 0:
        return f"target {t.path}: custom field {CUSTOM_RELEASE_COUNTER} must be an integer >= 0"
    if not isinstance(t.data, bytes):
        return f"target {t.path}: data must be bytes"
    # Only the three fields checked above need no walk (the common case, a million times).
    if len(custom) > 3 and not _json_safe(custom if type(custom) is dict else dict(custom)):
        return f"target {t.path}: custom fields may hold only strings, integers, booleans, null, lists and maps"
    return None


def _json_safe(value) -> bool:
    """Values canonical JSON (what TUF signs) can encode: no floats, string keys."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is list or kind is tuple:
        return all(_json_safe(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _json_safe(v) for k, v in value.items())
    return False


class FastCanonicalJSON(SignedSerializer):
    """OLPC canonical JSON, the bytes TUF signs, made by the C json encoder.

    securesystemslib's encoder is pure Python and was most of the signing time of a
    large fleet. On values without floats (publish admits no others) the two encodings
    differ only in escapes: canonical JSON escapes just backslash and quote, json.dumps
    also control characters. So an output holding no backslash at all is byte-identical
    to canonical JSON, and anything else is handed to securesystemslib's encoder.
    Devices verify with the standard serializer; tests compare the two.
    """

    def serialize(self, signed_obj) -> bytes:
        text = json.dumps(signed_obj.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if "\\" in text:
            return _CANONICAL.serialize(signed_obj)
        return text.encode("utf-8")


_FAST_CANONICAL = FastCanonicalJSON()


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _write_file(path: str, data: bytes) -> None:
    """Plain os calls: a third cheaper than open() per file, which counts at a million files."""
    fd = os.open(path, _CREATE, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    """Best effort: the new version is already live, a file left over is pruned next time."""
    try:
        path.unlink()
        return True
    except OSError:
        return False
