"""Durable file writes shared by the artifact store and the TUF publisher: a file or a
rename is only crash-safe once the bytes and then the directory entry reach the disk."""

from __future__ import annotations

import os
from pathlib import Path


def write_durable(path: Path, data: bytes) -> None:
    """Write `data` to `path` and fsync it before returning."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (after a rename or create inside it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
