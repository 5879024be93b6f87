"""edgefleet demo [--devices N] [--seed S] [--report DIR] [--format text|json] [--no-live]

The one-command tour on the example fleet, needing nothing but the install: the simulator
(`edgefleet simulate`: a real git server, HTTP mirror and artifact store on 127.0.0.1, N real
agents, the real compile -> status -> promote loop on a simulated clock) runs a scenario:
40 devices reconcile, meter-digits 1.1.0 rolls out wave by wave (the example's rollout, at demo
speed), then meter-digits 1.2.0, too slow for the low-power detectors, is caught in its first
wave and rolled back. A live view shows waves and devices per state; at the end the report
(text; and report.html, report.txt, record.json in --report DIR).

Latencies are simulated: measured CPU latency x a declared per-class factor, labelled so.
Exit 0 when the bad version was rolled back in its first wave and every invariant held,
1 otherwise, 2 on usage errors.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

MIN_DEVICES = 8  # every (hardware class, site) pair of the example fleet gets a device


def register(sub) -> None:
    from edgefleet.simulate.demo import DEFAULT_DEVICES

    p = sub.add_parser("demo", help="the one-command tour: a good rollout, a bad one caught and rolled back",
                       description=__doc__)
    p.add_argument("--devices", type=int, default=DEFAULT_DEVICES, metavar="N",
                   help=f"simulated devices (default {DEFAULT_DEVICES}, at least {MIN_DEVICES})")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default %(default)s)")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="write report.html, report.txt and record.json here (default: a new temporary folder)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--no-live", action="store_true", help="no live view while it runs (the report only)")
    p.set_defaults(run=run)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args) -> int:
    import tempfile

    from edgefleet.cli import UsageError

    if args.devices < MIN_DEVICES:
        raise UsageError(f"--devices {args.devices}: the demo needs at least {MIN_DEVICES}, so that every hardware "
                         "class and site of the example fleet has a device")
    try:
        import plotly  # noqa: F401  (the HTML report; checked before minutes of simulation, not after)
    except ImportError:
        raise UsageError("the demo's HTML report needs plotly: pip install 'edgefleet[report]'") from None
    report_dir = Path(args.report) if args.report else Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    if report_dir.exists() and not report_dir.is_dir():
        raise UsageError(f"--report {report_dir}: exists and is not a folder")

    from edgefleet.core.resources import cache_dir, copy_example_fleet
    from edgefleet.simulate import demo
    from edgefleet.simulate.errors import SimulationError

    started = time.monotonic()
    store = cache_dir("demo-store")
    with tempfile.TemporaryDirectory(prefix="edgefleet-demo-work-") as tmp:
        work = Path(tmp)
        _say(f"edgefleet demo: building the example fleet's artifacts into {store} (cached for the next run)…")

        def done(result) -> None:
            _say(f"  {'cache hit' if result.status == 'cache_hit' else result.status:<9}  {result.need} "
                 f"({result.variant}, {result.recipe or '-'})" + (f" in {result.seconds:.1f}s" if result.seconds else ""))

        try:
            counts = demo.prepare_store(work, store, on_done=done)
        except demo.DemoBuildError as exc:
            from edgefleet.cli.output import emit

            _say(f"edgefleet demo: error: {exc}")
            emit(list(exc.diagnostics), "text", command="demo")
            return 1
        _say(f"  {counts['built']} built, {counts['cache_hits']} cache hit(s) in {time.monotonic() - started:.0f}s")
        fleet = copy_example_fleet(work / "example-fleet")
        config = demo.config(fleet, devices=args.devices, seed=args.seed, store=store)
        config.tmpdir = work
        factors = ", ".join(f"{c} {f:g}x" for c, f in sorted(config.latency_factors.items()))
        _say(f"edgefleet demo: {args.devices} devices; simulated latency = measured CPU latency x class factor "
             f"({factors})")
        try:
            record = _simulate(config, args)
        except SimulationError as exc:
            where = f"{exc.path}: " if exc.path else ""
            _say(f"{where}error[{exc.code}]: {exc.message}" + (f"\n  = hint: {exc.hint}" if exc.hint else ""))
            return 1
    verdict = demo.judge(record)
    from edgefleet.cli.sim_render import write_report_dir

    write_report_dir(record, report_dir, extra_text="\n".join(["", "demo:", *("  " + x for x in verdict.lines())]))
    if args.format == "json":
        import json

        from edgefleet.cli.sim_render import record_json

        data = {"demo": {"ok": verdict.ok, "good_rollout_complete": verdict.good_complete,
                         "bad_rollout_rolled_back": verdict.bad_rolled_back,
                         "caught_in_wave": verdict.caught_in_wave, "invariants_hold": verdict.invariants_hold,
                         "report_dir": str(report_dir), "wall_s": round(time.monotonic() - started, 1)},
                "record": record_json(record)}
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        from edgefleet.cli.sim_render import render_text

        sys.stdout.write(render_text(record))
        sys.stdout.write("\ndemo:\n" + "".join(f"  {line}\n" for line in verdict.lines()))
        sys.stdout.write(f"\nreport: {report_dir / 'report.html'} (also report.txt, record.json); "
                         f"{time.monotonic() - started:.0f}s in all\n")
    return 0 if verdict.ok else 1


def _simulate(config, args):
    from edgefleet.simulate.engine import run_simulation

    if args.no_live:
        return run_simulation(config)
    from rich.console import Console

    from edgefleet.cli.sim_render import LiveView

    # JSON owns stdout: the live view goes to stderr then.
    console = Console(file=sys.stderr if args.format == "json" else sys.stdout)
    with LiveView("edgefleet demo", console=console) as view:
        return run_simulation(config, view)
