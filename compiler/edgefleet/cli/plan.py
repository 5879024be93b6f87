"""edgefleet plan [REPO] --base REV [--head REV]: which devices a change moves, for a pull request.

Compiles the fleet at both revisions without keys (nothing is signed or written) and
lists, grouped by rollout, wave, hardware class and site, every device whose desired
state changes: to which model and version (old → new of each value that changed),
added, removed, and the bytes each will download. Revisions are read with `git archive`;
the work tree is never checked out. The default head is the work tree as it is,
uncommitted edits included. Artifacts already in a local artifact store are used as
built; others are previewed by their key with validation's size estimate. A base that
does not validate is reported as such and the head is still planned. Needs no device
access and no secrets.
"""

from __future__ import annotations

import sys

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, print_diagnostics, repo_of


def register(sub) -> None:
    parser = sub.add_parser("plan", help="show which devices a change moves (for a pull request)",
                            description=__doc__)
    add_repo_argument(parser)
    parser.add_argument("--base", required=True, help="revision to compare against, e.g. origin/main")
    parser.add_argument("--head", default=None, help="revision to compare (default: the work tree as it is)")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="local artifact store to take built artifacts from (default: fleet.yaml's, if local)")
    add_format_argument(parser, choices=("text", "markdown", "json"))
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.desired.plan import render_json, render_markdown, render_text
    from edgefleet.pipeline.plan import PlanRequest, plan_change

    result = plan_change(PlanRequest(repo_of(args), args.base, args.head, args.store))
    if result.plan is None:
        return emit(list(result.diagnostics), "json" if args.format == "json" else "text", command="plan",
                    data_on_stdout=args.format == "markdown")
    base_diags = list(result.base_diagnostics)
    if args.format == "json":
        import json

        payload = json.loads(render_json(result.plan))
        payload["base_diagnostics"] = [d.to_json() for d in base_diags]
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return 0
    if base_diags:
        print(f"the base {args.base} has errors (the change may be what fixes them):", file=sys.stderr)
        print_diagnostics(base_diags, "plan")
    render = {"text": render_text, "markdown": render_markdown}[args.format]
    sys.stdout.write(render(result.plan))
    return 0
