"""edgefleet build [REPO]: build, gate and store the artifact of every needed (model version, class).

Each artifact is stored under its content key; a key already in the store is a cache
hit and costs no optimization. `--matrix` prints the pending builds as a GitHub Actions
matrix instead (each CI job then runs `--only` its own), so CI fans out over a shared store.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, resolve_repo

_ONLY = re.compile(r"^(?P<model>[^@:\s]+)@(?P<version>[^@:\s]+):(?P<cls>[^@:\s]+)$")


def register(sub) -> None:
    parser = sub.add_parser("build", help="build, gate and store the artifact of every needed model version and class",
                            description=__doc__)
    add_repo_argument(parser)
    parser.add_argument("--matrix", action="store_true",
                        help="print the builds not yet in the store as a JSON CI matrix, and build nothing")
    parser.add_argument("--only", action="append", metavar="MODEL@VERSION:CLASS", default=[],
                        help="build only this need (repeatable), e.g. meter-digits@1.1.0:medical-cart-cpu")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                        help="builds to run in parallel here (default: 1)")
    parser.add_argument("--store", default=None, metavar="DIR|URL",
                        help="artifact store: a directory, file:///path or s3://bucket/prefix "
                             "(default: fleet.yaml artifact_store)")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def _select(needs, only: list[str]):
    from edgefleet.cli import UsageError

    if not only:
        return needs
    chosen = []
    for text in only:
        match = _ONLY.match(text)
        if not match:
            raise UsageError(f"--only {text!r}: write MODEL@VERSION:CLASS, e.g. meter-digits@1.1.0:medical-cart-cpu")
        found = [n for n in needs if (n.model, n.version, n.hardware_class) ==
                 (match["model"], match["version"], match["cls"])]
        if not found:
            known = ", ".join(f"{n.model}@{n.version}:{n.hardware_class}" for n in needs) or "none"
            raise UsageError(f"--only {text}: not a needed build of this fleet (needed: {known})")
        chosen += [n for n in found if n not in chosen]
    return chosen


def run(args) -> int:
    from edgefleet.build.orchestrate import github_env, plan_builds, run_builds
    from edgefleet.build.store import StoreError, open_store
    from edgefleet.pipeline.validate import validate_repository
    from edgefleet.cli import UsageError
    from edgefleet.core.diagnostics import Severity, has_errors, sorted_diagnostics
    from edgefleet.rules.needs import needed_builds

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    root = resolve_repo(args.repo)
    repo, diags = validate_repository(root)
    if has_errors(diags):  # never build from a fleet that does not validate
        return emit(diags, args.format, builds=[])
    diags = [d for d in diags if d.severity is not Severity.NOTE]  # validate's notes; `explain` has them
    needs = _select(needed_builds(repo), args.only)
    try:
        store = open_store(repo.root, repo.fleet.doc.spec.artifact_store, args.store, repo.display_root)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
    planned, problems = plan_builds(repo, needs, store)
    problems = sorted_diagnostics(problems)  # a bad shared file is one error, not one per need
    diags = list(diags) + problems
    if has_errors(problems):  # every input problem together, before anything is built
        return emit(diags, args.format, builds=[])
    if args.matrix:
        matrix = {"include": [
            {"model": p.need.model, "version": p.need.version, "hardware_class": p.need.hardware_class, "key": p.key}
            for p in planned if not p.cached]}
        print(json.dumps(matrix, sort_keys=True))
        return emit(diags, "text") if diags else 0
    env = github_env()
    sign_mode = repo.fleet.doc.spec.signing.provenance
    text = args.format == "text"
    view = _TextView(len(planned)) if text else None
    with view or contextlib.nullcontext():
        results = run_builds(planned, repo.root, store, jobs=args.jobs, sign_mode=sign_mode, env=env,
                             display_root=repo.display_root,
                             signing_at=repo.fleet.source.at("spec", "signing", "provenance"),
                             store_at=repo.fleet.source.at("spec", "artifact_store"),
                             on_start=view.started if view else None, on_done=view.done if view else None)
    for result in results:
        diags += result.diagnostics
    counts = {
        "total": len(results),
        "built": sum(r.status == "built" for r in results),
        "cache_hits": sum(r.status == "cache_hit" for r in results),
        "failed": sum(r.status == "failed" for r in results),
    }
    notes = sorted({r.signing for r in results if r.signing})
    if text:
        print(f"{counts['total']} artifact(s): {counts['built']} built, {counts['cache_hits']} cache hit(s), "
              f"{counts['failed']} failed; store {store.location}")
        for note in notes:
            print(f"note: {note}")
        code = emit(diags, "text")
    else:
        code = emit(diags, "json", builds=[_as_json(r) for r in results], summary=counts,
                    store=store.location, signing=notes)
    return 1 if counts["failed"] or code else 0


def _as_json(result) -> dict:
    return {
        "model": result.need.model,
        "version": result.need.version,
        "hardware_class": result.need.hardware_class,
        "variant": result.variant,
        "key": result.key,
        "status": result.status,
        "recipe": result.recipe,
        "precision": result.precision,
        "digest": result.digest,
        "size": result.size,
        "seconds": round(result.seconds, 3),
        "attempts": [a.model_dump(mode="json") for a in result.attempts],
    }


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def result_line(result) -> str:
    from edgefleet.build.orchestrate import gate_summary

    need = f"{result.need.model}@{result.need.version} for {result.need.hardware_class}"
    if result.status == "failed":
        lines = [f"FAILED     {need} ({result.variant})"]
        lines += [f"             {a.recipe}: {gate_summary(a)}" for a in result.attempts]
        if not result.attempts:
            lines += [f"             {d.message}" for d in result.diagnostics]
        return "\n".join(lines)
    where = f"{result.variant}, {result.recipe} ({result.precision}) sha256:{result.digest[:12]} {_size(result.size)}"
    if result.status == "cache_hit":
        return f"cache hit  {need}: {where}"
    rejected = [a.recipe for a in result.attempts if not a.passed]
    after = f", after {', '.join(rejected)} failed its gates" if rejected else ""
    return f"built      {need}: {where} in {result.seconds:.1f}s{after}"


class _TextView:
    """Per-build result lines; a rich progress bar on top when the output is a terminal."""

    def __init__(self, total: int):
        self.total = total
        self.progress = None
        self.task = None
        if sys.stdout.isatty() and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("[bold]building[/]"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                                     transient=True)

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False

    def started(self, planned) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=str(planned.need))

    def done(self, result) -> None:
        line = result_line(result)
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self.progress.advance(self.task)
        else:
            print(line, flush=True)
