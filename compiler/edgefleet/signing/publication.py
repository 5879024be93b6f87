"""What the next version of the signed tree contains: decided, not written.

`Planner` is a pure state machine, as python-tuf's TrustedMetadataSet is for a client:
it is given the previous version (`PublishedTree`, from tree.py), the file names the
tree holds (`listing`, from treefs.scan), the keys, the expiry windows and the clock;
then it is fed the targets one at a time (at a million devices their bytes are never all
in memory) and answers each with the file the tree must hold for it (`TargetWrite`);
`finish()` returns the `Publication`: the metadata files to write, the new timestamp
(the commit point), the files to keep and to prune, and the report. Nothing here opens a
file, reads the clock or the environment; publish.py applies a Publication (lock, write,
commit, prune).

What it guarantees (the module docstring of publish.py says how they hold on disk):
- every file of the new version is either new to the tree (a name no live file has:
  hash-prefixed targets, version-prefixed metadata) or kept: a kept target is re-checked
  by the applier against its bytes, and a kept role only if its file is intact (length,
  hash and signature as tree.py checked them), so a damaged tree is repaired;
- a role gets a new version only if its content, its signing key or its integrity
  changed, or its expiry is within half a window; versions only grow, and a device's
  release counter never decreases (E541);
- bin roles of an earlier bin count stay listed in the snapshot while devices may hold a
  snapshot that lists them: TUF spec 5.5.5 ("any targets metadata filename that was listed
  in the trusted snapshot ... MUST continue to be listed"), which python-tuf's
  TrustedMetadataSet.update_snapshot enforces against the cached snapshot, once that still
  verifies under the newest root (Updater._load_snapshot loads it with trusted=True, and
  _load_data checks its signatures against the current root; an expired one still counts,
  as an intermediate snapshot, so waiting out its expiry does not help). A check per file name, so
  no compact stand-in (one placeholder role for many) satisfies it. They are dropped when
  the snapshot key rotates (a root that lists none of the old snapshot keys): no cached
  snapshot then verifies, the client loads the new one without comparing, which is the
  spec's own recovery path (5.3.11). compile reports them (`retired_bins`, note N510, whose
  hint is `edgefleet keys rotate snapshot`);
- only files of the publisher's own names, in its own directories, that neither the new
  nor the previous version references are pruned.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

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

from edgefleet.core.diagnostics import Diagnostic, DiagnosticError, error
from edgefleet.core.ids import is_device_id
from edgefleet.core.source import Location
from edgefleet.signing import (
    BINS_PREFIX,
    CUSTOM_DEVICE_ID,
    CUSTOM_HARDWARE_CLASS,
    CUSTOM_RELEASE_COUNTER,
    TOP_LEVEL_ROLES,
    SigningError,
    device_target_path,
)
from edgefleet.signing.keys import RoleKeys
from edgefleet.signing.layout import FLEET_TARGETS, metadata_file, target_shard
from edgefleet.signing.tree import PublishedTree, TargetEntry, extras_of

TARGETS_PER_BIN = 256
MAX_BIT_LENGTH = 14  # 16384 bins, the fleet.yaml limit
MAX_ERRORS = 50      # enough to act on; a systematic bug would otherwise print a million
_new = tuple.__new__
_COMPACT = JSONSerializer(compact=True)
_PRETTY = JSONSerializer(compact=False)
_CANONICAL = CanonicalJSONSerializer()

# The publisher's own file names, per directory kind: nothing else is ever pruned.
_OWN_TOP_LEVEL = re.compile(r"^[1-9][0-9]*\.(?:snapshot|targets)\.json$")
_OWN_TEMP = re.compile(r"^\.(?:timestamp|[1-9][0-9]*\.root)\.json\.tmp$")
_OWN_BIN = re.compile(r"^[1-9][0-9]*\." + BINS_PREFIX + r"-([0-9a-f]+)\.json$")
_OWN_TARGET = re.compile(r"^([0-9a-f]{64})\.(.+)\.json$")
_FLEET_FOLDERS = frozenset(f"targets/{p.rpartition('/')[0]}" for p in FLEET_TARGETS)


@dataclass(frozen=True, slots=True)
class TargetFile:
    """One device's desired state: its target path, bytes, and custom fields."""

    path: str
    data: bytes
    custom: Mapping[str, Any]


class TargetWrite(NamedTuple):
    """The file the tree must hold for one target."""

    dir: str          # tree-relative folder, e.g. targets/devices/0a/3
    name: str         # <sha256>.<device-id>.json
    data: bytes
    exists: bool      # a file of that name is in the tree: keep it if it holds `data`, else rewrite it
    referenced: bool  # the previous version lists these bytes (so a failed publish must not remove it)


class MetaWrite(NamedTuple):
    path: str         # tree-relative, e.g. metadata/bins/0a/7.bins-0a3.json
    data: bytes
    exists: bool      # the name is in the tree (a leftover of a killed run, or a repaired root)


@dataclass
class PublishReport:
    written: list[str]          # paths (relative to out_dir) written by this publish, sorted
    unchanged: int              # files of the new version left untouched
    removed: list[str]          # superseded files pruned, sorted
    versions: dict[str, int] = field(default_factory=dict)  # root/timestamp/snapshot/targets
    bins: int = 0               # number of hash bins
    targets: int = 0            # number of targets published
    retired_bins: int = 0       # bin roles of an earlier bin count still listed (until the snapshot key rotates)
    repaired: list[str] = field(default_factory=list)  # damaged files of the previous version re-published


@dataclass(frozen=True)
class Publication:
    """One new version of the tree, as data; publish.py applies it."""

    metadata: tuple[MetaWrite, ...]   # bins, targets, snapshot (new names), unless emitted (see finish)
    root: MetaWrite | None            # a new root version, written just before the commit
    timestamp: bytes | None           # replaces metadata/timestamp.json: the commit point (None: unchanged)
    keep: frozenset[str]              # metadata files of the new and the previous version
    prune: tuple[str, ...]            # tree-relative files to remove once the new timestamp is live
    report: PublishReport             # `written`/`unchanged` gain the targets as the applier finds them


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


class _BinEntry(NamedTuple):
    key: int          # first 4 bytes of sha256(path): selects the bin
    path: str
    length: int
    sha256: str
    custom: Mapping[str, Any]
    same: bool        # listed exactly so by the previous bin


class Planner:
    """Decides the next version; see the module docstring."""

    def __init__(self, previous: PublishedTree, listing: Mapping[str, set[str]], keys: RoleKeys,
                 windows: Mapping[str, timedelta], now: datetime, requested_bins: int | None = None,
                 label: str = "<out>"):
        self.prev = previous
        self.listing = listing
        self.keys = keys
        self.windows = windows
        self.now = now
        self.requested_bins = requested_bins
        self.label = label
        self.entries: list[_BinEntry] = []
        self.diags: list[Diagnostic] = []
        self._seen: set[str] = set()
        self._new_names: dict[str, set[str]] = defaultdict(set)  # target folder -> files of the new version
        self._written: list[str] = []
        self._unchanged = 0
        self._repaired: list[str] = []   # damaged files of the previous version that this one replaces
        self._fleet: dict[str, TufTargetFile] = {}  # fleet-wide targets, listed by the targets role itself

    # --- the targets, one at a time ---------------------------------------------------

    def add(self, t: TargetFile) -> TargetWrite | None:
        """The file the tree must hold for `t`; None once an error was found (nothing more is written)."""
        path = t.path
        problem = f"target {path} is given twice" if path in self._seen else _check_target(t)
        if problem:
            if len(self.diags) < MAX_ERRORS:
                self.diags.append(error("E540", problem, Location(str(path) or "<target>"),
                                        "this is a bug in the caller of publish(); report it"))
            return None
        self._seen.add(path)
        data = t.data
        digest = hashlib.sha256(data).hexdigest()
        custom = t.custom
        counter = custom[CUSTOM_RELEASE_COUNTER]
        before: TargetEntry | None = self.prev.entries.get(path)
        if before is not None and counter < before.release_counter:
            if len(self.diags) < MAX_ERRORS:
                self.diags.append(error(
                    "E541", f"release counter of {path} would go down from {before.release_counter} to {counter}",
                    Location(path),
                    "devices refuse a lower counter (rollback protection); the counter must only grow "
                    "— was the desired-state output restored from an older commit?"))
        referenced = before is not None and before.sha256 == digest
        # Same bytes and same custom fields: its bin entry is what the previous bin says.
        same = (referenced and before.release_counter == counter
                and before.hardware_class == custom[CUSTOM_HARDWARE_CLASS] and before.extras == extras_of(custom))
        # tuple.__new__: a NamedTuple's own __new__ is a Python call, a million times
        self.entries.append(_new(_BinEntry, (int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big"),
                                             path, len(data), digest, custom, same)))
        if self.diags:
            return None
        dirname, _, base = path.rpartition("/")
        folder = f"targets/{dirname}" if dirname else "targets"
        name = f"{digest}.{base}"
        self._new_names[folder].add(name)
        names = self.listing.get(folder)
        return _new(TargetWrite, (folder, name, data, names is not None and name in names, referenced))

    def add_fleet_target(self, path: str, data: bytes) -> TargetWrite | None:
        """A fleet-wide target (layout.FLEET_TARGETS, e.g. the Sigstore trusted root): listed by
        the top-level targets role, so every device verifies it with the metadata it already has."""
        if path not in FLEET_TARGETS or not isinstance(data, bytes) or path in self._fleet:
            if len(self.diags) < MAX_ERRORS:
                self.diags.append(error("E540", f"fleet target {path!r} is not one of {', '.join(FLEET_TARGETS)} "
                                        "(or is given twice, or its data is not bytes)", Location(str(path)),
                                        "this is a bug in the caller of publish(); report it"))
            return None
        digest = hashlib.sha256(data).hexdigest()
        self._fleet[path] = TufTargetFile(len(data), {"sha256": digest}, path)
        before = self.prev.targets.signed.targets.get(path) if self.prev.targets is not None else None
        dirname, _, base = path.rpartition("/")
        folder, name = f"targets/{dirname}", f"{digest}.{base}"
        self._new_names[folder].add(name)
        names = self.listing.get(folder)
        return TargetWrite(folder, name, data, names is not None and name in names,
                           before is not None and before.hashes.get("sha256") == digest)

    # --- the metadata ----------------------------------------------------------------

    def finish(self, emit: Callable[[MetaWrite], None] | None = None) -> Publication:
        """The new version's metadata, commit point and prune list; DiagnosticError on bad targets.

        `emit`, when given, receives each bin, targets and snapshot file as soon as it is
        signed (publish writes it then: at a million devices all re-signed bins together
        are ~200 MB), and `Publication.metadata` is then empty; without it they are
        collected there. Either way in commit order: bins, targets, snapshot.
        """
        if self.diags:
            raise DiagnosticError(self.diags)
        prev = self.prev
        keys = self.keys
        bit_length = bit_length_for(len(self.entries), self.requested_bins, prev.bit_length)
        bins_key = keys.public("bins")
        succinct = SuccinctRoles([bins_key.keyid], 1, bit_length, BINS_PREFIX)
        shift = 32 - bit_length
        by_bin: dict[int, list[_BinEntry]] = defaultdict(list)
        for entry in self.entries:
            by_bin[entry.key >> shift].append(entry)

        writes: list[MetaWrite] = []
        self._emit = emit if emit is not None else writes.append
        self._meta_paths: set[str] = set()
        snapshot_meta: dict[str, MetaFile] = {}
        old_meta = prev.snapshot.signed.meta if prev.snapshot else {}
        same_bins = prev.bit_length == bit_length
        for index, bin_name in enumerate(succinct.get_roles()):
            snapshot_meta[f"{bin_name}.json"] = self._bin(bin_name, by_bin.get(index, ()), old_meta, same_bins)

        root_md = self._root_metadata()
        # Bins of an earlier bin count stay listed while a cached snapshot may list them.
        retired = 0
        if not self._snapshot_key_rotates(root_md):
            for role_file, meta in old_meta.items():
                if role_file not in snapshot_meta and role_file != "targets.json":
                    snapshot_meta[role_file] = meta
                    retired += 1

        targets_signed = Targets(targets=dict(sorted(self._fleet.items())), delegations=Delegations(
            keys={bins_key.keyid: bins_key}, roles=None, succinct_roles=succinct))
        snapshot_meta["targets.json"] = self._role(
            "targets", targets_signed, prev.targets, old_meta.get("targets.json"))

        snapshot_signed = Snapshot(meta=dict(sorted(snapshot_meta.items())))
        old_snap = prev.timestamp.signed.snapshot_meta if prev.timestamp else None
        snap_file = self._role("snapshot", snapshot_signed, prev.snapshot, old_snap, hashes=True)
        keep = {"metadata/timestamp.json", f"metadata/{snap_file.version}.snapshot.json"}
        keep |= {metadata_file(f"{m.version}.{name}") for name, m in snapshot_meta.items()}
        keep |= prev.files

        root_write, root_version = self._root(root_md)

        ts_version, ts_bytes = self._decide("timestamp", Timestamp(snapshot_meta=snap_file), prev.timestamp)
        if ts_bytes is not None:
            self._written.append("metadata/timestamp.json")
        else:
            self._unchanged += 1
        report = PublishReport(
            written=self._written, unchanged=self._unchanged, removed=[],
            versions={"root": root_version, "timestamp": ts_version, "snapshot": snap_file.version,
                      "targets": snapshot_meta["targets.json"].version},
            bins=succinct.number_of_bins, targets=len(self.entries), retired_bins=retired,
            repaired=self._repaired)
        return Publication(tuple(writes), root_write, ts_bytes, frozenset(keep),
                           self._prune(frozenset(keep), self._meta_paths), report)

    def _bin(self, bin_name: str, bin_entries, old_meta, same_bins: bool) -> MetaFile:
        old = self.prev.bins.get(bin_name)
        old_file = old_meta.get(f"{bin_name}.json")
        if old is not None and old_file is not None and same_bins:
            # With the same bin count a path stays in its bin: if every entry is as before
            # and there are as many, the bin lists exactly what it listed.
            if (old.signers == {self.keys.keyid("bins")} and self._expiry_ok(old.expires, "bins")
                    and old.count == len(bin_entries) and all(e.same for e in bin_entries)):
                if old.intact:
                    self._unchanged += 1
                    return old_file
                self._repaired.append(metadata_file(f"{old_file.version}.{bin_name}.json"))
        signed = Targets(targets={
            e.path: TufTargetFile(e.length, {"sha256": e.sha256}, e.path, {"custom": dict(e.custom)})
            for e in bin_entries})
        # A name that left the delegation earlier and comes back continues its versions.
        before = max(old_file.version if old_file is not None else 0, old.version if old is not None else 0)
        signed.version = before + 1
        signed.expires = self.now + self.windows["bins"]
        data = self._sign(signed, "bins")
        self._meta_write(f"{signed.version}.{bin_name}.json", data)
        return MetaFile(version=signed.version, length=len(data))

    def _role(self, role: str, signed, prev_md: Metadata | None, prev_file: MetaFile | None,
              hashes: bool = False) -> MetaFile:
        version, data = self._decide(role, signed, prev_md)
        if data is None:
            self._unchanged += 1
            return prev_file
        self._meta_write(f"{version}.{role}.json", data)
        return MetaFile(version=version, length=len(data),
                        hashes={"sha256": hashlib.sha256(data).hexdigest()} if hashes else None)

    def _decide(self, role: str, signed, prev_md: Metadata | None) -> tuple[int, bytes | None]:
        """Keep the previous version (None bytes) or sign the next one."""
        if prev_md is not None:
            old = prev_md.signed
            if (set(prev_md.signatures) == {self.keys.keyid(role)}
                    and self._expiry_ok(old.expires, role) and _content(old) == _content(signed)):
                if self.prev.intact.get(role, False):
                    return old.version, None
                self._repaired.append("metadata/timestamp.json" if role == "timestamp"
                                      else f"metadata/{old.version}.{role}.json")
            signed.version = old.version + 1
        signed.expires = self.now + self.windows[role]
        return signed.version, self._sign(signed, role)

    def _root_metadata(self) -> Root:
        root = Root(consistent_snapshot=True)
        for role in TOP_LEVEL_ROLES:
            root.add_key(self.keys.public(role), role)
        return root

    def _snapshot_key_rotates(self, root: Root) -> bool:
        """The new root trusts none of the keys that signed any snapshot a device may have cached."""
        old = self.prev.root
        if old is None:
            return False
        return not set(old.signed.roles["snapshot"].keyids) & set(root.roles["snapshot"].keyids)

    def _root(self, root: Root) -> tuple[MetaWrite | None, int]:
        prev = self.prev
        old = prev.root
        if old is not None:
            if self._expiry_ok(old.signed.expires, "root") and _content(old.signed) == _content(root):
                if prev.intact.get("root", False):
                    self._unchanged += 1
                    return None, old.signed.version
                # The newest root is damaged: a device walking the chain stops at it, and a
                # successor does not help. The same content, re-signed, is that version again.
                root = Root.from_dict(old.signed.to_dict())
                self._repaired.append(f"metadata/{root.version}.root.json")
                return self._signed_root(root, repair=True), root.version
            root.version = old.signed.version + 1
        root.expires = self.now + self.windows["root"]
        return self._signed_root(root), root.version

    def _signed_root(self, root: Root, repair: bool = False) -> MetaWrite:
        md = Metadata(root)
        md.sign(self.keys.signer("root"))
        old = self.prev.root
        # A repaired root must be signed as its predecessor requires; a new one as the newest does.
        trusted = old.signed if (old is not None and not repair) else None
        if repair and self.prev.root_before is not None:
            trusted = self.prev.root_before.signed
        if trusted is not None:
            # The root a device already trusts must sign its successor, too.
            old_role = trusted.roles["root"]
            if self.keys.keyid("root") not in old_role.keyids:
                signers = [s for s in self.keys.previous_root if s.public_key.keyid in old_role.keyids]
                if len(signers) < old_role.threshold:
                    raise SigningError(
                        "E507", f"the root key changed, but no key of the published root v{trusted.version} "
                        f"({', '.join(sorted(old_role.keyids))}) is available to sign root v{root.version}",
                        "keep the old root key in KEYS/previous/root-<keyid>.key (where `edgefleet keys rotate "
                        "root` puts it) or in $EDGEFLEET_KEY_ROOT_PREVIOUS until the new root is published",
                        f"{self.label.rstrip('/')}/metadata/{trusted.version}.root.json")
                for signer in signers[: old_role.threshold]:
                    md.sign(signer, append=True)
            trusted.verify_delegate("root", md.signed_bytes, md.signatures)
        root.verify_delegate("root", md.signed_bytes, md.signatures)
        path = f"metadata/{root.version}.root.json"
        self._written.append(path)
        return MetaWrite(path, md.to_bytes(_PRETTY), repair)

    def _expiry_ok(self, expires: datetime, role: str) -> bool:
        """Still valid for over half its window, and not beyond a (perhaps shortened) window."""
        window = self.windows[role]
        return self.now + window / 2 < expires <= self.now + window

    def _sign(self, signed, role: str) -> bytes:
        md = Metadata(signed)
        md.sign(self.keys.signer(role), signed_serializer=_FAST_CANONICAL)
        return md.to_bytes(_COMPACT)

    def _meta_write(self, name: str, data: bytes) -> None:
        rel = metadata_file(name)
        folder, _, base = rel.rpartition("/")
        names = self.listing.get(folder)
        self._meta_paths.add(rel)
        self._emit(MetaWrite(rel, data, names is not None and base in names))
        self._written.append(rel)

    # --- what to prune once the new version is live -----------------------------------

    def _prune(self, keep: frozenset[str], new_meta: set[str]) -> tuple[str, ...]:
        out: list[str] = []
        prev_entries = self.prev.entries
        for folder, names in self.listing.items():
            parts = folder.split("/")
            if folder == "metadata":
                out += [f"metadata/{n}" for n in names
                        if (_OWN_TOP_LEVEL.match(n) and f"metadata/{n}" not in keep) or _OWN_TEMP.match(n)]
            elif len(parts) == 3 and parts[:2] == ["metadata", BINS_PREFIX]:
                for n in names:
                    m = _OWN_BIN.match(n)
                    rel = f"{folder}/{n}"
                    if m and m.group(1).startswith(parts[2]) and rel not in keep and rel not in new_meta:
                        out.append(rel)
            elif folder in _FLEET_FOLDERS:
                previous = self.prev.targets.signed.targets if self.prev.targets is not None else {}
                for n in names - self._new_names.get(folder, set()):
                    m = _OWN_TARGET.match(n)
                    path = f"{folder.removeprefix('targets/')}/{m.group(2)}.json" if m else None
                    if path not in FLEET_TARGETS:
                        continue  # not a file of ours
                    before = previous.get(path)
                    if before is not None and before.hashes.get("sha256") == m.group(1):
                        continue  # the previous version's
                    out.append(f"{folder}/{n}")
            elif len(parts) == 4 and parts[:2] == ["targets", "devices"]:
                shard = f"{parts[2]}/{parts[3]}"
                for n in names - self._new_names.get(folder, set()):
                    m = _OWN_TARGET.match(n)
                    if not m or not is_device_id(m.group(2)) or target_shard(m.group(2)) != shard:
                        continue  # not a file of ours
                    before = prev_entries.get(device_target_path(m.group(2)))
                    if before is not None and before.sha256 == m.group(1):
                        continue  # the previous version's: kept for devices mid-update
                    out.append(f"{folder}/{n}")
        return tuple(sorted(out))


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
    if not is_device_id(device):
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
