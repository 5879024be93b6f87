"""The git edges of compile and plan (gitpython): commit the desired-state tree to a
branch, and extract a fleet repository as it was at some revision.

Neither touches the user's work tree, index or checked-out branch: commits are made
with a temporary index straight from the output directory's files, and revisions are
read with `git archive` into a temporary directory.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import git

from edgefleet.core.diagnostics import DiagnosticError, error
from edgefleet.core.source import Location

# Commits of the desired-state tree are made by the compiler, not by a person: a fixed
# identity and the date passed in make the same inputs give the same commit id.
IDENTITY = ("edgefleet", "edgefleet@localhost")


def _fail(code: str, message: str, where: str, hint: str) -> DiagnosticError:
    return DiagnosticError([error(code, message, Location(where), hint)])


def open_repo(path: Path) -> git.Repo | None:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def commit_date(path: Path) -> datetime | None:
    """Date of the HEAD commit of the git repository holding `path`, if any."""
    repo = open_repo(path)
    if repo is None:
        return None
    try:
        return repo.head.commit.committed_datetime.astimezone(timezone.utc)
    except ValueError:  # no commit yet
        return None


def head_commit(path: Path) -> str | None:
    repo = open_repo(path)
    if repo is None:
        return None
    try:
        return repo.head.commit.hexsha
    except ValueError:
        return None


def check_branch_name(branch: str) -> None:
    try:
        git.Git().check_ref_format("--branch", branch)
    except git.GitCommandError:
        raise _fail("E515", f"'{branch}' is not a valid branch name", "--commit",
                    "give a branch name such as desired-state") from None


def commit_tree(out_dir: Path, branch: str, message: str, when: datetime) -> str | None:
    """Commit the files of `out_dir` as the whole tree of `branch`; None if nothing changed.

    The git repository is the one holding `out_dir` (a worktree of the desired-state
    branch, typically), or a new one made in `out_dir`. If `out_dir` is a work tree with
    `branch` checked out, its index is updated to the new commit so it shows clean.
    """
    out_dir = Path(out_dir).resolve()
    check_branch_name(branch)
    ref = f"refs/heads/{branch}"
    repo = open_repo(out_dir)
    if repo is None:  # a new repository whose work tree is the output: check the branch out there
        repo = git.Repo.init(out_dir)
        repo.git.symbolic_ref("HEAD", ref)
    stamp = f"{int(when.timestamp())} +0000"
    name, email = IDENTITY
    with tempfile.TemporaryDirectory(prefix="edgefleet-index-") as tmp:
        env = {"GIT_DIR": repo.git_dir, "GIT_WORK_TREE": str(out_dir), "GIT_INDEX_FILE": str(Path(tmp) / "index"),
               "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": stamp,
               "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": stamp}
        cmd = git.Git(str(out_dir))
        cmd.update_environment(**env)
        try:
            cmd.add("--all", "--", ".")
            tree = cmd.write_tree()
            try:
                parent = cmd.rev_parse("--verify", "--quiet", ref)
            except git.GitCommandError:
                parent = None
            if parent and cmd.rev_parse(f"{parent}^{{tree}}") == tree:
                return None
            commit = cmd.commit_tree(tree, *(["-p", parent] if parent else []), "-m", message)
            # Compare-and-swap: a concurrent commit to the branch makes this fail, not vanish.
            cmd.update_ref("-m", "edgefleet compile", ref, commit, parent or "0" * 40)
        except git.GitCommandError as exc:
            raise _fail("E515", f"cannot commit the desired state to {branch}: {exc.stderr.strip() or exc}",
                        str(out_dir), "check that the output directory is in a git repository you can write") from None
    _sync_checked_out_index(out_dir, ref, commit)
    return commit


def _sync_checked_out_index(out_dir: Path, ref: str, commit: str) -> None:
    """If `out_dir` is the work tree that has `ref` checked out, make its index match."""
    try:
        wt = git.Repo(out_dir)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return
    if wt.working_tree_dir is None or Path(wt.working_tree_dir).resolve() != out_dir:
        return
    try:
        if wt.git.symbolic_ref("-q", "HEAD") == ref:
            wt.git.read_tree(commit)
    except git.GitCommandError:
        pass  # detached HEAD: nothing to sync


@dataclass(frozen=True)
class Revision:
    """A fleet repository as it was at one commit, extracted into `root`."""

    rev: str
    commit: str
    root: Path
    exists: bool  # False when the fleet directory did not exist at that commit


def extract_revision(repo_path: Path, rev: str, dest: Path) -> Revision:
    """Write the fleet repository at `repo_path` as of `rev` into `dest` (git archive)."""
    repo = open_repo(repo_path)
    if repo is None or repo.working_tree_dir is None:
        raise _fail("E520", f"{repo_path} is not inside a git repository", str(repo_path),
                    "plan compares two git revisions: run it in a clone of the fleet repository")
    try:
        commit = repo.commit(rev)
    except (git.BadName, ValueError, git.GitCommandError):
        raise _fail("E521", f"unknown revision '{rev}'", str(repo_path),
                    "give a commit, branch or tag, e.g. --base origin/main (fetch it first in CI)") from None
    prefix = Path(os.path.relpath(Path(repo_path).resolve(), Path(repo.working_tree_dir).resolve())).as_posix()
    prefix = "" if prefix == "." else prefix
    dest.mkdir(parents=True, exist_ok=True)
    if prefix:
        try:
            commit.tree / prefix
        except KeyError:  # the fleet was added after this commit
            return Revision(rev, commit.hexsha, dest, exists=False)
    buffer = io.BytesIO()
    repo.archive(buffer, commit.hexsha, format="tar", **({"path": prefix} if prefix else {}))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        # A revision under review is hostile: a committed symlink could point the plan at
        # any file of the CI host (or crash the extraction), so only plain files and folders.
        links = [m.name for m in tar.getmembers() if not (m.isfile() or m.isdir())]
        if links:
            raise DiagnosticError([error(
                "E015", f"revision {rev} commits a symlink or special file: {name}", Location(f"{rev}:{name}"),
                "commit the file itself instead of a link; plan and build read only plain files")
                for name in sorted(links)[:20]])
        tar.extractall(dest, filter="data")
    return Revision(rev, commit.hexsha, dest / prefix if prefix else dest, exists=True)
