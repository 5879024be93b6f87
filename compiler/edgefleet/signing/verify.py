"""Verify one device's desired state exactly as the device does: offline, from a local tree.

python-tuf's `Updater` runs the TUF client workflow (root chain, timestamp, snapshot,
targets, the device's hash bin, then the target file) over `LocalTreeFetcher`, which
reads files from a directory (an output tree, or the device agent's git checkout)
instead of a network. On top of TUF, the Uptane-style checks on the device's own
target: its custom device id and hardware class must be this device's, and its
release counter must not be lower than the last one the device installed.

What the updater rejects, and what it means here:
  expired metadata                    freeze attack            E552
  a version lower than trusted        rollback attack          E553
  signature not by a trusted key      arbitrary install, or a key rotation not published  E554
  bytes not matching signed hash      tampering, mix-and-match E555
  (also a longer file whose first signed-length bytes are not the signed ones: another
  file put in its place, e.g. another device's target)
  the signed bytes, then more         endless data attack      E556
  (or more than the client's limit for a file with no signed length: timestamp, root)
Each of these names the file the client was reading (tree-relative, e.g.
`targets/devices/0a/3/<sha256>.<id>.json`) in the message and as the error's path.
Rollback detection across runs needs the device's memory of what it trusted:
`metadata_cache` is that directory (the agent passes its own; `edgefleet verify`
uses a fresh one unless `--cache` is given).

The clock is an argument. python-tuf reads the wall clock when an Updater is made and
has no public parameter for it, so `now` is set on the updater's trusted set (the one
private attribute used here; tuf is pinned below 8 in pyproject.toml).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from edgefleet.core.ids import is_device_id
from edgefleet.signing import (
    BINS_PREFIX,
    CUSTOM_DEVICE_ID,
    CUSTOM_HARDWARE_CLASS,
    CUSTOM_RELEASE_COUNTER,
    SigningError,
    device_target_path,
)
from edgefleet.signing.layout import metadata_file, target_file

_SCHEME = "edgefleet-tree:"
METADATA_URL = f"{_SCHEME}metadata/"
TARGETS_URL = f"{_SCHEME}targets/"


class VerifyError(SigningError):
    """The device would refuse this desired state; `reason` says why, `hint` what to do."""

    def __init__(self, reason: str, hint: str = "", code: str = "E550", path: str = "", file: str | None = None):
        self.reason = reason
        self.file = file  # tree-relative file the attack is in, when one is known
        super().__init__(code, reason, hint, path)


@dataclass(frozen=True)
class VerifiedTarget:
    path: str                   # the TUF target path, e.g. devices/<hh>/<h>/<id>.json
    data: bytes                 # the verified desired state
    custom: dict[str, Any]      # device_id, hardware_class, release_counter, ...
    versions: dict[str, int] = field(default_factory=dict)  # trusted root/timestamp/snapshot/targets/bin


class LocalTreeFetcher(FetcherInterface):
    """Serves `edgefleet-tree:<path>` URLs from files under `tree_dir`; missing files are 404.

    Files are streamed in chunks, so the updater's length limit stops an endless file
    after the limit, not after reading all of it.
    """

    def __init__(self, tree_dir: Path, chunk_size: int = 64 * 1024):
        self.root = Path(tree_dir).resolve()
        self.chunk_size = chunk_size
        self.last: str | None = None  # tree-relative file of the latest request (what an error is about)

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(_SCHEME):
            raise tuf_errors.DownloadError(f"not a tree URL: {url}")
        rel = unquote(url[len(_SCHEME):])
        if rel.startswith("metadata/"):
            rel = metadata_file(rel[len("metadata/"):])  # bins live in shard folders
        self.last = rel
        parts = rel.split("/")
        path = self.root.joinpath(*parts).resolve()
        # A checkout may hold symlinks; never read outside the tree.
        if any(p in ("", ".", "..") for p in parts) or not path.is_relative_to(self.root):
            raise tuf_errors.DownloadHTTPError(f"{rel}: outside the tree", 404)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise tuf_errors.DownloadHTTPError(f"{rel} not found", 404) from None
        return self._chunks(f)

    def _chunks(self, f) -> Iterator[bytes]:
        with f:
            while chunk := f.read(self.chunk_size):
                yield chunk


def verify_device(tree_dir: Path, device_id: str, trusted_root: bytes, now: datetime,
                  hardware_class: str | None = None, last_counter: int | None = None,
                  metadata_cache: Path | None = None) -> VerifiedTarget:
    """Verify and return `device_id`'s desired state from `tree_dir`; raise VerifyError."""
    tree = str(tree_dir)
    if not is_device_id(device_id):
        raise VerifyError(f"{device_id!r} is not a device id", "device ids are lower-case letters, "
                          "digits, '.', '_' and '-', starting with a letter or digit", "E557", tree)

    def missing() -> VerifyError:
        return VerifyError(f"the signed tree has no desired state for device {device_id}",
                           "is the device in the fleet, and was `edgefleet compile` run since it was added?",
                           "E557", tree)

    return _verified_target(tree_dir, device_target_path(device_id), trusted_root, now, metadata_cache, missing,
                            lambda custom: _check_custom(custom, device_id, hardware_class, last_counter, tree))


def verify_fleet_target(tree_dir: Path, target_path: str, trusted_root: bytes, now: datetime,
                        metadata_cache: Path | None = None) -> VerifiedTarget:
    """A fleet-wide target (layout.FLEET_TARGETS, listed by the top-level targets role), verified
    the same way: the agent gets the Sigstore trusted root this way and no other."""
    tree = str(tree_dir)

    def missing() -> VerifyError:
        return VerifyError(f"the signed tree has no {target_path}",
                           "set fleet.yaml signing.trusted_root and recompile", "E557", tree)

    return _verified_target(tree_dir, target_path, trusted_root, now, metadata_cache, missing, lambda custom: None)


def _verified_target(tree_dir: Path, target_path: str, trusted_root: bytes, now: datetime,
                     metadata_cache: Path | None, missing, check_custom) -> VerifiedTarget:
    """The TUF client workflow for one target; `check_custom` runs before its bytes are fetched."""
    tree = str(tree_dir)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    with tempfile.TemporaryDirectory(prefix="edgefleet-verify-") as tmp:
        meta_dir = Path(metadata_cache) if metadata_cache is not None else Path(tmp, "metadata")
        meta_dir.mkdir(parents=True, exist_ok=True)
        fetcher = LocalTreeFetcher(Path(tree_dir))
        info = None
        try:
            updater = Updater(str(meta_dir), METADATA_URL, target_dir=os.path.join(tmp, "targets"),
                              target_base_url=TARGETS_URL, fetcher=fetcher, bootstrap=trusted_root)
        except tuf_errors.RepositoryError as exc:
            raise VerifyError(f"the trusted root is not valid, self-signed root metadata: {exc}",
                              "pass the root.json the device was provisioned with "
                              "(e.g. metadata/1.root.json of the first published tree)", "E561") from None
        updater._trusted_set.reference_time = now  # see the module docstring
        try:
            info = updater.get_targetinfo(target_path)
            if info is None:
                raise missing()
            custom = dict(info.custom or {})
            check_custom(custom)
            local = updater.download_target(info, filepath=os.path.join(tmp, "target"))
            with open(local, "rb") as f:
                data = f.read()
            trusted = updater._trusted_set
            bin_name = trusted.targets.delegations.succinct_roles.get_role_for_target(target_path) \
                if trusted.targets.delegations and trusted.targets.delegations.succinct_roles else None
            versions = {"root": trusted.root.version, "timestamp": trusted.timestamp.version,
                        "snapshot": trusted.snapshot.version, "targets": trusted.targets.version}
            if bin_name and bin_name in trusted:
                versions[BINS_PREFIX] = trusted[bin_name].version
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _explain(exc, tree, fetcher.last, _expected(updater, fetcher.last, info)) from None
        except OSError as exc:
            raise VerifyError(f"cannot write the metadata cache {meta_dir}: {exc.strerror}",
                              "give a writable --cache directory", "E563", str(meta_dir)) from None
    return VerifiedTarget(path=target_path, data=data, custom=custom, versions=versions)


def _check_custom(custom: dict, device_id: str, hardware_class: str | None, last_counter: int | None,
                  tree: str) -> None:
    if custom.get(CUSTOM_DEVICE_ID) != device_id:
        raise VerifyError(
            f"wrong device: the target at {device_target_path(device_id)} is signed for device "
            f"{custom.get(CUSTOM_DEVICE_ID)!r}, not {device_id!r}",
            "a device never installs another device's state; the tree was tampered with or "
            "mis-compiled: recompile and republish it", "E558", tree)
    if hardware_class is not None and custom.get(CUSTOM_HARDWARE_CLASS) != hardware_class:
        raise VerifyError(
            f"wrong hardware class: {device_id}'s target is for class "
            f"{custom.get(CUSTOM_HARDWARE_CLASS)!r}, this device is {hardware_class!r}",
            "the fleet repository puts the device in another class than it really is: fix "
            "devices/*.yaml|csv and recompile", "E559", tree)
    counter = custom.get(CUSTOM_RELEASE_COUNTER)
    if not isinstance(counter, int) or isinstance(counter, bool):
        raise VerifyError(f"{device_id}'s target has no integer release counter",
                          "recompile with this edgefleet version", "E560", tree)
    if last_counter is not None and counter < last_counter:
        raise VerifyError(
            f"rollback: {device_id}'s release counter is {counter}, lower than the {last_counter} "
            "it already installed", "an older desired state is being replayed; the device keeps "
            "its current state", "E560", tree)


def _expected(updater: Updater, rel: str | None, info) -> tuple[int, str | None] | None:
    """(signed length, signed sha256 or None) of tree file `rel`, as the trusted metadata lists it."""
    if rel is None:
        return None
    trusted = updater._trusted_set  # see the module docstring
    if rel.startswith("targets/"):
        if info is not None and rel == target_file(info.path, info.hashes.get("sha256")):
            return info.length, info.hashes.get("sha256")
        return None
    name = rel.rpartition("/")[2]
    version, _, role_file = name.partition(".")
    if role_file == "snapshot.json" and "timestamp" in trusted:
        meta = trusted.timestamp.snapshot_meta
    elif version.isdigit() and role_file != "root.json" and "snapshot" in trusted:
        meta = trusted.snapshot.meta.get(role_file)
    else:
        return None  # timestamp and root: no signed length, only the client's limit
    if meta is None or meta.length is None:
        return None
    return meta.length, (meta.hashes or {}).get("sha256")


def _padded(tree: str, rel: str, expected: tuple[int, str | None]) -> bool:
    """Whether the file starts with its signed bytes and only adds more (endless data), as
    opposed to a different file in its place (tampering)."""
    length, digest = expected
    try:
        with open(Path(tree).joinpath(*rel.split("/")), "rb") as f:
            head = f.read(length)
    except OSError:
        return False
    if digest is not None:
        return hashlib.sha256(head).hexdigest() == digest
    try:  # metadata listed without a hash: its signed bytes are a whole JSON document
        return set(json.loads(head)) == {"signed", "signatures"}
    except ValueError:
        return False


def _explain(exc: Exception, tree: str, rel: str | None = None,
             expected: tuple[int, str | None] | None = None) -> VerifyError:
    """Name the attack a tuf error stands for and the file it is in, with what an operator should do."""
    detail = str(exc) or type(exc).__name__
    where = f"{tree.rstrip('/')}/{rel}" if rel else tree
    named = f"{rel}: {detail}" if rel else detail

    def fail(reason: str, hint: str, code: str, file_path: bool = True) -> VerifyError:
        return VerifyError(reason, hint, code, where if file_path else tree, rel if file_path else None)

    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return fail(f"freeze: {detail}", "the tree was not re-signed in time: run `edgefleet compile` "
                    "(it renews expiring metadata; schedule it at least every half timestamp window); "
                    "devices keep their current state meanwhile. Also check the device clock / --now",
                    "E552", file_path=False)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return fail(f"rollback or mix-and-match: {named}",
                    "the tree holds metadata older than, or inconsistent with, what the device "
                    "trusts: a replayed or mixed checkout; republish from the latest desired-state "
                    "branch", "E553")
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return fail(f"untrusted signature: {named}",
                    "metadata is not signed by the keys the trusted root lists: tampered, or a key "
                    "was rotated and the new root not published (run `edgefleet compile`)", "E554")
    tampered_hint = ("the file does not match the length/hash its signed metadata records: it was modified or "
                     "replaced by another file (another device's target, another version's); `edgefleet "
                     "compile` re-publishes a damaged tree, or check out the desired-state branch again")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return fail(f"tampered file: {named}", tampered_hint, "E555")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        if rel is not None and expected is not None and not _padded(tree, rel, expected):
            return fail(f"tampered file: {rel} is not the file its signed metadata lists "
                        f"({expected[0]} bytes expected): {detail}", tampered_hint, "E555")
        return fail(f"endless data: {named}",
                    "a file is larger than its signed metadata (or the client limit) allows; "
                    "check out the desired-state branch again", "E556")
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return fail(f"missing file: {named}",
                    "the tree is incomplete: give the directory `edgefleet compile --out` wrote "
                    "(with metadata/ and targets/)", "E551", file_path=False)
    return fail(f"metadata does not verify: {type(exc).__name__}: {named}",
                "the tree is damaged or not an edgefleet desired-state tree; check out the "
                "desired-state branch again", "E550")
