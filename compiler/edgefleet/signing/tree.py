"""One typed reader of a published desired-state tree: what its live version says, as data.

`read_tree(out_dir)` walks the tree as a TUF client would (timestamp -> snapshot ->
targets -> every hash bin) and returns a `PublishedTree`: the root chain, the top-level
roles as python-tuf objects, the bin count, per bin what the next publish decides from,
and per target path its signed entry (sha256, release counter, hardware class,
other custom fields). Used by publish (the previous version), by compile's release
counters (desired/release.py) and by anything else that needs to know what is published.

Every file is read through `treefs` (no-follow, relative to directory descriptors): the
tree is untrusted input, and a link anywhere in it is refused with E544.

Integrity, for repair: each role records whether its file is `intact` — its length (and
hash, where the referrer lists one) is what the referring role says, and, when the caller
names the keys it signs with (`expect`, role -> public key, as publish does), it carries
a valid signature by that key. Signatures are checked, not trusted: a tree from a branch
others can push to may have been damaged. Without `expect` (compile's release counters)
signatures are not checked, which saves re-encoding every bin. The bins are read as plain
JSON and their signed bytes re-encoded with the C json encoder (the canonical form TUF
signs, see FastCanonicalJSON): at a million devices tuf objects for every target would
cost more than the whole compile.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key, Signature
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from edgefleet.signing import (
    BINS_PREFIX,
    CUSTOM_HARDWARE_CLASS,
    CUSTOM_RELEASE_COUNTER,
    REQUIRED_CUSTOM,
    SigningError,
)
from edgefleet.signing.layout import metadata_file
from edgefleet.signing.treefs import Tree, TreeDir

# Largest metadata file read; beyond it the tree is refused as unusable (a padded file).
MAX_TOP_LEVEL = 64 << 20
MAX_BIN = 256 << 20
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class TargetEntry(NamedTuple):
    """A device target as its bin signs it."""

    sha256: str                 # hex digest of the target's bytes
    release_counter: int
    hardware_class: str
    extras: str | None          # custom fields beyond the three every target has, as sorted JSON (rare)


class BinInfo(NamedTuple):
    """One hash bin of the live version."""

    version: int
    expires: datetime
    signers: frozenset[str]     # keyids of its signatures (as listed)
    count: int                  # targets it lists
    intact: bool                # length as the snapshot lists it, and validly signed (see module docstring)


@dataclass
class PublishedTree:
    """The live version of a tree; empty (no timestamp) when there is none."""

    roots: dict[int, str] = field(default_factory=dict)   # root version -> tree-relative file
    root: Metadata[Root] | None = None                     # the newest root
    root_before: Metadata[Root] | None = None              # the one before it (which must sign it)
    timestamp: Metadata[Timestamp] | None = None
    snapshot: Metadata[Snapshot] | None = None
    targets: Metadata[Targets] | None = None
    bit_length: int | None = None                          # of the succinct hash-bin delegation
    bins: dict[str, BinInfo] = field(default_factory=dict)            # bin role name -> info
    entries: dict[str, TargetEntry] = field(default_factory=dict)     # target path -> entry
    files: frozenset[str] = frozenset()                   # tree-relative metadata files it references
    intact: dict[str, bool] = field(default_factory=dict)  # root/timestamp/snapshot/targets -> file intact

    @property
    def snapshot_version(self) -> int:
        return self.timestamp.signed.snapshot_meta.version if self.timestamp is not None else 0


def extras_of(custom: Mapping[str, Any]) -> str | None:
    """Custom fields beyond the three every target has, in a comparable form (rare)."""
    if len(custom) == len(REQUIRED_CUSTOM):
        return None
    rest = {k: v for k, v in custom.items() if k not in REQUIRED_CUSTOM}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"))


def unusable(label: str, rel: str, why: str) -> SigningError:
    where = f"{label.rstrip('/')}/{rel}" if rel else label
    return SigningError(
        "E542", f"the previous desired-state tree is unusable: {where}: {why}",
        "restore the output directory from the desired-state branch (git checkout -- .); "
        "starting from an empty directory restarts every version at 1, which devices refuse as a rollback",
        where)


def read_tree(out_dir: Path, expect: Mapping[str, Key] | None = None) -> PublishedTree:
    """Read the live version of the tree in `out_dir` (an empty PublishedTree if there is none).

    Raises SigningError E542 when it cannot be read, E544 when it holds a link.
    """
    with Tree(Path(out_dir)) as tree:
        return read_tree_at(tree, expect)


def read_tree_at(tree: Tree, expect: Mapping[str, Key] | None = None) -> PublishedTree:
    out = PublishedTree()
    meta = tree.dir("metadata") if tree.exists else None
    if meta is None:
        return out
    for name, is_dir in meta.scan():
        version, dot, rest = name.partition(".")
        if not is_dir and dot and rest == "root.json" and version.isdigit():
            out.roots[int(version)] = f"metadata/{name}"
    reader = _Reader(tree, meta, expect)
    if out.roots:
        newest = max(out.roots)
        if sorted(out.roots) != list(range(1, newest + 1)):
            gaps = sorted(set(range(1, newest + 1)) - set(out.roots))
            raise unusable(tree.label, "metadata", f"the root chain has a gap: no {gaps[0]}.root.json "
                           f"before {newest}.root.json (a device walks every version)")
        out.root, _ = reader.metadata(f"{newest}.root.json")
        if newest - 1 in out.roots:
            out.root_before, _ = reader.metadata(f"{newest - 1}.root.json")
        out.intact["root"] = reader.root_intact(out.root, out.root_before)
    ts_data = meta.read("timestamp.json", MAX_TOP_LEVEL)
    if ts_data is None:
        return out
    if out.root is None:
        raise unusable(tree.label, "metadata", "it has a timestamp.json but no root")
    out.timestamp = reader.parse("timestamp.json", ts_data)
    out.intact["timestamp"] = reader.signed(out.timestamp, "timestamp")
    snap_meta = out.timestamp.signed.snapshot_meta
    snap_name = f"{snap_meta.version}.snapshot.json"
    out.snapshot, snap_data = reader.metadata(snap_name)
    out.intact["snapshot"] = (reader.matches(snap_meta, snap_data)
                              and reader.signed(out.snapshot, "snapshot"))
    files = {"metadata/timestamp.json", f"metadata/{snap_name}"}
    listed = out.snapshot.signed.meta
    for role_file, role_meta in listed.items():
        files.add(metadata_file(f"{role_meta.version}.{role_file}"))
    targets_meta = listed.get("targets.json")
    if targets_meta is None:
        raise unusable(tree.label, f"metadata/{snap_name}", "it lists no targets.json")
    out.targets, targets_data = reader.metadata(f"{targets_meta.version}.targets.json")
    out.intact["targets"] = (reader.matches(targets_meta, targets_data)
                             and reader.signed(out.targets, "targets"))
    delegations = out.targets.signed.delegations
    if delegations is None or delegations.succinct_roles is None:
        raise unusable(tree.label, f"metadata/{targets_meta.version}.targets.json",
                       "its targets metadata has no hash-bin delegation")
    succinct = delegations.succinct_roles
    out.bit_length = succinct.bit_length
    bins_key = (expect or {}).get(BINS_PREFIX)
    for bin_name in succinct.get_roles():
        bin_meta = listed.get(f"{bin_name}.json")
        if bin_meta is None:
            raise unusable(tree.label, f"metadata/{snap_name}", f"it lists no {bin_name}.json")
        reader.bin(out, bin_name, bin_meta, bins_key)
    out.files = frozenset(files)
    return out


class _Reader:
    def __init__(self, tree: Tree, meta: TreeDir, expect: Mapping[str, Key] | None):
        self.tree = tree
        self.meta = meta
        self.expect = expect or {}

    def metadata(self, name: str) -> tuple[Metadata, bytes]:
        data = self.meta.read(name, MAX_TOP_LEVEL)
        if data is None:
            raise unusable(self.tree.label, f"metadata/{name}", "the file is missing")
        return self.parse(name, data), data

    def parse(self, name: str, data: bytes) -> Metadata:
        if len(data) > MAX_TOP_LEVEL:
            raise unusable(self.tree.label, f"metadata/{name}", f"larger than {MAX_TOP_LEVEL} bytes")
        try:
            return Metadata.from_bytes(data)
        except Exception as exc:  # tuf's DeserializationError and what it wraps
            raise unusable(self.tree.label, f"metadata/{name}", f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def matches(meta: MetaFile, data: bytes) -> bool:
        try:
            meta.verify_length_and_hashes(data)
            return True
        except Exception:  # LengthOrHashMismatchError
            return False

    def signed(self, md: Metadata, role: str) -> bool:
        """A valid signature by the expected key (True when no key is expected: not checked)."""
        key = self.expect.get(role)
        if key is None:
            return True
        try:
            sig = md.signatures.get(key.keyid)
            if sig is None:
                return False
            key.verify_signature(sig, md.signed_bytes)
            return True
        except Exception:  # UnverifiedSignatureError, UnsignedMetadataError, a bad key
            return False

    def root_intact(self, md: Metadata, before: Metadata | None) -> bool:
        """The newest root verifies as its own root role and as its predecessor requires."""
        try:
            md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
            if before is not None:
                before.signed.verify_delegate("root", md.signed_bytes, md.signatures)
            key = self.expect.get("root")
            if key is not None and key.keyid in md.signatures:
                key.verify_signature(md.signatures[key.keyid], md.signed_bytes)
            return True
        except Exception:
            return False

    def bin(self, out: PublishedTree, bin_name: str, bin_meta: MetaFile, key: Key | None) -> None:
        file_name = f"{bin_meta.version}.{bin_name}.json"
        rel = metadata_file(file_name)
        folder = self.tree.dir(rel.rpartition("/")[0])
        data = folder.read(file_name, MAX_BIN) if folder is not None else None
        if data is None:
            raise unusable(self.tree.label, rel, "the file is missing")
        if len(data) > MAX_BIN:
            raise unusable(self.tree.label, rel, f"larger than {MAX_BIN} bytes")
        entries = out.entries
        new = tuple.__new__
        intern = sys.intern
        try:
            signed, signatures, signed_bytes = _split(data)
            bin_targets = signed["targets"]
            expires = datetime.strptime(signed["expires"], _TS_FORMAT).replace(tzinfo=timezone.utc)
            for tpath, info in bin_targets.items():
                custom = info["custom"]
                entries[tpath] = new(TargetEntry, (
                    info["hashes"]["sha256"], int(custom[CUSTOM_RELEASE_COUNTER]),
                    intern(custom[CUSTOM_HARDWARE_CLASS]), extras_of(custom)))
            intact = self.matches(bin_meta, data) and (key is None or _bin_signed(signed, signatures, signed_bytes, key))
            out.bins[bin_name] = BinInfo(int(signed["version"]), expires,
                                         frozenset(s["keyid"] for s in signatures), len(bin_targets), intact)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise unusable(self.tree.label, rel, f"{type(exc).__name__}: {exc}") from None


_HEAD = b'{"signatures":'
_SIGNED = b'],"signed":'


def _split(data: bytes) -> tuple[dict, list, bytes | None]:
    """(signed, signatures, the bytes of `signed` as they stand in the file, if they can be cut out).

    The publisher writes `{"signatures":[...],"signed":{...}}` (compact, sorted keys); the
    signatures hold only hex strings, so the first `],"signed":` ends them. Both parts are
    parsed from exactly those byte ranges, so what is checked is what is read.
    """
    if data.startswith(_HEAD) and data.endswith(b"}"):
        cut = data.find(_SIGNED)
        if cut > 0:
            signed_bytes = data[len(_SIGNED) + cut:-1]
            signatures = json.loads(data[len(_HEAD):cut + 1])
            return json.loads(signed_bytes), signatures, signed_bytes
    doc = json.loads(data)
    return doc["signed"], doc["signatures"], None


def _bin_signed(signed: dict, signatures: list, signed_bytes: bytes | None, key: Key) -> bool:
    """Exactly one signature, by `key`, valid over the canonical form of `signed`."""
    if len(signatures) != 1 or signatures[0].get("keyid") != key.keyid:
        return False
    signature = Signature(key.keyid, signatures[0]["sig"])
    if signed_bytes is not None:
        try:  # the file's own bytes are canonical JSON when nothing in them needed an escape
            key.verify_signature(signature, signed_bytes)
            return True
        except Exception:
            pass
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Identical to canonical JSON unless something needed an escape (see FastCanonicalJSON).
    data = text.encode("utf-8") if "\\" not in text else encode_canonical(signed).encode("utf-8")
    try:
        key.verify_signature(signature, data)
        return True
    except Exception:  # UnverifiedSignatureError, a malformed signature
        return False
