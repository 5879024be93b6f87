"""edgefleet promote [REPO] --reports … [--commit] [--now TIME]: decide the current wave of each rollout.

Evaluates the live wave's gates on verified reports and decides: advance (or complete),
wait (saying exactly what is missing; nothing is written), pause, or roll back per
`spec.rollback`. The decision and its evidence go into the rollout file's `status`
(only those lines change); with --commit they are committed to the checked-out branch,
by compare-and-swap on the branch ref (a concurrent promote makes this one re-read and
decide again). `--pause`, `--resume` and `--abort` record a person's decision the same way.
"""

from __future__ import annotations

import json
import os
import sys

from edgefleet.core.collector import collector_paused


def register(sub) -> None:
    from edgefleet.cli.output import add_repo_argument

    parser = sub.add_parser("promote", help="evaluate wave gates and advance, wait, pause or roll back",
                            description=__doc__)
    add_repo_argument(parser)
    parser.add_argument("--reports", default=None, metavar="REMOTE|DIR", help="where devices push reports")
    parser.add_argument("--desired", default=None, metavar="DIR",
                        help="git repository (or tree) of the desired state, to check report generations")
    parser.add_argument("--rollout", default=None, help="only this rollout (required for a person's action "
                                                        "when the fleet has several)")
    parser.add_argument("--commit", action="store_true", help="commit the new status to the checked-out branch")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes verifying reports (default: one per CPU; 5000+ reports only)")
    parser.add_argument("--now", default=None, help="the clock, RFC 3339 (default: now)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--pause", action="store_const", const="pause", dest="action", help="a person pauses")
    action.add_argument("--resume", action="store_const", const="resume", dest="action", help="a person resumes")
    action.add_argument("--abort", action="store_const", const="abort", dest="action",
                        help="a person aborts: every device back to from_version")
    parser.add_argument("--reason", default="", help="why (recorded with a person's decision)")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.set_defaults(run=run, action="evaluate")


@collector_paused()  # the whole command, rendering included: see core/collector.py
def run(args) -> int:
    from pathlib import Path

    from edgefleet.cli import UsageError
    from edgefleet.cli.output import emit, resolve_repo
    from edgefleet.cli.status import parse_now
    from edgefleet.core.diagnostics import has_errors
    from edgefleet.pipeline.promote import run_promote

    root = resolve_repo(args.repo)
    now = parse_now(args.now)
    if args.action == "evaluate" and not args.reports:
        raise UsageError("--reports REMOTE|DIR is required to evaluate gates (or give --pause/--resume/--abort)")
    if args.action != "evaluate" and args.reports:
        raise UsageError(f"--{args.action} records a person's decision; it takes no --reports")
    result = run_promote(root, args.reports, now, desired=Path(args.desired) if args.desired else None,
                         rollout=args.rollout, action=args.action, reason=args.reason, commit=args.commit,
                         jobs=args.jobs)
    if has_errors(result.diagnostics):
        return emit(result.diagnostics, "json" if args.format == "json" else "text")
    emit(result.diagnostics, "text")
    if args.format == "json":
        payload = {"promote": [{"rollout": r.rollout, "file": r.path, "changed": r.changed, "commit": r.commit,
                                "attempts": r.attempts, "decision": r.decision.model_dump(mode="json")}
                               for r in result.results]}
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return 0
    for r in result.results:
        d = r.decision
        done = (f"committed {r.commit[:12]}" if r.commit else "status written") if r.changed else "nothing written"
        bullet = "- " if args.format == "markdown" else ""
        sys.stdout.write(f"{bullet}{r.rollout}: {d.action} ({d.reason}) — {d.message} [{done}]\n")
        if d.evidence is not None and d.action == "wait":
            for c in d.evidence.checks:
                if c.result != "pass":
                    sys.stdout.write(f"    {c.result}: {c.gate}: {c.detail}\n")
    return 0
