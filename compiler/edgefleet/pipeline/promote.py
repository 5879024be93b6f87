"""The `promote` use case: evaluate the current wave, decide, write the rollout's `status`.

1. Reports are verified once (pipeline/status.py).
2. For each rollout: its file is read (with `commit`, from the tip of the fleet
   repository's checked-out branch, not the work tree), the current wave evaluated at
   `now`, and `rollout.decide` (or `rollout.person` for --pause/--resume/--abort) says what
   to do. Only transitions change the file (a wait prints what is missing), so a second
   run on the same reports changes nothing.
3. The new status is spliced into the file's text (rollout/document.py: only the status
   lines change). With `commit`, the file is committed through a temporary index on top
   of the branch tip read in step 2, and the branch ref moves by compare-and-swap
   (`git update-ref REF NEW OLD`). A concurrent promote that moved the branch first makes
   the swap fail: this one re-reads the file at the new tip and decides again (a wave is
   never advanced twice). The commit message carries the evidence.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import git

from edgefleet.core.diagnostics import Diagnostic, error, has_errors
from edgefleet.core.fsutil import fsync_dir, write_durable
from edgefleet.core.source import Location
from edgefleet.load.repo import FleetRepo
from edgefleet.load.validation import validate_document
from edgefleet.load.yamlsource import parse_yaml
from edgefleet.core.collector import collector_paused
from edgefleet.pipeline.status import (RolloutReport, VerifiedReports, evaluate_rollout, load_inputs, rollout_paths,
                                       unknown_rollout)
from edgefleet.rollout.decide import Outcome, decide, person
from edgefleet.rollout.document import DocumentError, replace_status
from edgefleet.spec.rollout import Decision, Rollout

MAX_ATTEMPTS = 8
IDENTITY = ("edgefleet promote", "edgefleet@localhost")


@dataclass
class PromoteResult:
    rollout: str
    path: str
    decision: Decision
    changed: bool
    commit: str | None = None
    attempts: int = 1
    report: RolloutReport | None = None


@dataclass
class PromoteRun:
    results: list[PromoteResult] = field(default_factory=list)
    verified: VerifiedReports | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _parse_rollout(text: str, shown: str) -> tuple[Rollout | None, list[Diagnostic]]:
    docs, diags = parse_yaml(text.encode(), shown)
    if diags:
        return None, diags
    rollout, diags = validate_document(Rollout, docs[0].data, docs[0].source, "see schemas/rollout.schema.json")
    return rollout, diags


def _decide(name: str, rel: str, rollout: Rollout, repo: FleetRepo, verified: VerifiedReports | None,
            now: datetime, action: str, reason: str) -> tuple[Outcome, RolloutReport | None]:
    if action != "evaluate":
        return person(rollout.spec, rollout.status, action, reason, now), None
    report = evaluate_rollout(name, rel, rollout, repo, verified, now)
    current = report.current
    evidence = report.evidence(len(verified.rejected)) if current is not None else None
    return decide(rollout.spec, rollout.status, current.result if current else None, evidence, now), report


@collector_paused()  # see core/collector.py
def run_promote(root: Path, reports: str | None, now: datetime, *, desired: Path | None = None,
                rollout: str | None = None, action: str = "evaluate", reason: str = "", commit: bool = False,
                before_swap: Callable[[], None] | None = None, jobs: int = 1) -> PromoteRun:
    """Decide and write; `before_swap` is a test seam run just before the ref swap."""
    run = PromoteRun()
    if action == "evaluate":
        repo, verified, _, diags = load_inputs(root, reports, desired, (), jobs=jobs)
        run.verified = verified
    else:
        from edgefleet.pipeline.validate import validate_repository

        repo, diags = validate_repository(root)
        verified = None
        repo = None if has_errors(diags) else repo
    run.diagnostics += diags
    if repo is None or (action == "evaluate" and verified is None):
        return run
    paths = rollout_paths(repo)
    names = sorted(repo.rollouts)
    if rollout is not None:
        if rollout not in repo.rollouts:
            run.diagnostics.append(unknown_rollout(rollout, names))
            return run
        names = [rollout]
    elif action != "evaluate" and len(names) != 1:
        run.diagnostics.append(error("E706", f"{len(names)} rollouts in this fleet: say which one to {action}",
                                     Location("--rollout"), f"add --rollout NAME ({', '.join(names)})"))
        return run
    for name in names:
        rel = paths[name]
        try:
            if commit:
                result = _promote_committed(root, name, rel, repo, verified, now, action, reason, before_swap)
            else:
                result = _promote_file(root, name, rel, repo, verified, now, action, reason)
        except _Failure as failure:
            run.diagnostics.append(failure.diagnostic)
            continue
        run.results.append(result)
    return run


class _Failure(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def _apply(name, rel, shown, text, repo, verified, now, action, reason):
    rollout, diags = _parse_rollout(text, shown)
    if rollout is None:
        raise _Failure(diags[0])
    try:
        outcome, report = _decide(name, rel, rollout, repo, verified, now, action, reason)
    except ValueError as exc:
        raise _Failure(error("E707", f"rollout '{name}': {exc}", Location(shown),
                             "see `edgefleet status` for the rollout's phase")) from None
    if outcome.status is None:
        return outcome, report, None
    try:
        return outcome, report, replace_status(text, outcome.status)
    except DocumentError as exc:
        raise _Failure(error("E709", f"cannot write the status: {exc}", Location(shown),
                             "keep one YAML document per rollout file, with `status` at the top level")) from None


def _promote_file(root, name, rel, repo, verified, now, action, reason) -> PromoteResult:
    path = Path(root) / rel
    text = path.read_text(encoding="utf-8")
    outcome, report, new_text = _apply(name, rel, repo.display(rel), text, repo, verified, now, action, reason)
    if new_text is not None and new_text != text:
        atomic_write_bytes(path, new_text.encode("utf-8"))
    return PromoteResult(name, rel, outcome.decision, new_text is not None and new_text != text, report=report)


def _promote_committed(root, name, rel, repo, verified, now, action, reason, before_swap) -> PromoteResult:
    try:
        g = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise _Failure(error("E708", f"{root} is not inside a git repository", Location(str(root)),
                             "--commit commits the rollout file to the fleet repository's branch; run it in a clone"))
    top = Path(g.working_tree_dir).resolve()
    git_path = (Path(root).resolve() / rel).relative_to(top).as_posix()
    try:
        ref = g.git.symbolic_ref("HEAD")
    except git.GitCommandError:
        raise _Failure(error("E708", "HEAD is detached", Location(str(root)),
                             "check out the branch the rollout lives on (e.g. main)")) from None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        tip = g.git.rev_parse("--verify", ref)
        try:
            old_blob = g.git.rev_parse(f"{tip}:{git_path}")
        except git.GitCommandError:
            raise _Failure(error("E708", f"{git_path} is not committed on {ref}", Location(repo.display(rel)),
                                 "commit the rollout file first")) from None
        text = g.odb.stream(bytes.fromhex(old_blob)).read().decode("utf-8")
        outcome, report, new_text = _apply(name, rel, repo.display(rel), text, repo, verified, now, action, reason)
        if new_text is None or new_text == text:
            return PromoteResult(name, rel, outcome.decision, False, attempts=attempt, report=report)
        new_commit, new_blob = _commit(g, tip, git_path, new_text, commit_message(name, outcome.decision), now)
        if before_swap is not None:
            before_swap()
        try:
            g.git.update_ref("-m", f"edgefleet promote {name}", ref, new_commit, tip)
        except git.GitCommandError:
            continue  # someone moved the branch: re-read and decide again
        _sync_work_tree(g, top / git_path, git_path, text, new_text, old_blob, new_blob)
        return PromoteResult(name, rel, outcome.decision, True, new_commit, attempt, report)
    raise _Failure(error("E708", f"the branch kept moving: {MAX_ATTEMPTS} attempts lost the race", Location(ref),
                         "run promote again"))


def _commit(g: git.Repo, tip: str, git_path: str, text: str, message: str, now: datetime) -> tuple[str, str]:
    name, email = IDENTITY
    stamp = f"{int(now.timestamp())} +0000"
    with tempfile.TemporaryDirectory(prefix="edgefleet-promote-") as tmp:
        env = dict(GIT_INDEX_FILE=str(Path(tmp) / "index"), GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email,
                   GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email,
                   GIT_COMMITTER_DATE=stamp)
        cmd = git.Git(g.working_tree_dir)
        cmd.update_environment(GIT_DIR=g.git_dir, **env)
        blob_file = Path(tmp) / "blob"
        blob_file.write_bytes(text.encode("utf-8"))
        blob = cmd.hash_object("-w", str(blob_file))
        cmd.read_tree(tip)
        mode = cmd.ls_tree(tip, "--", git_path).split(" ", 1)[0] or "100644"
        cmd.update_index("--cacheinfo", f"{mode},{blob},{git_path}")
        tree = cmd.write_tree()
        commit = cmd.commit_tree(tree, "-p", tip, "-m", message)
    return commit, blob


def _sync_work_tree(g: git.Repo, file: Path, git_path: str, old_text: str, new_text: str,
                    old_blob: str, new_blob: str) -> None:
    """Bring the checked-out file (and its index entry) along, unless a person edited it."""
    try:
        current = file.read_text(encoding="utf-8")
    except OSError:
        return
    if current != old_text:
        return  # local edits: leave them; `git status` shows the file as modified
    atomic_write_bytes(file, new_text.encode("utf-8"))
    staged = g.git.ls_files("-s", "--", git_path).split()
    if len(staged) >= 2 and staged[1] == old_blob:
        mode = staged[0]
        g.git.update_index("--cacheinfo", f"{mode},{new_blob},{git_path}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` by write-temp, fsync, rename, fsync the folder: never half a rollout file."""
    tmp = path.with_name(f".{path.name}.promote-{os.getpid()}.tmp")
    try:
        write_durable(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def commit_message(name: str, decision: Decision) -> str:
    """The audit record: what was decided, why, and on which evidence."""
    lines = [f"promote {name}: {decision.action} (wave {decision.wave}, {decision.reason})", "",
             decision.message, "", f"at: {decision.at}", f"by: {decision.by}"]
    ev = decision.evidence
    if ev is not None:
        lines += ["", f"wave {ev.wave}: {ev.devices} devices, {ev.reported} reported, "
                      f"{ev.on_new_version} on the new version ({ev.healthy} healthy, {ev.degraded} degraded), "
                      f"{ev.failed} failed, {ev.rolled_back} rolled back, {ev.frozen} frozen, {ev.silent} silent",
                  "latency ms: " + ", ".join(f"{k} {'-' if v is None else f'{v:g}'}" for k, v in ev.latency_ms.items()),
                  f"rejected reports: {ev.rejected_reports}", "gates:"]
        for c in ev.checks:
            observed = "no data" if c.observed is None else f"{c.observed:g}"
            lines.append(f"  {c.gate}: {c.result} (observed {observed}, threshold {c.threshold:g}) {c.detail}")
        lines.append(f"reports: sha256 {ev.reports_sha256} over the sorted device:counter of the reports used")
        if ev.failed_devices:
            lines.append("failed devices: " + ", ".join(ev.failed_devices))
    return "\n".join(lines) + "\n"
