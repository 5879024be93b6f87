"""Where each file of a published desired-state tree lives: the one definition of the layout.

A device polls the tree through git (a partial clone walked down to its own files) or plain HTTP GETs
from a static mirror, so no directory of the tree may list more than about a thousand
entries: at a million devices a flat `targets/devices/` would be one git tree object of
~100 MB that every poll downloads. Two rules keep every directory small:

- a device's TUF target path carries two shard folders from the first three hex digits of
  sha256(device id): `devices/<hh>/<h>/<id>.json` (256 folders of 16: every folder lists at
  most 256 entries, and the 4,096 leaves hold ~245 devices each at a million — at most two
  versions of each file are kept, so under ~500 entries per leaf);
- delegated hash-bin metadata, which TUF names `<V>.bins-<hex>.json` and requests by that
  name from the metadata base URL, is stored under `metadata/bins/<first two hex>/`.
  Top-level roles (`<N>.root.json`, `timestamp.json`, `<V>.snapshot.json`,
  `<V>.targets.json`) stay in `metadata/`.

TUF itself sees only target paths and metadata names; the fetchers (local tree, HTTP
mirror) map a requested name onto a tree-relative file with `metadata_file` and
`target_file`. Pure: strings in, strings out.
"""

from __future__ import annotations

import hashlib
import re

BINS_PREFIX = "bins"
TARGET_SHARD_HEX = 3          # 16**3 = 4,096 target shards, as <2 hex>/<1 hex>
BIN_SHARD_HEX = 2             # metadata/bins/<2 hex>/

# Fleet-wide targets, listed by the top-level targets role itself (every device already fetches
# it): the Sigstore trusted root devices verify build provenance against, so it rotates through
# TUF like any other update and a device never trusts one that did not come that way.
SIGSTORE_TRUSTED_ROOT = "fleet/sigstore/trusted_root.json"
FLEET_TARGETS = (SIGSTORE_TRUSTED_ROOT,)

# Every file a published tree may hold, and nothing else (what `compile --commit` commits).
TREE_FILE = re.compile(
    r"^(?:metadata/(?:\d+\.root|timestamp|\d+\.snapshot|\d+\.targets)\.json"
    r"|metadata/" + BINS_PREFIX + r"/[0-9a-f]{1,%d}/\d+\." % BIN_SHARD_HEX + BINS_PREFIX + r"-[0-9a-f]+\.json"
    r"|targets/fleet/sigstore/[0-9a-f]{64}\.trusted_root\.json"
    r"|targets/devices/[0-9a-f]{2}/[0-9a-f]/[0-9a-f]{64}\.[a-z0-9][a-z0-9._-]*\.json)$")

_BIN_NAME = re.compile(r"^(?:(\d+)\.)?" + BINS_PREFIX + r"-([0-9a-f]+)\.json$")


def target_shard(device_id: str) -> str:
    """`hh/h`: the two shard folders of a device's target (no folder lists over 256 entries)."""
    digits = hashlib.sha256(device_id.encode()).hexdigest()[:TARGET_SHARD_HEX]
    return f"{digits[:2]}/{digits[2:]}"


def device_target_path(device_id: str) -> str:
    """The TUF target path of a device's desired state."""
    return f"devices/{target_shard(device_id)}/{device_id}.json"


def metadata_file(name: str) -> str:
    """Tree-relative file of metadata TUF requests as `name` (e.g. `7.bins-0a3.json`)."""
    match = _BIN_NAME.match(name)
    if match:
        return f"metadata/{BINS_PREFIX}/{match.group(2)[:BIN_SHARD_HEX]}/{name}"
    return f"metadata/{name}"


def target_file(target_path: str, digest: str | None = None) -> str:
    """Tree-relative file of a target; with consistent snapshots its name is `<sha256>.<base>`."""
    dirname, _, base = target_path.rpartition("/")
    name = f"{digest}.{base}" if digest else base
    return f"targets/{dirname}/{name}" if dirname else f"targets/{name}"


def bin_for_target(target_path: str, bit_length: int) -> str:
    """The hash-bin role that lists `target_path` (python-tuf's SuccinctRoles rule)."""
    number = int.from_bytes(hashlib.sha256(target_path.encode()).digest()[:4], "big") >> (32 - bit_length)
    width = len(f"{(1 << bit_length) - 1:x}")
    return f"{BINS_PREFIX}-{number:0{width}x}"


def is_tree_file(rel: str) -> bool:
    """Whether a tree-relative path names a file of the published tree's layout."""
    return TREE_FILE.match(rel) is not None


# Depth (from the root tree) of the files of `metadata/`: a git fetch with
# `--filter=tree:<METADATA_DEPTH + 1>` brings a commit's trees down to `metadata/bins/` and
# `targets/devices/` (their entries excluded) and the top-level metadata files.
METADATA_DEPTH = 2


def device_tree_files(device_id: str, bit_length: int | None) -> list[tuple[str, re.Pattern[str]]]:
    """The files of the tree a device fetches: (directory, pattern its file names must match).

    Exactly what TUF verification of this device reads: the top-level metadata (the root
    chain, timestamp, snapshot, targets), the versions of the device's own hash bin, the
    versions of its own target, and the fleet-wide targets' folders. Before the device
    knows the bin count (`bit_length`, from `targets.json`'s succinct delegation) its bin
    is left out; the caller asks again once it has read `targets.json`.
    """
    own_target = re.compile(r"^[0-9a-f]{64}\." + re.escape(device_id) + r"\.json$")
    files = [("metadata", re.compile(r"^(?:\d+\.root|timestamp|\d+\.snapshot|\d+\.targets)\.json$"))]
    if bit_length is not None:
        own_bin = bin_for_target(device_target_path(device_id), bit_length)
        files.append((metadata_file(f"1.{own_bin}.json").rpartition("/")[0],
                      re.compile(r"^\d+\." + re.escape(own_bin) + r"\.json$")))
    files.append((f"targets/devices/{target_shard(device_id)}", own_target))
    for folder in sorted({f"targets/{p.rpartition('/')[0]}" for p in FLEET_TARGETS}):
        files.append((folder, re.compile(r"^[0-9a-f]{64}\.[a-z0-9][a-z0-9._-]*\.json$")))
    return files
