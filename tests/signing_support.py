"""Helpers for the signing tests: generated device targets and snapshots of a tree on disk."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from edgefleet.signing import device_target_path
from edgefleet.signing.publish import TargetFile

T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
CLASSES = ("jetson-vision-standard", "medical-cart-cpu")


def device_ids(count: int) -> list[str]:
    return [f"dev-{i:05d}" for i in range(count)]


def target(device: str, generation: int = 1, counter: int | None = None,
           hardware_class: str | None = None) -> TargetFile:
    """A device's desired state; fixed width, so a new generation has the same length."""
    cls = hardware_class or CLASSES[int(device.rsplit("-", 1)[1]) % 2]
    data = f'{{"device":"{device}","generation":"{generation:06d}","hardware_class":"{cls}"}}\n'.encode()
    return TargetFile(device_target_path(device), data,
                      {"device_id": device, "hardware_class": cls,
                       "release_counter": generation if counter is None else counter})


def targets(count: int, generation: int = 1, changed: dict[str, int] | None = None) -> list[TargetFile]:
    changed = changed or {}
    return [target(d, changed.get(d, generation)) for d in device_ids(count)]


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def tree_stats(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file: equal before and after means it was not touched."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.stat(Path(dirpath, name))
            out[Path(dirpath, name).relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return out
