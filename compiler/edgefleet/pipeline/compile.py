"""`edgefleet compile`: a valid fleet and its built artifacts -> every device's signed desired state.

Steps, in order, each stopping the run when it reports an error (nothing is written
before the publish step, and the publisher is atomic):

    check_request   --out is not the fleet; --commit's branch is a branch, not the fleet's own
    validate        the same checks as `edgefleet validate` (their notes are validate's to show)
    guard_secrets   no private key in the fleet repository; none in --out when committing
    prepare         every artifact a device needs is built; runtime configs render
    load_keys       the role keys, from --keys or the environment
    publish         stream every device into the TUF publisher (inputs are not mutated)
    commit          only the files of the published tree, onto the desired-state branch
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from edgefleet.core.collector import collector_paused
from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.source import Location
from edgefleet.pipeline.common import RequestError, run_error, run_steps, without_notes
from edgefleet.signing.layout import is_tree_file

# `--commit` without a branch: fleet.yaml's desired_state_branch.
DEFAULT_BRANCH = object()

# Files a publish leaves in a tree (signing.layout): the root chain, timestamp, snapshot and
# targets versions, hash bins (flat or sharded), and content-addressed device targets.

@dataclass(frozen=True)
class CompileRequest:
    root: Path
    out: Path
    now: datetime
    keys_dir: Path | None = None
    store: str | None = None  # overrides fleet.yaml's artifact_store
    commit: Any = None  # a branch name, DEFAULT_BRANCH, or None (no commit)
    commit_date: datetime | None = None  # default: the fleet repository's HEAD commit date, else `now`
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Callers that hold these already (the agent, the simulator, tests) pass them in; they are
    # read, never changed. A given repo is checked again (its load diagnostics are the caller's).
    repo: Any = None  # load.repo.FleetRepo of `root`
    keys: Any = None  # signing.keys.RoleKeys
    artifact_store: Any = None  # build.store.Store


@dataclass(frozen=True)
class CompileSummary:
    out: str
    devices: int
    devices_changed: int
    written: tuple[str, ...]
    unchanged: int
    removed: int
    versions: dict[str, int]
    bins: int
    retired_bins: int  # bin roles of an earlier bin count still listed in the snapshot (N510)
    commit: str | None
    branch: str | None

    def to_json(self) -> dict[str, Any]:
        return {"out": self.out, "devices": self.devices, "devices_changed": self.devices_changed,
                "written": len(self.written), "unchanged": self.unchanged, "removed": self.removed,
                "versions": self.versions, "bins": self.bins, "retired_bins": self.retired_bins,
                "commit": self.commit, "branch": self.branch}


@dataclass(frozen=True)
class CompileResult:
    summary: CompileSummary | None
    diagnostics: tuple[Diagnostic, ...]


@dataclass
class _State:
    request: CompileRequest
    branch: str | None = None
    repo: Any = None
    compiler: Any = None
    keys: Any = None
    report: Any = None
    counts: dict[str, int] = field(default_factory=lambda: {"devices": 0, "changed": 0})
    commit: str | None = None
    fleet_targets: dict[str, bytes] = field(default_factory=dict)


def compile_desired_state(request: CompileRequest) -> CompileResult:
    state = _State(request)
    with collector_paused():  # see core/collector.py
        diags = run_steps(state, [check_request, validate, guard_secrets, prepare, fleet_targets, load_keys,
                                  publish, commit])
    if state.report is None or any(d.is_error for d in diags):
        return CompileResult(None, tuple(diags))
    report = state.report
    summary = CompileSummary(
        out=str(request.out), devices=state.counts["devices"], devices_changed=state.counts["changed"],
        written=tuple(report.written), unchanged=report.unchanged, removed=len(report.removed),
        versions=dict(report.versions), bins=report.bins, retired_bins=report.retired_bins, commit=state.commit,
        branch=state.branch)
    return CompileResult(summary, tuple(diags))


# ---- steps ---------------------------------------------------------------------------------

def check_request(state: _State) -> list[Diagnostic]:
    request = state.request
    repo_root, target = request.root.resolve(), request.out.resolve()
    if target == repo_root or target in repo_root.parents:
        raise RequestError(f"--out {request.out} would write over the fleet repository; give a directory of its own")
    if target.exists() and not target.is_dir():
        raise RequestError(f"--out {request.out} exists and is not a directory")
    if request.commit is None or request.commit is DEFAULT_BRANCH:
        return []
    from edgefleet.desired.gitio import check_branch_name

    state.branch = request.commit
    check_branch_name(state.branch)
    return []


def validate(state: _State) -> list[Diagnostic]:
    from edgefleet.pipeline.validate import validate_repository

    if state.request.repo is not None:
        from edgefleet.core.diagnostics import sorted_diagnostics
        from edgefleet.pipeline.validate import check_fleet, private_key_diagnostics

        repo = state.request.repo
        state.repo, diags = repo, sorted_diagnostics([*check_fleet(repo), *private_key_diagnostics(repo)])
    else:
        state.repo, diags = validate_repository(state.request.root)
    if state.request.commit is DEFAULT_BRANCH and state.repo.fleet is not None:
        from edgefleet.desired.gitio import check_branch_name

        state.branch = state.repo.fleet.doc.spec.desired_state_branch
        check_branch_name(state.branch)
    return without_notes(diags)


def guard_secrets(state: _State) -> list[Diagnostic]:
    from edgefleet.signing.key_scan import find_private_keys

    # Keys inside the fleet itself are E510 of the validate step (one scan, one definition).
    if state.branch is None:
        return []
    from edgefleet.desired.gitio import check_commit_target

    request = state.request
    out: list[Diagnostic] = []
    target = request.out.resolve()
    if request.keys_dir is not None:
        keys = request.keys_dir.resolve()
        if keys == target or target in keys.parents:
            out.append(run_error(
                "E517", f"--keys {request.keys_dir} is inside --out {request.out}, which --commit publishes",
                "keep the signing keys outside the desired-state tree (e.g. ~/.edgefleet/keys)"))
    if target.is_dir():
        for path in find_private_keys(target):
            out.append(error(
                "E517", "a private key is inside --out, the tree --commit publishes", Location(str(path), 1, 1),
                "move it out of the output directory before committing; if it was ever pushed, rotate it "
                "with `edgefleet keys rotate`"))
    out += check_commit_target(request.root, target, state.branch)
    return out


def prepare(state: _State) -> list[Diagnostic]:
    from edgefleet.build.index import built_artifacts
    from edgefleet.desired.compile import prepare as prepare_compile

    store = state.request.artifact_store or open_artifact_store(state.repo, state.request.store)
    state.compiler, problems = prepare_compile(state.repo, built_artifacts(state.repo, store))
    return problems


def open_artifact_store(repo, override: str | None):
    from edgefleet.build.index import default_store
    from edgefleet.build.store import StoreError, open_store

    try:
        if override:
            return open_store(repo.root, None, override)
        return default_store(repo)
    except StoreError as exc:
        raise RequestError(str(exc)) from None


def load_keys(state: _State) -> list[Diagnostic]:
    """The role keys; a key problem is about the run (a flag, the environment), not a fleet file."""
    from dataclasses import replace

    from edgefleet.core.diagnostics import DiagnosticError
    from edgefleet.pipeline.common import RUN
    from edgefleet.signing.keys import load_keys as load

    if state.request.keys is not None:
        state.keys = state.request.keys
        return []
    try:
        state.keys = load(state.request.keys_dir, state.request.env)
    except DiagnosticError as exc:
        return [replace(d, location=RUN) for d in exc.diagnostics]
    return []


def fleet_targets(state: _State) -> list[Diagnostic]:
    """The fleet-wide targets: the Sigstore trusted root devices check provenance against."""
    from edgefleet.core.paths import PathRefused, resolve_inside
    from edgefleet.signing.layout import SIGSTORE_TRUSTED_ROOT

    fleet = state.repo.fleet
    signing = fleet.doc.spec.signing
    if signing.trusted_root is None:
        if signing.require_provenance:
            return [error("E518", "signing.require_provenance is true but no signing.trusted_root is given",
                          fleet.source.at("spec", "signing", "require_provenance"),
                          "add signing.trusted_root: the path of the Sigstore trusted_root.json devices verify "
                          "provenance against (compile ships it to them through TUF)")]
        return []
    where = fleet.source.at("spec", "signing", "trusted_root")
    try:
        path = resolve_inside(state.repo.root, signing.trusted_root, "Sigstore trusted root")
        data = path.read_bytes()
    except PathRefused as exc:
        return [error(exc.code, exc.message, where, exc.hint)]
    except OSError as exc:
        return [error("E518", f"signing.trusted_root {signing.trusted_root}: {exc.strerror or exc}", where,
                      "give the path, inside the repository, of a Sigstore trusted_root.json")]
    problem = _trusted_root_problem(path)
    if problem:
        return [error("E518", f"signing.trusted_root {signing.trusted_root} is not a Sigstore trusted root: {problem}",
                      where, "use the trusted_root.json of the Sigstore instance CI signs with (e.g. from "
                             "`sigstore` or the instance's TUF repository)")]
    state.fleet_targets = {SIGSTORE_TRUSTED_ROOT: data}
    return []


def _trusted_root_problem(path: Path) -> str | None:
    try:
        from sigstore.models import TrustedRoot

        TrustedRoot.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same bad input
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def publish(state: _State) -> list[Diagnostic]:
    from edgefleet.desired.release import read_previous_releases
    from edgefleet.signing.publish import TargetFile, publish as publish_tree

    out = state.request.out
    previous = read_previous_releases(out)
    counts = state.counts

    def targets():
        for device in state.compiler.stream(previous, previous.next_release):
            counts["devices"] += 1
            counts["changed"] += previous(device.device_id)[1] != device.sha256
            yield TargetFile(device.path, device.data, device.custom())

    spec = state.repo.fleet.doc.spec
    state.report = publish_tree(out, targets(), state.keys, spec.expiry, state.request.now, spec.signing.hash_bins,
                                fleet_targets=state.fleet_targets)
    return retired_bins_note(state)


def retired_bins_note(state: _State) -> list[Diagnostic]:
    """N510: bins of an earlier, larger bin count are still listed (see signing/publication.py)."""
    report = state.report
    if not report.retired_bins:
        return []
    from edgefleet.core.diagnostics import note

    keys = f"--keys {state.request.keys_dir}" if state.request.keys_dir is not None else "--keys DIR"
    env = "" if state.request.keys_dir is not None else " (or put the new key in EDGEFLEET_KEY_SNAPSHOT)"
    return [note(
        "N510", f"the snapshot still lists {report.retired_bins} bin role(s) of an earlier hash_bins beside the "
        f"{report.bins} in use; every device's poll downloads them, and they stay until the snapshot key rotates "
        "(a device holding a snapshot that lists them refuses one that drops them)",
        state.repo.fleet.source.at("spec", "signing", "hash_bins"),
        f"drop them: `edgefleet keys rotate snapshot {keys}`{env}, then compile again (root v"
        f"{report.versions.get('root', 0) + 1} lists the new key; devices walk to it and then accept the smaller "
        "snapshot)")]


def commit(state: _State) -> list[Diagnostic]:
    if state.branch is None:
        return []
    from edgefleet.desired.gitio import commit_date, commit_tree, head_commit

    request, report = state.request, state.report
    when = request.commit_date or commit_date(request.root) or request.now
    fleet_rev = head_commit(request.root) or "working tree"
    message = (f"edgefleet compile: {state.repo.fleet.doc.metadata.name}\n\n"
               f"fleet: {fleet_rev}\ndevices: {state.counts['devices']}\nchanged: {state.counts['changed']}\n"
               f"snapshot: v{report.versions.get('snapshot')}\n")
    state.commit = commit_tree(request.out, state.branch, message, when, files=published_files(request.out))
    return []


def published_files(out: Path) -> list[str]:
    """The files of the signed tree in `out`, by the tree's layout; nothing else is committed."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, out).replace(os.sep, "/")
            if is_tree_file(rel) and not os.path.islink(path) and os.path.isfile(path):
                found.append(rel)
    return sorted(found)
