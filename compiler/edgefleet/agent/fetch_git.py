"""Fetch the desired-state tree from git: only what this device needs, and nothing when nothing moved.

- `git ls-remote` first: when the branch's commit is the one checked out, no fetch at all
  (a no-op poll is one ref advertisement);
- a partial clone with `--filter=tree:0`, walked down to the device's own files: the
  commit is fetched with `--filter=tree:<METADATA_DEPTH + 1>` (its trees down to
  `metadata/bins/` and `targets/devices/`, and the top-level metadata files), then each
  further level by object id, in one fetch per level: the device's bin shard, target
  shard and fleet-target folders; the leaf target shard and the bin's file; the device's
  own target file. A `--filter=blob:none` clone instead receives every changed tree of
  the commit (a fleet-wide update changes thousands of shard trees), and git's own lazy
  fetch of a missing tree brings its whole subtree. An update is five round trips
  (ls-remote and four fetches), a first poll eight;
- the files are written into the checkout directory by this module (`git checkout` would
  read, and lazily fetch, every tree of the commit): only names of the published
  layout (`layout.is_tree_file`), regular blobs only, each by write-temp, fsync, rename;
  HEAD moves last, so an interrupted fetch is redone by the next poll;
- never a shallow fetch (git hosts warn they are costly to serve). Objects are fetched by
  id: protocol v2 servers allow that for reachable objects (v0 needs
  `uploadpack.allowReachableSHA1InWant`), and `uploadpack.allowFilter` must be on, as
  on the large git hosts; a server without filters sends more, never less.

The checkout is untrusted input: `verify.verify_device` runs TUF over it afterwards. The
one thing read from it before verification is the hash-bin count of `targets.json`,
used only to pick the bin file (a lie makes verification fail, nothing more).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgefleet.agent.errors import AgentError

TIMEOUT = 120
MAX_FILE = 64 * 1024 * 1024  # no file of a published tree is near this (a bin at 16,384 bins: ~60 KB)
_TARGETS = re.compile(r"^(\d+)\.targets\.json$")


@dataclass(frozen=True)
class TreeFetch:
    tree: Path
    revision: str
    changed: bool       # False: the ref did not move, nothing was fetched


def _git(args: list[str], cwd: Path | None = None, timeout: int = TIMEOUT) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AgentError("E601", f"git {args[0]} timed out after {timeout}s", "the remote is unreachable; "
                         "the device keeps serving and polls again", reason="RemoteUnreachable") from None
    if proc.returncode != 0:
        raise AgentError("E601", f"git {args[0]} failed: {proc.stderr.strip()[-400:]}",
                         "the remote is unreachable or refused the request; the device keeps serving",
                         reason="RemoteUnreachable")
    return proc.stdout


def remote_revision(remote: str, branch: str) -> str:
    out = _git(["ls-remote", "--", remote, f"refs/heads/{branch}"], timeout=60)
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    raise AgentError("E602", f"{remote} has no branch {branch}", "pass --branch, or publish with "
                     "`edgefleet compile --commit BRANCH`", reason="BranchMissing")


def local_revision(checkout: Path) -> str | None:
    if not (checkout / ".git").exists():
        return None
    try:
        return _git(["rev-parse", "--verify", "-q", "HEAD"], cwd=checkout).strip() or None
    except AgentError:
        return None


def _clear_stale_locks(checkout: Path) -> None:
    """A SIGKILL or power cut inside a git command leaves `*.lock` files that make every later
    command fail. The agent holds the state directory's lock (one agent per directory), so
    any lock file here is a dead process's and is removed."""
    git_dir = checkout / ".git"
    if git_dir.is_dir():
        for lock in git_dir.rglob("*.lock"):
            try:
                lock.unlink()
            except OSError:
                pass


FILTER = "tree:0"
_LOCAL_OBJECTS = ["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"]


def fetch_tree(remote: str, branch: str, checkout: Path, device_id: str) -> TreeFetch:
    from edgefleet.signing.layout import METADATA_DEPTH

    revision = remote_revision(remote, branch)
    checkout = Path(checkout)
    _clear_stale_locks(checkout)
    if local_revision(checkout) == revision:
        return TreeFetch(checkout, revision, changed=False)
    if not (checkout / ".git").exists():
        checkout.mkdir(parents=True, exist_ok=True)
        _git(["init", "-q"], cwd=checkout)
        _git(["remote", "add", "origin", remote], cwd=checkout)
        _git(["config", "remote.origin.promisor", "true"], cwd=checkout)
        _git(["config", "fetch.recurseSubmodules", "false"], cwd=checkout)
    else:
        _git(["remote", "set-url", "origin", remote], cwd=checkout)
    _git(["config", "remote.origin.partialclonefilter", FILTER], cwd=checkout)
    has_commit = _git(["for-each-ref", "--count=1", "refs/remotes/origin/"], cwd=checkout).strip() != ""
    # With a commit of ours to negotiate from, the server sends only the new commits and their
    # changed trees and files down to the top-level metadata; without one (first poll) just the commits.
    depth = f"tree:{METADATA_DEPTH + 1}" if has_commit else FILTER
    _git(["fetch", "-q", "--no-tags", "--no-write-fetch-head", f"--filter={depth}", "origin",
          f"+refs/heads/{branch}:refs/remotes/origin/{branch}"], cwd=checkout)
    fetched = _git(["rev-parse", "--verify", "-q", f"refs/remotes/origin/{branch}^{{commit}}"], cwd=checkout).strip()
    files = _walk(checkout, fetched, device_id)
    _materialize(checkout, files)
    _git(["update-ref", "--no-deref", "HEAD", fetched], cwd=checkout)  # last: the checkout is complete
    return TreeFetch(checkout, fetched, changed=True)


def _walk(checkout: Path, commit: str, device_id: str) -> dict[str, str]:
    """{tree-relative file: blob id} of the device's files in `commit`, fetching what is missing.

    One fetch per level of the tree, each of exactly the objects named (`tree:0` and no
    negotiation: the server sends the wanted trees and blobs, nothing under them)."""
    from edgefleet.signing.layout import device_tree_files, is_tree_file

    # the commit's own text names its tree (`rev-parse C^{tree}` would lazily fetch the whole tree)
    header = _git(["cat-file", "commit", commit], cwd=checkout).split("\n", 1)[0]
    if not header.startswith("tree "):
        raise AgentError("E601", f"commit {commit} names no tree", "the remote serves a broken repository",
                         reason="RemoteUnreachable")
    trees: dict[str, str] = {"": header.split()[1]}
    local = set(_git(_LOCAL_OBJECTS, cwd=checkout).split())
    listings: dict[str, list[tuple[str, str, str, str]]] = {}
    selected: dict[str, str] = {}
    bit_length: int | None = None
    for _ in range(16):  # the tree is a handful of levels deep; a loop guard against a hostile one
        wanted = device_tree_files(device_id, bit_length)
        wants: set[str] = set()
        done = True
        index = 0
        while index < len(wanted):
            folder, pattern = wanted[index]
            index += 1
            parent, oid = _deepest_known(folder, trees, listings, checkout, local)
            if parent is None:
                continue  # the folder is not in this commit (verification says what is missing)
            if parent != folder:
                done = False
                if oid not in local:
                    wants.add(oid)
                continue
            for mode, kind, blob, name in _listing(folder, trees, listings, checkout, local):
                rel = f"{folder}/{name}"
                if kind == "blob" and mode == "100644" and pattern.match(name) and is_tree_file(rel):
                    selected[rel] = blob
                    if blob not in local:
                        wants.add(blob)
            if folder == "metadata" and bit_length is None:
                bit_length = _bit_length(checkout, selected, local)
                if bit_length is not None:  # the device's bin folder joins this same round
                    wanted = device_tree_files(device_id, bit_length)
        if wants:
            _git(["-c", "fetch.negotiationAlgorithm=noop", "fetch", "-q", "--no-tags", "--no-write-fetch-head",
                  f"--filter={FILTER}", "origin", *sorted(wants)], cwd=checkout)
            local |= wants
        elif done:
            break
    keep = {folder for folder, _ in device_tree_files(device_id, bit_length)}
    return {rel: blob for rel, blob in selected.items() if rel.rpartition("/")[0] in keep}


def _deepest_known(folder: str, trees: dict[str, str], listings, checkout: Path, local: set[str]):
    """Where the walk to `folder` stands: (folder, its tree id) when that tree is here; (another
    folder, the id of the first tree on the way that is not here yet) when one must be fetched
    first; (None, None) when the commit has no such folder."""
    path = ""
    for part in folder.split("/"):
        child = f"{path}/{part}" if path else part
        if child not in trees:
            if trees[path] not in local:
                return path, trees[path]
            entry = next((e for e in _listing(path, trees, listings, checkout, local)
                          if e[3] == part and e[1] == "tree"), None)
            if entry is None:
                return None, None
            trees[child] = entry[2]
        path = child
    if trees[path] not in local:
        return _parent(path), trees[path]
    return path, trees[path]


def _parent(folder: str) -> str:
    return folder.rpartition("/")[0]


def _listing(folder: str, trees: dict[str, str], listings, checkout: Path, local: set[str]):
    if folder not in listings:
        out = _git(["ls-tree", "-z", trees[folder]], cwd=checkout)
        entries = []
        for line in out.split("\0"):
            if line:
                meta, _, name = line.partition("\t")
                mode, kind, oid = meta.split()
                entries.append((mode, kind, oid, name))
        listings[folder] = entries
    return listings[folder]


def _bit_length(checkout: Path, selected: dict[str, str], local: set[str]) -> int | None:
    """The (unverified) hash-bin bit length of the newest `<N>.targets.json` of the commit."""
    best = None
    for rel, blob in selected.items():
        folder, _, name = rel.rpartition("/")
        m = _TARGETS.match(name)
        if folder == "metadata" and m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), blob)
    if best is None or best[1] not in local:
        return None
    try:
        return int(json.loads(_blob(checkout, best[1]))["signed"]["delegations"]["succinct_roles"]["bit_length"])
    except (ValueError, KeyError, TypeError):
        return None


def _blob(checkout: Path, oid: str, dest: Path | None = None) -> bytes:
    """A blob's bytes (at most MAX_FILE: a hostile remote's huge file is refused, never held in
    memory); with `dest`, streamed into that file instead and b"" returned."""
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.Popen(["git", "cat-file", "blob", oid], cwd=checkout, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    chunks: list[bytes] = []
    total = 0
    try:
        out = open(dest, "wb") if dest is not None else None
        try:
            while chunk := proc.stdout.read(1 << 16):
                total += len(chunk)
                if total > MAX_FILE:
                    raise AgentError("E601", f"blob {oid} is over {MAX_FILE} bytes", "the remote serves a file no "
                                     "published tree holds; the device keeps serving", reason="RemoteUnreachable")
                if out is not None:
                    out.write(chunk)
                else:
                    chunks.append(chunk)
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
        finally:
            if out is not None:
                out.close()
    finally:
        proc.stdout.close()
        if proc.wait(TIMEOUT) != 0 and total <= MAX_FILE:
            raise AgentError("E601", f"git cat-file blob {oid} failed", "the fetched objects are incomplete; the "
                             "device keeps serving and fetches again", reason="RemoteUnreachable")
    return b"".join(chunks)


def _blob_id(path: Path) -> str | None:
    """The git blob id of a regular file (sha1 repositories), None if it is not one."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _materialize(checkout: Path, files: dict[str, str]) -> None:
    """Make the checkout hold exactly `files` (tree-relative path -> blob id) besides `.git`.

    Only paths of the published layout reach here (`is_tree_file`), so every folder is a
    fixed name or a hex shard; a folder that is not a real directory is refused."""
    from edgefleet.core.fsutil import fsync_dir

    for rel, oid in sorted(files.items()):
        dest = checkout / rel
        folder = checkout
        for part in rel.split("/")[:-1]:
            folder = folder / part
            try:
                os.mkdir(folder)
            except FileExistsError:
                if folder.is_symlink() or not folder.is_dir():
                    raise AgentError("E601", f"{folder} is not a directory", "remove it; the device fetches again",
                                     reason="RemoteUnreachable") from None
        if _blob_id(dest) == oid:
            continue  # already these bytes
        tmp = dest.with_name(f".fetch.{dest.name}")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        _blob(checkout, oid, dest=tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    keep = {checkout / rel for rel in files}
    for dirpath, dirnames, filenames in os.walk(checkout, topdown=True, followlinks=False):
        if Path(dirpath) == checkout:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath) / name
            if path not in keep:
                path.unlink()
