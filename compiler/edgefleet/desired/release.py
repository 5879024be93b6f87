"""Release counters already published: what the previous desired-state tree says.

Each device target's custom `release_counter` must never go down (devices refuse a
lower one), so compile reads, per device, the counter and the sha256 of the bytes it was
given from the previous tree (`signing.tree.read_tree`, the one reader of a published
tree). The snapshot version is the high-water mark for new counters (every publish that
changes a target bumps it), so a device removed and later added back gets a counter
above any it held. Signatures are not checked here: publish checks them (and re-signs
what is damaged) when it writes the next version. The I/O edge of compile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.core.diagnostics import DiagnosticError, error
from edgefleet.core.source import Location
from edgefleet.signing import SigningError, device_target_path
from edgefleet.signing.tree import TargetEntry, read_tree


@dataclass
class PreviousReleases:
    """What the previous tree published; empty when there is none."""

    snapshot_version: int = 0
    entries: dict[str, TargetEntry] = field(default_factory=dict)  # target path -> its signed entry

    def __call__(self, device_id: str) -> tuple[int, bytes | None]:
        """compile's `previous_release`: (counter, sha256 of the published bytes) or (0, None)."""
        found = self.entries.get(device_target_path(device_id))
        return (found.release_counter, bytes.fromhex(found.sha256)) if found is not None else (0, None)

    @property
    def next_release(self) -> int:
        """A counter above every counter the previous trees handed out."""
        return self.snapshot_version + 1


def read_previous_releases(out_dir: Path) -> PreviousReleases:
    try:
        tree = read_tree(Path(out_dir))
    except SigningError as exc:
        if exc.code != "E542":
            raise  # E544: the tree holds a link
        raise DiagnosticError([error(
            "E513", f"cannot read the previous desired-state tree: {exc.message}", Location(exc.path or str(out_dir)),
            "restore the output directory from the desired-state branch, or compile into an empty "
            "directory (devices that already trust the old tree will then refuse it)")]) from None
    return PreviousReleases(tree.snapshot_version, tree.entries)
