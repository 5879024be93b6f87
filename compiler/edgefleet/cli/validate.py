"""edgefleet validate [REPO]: schema and cross-reference checks, all reported at once."""

from __future__ import annotations

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, repo_of


def register(sub) -> None:
    parser = sub.add_parser("validate", help="check a fleet repository and report every problem",
                            description=__doc__)
    add_repo_argument(parser)
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.pipeline.validate import validate

    result = validate(repo_of(args))
    counts = result.counts
    code = emit(list(result.diagnostics), args.format, command="validate", summary=counts)
    if code == 0 and args.format == "text":
        print(f"{result.repo.display_root}: valid ({counts['hardware_classes']} hardware classes, "
              f"{counts['models']} models, {counts['devices']} devices, {counts['rollouts']} rollouts)")
    return code
