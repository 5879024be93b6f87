"""edgefleet simulate [REPO] --devices N --duration D --faults SPEC [--seed S] [--report DIR]: the whole loop on one machine.

Copies the fleet, enrolls N simulated devices over its hardware classes and sites, and runs
the real compiler, a real git server, HTTP mirror and artifact store on 127.0.0.1 and N real
agents on a simulated clock, with the real status -> promote -> compile loop, under faults:

  --faults "remote_unreachable:scope=site;agent_killed:rate=0.02;clock_skew:at=2h,by=+2d" or "all"

Latencies are simulated: measured CPU latency x the class's --latency-factor. Exit 0 when
every invariant held, 1 when one broke (or the input is wrong), 2 on usage errors.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    from edgefleet.cli.output import add_repo_argument

    p = sub.add_parser("simulate", help="run the whole loop on this machine: N agents, faults, invariants",
                       description=__doc__)
    add_repo_argument(p)
    p.add_argument("--devices", type=int, required=True, metavar="N", help="simulated devices (>= 1)")
    p.add_argument("--duration", required=True, metavar="DURATION", help="simulated time, e.g. 6h, 2d")
    p.add_argument("--faults", default="", metavar="SPEC", help="faults to inject (see above; `all`: every kind)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default %(default)s)")
    p.add_argument("--report", metavar="DIR", help="write record.json, report.txt and report.html here")
    p.add_argument("--mode", choices=("in-process", "processes"), default="in-process",
                   help="agents as instances in this process (default) or one `agent run --once` process per poll")
    p.add_argument("--latency-factor", action="append", default=[], metavar="CLASS=F",
                   help="a hardware class is F times slower than this CPU (repeatable; default 1)")
    p.add_argument("--tick", default="5m", metavar="DURATION", help="simulated time per poll round (default 5m)")
    p.add_argument("--start", metavar="RFC3339", help="the simulated clock's start (default: this hour)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(run=run)


def _factors(values: list[str]) -> dict[str, float]:
    from edgefleet.cli import UsageError

    out = {}
    for v in values:
        cls, eq, num = v.partition("=")
        try:
            out[cls] = float(num)
        except ValueError:
            raise UsageError(f"--latency-factor {v!r}: give CLASS=F, e.g. jetson-vision-standard=4") from None
        if not eq or not cls:
            raise UsageError(f"--latency-factor {v!r}: give CLASS=F")
    return out


def run(args) -> int:
    from edgefleet.cli import UsageError
    from edgefleet.cli.output import resolve_repo
    from edgefleet.simulate.errors import SimulationError
    from edgefleet.simulate.faults import parse_duration, parse_faults

    def usage(exc: SimulationError) -> UsageError:
        return UsageError(f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))

    if args.devices < 1:
        raise UsageError(f"--devices {args.devices}: give at least 1")
    try:
        duration = parse_duration(args.duration, "--duration")
        tick = parse_duration(args.tick, "--tick")
        parse_faults(args.faults)
    except SimulationError as exc:
        raise usage(exc) from None
    if duration <= 0 or tick <= 0:
        raise UsageError("--duration and --tick must be above zero")
    start = None
    if args.start:
        from edgefleet.pipeline.common import parse_time

        try:
            start = parse_time(args.start)
        except ValueError as exc:
            raise UsageError(f"--start {args.start!r}: {exc}") from None
    root = resolve_repo(args.repo, getattr(args, "example", False))

    from edgefleet.simulate.engine import SimulationConfig, run_simulation

    config = SimulationConfig(repo=root, devices=args.devices, duration_s=duration, faults=args.faults,
                              seed=args.seed, report_dir=Path(args.report) if args.report else None,
                              latency_factors=_factors(args.latency_factor), mode=args.mode, tick_s=tick,
                              start=start)
    try:
        record = _run(config, args.format)
    except SimulationError as exc:
        where = f"{exc.path}: " if exc.path else ""
        print(f"{where}error[{exc.code}]: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  = hint: {exc.hint}", file=sys.stderr)
        return 1
    if args.format == "json":
        sys.stdout.write(record.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(_text(record))
    if config.report_dir is not None:
        _write_reports(record, config.report_dir)
    return 0 if record.ok else 1


def _run(config, fmt: str):
    from edgefleet.simulate.engine import run_simulation

    if fmt == "json" or not sys.stderr.isatty():
        return run_simulation(config)
    try:
        from edgefleet.cli.sim_render import LiveView
    except ImportError:
        return run_simulation(config)
    with LiveView() as view:
        return run_simulation(config, view)


def _text(record) -> str:
    try:
        from edgefleet.cli.sim_render import render_text
    except ImportError:  # the report renderers are not in this build: the essentials, plainly
        lines = [f"simulated {record.devices} devices for {record.duration_s:g} s ({record.mode}, seed {record.seed}), "
                 f"{record.wall_s:g} s wall: {record.outcome}"]
        lines += [f"  {'holds' if i.holds else 'BROKE'}  {i.name}: {i.checks} checks, {i.violations} violations"
                  for i in record.invariants]
        lines += [f"  fault {f.kind}: injected {f.injected}; {f.outcome}" for f in record.faults]
        return "\n".join(lines) + "\n"
    return render_text(record)


def _write_reports(record, out: Path) -> None:
    try:
        from edgefleet.cli.sim_render import render_html, render_text
    except ImportError:
        return  # record.json is written by the engine; the renderers are not installed in this build
    (out / "report.txt").write_text(render_text(record), encoding="utf-8")
    (out / "report.html").write_text(render_html(record), encoding="utf-8")
