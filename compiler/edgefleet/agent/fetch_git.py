"""Fetch the desired-state tree from git: only what this device needs, and nothing when nothing moved.

- `git ls-remote` first: when the branch's commit is the one checked out, no fetch at all
  (a no-op poll is one ref advertisement);
- a partial clone (`--filter=blob:none`): commits and trees, blobs only on checkout;
- a sparse checkout in cone mode of `edgefleet.signing.layout.device_sparse_dirs`: the
  top-level metadata, this device's hash-bin folder and its target shard — so checkout
  fetches only those blobs;
- never a shallow fetch (git hosts warn they are costly to serve).

The checkout is untrusted input: `verify.verify_device` runs TUF over it afterwards. The
one thing read from it before verification is the hash-bin count of `targets.json`,
used only to pick sparse directories (a lie makes verification fail, nothing more).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgefleet.agent.errors import AgentError

TIMEOUT = 120
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


def bit_length_hint(tree: Path) -> int | None:
    """The succinct hash-bin bit length of the checked-out (unverified) targets.json."""
    best = None
    for entry in (tree / "metadata").glob("*.targets.json"):
        m = _TARGETS.match(entry.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), entry)
    if best is None:
        return None
    try:
        signed = json.loads(best[1].read_bytes()[: 16 * 1024 * 1024])["signed"]
        return int(signed["delegations"]["succinct_roles"]["bit_length"])
    except (ValueError, KeyError, TypeError):
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


def fetch_tree(remote: str, branch: str, checkout: Path, device_id: str) -> TreeFetch:
    from edgefleet.signing.layout import device_sparse_dirs

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
        _git(["config", "remote.origin.partialclonefilter", "blob:none"], cwd=checkout)
        _git(["config", "fetch.recurseSubmodules", "false"], cwd=checkout)
        _git(["sparse-checkout", "set", "--cone", *device_sparse_dirs(device_id, None)], cwd=checkout)
    else:
        _git(["remote", "set-url", "origin", remote], cwd=checkout)
    _git(["fetch", "-q", "--no-tags", "--filter=blob:none", "origin",
          f"+refs/heads/{branch}:refs/remotes/origin/{branch}"], cwd=checkout)
    _git(["checkout", "-q", "--detach", revision], cwd=checkout)
    dirs = device_sparse_dirs(device_id, bit_length_hint(checkout))
    current = _git(["sparse-checkout", "list"], cwd=checkout).split()
    if sorted(current) != sorted(dirs):
        _git(["sparse-checkout", "set", "--cone", *dirs], cwd=checkout)
    return TreeFetch(checkout, revision, changed=True)
