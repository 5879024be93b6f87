"""`edgefleet plan`: which devices a change between two revisions of a fleet repository moves.

Steps: extract the base (and the head, unless it is the work tree) with `git archive`
-> open a local artifact store if there is one -> compile the head (the same checks as
`validate`; an invalid head is the result: its diagnostics) -> compile the base -> diff.
A base that does not validate does not stop the plan (a pull request may be what fixes
it): its diagnostics are returned as the base's, and every device of the head is shown
as new. Artifacts in the store are used as built; others are previewed by their key with
validation's own size estimate (pipeline.artifacts). Nothing is signed or written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.core.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from edgefleet.pipeline.common import RequestError, without_notes


@dataclass(frozen=True)
class PlanRequest:
    root: Path  # the fleet repository (inside a git work tree)
    base: str
    head: str | None = None  # None: the work tree as it is, uncommitted edits included
    store: str | None = None  # a local store directory (default: fleet.yaml's, if local)


@dataclass(frozen=True)
class PlanResult:
    plan: Any | None  # desired.plan.Plan; None when the head cannot be compiled
    diagnostics: tuple[Diagnostic, ...]  # the head's
    base_diagnostics: tuple[Diagnostic, ...] = ()  # the base's, when it does not validate

    @property
    def ok(self) -> bool:
        return self.plan is not None


@dataclass
class _Side:
    devices: dict | None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def plan_change(request: PlanRequest) -> PlanResult:
    from edgefleet.desired.gitio import extract_revision
    from edgefleet.desired.plan import diff_fleets
    from edgefleet.load.repo import display_root_for

    root = request.root
    shown = display_root_for(root)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-plan-") as tmp:
        base = extract_revision(root, request.base, Path(tmp) / "base")
        if request.head is None:
            head_root, head_name, head_display = root, "work tree", shown
        else:
            head = extract_revision(root, request.head, Path(tmp) / "head")
            head_root, head_name, head_display = head.root, request.head, f"{request.head}:{shown}"
        store = plan_store(root, request.store, notes)
        after = compile_side(head_root, head_display, store, notes)
        if after.devices is None:
            return PlanResult(None, tuple(after.diagnostics))
        base_diags: list[Diagnostic] = []
        if not base.exists:
            before: dict = {}
            notes.append(f"the fleet does not exist at {request.base}: every device is new")
        else:
            side = compile_side(base.root, f"{request.base}:{shown}", store, notes)
            if side.devices is None:
                before, base_diags = {}, side.diagnostics
                errors = sum(d.is_error for d in base_diags)
                notes.append(f"the base {request.base} does not validate ({errors} error{'s' * (errors != 1)}, "
                             "reported as the base's): its devices could not be compiled, so every device "
                             "of the head is shown as new")
            else:
                before = side.devices
    plan = diff_fleets(before, after.devices, base=request.base, head=head_name, notes=sorted(set(notes)))
    return PlanResult(plan, tuple(after.diagnostics), tuple(base_diags))


def plan_store(root: Path, override: str | None, notes: list[str]):
    """The work tree's artifact store if it is local (plan never needs credentials)."""
    from edgefleet.build.store import LocalStore, open_store
    from edgefleet.load.repo import read_repository

    if override:
        if "://" in override:
            raise RequestError(f"--store {override}: plan reads local stores only (a directory)")
        return LocalStore(Path(override), override)
    repo, _ = read_repository(root)
    config = repo.fleet.doc.spec.artifact_store if repo.fleet else None
    if config is not None and config.kind == "object":
        notes.append("artifact store is an object store: plan does not read it; artifact sizes are estimates")
        return None
    try:
        store = open_store(root, config, display_root=repo.display_root)
    except Exception:  # noqa: BLE001 - a misconfigured store only costs plan its exact sizes
        return None
    return store if isinstance(store, LocalStore) else None


def compile_side(root: Path, display: str, store, notes: list[str]) -> _Side:
    """{device id: CompiledDevice} of one revision, or its diagnostics."""
    from edgefleet.desired.compile import compile_all
    from edgefleet.load.repo import read_fleet_files
    from edgefleet.pipeline.validate import validate_files

    files, read_diags = read_fleet_files(root, display)  # the same boundary and size cap as validate
    repo, diags = validate_files(files, root, display)
    diags = sorted_diagnostics([*read_diags, *diags])
    diags = without_notes(diags)  # `validate` shows its notes; plan would show them once per side
    if has_errors(diags):
        return _Side(None, diags)
    artifacts, problems = preview_artifacts(repo, store, notes)
    if has_errors(problems):
        return _Side(None, sorted_diagnostics(problems))
    return _Side(compile_all(repo, artifacts), diags)


def preview_artifacts(repo, store, notes: list[str]):
    """Per need: the built artifact if the store has its key, else an UnbuiltArtifact."""
    from edgefleet.build.index import artifact_from_record
    from edgefleet.build.key import FileDigests
    from edgefleet.desired.compile import UnbuiltArtifact
    from edgefleet.pipeline.artifacts import estimate_artifact, key_need, stored_record
    from edgefleet.rules.needs import needed_builds

    digests = FileDigests(repo.root)
    artifacts, diags = {}, []
    unbuilt = 0
    for need in needed_builds(repo):
        keyed, problems = key_need(repo, need, digests)
        diags += problems
        if keyed is None:
            continue
        record = stored_record(store, keyed.key)
        if record is not None:
            artifacts[need] = artifact_from_record(record)
            continue
        unbuilt += 1
        estimate = estimate_artifact(repo, need)
        size = estimate.size if estimate else repo.path(keyed.resolved.variant.source).stat().st_size
        artifacts[need] = UnbuiltArtifact(
            need.model, need.version, keyed.resolved.variant.name, need.hardware_class, keyed.key, size,
            estimate.precision if estimate else None, estimate.recipe if estimate else None)
    if unbuilt:
        notes.append("artifacts not built yet are previewed by key; their sizes are estimated as validation "
                     "estimates them (the selected variant's parameters at the precision the class builds, "
                     "plus its graph)")
    return artifacts, diags
