"""edgefleet validate [REPO]: schema and cross-reference checks, all reported at once."""

from __future__ import annotations

import sys

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, resolve_repo


def register(sub) -> None:
    parser = sub.add_parser("validate", help="check a fleet repository and report every problem",
                            description=__doc__)
    add_repo_argument(parser)
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.pipeline.validate import validate_repository

    root = resolve_repo(args.repo)
    repo, diags = validate_repository(root)
    counts = {
        "hardware_classes": len(repo.hardware),
        "models": len(repo.models),
        "devices": len(repo.devices),
        "rollouts": len(repo.rollouts),
    }
    code = emit(diags, args.format, summary=counts)
    if code == 0 and args.format == "text":
        print(f"{repo.display_root}: valid ({counts['hardware_classes']} hardware classes, "
              f"{counts['models']} models, {counts['devices']} devices, {counts['rollouts']} rollouts)",
              file=sys.stdout)
    return code
