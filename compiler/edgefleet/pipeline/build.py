"""`edgefleet build`: plan, build, gate and store the artifact of every needed (model version, class).

Steps: validate (the fleet must pass `edgefleet validate`'s checks) -> select (the needs,
or those `--only` names) -> open the store -> plan every need (variant, recipe chain,
input hashes, key; every input problem together, nothing built) -> build each pending
key once (a key in the store is a cache hit). `plan_only` stops before building, which is
what `--matrix` prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from edgefleet.core.diagnostics import Diagnostic, sorted_diagnostics
from edgefleet.pipeline.common import RequestError, run_steps, without_notes

_ONLY = re.compile(r"^(?P<model>[^@:\s]+)@(?P<version>[^@:\s]+):(?P<cls>[^@:\s]+)$")


@dataclass(frozen=True)
class BuildRequest:
    root: Path
    only: Sequence[str] = ()  # MODEL@VERSION:CLASS
    jobs: int = 1
    store: str | None = None  # overrides fleet.yaml's artifact_store
    plan_only: bool = False  # plan and key every need, build nothing (`--matrix`)
    env: Mapping[str, str] | None = None  # the CI variables provenance reads (GITHUB_*)
    repo: Any = None  # a load.repo.FleetRepo of `root` the caller holds (checked again, never changed)
    artifact_store: Any = None  # a build.store.Store the caller holds


@dataclass(frozen=True)
class BuildOutcome:
    planned: tuple[Any, ...]  # build.orchestrate.PlannedBuild
    results: tuple[Any, ...]  # build.orchestrate.BuildResult, in the order planned
    store: str | None  # where artifacts are stored
    signing: tuple[str, ...]  # how provenance was signed, one note per mode used
    diagnostics: tuple[Diagnostic, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {"total": len(self.results),
                "built": sum(r.status == "built" for r in self.results),
                "cache_hits": sum(r.status == "cache_hit" for r in self.results),
                "failed": sum(r.status == "failed" for r in self.results)}

    @property
    def matrix(self) -> dict[str, list[dict[str, str]]]:
        """The builds not in the store, as a CI matrix."""
        return {"include": [
            {"model": p.need.model, "version": p.need.version, "hardware_class": p.need.hardware_class, "key": p.key}
            for p in self.planned if not p.cached]}

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics) and not self.counts["failed"]


@dataclass
class _State:
    request: BuildRequest
    on_start: Callable | None
    on_done: Callable | None
    on_planned: Callable | None = None
    repo: Any = None
    needs: list = field(default_factory=list)
    store: Any = None
    planned: list = field(default_factory=list)
    results: list = field(default_factory=list)


def build(request: BuildRequest, on_start: Callable | None = None, on_done: Callable | None = None,
          on_planned: Callable | None = None) -> BuildOutcome:
    """Callbacks (for a progress view): on_planned(planned builds), on_start(planned), on_done(result)."""
    if request.jobs < 1:
        raise RequestError("--jobs must be at least 1")
    state = _State(request, on_start, on_done, on_planned)
    steps = [validate, select, open_artifact_store, plan]
    if not request.plan_only:
        steps.append(run)
    diags = run_steps(state, steps)
    signing = tuple(sorted({r.signing for r in state.results if r.signing}))
    return BuildOutcome(tuple(state.planned), tuple(state.results),
                        state.store.location if state.store is not None else None, signing, tuple(diags))


def validate(state: _State) -> list[Diagnostic]:
    from edgefleet.pipeline.validate import validate_repository

    if state.request.repo is not None:
        from edgefleet.pipeline.validate import check_fleet

        state.repo, diags = state.request.repo, sorted_diagnostics(check_fleet(state.request.repo))
    else:
        state.repo, diags = validate_repository(state.request.root)
    return without_notes(diags)  # validate's notes; `validate` and `explain` show them


def select(state: _State) -> list[Diagnostic]:
    from edgefleet.rules.needs import needed_builds

    state.needs = select_needs(needed_builds(state.repo), state.request.only)
    return []


def select_needs(needs, only: Sequence[str]):
    """The needs `--only` names (each MODEL@VERSION:CLASS), in their order; all when none is named."""
    if not only:
        return list(needs)
    chosen = []
    for text in only:
        match = _ONLY.match(text)
        if not match:
            raise RequestError(f"--only {text!r}: write MODEL@VERSION:CLASS, e.g. meter-digits@1.1.0:medical-cart-cpu")
        found = [n for n in needs if (n.model, n.version, n.hardware_class) ==
                 (match["model"], match["version"], match["cls"])]
        if not found:
            known = ", ".join(f"{n.model}@{n.version}:{n.hardware_class}" for n in needs) or "none"
            raise RequestError(f"--only {text}: not a needed build of this fleet (needed: {known})")
        chosen += [n for n in found if n not in chosen]
    return chosen


def open_artifact_store(state: _State) -> list[Diagnostic]:
    from edgefleet.build.store import StoreError, open_store

    repo = state.repo
    if state.request.artifact_store is not None:
        state.store = state.request.artifact_store
        return []
    try:
        state.store = open_store(repo.root, repo.fleet.doc.spec.artifact_store, state.request.store, repo.display_root)
    except StoreError as exc:
        raise RequestError(str(exc)) from exc
    return []


def plan(state: _State) -> list[Diagnostic]:
    from edgefleet.build.orchestrate import plan_builds

    state.planned, problems = plan_builds(state.repo, state.needs, state.store)
    if state.on_planned is not None:
        state.on_planned(list(state.planned))
    return sorted_diagnostics(problems)  # a bad shared file is one error, not one per need


def run(state: _State) -> list[Diagnostic]:
    from edgefleet.build.orchestrate import github_env, run_builds

    repo, request = state.repo, state.request
    state.results = run_builds(
        state.planned, repo.root, state.store, jobs=request.jobs, sign_mode=repo.fleet.doc.spec.signing.provenance,
        env=github_env(request.env), display_root=repo.display_root,
        signing_at=repo.fleet.source.at("spec", "signing", "provenance"),
        store_at=repo.fleet.source.at("spec", "artifact_store"), on_start=state.on_start, on_done=state.on_done)
    return [d for r in state.results for d in r.diagnostics]
