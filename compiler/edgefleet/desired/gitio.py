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


def _fail(code: str, message: str, hint: str) -> DiagnosticError:
    """A problem of the run (a flag, the git setup), not of one file: located nowhere."""
    return DiagnosticError([_problem(code, message, hint)])


def _problem(code: str, message: str, hint: str):
    return error(code, message, Location(""), hint)


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
        raise _fail("E515", f"--commit: '{branch}' is not a valid branch name",
                    "give a branch name such as desired-state") from None


def _common_dir(repo: git.Repo) -> Path:
    return Path(repo.common_dir).resolve()


def check_commit_target(fleet_root: Path, out_dir: Path, branch: str) -> list:
    """Refuse to commit the desired state onto the branch that holds the fleet itself.

    commit_tree makes `branch` hold exactly the signed tree; on the fleet's own branch
    (checked out in the fleet's work tree, or any branch whose tree holds this fleet)
    that would replace the fleet with the tree.
    """
    fleet = open_repo(fleet_root)
    out = open_repo(out_dir) if Path(out_dir).exists() else open_repo(Path(out_dir).parent)
    if fleet is None or out is None or _common_dir(fleet) != _common_dir(out):
        return []  # different repositories: the branch names cannot collide
    hint = ("commit to a branch of its own (fleet.yaml's desired_state_branch, e.g. desired-state), "
            "or make --out a worktree of that branch")
    try:
        current = fleet.git.symbolic_ref("-q", "--short", "HEAD")
    except git.GitCommandError:
        current = None  # detached HEAD
    if current == branch:
        return [_problem("E516", f"--commit {branch}: that is the branch the fleet repository is on", hint)]
    try:
        tip = fleet.commit(f"refs/heads/{branch}")
    except (git.BadName, ValueError, git.GitCommandError):
        return []  # a new branch
    prefix = os.path.relpath(Path(fleet_root).resolve(), Path(fleet.working_tree_dir).resolve())
    fleet_yaml = "fleet.yaml" if prefix == "." else f"{Path(prefix).as_posix()}/fleet.yaml"
    try:
        tip.tree / fleet_yaml
    except KeyError:
        return []
    return [_problem("E516", f"--commit {branch}: that branch holds the fleet repository ({fleet_yaml})", hint)]


def commit_tree(out_dir: Path, branch: str, message: str, when: datetime, files: list[str]) -> str | None:
    """Commit `files` (relative to `out_dir`) as the whole tree of `branch`; None if nothing changed.

    Only the files named are committed, never whatever else lies in `out_dir`.

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
            listing = Path(tmp) / "files"
            listing.write_bytes(b"".join(f.encode() + b"\0" for f in files))
            # Literal paths, ignore rules not applied: exactly the published files, nothing more.
            # update-index takes each path as given (linear); `git add --pathspec-from-file`
            # matches every file against every pathspec (quadratic: >15 min at 100k devices).
            if files:
                with open(listing, "rb") as stdin:
                    cmd.update_index("--add", "-z", "--stdin", istream=stdin)
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
            raise _fail("E515", f"--commit {branch}: cannot commit the desired state in {out_dir}: "
                                f"{exc.stderr.strip() or exc}",
                        "check that the output directory is in a git repository you can write") from None
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
        raise _fail("E520", f"{repo_path} is not inside a git repository",
                    "plan compares two git revisions: run it in a clone of the fleet repository")
    try:
        commit = repo.commit(rev)
    except (git.BadName, ValueError, git.GitCommandError):
        raise _fail("E521", f"unknown revision '{rev}'",
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
