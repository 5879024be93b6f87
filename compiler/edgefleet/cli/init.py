"""edgefleet init DIR [--name NAME]: scaffold a fleet repository that works by pull request.

Writes fleet.yaml, one example of each kind (with a tiny real ONNX model and its data, so
a build works at once), the JSON Schemas the files point at, a README for operators, a
.gitignore, a pre-commit hook running `edgefleet validate`, and GitHub workflows calling
edgefleet's reusable ones; then `git init`s the folder and makes the first commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgefleet.cli.output import add_format_argument


def register(sub) -> None:
    parser = sub.add_parser("init", help="scaffold a new fleet repository", description=__doc__)
    parser.add_argument("dir", metavar="DIR", help="folder of the new repository (created if missing; must be empty)")
    parser.add_argument("--name", help="fleet name (default: the folder's name)")
    parser.add_argument("--repository", metavar="OWNER/NAME",
                        help="the fleet's GitHub repository; provenance is accepted only from its runs")
    parser.add_argument("--workflows", metavar="OWNER/NAME@REF", default=None,
                        help="edgefleet's reusable workflows to call (default: acme/edgefleet@v<edgefleet version>)")
    parser.add_argument("--force", action="store_true", help="add the scaffold to a folder that is not empty")
    parser.add_argument("--no-commit", action="store_true", help="git init, but leave the files uncommitted")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet import __version__
    from edgefleet.cli import UsageError
    from edgefleet.core.resources import example_fleet, template_dir
    from edgefleet.gitops.scaffold import WORKFLOWS_HOME, ScaffoldError, ScaffoldOptions
    from edgefleet.pipeline.init import InitError, init_repository

    target = Path(args.dir)
    workflows, _, ref = (args.workflows or f"{WORKFLOWS_HOME}@v{__version__}").partition("@")
    name = args.name or target.resolve().name.lower()
    options = ScaffoldOptions(name=name, repository=args.repository, workflows=workflows,
                              workflows_ref=ref or f"v{__version__}")
    try:
        result = init_repository(target, options, example_fleet=example_fleet(), templates_dir=template_dir(),
                                 force=args.force, commit=not args.no_commit)
    except (InitError, ScaffoldError) as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        json.dump({"ok": True, "root": str(result.root), "files": result.files, "commit": result.commit},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"created fleet repository {name} in {result.root}: {len(result.files)} files"
          + (f", first commit {result.commit[:12]}" if result.commit else ", not committed"))
    print("next: edgefleet validate && edgefleet build; then push to GitHub and add the role keys as "
          "secrets (see README.md there)")
    return 0
