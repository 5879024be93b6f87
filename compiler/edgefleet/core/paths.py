"""The repository is a boundary: the one resolver for every repository-relative path.

A fleet repository is edited through pull requests, so a path in its YAML (a model
source, a data file, the artifact store, the trusted root) or a file in its folders (an
inventory) is hostile until resolved: after following every symlink it must still lie
inside the repository. Everything that reads such a path goes through `resolve_inside`;
a refusal says which path and why, and never what lies outside (no digest, no contents:
the outside file is not opened).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# scheme://... (s3://, https://, file://): an object store is `kind: object` with `url:`.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class PathRefused(OSError):
    """A repository path that may not be used. An OSError, so every reader that already
    treats an unreadable file as bad input treats a refused one the same way."""

    def __init__(self, code: str, message: str, hint: str):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def __str__(self) -> str:
        return self.message


def check_relative(rel: str, what: str) -> None:
    """The checks that need no disk: text that can name a file inside a repository."""
    if not isinstance(rel, str) or not rel:
        raise PathRefused("E012", f"{what} path is empty", "give a path relative to the repository root")
    if "\x00" in rel:
        raise PathRefused("E012", f"{what} path {rel!r} contains a NUL byte",
                          "remove the NUL byte; no file name holds one")
    if _URL.match(rel):
        raise PathRefused("E012", f"{what} path {rel!r} is a URL, not a path in the repository",
                          "an object store is `artifact_store: {kind: object, url: ...}`; "
                          "files the fleet reads are committed to the repository")
    # Linux's NAME_MAX / PATH_MAX: longer names make every stat() fail (ENAMETOOLONG), not "missing".
    if len(rel.encode("utf-8", "surrogateescape")) > 4000 or any(
            len(part.encode("utf-8", "surrogateescape")) > 255 for part in rel.split("/")):
        raise PathRefused("E012", f"{what} path {rel[:60]!r}... is longer than a file system allows "
                          "(a name over 255 bytes, or the path over 4000)", "give the real, shorter path")
    if os.path.isabs(rel) or rel.startswith("~"):
        raise PathRefused("E011", f"{what} path {rel!r} is not relative to the repository",
                          "give the path relative to the repository root, and commit the file there")


def resolve_inside(root: Path, rel: str, what: str = "file") -> Path:
    """`root/rel` with every symlink resolved, if it stays inside `root`; else PathRefused.

    The target need not exist (callers say "missing" in their own words); a path whose
    existing part leads outside is refused either way.
    """
    check_relative(rel, what)
    base = Path(root).resolve()
    try:
        target = (base / rel).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops, over-long names
        raise PathRefused("E011", f"{what} path {rel!r} cannot be resolved ({exc.__class__.__name__})",
                          "remove the symlink loop, or give a plain path inside the repository") from None
    if target != base and not target.is_relative_to(base):
        raise PathRefused("E011", f"{what} path {rel!r} leads outside the repository",
                          "commit the file inside the repository and give its relative path; "
                          "paths with '..' or symlinks pointing outside are refused")
    return target
