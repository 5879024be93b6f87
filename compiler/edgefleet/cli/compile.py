"""edgefleet compile [REPO] --out DIR [--keys DIR] [--commit [BRANCH]]: the signed desired state.

Validates the fleet, refuses private keys inside it and artifacts not built yet, then
writes every device's desired state as a TUF repository into DIR: atomically (a failed
compile leaves the previous tree as it was) and touching only files whose bytes change.
With --commit, the files of the tree are committed to BRANCH (default: fleet.yaml's
desired_state_branch) of the git repository holding DIR.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, repo_of


def register(sub) -> None:
    from edgefleet.pipeline.compile import DEFAULT_BRANCH

    parser = sub.add_parser("compile", help="compile and sign each device's desired state", description=__doc__)
    add_repo_argument(parser)
    parser.add_argument("--out", required=True, help="output directory of the desired-state tree")
    parser.add_argument("--keys", default=None,
                        help="directory of role keys (`edgefleet keys init`); default: EDGEFLEET_KEY_<ROLE> variables")
    parser.add_argument("--commit", metavar="BRANCH", nargs="?", const=DEFAULT_BRANCH, default=None,
                        help="commit the tree to BRANCH of the git repository holding --out "
                             "(default BRANCH: fleet.yaml's desired_state_branch)")
    parser.add_argument("--store", default=None, metavar="DIR|URL",
                        help="artifact store to read builds from (default: fleet.yaml artifact_store)")
    parser.add_argument("--now", default=None,
                        help="the time to sign at, RFC 3339 (default: the clock); also the commit date")
    parser.add_argument("--allow-clock-skew", action="store_true",
                        help="accept a --now more than 5 minutes from this host's clock")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.pipeline.common import check_clock, parse_time
    from edgefleet.pipeline.compile import CompileRequest, compile_desired_state

    root = repo_of(args)
    clock = datetime.now(timezone.utc)
    now = clock
    if args.now:
        now = parse_time(args.now)
        check_clock(now, clock, args.allow_clock_skew)
    result = compile_desired_state(CompileRequest(
        root=root, out=Path(args.out), now=now, keys_dir=Path(args.keys) if args.keys else None,
        store=args.store, commit=args.commit, commit_date=now if args.now else None))
    diags = list(result.diagnostics)
    summary = result.summary
    if summary is None:
        return emit(diags, args.format, command="compile")
    if args.format == "json":
        return emit(diags, "json", command="compile", compile=summary.to_json(), written_files=list(summary.written))
    emit(diags, "text", command="compile")
    line = (f"compiled {summary.devices} devices into {summary.out}: {summary.devices_changed} changed; "
            f"{len(summary.written)} files written, {summary.unchanged} unchanged, {summary.removed} removed "
            f"(snapshot v{summary.versions.get('snapshot')}, {summary.bins} bins"
            + (f", {summary.retired_bins} retired bins still listed" if summary.retired_bins else "") + ")")
    if summary.branch:
        line += (f"; {'committed ' + summary.commit[:12] if summary.commit else 'nothing to commit'} "
                 f"on {summary.branch}")
    print(line)
    return 0

