"""edgefleet build [REPO]: build, gate and store the artifact of every needed (model version, class).

Each artifact is stored under its content key; a key already in the store is a cache
hit and costs no optimization. `--matrix` prints the pending builds as a GitHub Actions
matrix instead (each CI job then runs `--only` its own), so CI fans out over a shared store.
"""

from __future__ import annotations

import contextlib
import json
import sys

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, repo_of

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


def run(args) -> int:
    from edgefleet.core.diagnostics import has_errors
    from edgefleet.pipeline.build import BuildRequest, build

    if args.jobs < 1:
        from edgefleet.cli import UsageError

        raise UsageError("--jobs must be at least 1")
    request = BuildRequest(repo_of(args), tuple(args.only), args.jobs, args.store, plan_only=args.matrix)
    text = args.format == "text"
    view = _TextView() if text and not args.matrix else None
    with view or contextlib.nullcontext():
        outcome = build(request, on_start=view.started if view else None, on_done=view.done if view else None,
                        on_planned=view.planned if view else None)
    diags = list(outcome.diagnostics)
    if has_errors(diags) and not outcome.results:  # refused before anything was built
        return emit(diags, args.format, command="build", data_on_stdout=args.matrix, builds=[])
    if args.matrix:
        print(json.dumps(outcome.matrix, sort_keys=True))
        return emit(diags, "text", command="build", data_on_stdout=True) if diags else 0
    counts = outcome.counts
    if text:
        print(f"{counts['total']} artifact(s): {counts['built']} built, {counts['cache_hits']} cache hit(s), "
              f"{counts['failed']} failed; store {outcome.store}")
        for note in outcome.signing:
            print(f"note: {note}")
        code = emit(diags, "text", command="build")
    else:
        code = emit(diags, "json", command="build", builds=[_as_json(r) for r in outcome.results], summary=counts,
                    store=outcome.store, signing=list(outcome.signing))
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
    rejected = [a for a in result.attempts if not a.passed]
    reasons = "".join(f"\n             rejected {a.recipe}: {gate_summary(a)}" for a in rejected)
    if result.status == "cache_hit":
        return f"cache hit  {need}: {where}{reasons}"
    after = f", after {', '.join(a.recipe for a in rejected)} failed its gates" if rejected else ""
    return f"built      {need}: {where} in {result.seconds:.1f}s{after}{reasons}"


class _TextView:
    """Per-build result lines; a rich progress bar on top when the output is a terminal."""

    def __init__(self):
        self.total = 0
        self.progress = None
        self.task = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("[bold]building[/]"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                                     transient=True)

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
            self.task = self.progress.add_task("", total=None)
        return self

    def planned(self, planned) -> None:
        self.total = len(planned)
        if self.progress is not None:
            self.progress.update(self.task, total=self.total)

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
