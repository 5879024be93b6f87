"""The one way the publisher reads, writes and removes files of the output tree: no-follow.

The output tree is a checkout of a branch that others can push to, so anything in it may
be a trap: a symlink planted at `targets/devices`, at a shard folder, at a predictable
target name, at `metadata/` or at `metadata/timestamp.json` would otherwise redirect
writes and prunes outside `--out`. Guarded here, once, for every caller:

- every directory is opened relative to its parent's descriptor with
  O_DIRECTORY|O_NOFOLLOW, starting at `--out` itself (the operator's own path, followed);
  every file operation is relative to a directory descriptor (`dir_fd=`), so a directory
  swapped for a link after it was opened cannot redirect anything;
- files are opened with O_NOFOLLOW; new files are created with O_CREAT|O_EXCL, so an
  existing name (a link, or a hard link to a file elsewhere) is never written through: a
  name that must be rewritten is unlinked first, and the commit point (and a root) is
  written to a temporary name and renamed within its directory;
- `scan` lists the publisher's directories (`metadata/`, `metadata/bins/*`, `targets/`,
  `targets/devices/*`) and refuses any symbolic link in them with E544, naming it, before
  anything is written. Hard links cannot be committed to git; one made locally is
  harmless, because no existing file is ever opened for writing.

Other entries of `--out` (`.git`, a README) are not the publisher's and are not touched.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path

from edgefleet.signing import SigningError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

# The directories whose entries belong to the publisher (scanned, written, pruned).
OWN_TOP = ("metadata", "targets")


def link_error(out: str, rel: str, what: str = "a symbolic link") -> SigningError:
    return SigningError(
        "E544", f"the desired-state tree holds {what} at {rel}: publishing follows no link and writes "
        "nothing outside the output directory",
        f"remove {out.rstrip('/')}/{rel} (someone planted it in the tree, or the tree is not one "
        "`edgefleet compile` wrote) and compile again", f"{out.rstrip('/')}/{rel}")


class TreeDir:
    """One open directory of the tree; `rel` is its tree-relative path ('' for the top)."""

    __slots__ = ("fd", "rel", "tree")

    def __init__(self, tree: Tree, fd: int, rel: str):
        self.tree = tree
        self.fd = fd
        self.rel = rel

    def path(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    # reading
    def read(self, name: str, limit: int) -> bytes | None:
        """The bytes of regular file `name` (None if absent); E544 for a link or a non-file."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._refused(name, exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise link_error(self.tree.label, self.path(name), "something other than a regular file")
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def holds(self, name: str, data: bytes) -> bool:
        """Whether regular file `name` holds exactly `data` (False for a link, a non-file, a short file)."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError:
            return False
        try:
            want = len(data)
            got = os.read(fd, want + 1)
            while len(got) < want + 1:  # a regular file returns all at once; anything else is re-read
                more = os.read(fd, want + 1 - len(got))
                if not more:
                    break
                got += more
            return got == data
        except OSError:
            return False
        finally:
            os.close(fd)

    def scan(self) -> Iterator[tuple[str, bool]]:
        """(name, is a directory) of every entry; E544 for a symbolic link."""
        with os.scandir(self.fd) as it:
            for entry in it:
                if entry.is_symlink():
                    raise link_error(self.tree.label, self.path(entry.name))
                yield entry.name, entry.is_dir(follow_symlinks=False)

    # writing
    def create(self, name: str, data: bytes, durable: bool = False) -> None:
        """Create `name` holding `data`; the name must not exist (O_EXCL: nothing is written through)."""
        try:
            fd = os.open(name, _CREATE_FLAGS, 0o644, dir_fd=self.fd)
        except FileExistsError:
            raise link_error(self.tree.label, self.path(name), "an unexpected file (made while publishing?)") \
                from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, name: str, data: bytes) -> None:
        """Replace whatever is at `name` (a damaged file, a leftover) by a new file holding `data`."""
        self.unlink(name)
        self.create(name, data)

    def replace(self, name: str, data: bytes) -> None:
        """Atomically make `name` hold `data`: a durable temporary file renamed over it, then fsync the directory."""
        tmp = f".{name}.tmp"
        self.unlink(tmp)
        self.create(tmp, data, durable=True)
        try:
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink(tmp)
            raise
        os.fsync(self.fd)

    def unlink(self, name: str) -> bool:
        """Remove the directory entry `name` (never what a link points at); False if absent."""
        try:
            os.unlink(name, dir_fd=self.fd)
            return True
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise link_error(self.tree.label, self.path(name), "a directory") from None

    def _refused(self, name: str, exc: OSError) -> SigningError:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            return link_error(self.tree.label, self.path(name))
        return link_error(self.tree.label, self.path(name), f"an unreadable entry ({exc.strerror})")


class Tree:
    """The output directory, opened once; sub-directories are opened no-follow and cached.

    Use as a context manager: every descriptor is closed on exit.
    """

    def __init__(self, out_dir: Path, create: bool = False):
        self.label = str(out_dir)
        if create:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            fd = -1
        except NotADirectoryError:
            raise SigningError("E544", f"the output {out_dir} is not a directory",
                               "give --out a directory (it is created if missing)", str(out_dir)) from None
        self.top = TreeDir(self, fd, "") if fd >= 0 else None
        self._dirs: dict[str, TreeDir | None] = {"": self.top}
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ValueError, OSError):
            soft = 1024
        # one descriptor per shard folder in use; bounded well below the process limit
        self._bound = max(64, min(8192, (soft if soft > 0 else 1024) // 2))

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for d in self._dirs.values():
            _close(d)
        self._dirs.clear()

    @property
    def exists(self) -> bool:
        return self.top is not None

    def dir(self, rel: str, create: bool = False) -> TreeDir | None:
        """The open directory at tree-relative `rel` (None if absent and not `create`); E544 on a link."""
        found = self._dirs.get(rel, False)
        if found is not False and (found is not None or not create):
            return found
        parent_rel, _, name = rel.rpartition("/")
        parent = self.dir(parent_rel, create) if rel else None
        if parent is None:
            return None
        opened = self._open_child(parent, name, create)
        if len(self._dirs) >= self._bound:
            self._evict()
        self._dirs[rel] = opened
        return opened

    def _open_child(self, parent: TreeDir, name: str, create: bool) -> TreeDir | None:
        for attempt in (0, 1):
            try:
                return TreeDir(self, os.open(name, _DIR_FLAGS, dir_fd=parent.fd), parent.path(name))
            except FileNotFoundError:
                if not create or attempt:
                    return None
                try:
                    os.mkdir(name, 0o755, dir_fd=parent.fd)
                except FileExistsError:
                    pass  # made meanwhile: open it (no-follow) on the second attempt
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    try:
                        is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent.fd, follow_symlinks=False).st_mode)
                    except OSError:
                        is_link = True
                    raise link_error(self.label, parent.path(name),
                                     "a symbolic link" if is_link else "a file where a directory belongs") from None
                raise
        return None

    def _evict(self) -> None:
        """Close the cached shard folders (never the top levels), keeping the descriptor count bounded."""
        for rel in [r for r in self._dirs if r.count("/") >= 2]:
            _close(self._dirs.pop(rel))


def _close(d: TreeDir | None) -> None:
    """Close and disarm: a stale TreeDir fails with EBADF instead of using a reused descriptor."""
    if d is not None and d.fd >= 0:
        os.close(d.fd)
        d.fd = -1


def scan(tree: Tree, dirs: tuple[str, ...] = OWN_TOP) -> dict[str, set[str]]:
    """File names in each of the publisher's directories (tree-relative dir -> names); E544 on a link.

    Walks `metadata/`, `metadata/bins/*`, `targets/` and `targets/*/*/*` (the device shard
    folders, signing/layout.py); sub-directories deeper than that are not the publisher's and
    are not read.
    """
    listing: dict[str, set[str]] = {}

    def walk(rel: str, depth: int) -> None:
        d = tree.dir(rel)
        if d is None:
            return
        names: set[str] = set()
        subdirs = []
        for name, is_dir in d.scan():
            if is_dir:
                subdirs.append(name)
            else:
                names.add(name)
        listing[rel] = names
        if depth:
            for name in subdirs:
                walk(f"{rel}/{name}", depth - 1)

    for top in dirs:
        walk(top, 3 if top == "targets" else 2)
    return listing
