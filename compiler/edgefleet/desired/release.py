"""Release counters already published: read from the previous desired-state tree.

Each device target's custom `release_counter` must never go down (devices refuse a
lower one), so compile reads what the previous tree says: per device, the counter and
the sha256 of the bytes it was given. The snapshot version is the high-water mark
for new counters (every publish that changes a target bumps it), so a device removed
and later added back gets a counter above any it held.

Walks the tree as a TUF client would (timestamp -> snapshot -> targets -> bins) with
python-tuf's Metadata for the small top-level roles; the bins are read as plain JSON,
because at a million devices building tuf objects for every target costs more than
the whole compile. Signatures are not checked: this is compile's own output, and
publish re-reads and re-signs it. The I/O edge of compile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuf.api.metadata import Metadata

from edgefleet.core.diagnostics import DiagnosticError, error
from edgefleet.signing import CUSTOM_RELEASE_COUNTER, device_target_path
from edgefleet.signing.layout import metadata_file
from edgefleet.core.source import Location


@dataclass
class PreviousReleases:
    """What the previous tree published; empty when there is none."""

    snapshot_version: int = 0
    entries: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # target path -> (counter, sha256)

    def __call__(self, device_id: str) -> tuple[int, bytes | None]:
        """compile's `previous_release`: (counter, sha256 of the published bytes) or (0, None)."""
        found = self.entries.get(device_target_path(device_id))
        return found if found is not None else (0, None)

    @property
    def next_release(self) -> int:
        """A counter above every counter the previous trees handed out."""
        return self.snapshot_version + 1


def read_previous_releases(out_dir: Path) -> PreviousReleases:
    meta = Path(out_dir) / "metadata"
    if not (meta / "timestamp.json").is_file():
        return PreviousReleases()
    path = meta / "timestamp.json"
    try:
        timestamp = Metadata.from_bytes(path.read_bytes())
        snapshot_version = timestamp.signed.snapshot_meta.version
        path = meta / f"{snapshot_version}.snapshot.json"
        snapshot = Metadata.from_bytes(path.read_bytes())
        path = meta / f"{snapshot.signed.meta['targets.json'].version}.targets.json"
        targets = Metadata.from_bytes(path.read_bytes())
        delegations = targets.signed.delegations
        if delegations is None:
            raise ValueError("targets delegates to no hash bins")
        roles = (delegations.succinct_roles.get_roles() if delegations.succinct_roles is not None
                 else list(delegations.roles or {}))
        entries: dict[str, tuple[int, bytes]] = {}
        for role in roles:
            version = snapshot.signed.meta[f"{role}.json"].version
            path = Path(out_dir) / metadata_file(f"{version}.{role}.json")
            for target, info in json.loads(path.read_bytes())["signed"]["targets"].items():
                entries[target] = (int(info["custom"][CUSTOM_RELEASE_COUNTER]),
                                   bytes.fromhex(info["hashes"]["sha256"]))
    except Exception as exc:  # OSError, KeyError, ValueError, tuf's DeserializationError
        raise DiagnosticError([error(
            "E513", f"cannot read the previous desired-state tree: {path}: {type(exc).__name__}: {exc}",
            Location(str(path)),
            "restore the output directory from the desired-state branch, or compile into an empty "
            "directory (devices that already trust the old tree will then refuse it)")]) from None
    return PreviousReleases(snapshot_version, entries)
