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
  more bytes than signed/allowed      endless data attack      E556
Rollback detection across runs needs the device's memory of what it trusted:
`metadata_cache` is that directory (the agent passes its own; `edgefleet verify`
uses a fresh one unless `--cache` is given).

The clock is an argument. python-tuf reads the wall clock when an Updater is made and
has no public parameter for it, so `now` is set on the updater's trusted set (the one
private attribute used here; tuf is pinned below 8 in pyproject.toml).
"""

from __future__ import annotations

import os
import re
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

from edgefleet.signing import (
    BINS_PREFIX,
    CUSTOM_DEVICE_ID,
    CUSTOM_HARDWARE_CLASS,
    CUSTOM_RELEASE_COUNTER,
    SigningError,
    device_target_path,
)
from edgefleet.signing.layout import metadata_file

_SCHEME = "edgefleet-tree:"
METADATA_URL = f"{_SCHEME}metadata/"
TARGETS_URL = f"{_SCHEME}targets/"
_DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class VerifyError(SigningError):
    """The device would refuse this desired state; `reason` says why, `hint` what to do."""

    def __init__(self, reason: str, hint: str = "", code: str = "E550", path: str = ""):
        self.reason = reason
        super().__init__(code, reason, hint, path)


@dataclass(frozen=True)
class VerifiedTarget:
    path: str                   # the TUF target path, e.g. devices/<sss>/<id>.json
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

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(_SCHEME):
            raise tuf_errors.DownloadError(f"not a tree URL: {url}")
        rel = unquote(url[len(_SCHEME):])
        if rel.startswith("metadata/"):
            rel = metadata_file(rel[len("metadata/"):])  # bins live in shard folders
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
    if not _DEVICE_ID.match(device_id):
        raise VerifyError(f"{device_id!r} is not a device id", "device ids are lower-case letters, "
                          "digits, '.', '_' and '-', starting with a letter or digit", "E557", tree)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    target_path = device_target_path(device_id)
    with tempfile.TemporaryDirectory(prefix="edgefleet-verify-") as tmp:
        meta_dir = Path(metadata_cache) if metadata_cache is not None else Path(tmp, "metadata")
        meta_dir.mkdir(parents=True, exist_ok=True)
        try:
            updater = Updater(str(meta_dir), METADATA_URL, target_dir=os.path.join(tmp, "targets"),
                              target_base_url=TARGETS_URL, fetcher=LocalTreeFetcher(Path(tree_dir)),
                              bootstrap=trusted_root)
        except tuf_errors.RepositoryError as exc:
            raise VerifyError(f"the trusted root is not valid, self-signed root metadata: {exc}",
                              "pass the root.json the device was provisioned with "
                              "(e.g. metadata/1.root.json of the first published tree)", "E561") from None
        updater._trusted_set.reference_time = now  # see the module docstring
        try:
            info = updater.get_targetinfo(target_path)
            if info is None:
                raise VerifyError(f"the signed tree has no desired state for device {device_id}",
                                  "is the device in the fleet, and was `edgefleet compile` run since it was added?",
                                  "E557", tree)
            custom = dict(info.custom or {})
            _check_custom(custom, device_id, hardware_class, last_counter, tree)
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
            raise _explain(exc, tree) from None
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


def _explain(exc: Exception, tree: str) -> VerifyError:
    """Name the attack a tuf error stands for, with what an operator should do."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return VerifyError(f"freeze: {detail}", "the tree was not re-signed in time: run `edgefleet compile` "
                           "(it renews expiring metadata; schedule it at least every half timestamp window); "
                           "devices keep their current state meanwhile. Also check the device clock / --now",
                           "E552", tree)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return VerifyError(f"rollback or mix-and-match: {detail}",
                           "the tree holds metadata older than, or inconsistent with, what the device "
                           "trusts: a replayed or mixed checkout; republish from the latest desired-state "
                           "branch", "E553", tree)
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return VerifyError(f"untrusted signature: {detail}",
                           "metadata is not signed by the keys the trusted root lists: tampered, or a key "
                           "was rotated and the new root not published (run `edgefleet compile`)",
                           "E554", tree)
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return VerifyError(f"tampered or mixed file: {detail}",
                           "a file does not match the length/hash its signed metadata records; "
                           "check out the desired-state branch again", "E555", tree)
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return VerifyError(f"endless data: {detail}",
                           "a file is larger than its signed metadata (or the client limit) allows; "
                           "check out the desired-state branch again", "E556", tree)
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return VerifyError(f"missing file: {detail}",
                           "the tree is incomplete: give the directory `edgefleet compile --out` wrote "
                           "(with metadata/ and targets/)", "E551", tree)
    return VerifyError(f"metadata does not verify: {type(exc).__name__}: {detail}",
                       "the tree is damaged or not an edgefleet desired-state tree; check out the "
                       "desired-state branch again", "E550", tree)
