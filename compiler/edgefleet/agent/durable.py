"""Crash-safe writes of the agent's state: write-temp -> fsync -> rename -> fsync-dir.

Readers see the old file or the whole new one, never a torn write; and once a function
returns, a power cut keeps the change. The active slot is a symlink that changes only by
`rename()` of a freshly made link over it (never delete-then-create: Greengrass #1342).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgefleet.core.fsutil import fsync_dir


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json(path: Path, value) -> None:
    write_atomic(path, (json.dumps(value, sort_keys=True, indent=1) + "\n").encode())


def swap_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` (relative) atomically: a new link renamed over the old one."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
