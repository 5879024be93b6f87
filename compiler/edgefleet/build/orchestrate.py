"""Planning and running builds: which keys are pending, and building each one once.

1. `plan_builds` (reads and hashes input files; builds nothing): resolve every need,
   check its inputs (declared sha256, ONNX that parses, data files with their arrays,
   recipes the class can run) and compute its key. Every problem of every need is
   reported together, before any build starts, so bad input never leaves a half-built
   store behind.
2. `run_builds`: each pending key is built once, in this process (`jobs=1`) or in a
   process pool; jobs share nothing but the store, whose `put` is atomic. A build that
   fails its gates or is refused by the engine writes nothing.

The CI matrix (`edgefleet build --matrix`) is step 1 only: the pending keys, one job each.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Mapping

from edgefleet.rules.digests import digest_mismatch
from edgefleet.build.key import FileDigests, artifact_key, toolchain_for
from edgefleet.build.provenance import statement_bytes
from edgefleet.build.record import AttemptRecord, InputRef, attempt_records, record_from_outcome
from edgefleet.build.resolve import MIB, ResolvedNeed, resolve_need
from edgefleet.build.signing import SigningError, sign_statement
from edgefleet.build.store import PROVENANCE, SIGNATURE, Store, StoreCorrupt, StoreError
from edgefleet.core.diagnostics import Diagnostic, error, warning
from edgefleet.core.paths import resolve_inside
from edgefleet.rules.needs import BuildNeed
from edgefleet.load.repo import FleetRepo
from edgefleet.core.source import Location

Status = Literal["cache_hit", "built", "failed"]


@dataclass(frozen=True)
class PlannedBuild:
    resolved: ResolvedNeed
    key: str
    inputs: tuple[InputRef, ...]
    toolchain: dict[str, str]
    cached: bool

    @property
    def need(self) -> BuildNeed:
        return self.resolved.need


@dataclass(frozen=True)
class BuildResult:
    need: BuildNeed
    key: str
    status: Status
    variant: str
    recipe: str | None = None
    precision: str | None = None
    digest: str | None = None
    size: int | None = None
    seconds: float = 0.0
    attempts: tuple[AttemptRecord, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    signing: str = ""  # the signing note of a build that ran here
    stored: bool = False  # False when another writer committed the key first

    @property
    def ok(self) -> bool:
        return self.status != "failed"


# -- 1. plan -------------------------------------------------------------------------


def plan_builds(repo: FleetRepo, needs: Iterable[BuildNeed], store: Store,
                file_sha256: Callable[[str], str] | None = None) -> tuple[list[PlannedBuild], list[Diagnostic]]:
    """Resolve, check and key every need (of a repository that passed validation)."""
    digests = file_sha256 or FileDigests(repo.root)
    planned: list[PlannedBuild] = []
    diags: list[Diagnostic] = []
    checked: dict[str, object] = {}  # files already loaded this run (ONNX node names, datasets)
    toolchains: dict[str, dict[str, str]] = {}  # per runtime spec: asked once per run
    for need in needs:
        resolved, problems = resolve_need(repo, need)
        diags += problems
        if resolved is None or any(d.is_error for d in problems):
            continue
        inputs, problems = _hash_inputs(repo, resolved, digests)
        diags += problems
        if problems:
            continue
        runtime_id = resolved.runtime.model_dump_json()
        if runtime_id not in toolchains:
            toolchains[runtime_id] = toolchain_for(resolved)
        toolchain = toolchains[runtime_id]
        key = artifact_key(resolved, digests, toolchain)
        try:  # a cache hit is a verified record (its blobs re-hashed), never just a present key
            cached = store.get_record(key) is not None
        except StoreCorrupt as exc:
            diags += exc.diagnostics
            continue
        if not cached:
            # Content checks cost a parse; a cache hit needs none (its key covers the bytes).
            problems = _check_contents(repo, resolved, checked)
            diags += problems
            if problems:
                continue
        planned.append(PlannedBuild(resolved, key, inputs, toolchain, cached))
    return planned, diags


def _hash_inputs(repo: FleetRepo, resolved: ResolvedNeed,
                 digests: Callable[[str], str]) -> tuple[tuple[InputRef, ...], list[Diagnostic]]:
    variant = resolved.variant
    refs: list[InputRef] = []
    diags: list[Diagnostic] = []
    files = [("source", variant.source, resolved.source_at)]
    files += [(d.role, d.path, d.at) for d in (resolved.calibration, resolved.evaluation) if d is not None]
    for role, rel, at in files:
        try:
            digest = digests(rel)
        except OSError as exc:
            diags.append(error("E403", f"cannot read {role} file '{rel}': {exc.strerror or exc}", at,
                               "give a path relative to the repository root, and commit the file"))
            continue
        refs.append(InputRef(role=role, path=rel, sha256=digest))
        mismatch = digest_mismatch(rel, digest, variant.sha256) if role == "source" else None
        if mismatch is not None:  # the rule of `rules.digests`, as validation's E301
            diags.append(error("E401", mismatch.message, resolved.sha256_at, mismatch.hint,
                               related=[(resolved.source_at, "the model file")]))
    return tuple(refs), diags


def _check_contents(repo: FleetRepo, resolved: ResolvedNeed, checked: dict[str, object]) -> list[Diagnostic]:
    """The engine's own input checks, run for every pending need before any build starts.

    The source ONNX and data files must load (the engine's loaders), and every recipe of
    the chain must be one the class's runtime can run (`engine.check_recipe`), so a bad
    input anywhere stops the run before the first artifact is made.
    """
    from edgefleet.build.data import load_npz
    from edgefleet.build.engine import BuildError, check_recipe
    from edgefleet.build.onnx_io import load_source, node_names

    diags: list[Diagnostic] = []

    def load(rel: str, loader):
        # Each file is loaded once per run; every need it fails gets the same diagnostic
        # (no need in the message), which the report shows once.
        if rel not in checked:
            try:
                checked[rel] = loader()
            except BuildError as exc:
                checked[rel] = exc
        value = checked[rel]
        if isinstance(value, BuildError):
            diags.append(engine_diagnostic(resolved, value, with_need=False))
            return None
        return value

    source = resolved.variant.source
    nodes = load(source, lambda: node_names(load_source(repo.path(source), repo.display(source))))
    for data in (resolved.calibration, resolved.evaluation):
        if data is not None:
            load(data.path, lambda d=data: load_npz(repo.path(d.path), d.role, repo.display(d.path)))
    if nodes is None:
        return diags
    for recipe in resolved.recipes:
        try:
            check_recipe(recipe, resolved.runtime.name, resolved.precisions, resolved.calibration is not None, nodes)
        except BuildError as exc:
            diags.append(engine_diagnostic(resolved, exc, with_need=False))
    return diags


# -- 2. run --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildJob:
    """Everything one build needs, picklable for a worker process."""

    planned: PlannedBuild
    root: Path
    store: Store
    sign_mode: str
    env: Mapping[str, str] = field(default_factory=dict)
    display_root: str = "."
    signing_at: Location = Location("fleet.yaml")  # fleet.yaml's signing policy
    store_at: Location = Location("fleet.yaml")  # fleet.yaml's artifact_store

    def display(self, relative: str) -> str:
        return relative if self.display_root in ("", ".") else f"{self.display_root.rstrip('/')}/{relative}"


def run_builds(planned: list[PlannedBuild], root: Path, store: Store, *, jobs: int = 1,
               sign_mode: str = "sigstore", env: Mapping[str, str] | None = None, display_root: str = ".",
               signing_at: Location = Location("fleet.yaml"), store_at: Location = Location("fleet.yaml"),
               on_start: Callable[[PlannedBuild], None] | None = None,
               on_done: Callable[[BuildResult], None] | None = None) -> list[BuildResult]:
    """Build every pending key once; results in the order of `planned`."""
    env = dict(env or {})
    results: dict[int, BuildResult] = {}
    first_of_key: dict[str, int] = {}
    pending: list[tuple[int, BuildJob]] = []
    for i, p in enumerate(planned):
        if p.cached:
            results[i] = _cache_hit(p, store)
        elif p.key in first_of_key:
            continue  # the same key twice in one run: built once, reported for both below
        else:
            first_of_key[p.key] = i
            pending.append((i, BuildJob(p, root, store, sign_mode, env, display_root, signing_at, store_at)))
    for i in sorted(results):
        if on_done:
            on_done(results[i])

    def finish(i: int, result: BuildResult) -> None:
        results[i] = result
        if on_done:
            on_done(result)

    if jobs <= 1 or len(pending) <= 1:
        for i, job in pending:
            if on_start:
                on_start(job.planned)
            finish(i, execute_build(job))
    else:
        # spawn, not fork: onnxruntime and OpenVINO keep thread pools that a fork would copy
        # in an undefined state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=context) as pool:
            futures = {}
            for i, job in pending:
                if on_start:
                    on_start(job.planned)
                futures[pool.submit(execute_build, job)] = i
            for future in as_completed(futures):
                finish(futures[future], future.result())
    for i, p in enumerate(planned):
        if i not in results:  # a duplicate key: same outcome as its first need
            first = results[first_of_key[p.key]]
            results[i] = _cache_hit(p, store) if first.status == "built" else first
    return [results[i] for i in range(len(planned))]


def _cache_hit(p: PlannedBuild, store: Store) -> BuildResult:
    record = store.get_record(p.key)
    assert record is not None, "a planned cache hit has a record"
    return BuildResult(p.need, p.key, "cache_hit", record.variant, str(record.recipe.get("name")),
                       record.precision, record.artifact.sha256, record.artifact.size,
                       attempts=tuple(record.attempts))


def build_request(resolved: ResolvedNeed, root: Path, display: Callable[[str], str] = str):
    """The engine's request for one need: the I/O edge that loads its data arrays."""
    from edgefleet.build.data import load_npz
    from edgefleet.build.engine import BuildRequest

    def load(data):
        return load_npz(resolve_inside(root, data.path, f"{data.role} data"), data.role,
                        display(data.path)) if data is not None else None

    calibration, evaluation = load(resolved.calibration), load(resolved.evaluation)
    need = resolved.need
    return BuildRequest(
        model=need.model,
        version=need.version,
        variant=resolved.variant.name,
        hardware_class=need.hardware_class,
        source_path=resolve_inside(root, resolved.variant.source, "model source"),
        runtime=resolved.runtime,
        class_precisions=resolved.precisions,
        max_artifact_bytes=resolved.max_artifact_bytes,
        latency_budget_ms=resolved.latency_budget_ms,
        batch_size=resolved.batch_size,
        recipes=resolved.recipes,
        accuracy=resolved.accuracy,
        calibration=calibration.inputs if calibration else None,
        evaluation=evaluation.inputs if evaluation else None,
        labels=evaluation.labels if evaluation else None,
        cpu_arch=resolved.cpu_arch,
        compute_capability=resolved.compute_capability,
        ram_budget_bytes=resolved.model_ram_budget_mb * MIB,
        requires_accuracy_gate=resolved.requires_accuracy_gate,
        source_shown=display(resolved.variant.source),
    )


def execute_build(job: BuildJob) -> BuildResult:
    """Build one key and commit it to the store (a worker's whole job)."""
    from edgefleet.build import engine  # looked up at call time: tests replace build_artifact

    p, store = job.planned, job.store
    resolved = p.resolved
    try:
        if store.has(p.key):  # another CI job finished it since the plan
            return _cache_hit(p, store)
    except StoreCorrupt as exc:
        return BuildResult(p.need, p.key, "failed", resolved.variant.name, diagnostics=tuple(exc.diagnostics))
    started = time.perf_counter()
    try:
        request = build_request(resolved, job.root, job.display)
        with tempfile.TemporaryDirectory(prefix="edgefleet-build-") as workdir:
            outcome = engine.build_artifact(request, Path(workdir))
    except engine.BuildError as exc:
        return BuildResult(p.need, p.key, "failed", resolved.variant.name,
                           seconds=time.perf_counter() - started,
                           diagnostics=(engine_diagnostic(resolved, exc),))
    seconds = time.perf_counter() - started
    record, files = record_from_outcome(p.key, resolved, p.inputs, p.toolchain, outcome)
    if record is None:
        return BuildResult(p.need, p.key, "failed", resolved.variant.name, seconds=seconds,
                           attempts=tuple(_attempts(outcome)), diagnostics=(_gates_failed(resolved, outcome),))
    statement = statement_bytes(record, job.env)
    try:
        signed = sign_statement(statement, job.sign_mode, job.env)
    except SigningError as exc:
        return BuildResult(p.need, p.key, "failed", record.variant, seconds=seconds, attempts=tuple(record.attempts),
                           diagnostics=(error("E405", f"{p.need}: {exc}", job.signing_at, exc.hint),))
    documents = {PROVENANCE: statement}
    if signed.bundle is not None:
        documents[SIGNATURE] = signed.bundle
    try:
        stored = store.put(p.key, files, record, documents)
    except (OSError, StoreError) as exc:
        return BuildResult(p.need, p.key, "failed", record.variant, seconds=seconds, attempts=tuple(record.attempts),
                           diagnostics=(error("E408", f"{p.need}: cannot write to the artifact store "
                                                      f"{store.location}: {exc}", job.store_at,
                                              "check the store's free space and permissions (or --store)"),))
    diags = (warning("W401", signed.note, job.signing_at),) if signed.warning else ()
    return BuildResult(p.need, p.key, "built", record.variant, str(record.recipe.get("name")), record.precision,
                       record.artifact.sha256, record.artifact.size, seconds, tuple(record.attempts), diags,
                       signed.note, stored)


def _attempts(outcome) -> list[AttemptRecord]:
    return attempt_records(outcome.attempts)


def engine_diagnostic(resolved: ResolvedNeed, exc: Exception, with_need: bool = True) -> Diagnostic:
    """An engine BuildError placed at the YAML line it is about (its `subject` / `recipe`)."""
    subject = getattr(exc, "subject", "source")
    recipe = getattr(exc, "recipe", None)
    at, related = resolved.source_at, []
    if recipe is not None:
        for r, loc in zip(resolved.recipes, resolved.recipe_at):
            if r == recipe or r.name == getattr(recipe, "name", recipe):
                at = loc
                break
        if subject == "recipe":
            related.append((resolved.precisions_at, f"precisions of {resolved.need.hardware_class}"))
        elif subject == "calibration":
            related.append((resolved.data_at, "the model's data"))
    elif subject in ("calibration", "evaluation"):
        data = resolved.calibration if subject == "calibration" else resolved.evaluation
        at = data.at if data is not None else resolved.data_at
    elif subject == "accuracy":
        at = resolved.accuracy_at
    elif subject == "toolchain":
        at = resolved.runtime_at
    code = getattr(exc, "code", "E410")
    message = f"{resolved.need}: {exc}" if with_need else str(exc)
    return error(code, message, at, getattr(exc, "hint", "") or "", related=related)


def gate_summary(attempt: AttemptRecord) -> str:
    failed = [g for g in attempt.gates if not g.passed]
    if not failed:
        return attempt.reason or "failed"
    return "; ".join(f"{g.name} {_num(g.value)} (limit {_num(g.limit)})" for g in failed)


def _num(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _gates_failed(resolved: ResolvedNeed, outcome) -> Diagnostic:
    attempts = _attempts(outcome)
    at_of = dict(zip((r.name for r in resolved.recipes), resolved.recipe_at))
    first = resolved.recipe_at[0] if resolved.recipe_at else resolved.source_at
    return error(
        "E409", f"{resolved.need}: no recipe passed its gates, so nothing ships "
                f"({'; '.join(f'{a.recipe}: {gate_summary(a)}' for a in attempts) or 'no recipe ran'})",
        first,
        "add a fallback recipe (percentile calibration, per_channel, exclude_nodes, fp16), choose a "
        "smaller variant, or relax the class limit or accuracy threshold if it is wrong",
        related=[(at_of.get(a.recipe, first), f"{a.recipe}: {gate_summary(a)}") for a in attempts]
        + ([(resolved.accuracy_at, "accuracy budget")] if _accuracy_failed(resolved, attempts) else []))


def _accuracy_failed(resolved: ResolvedNeed, attempts: list[AttemptRecord]) -> bool:
    metric = resolved.accuracy.metric if resolved.accuracy else None
    return any(not g.passed and (g.name == metric or "accuracy" in g.name) for a in attempts for g in a.gates)


def github_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CI variables provenance and signing read, taken from the environment at the edge."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith("GITHUB_")}
