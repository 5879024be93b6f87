"""edgefleet status [REPO] --reports REMOTE|DIR [--format text|markdown|json|html] [--history]

Reads every device report (a git status remote, a folder, or an object store), verifies
each (enrolled key, its own device, counter going up, a generation the device was
given), and shows per rollout, wave, hardware class and site how many devices run the
new version, are healthy, failed, rolled back, degraded, frozen or silent, with latency
percentiles and the current wave's gates. Refused reports are counted and listed by
reason. `--history` lists every decision recorded in the git history of rollouts/*.yaml.
"""

from __future__ import annotations

import html
import json
import os
import sys
from datetime import datetime, timezone

from edgefleet.cli.output import add_repo_argument, emit, resolve_repo
from edgefleet.core.collector import collector_paused

FORMATS = ("text", "markdown", "json", "html")


def register(sub) -> None:
    parser = sub.add_parser("status", help="verified device reports per rollout, wave, class and site",
                            description=__doc__)
    add_repo_argument(parser)
    parser.add_argument("--reports", default=None, metavar="REMOTE|DIR",
                        help="where devices push reports: a git status remote, a folder, or an object store URL")
    parser.add_argument("--desired", default=None, metavar="DIR",
                        help="git repository (or tree) of the desired state, to check report generations "
                             "(default: the fleet repository's git repository, branch from fleet.yaml)")
    parser.add_argument("--rollout", default=None, help="only this rollout")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes verifying reports (default: one per CPU; 5000+ reports only)")
    parser.add_argument("--now", default=None, help="the clock, RFC 3339 (default: now)")
    parser.add_argument("--history", action="store_true", help="every decision from the git history of rollouts/")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument("--out", default=None, help="write the output to this file instead of stdout")
    parser.set_defaults(run=run)


def parse_now(value: str | None) -> datetime:
    from edgefleet.pipeline.common import parse_time

    return parse_time(value) if value else datetime.now(timezone.utc).replace(microsecond=0)


@collector_paused()  # the whole command, rendering included: see core/collector.py
def run(args) -> int:
    from pathlib import Path

    from edgefleet.cli import UsageError
    from edgefleet.core.diagnostics import has_errors

    root = resolve_repo(args.repo)
    now = parse_now(args.now)
    if args.history:
        from edgefleet.rollout.history import read_history

        entries, diags = read_history(root, args.rollout)
        if has_errors(diags):
            return emit(diags, "json" if args.format == "json" else "text")
        return _write(args, render_history(entries, args.format))
    if not args.reports:
        raise UsageError("--reports REMOTE|DIR is required (or --history)")
    from edgefleet.pipeline.status import run_status

    result = run_status(root, args.reports, now, Path(args.desired) if args.desired else None, args.rollout,
                        keep_timeline=args.format == "html", jobs=args.jobs)
    if has_errors(result.diagnostics):
        return emit(result.diagnostics, "json" if args.format == "json" else "text")
    emit(result.diagnostics, "text")
    renderers = {"text": render_text, "markdown": render_markdown, "json": render_json, "html": render_html}
    return _write(args, renderers[args.format](result, now))


def _write(args, text: str) -> int:
    if args.out:
        from pathlib import Path

        from edgefleet.pipeline.promote import atomic_write_bytes

        atomic_write_bytes(Path(args.out), text.encode("utf-8"))  # never half a report file
    else:
        sys.stdout.write(text)
    return 0


# -- data for every format ------------------------------------------------------------------

def status_json(result, now: datetime) -> dict:
    v = result.verified
    return {
        "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reports": {"accepted": v.accepted, "rejected": len(v.rejected), "rejected_by_code": v.rejected_by_code(),
                    "rejections": [{"device": r.device, "counter": r.counter, "code": r.code, "reason": r.reason}
                                   for r in v.rejected]},
        "desired_state_commits": result.generations_commits,
        "rollouts": [rollout_json(r) for r in result.rollouts],
    }


def rollout_json(r) -> dict:
    spec, status = r.rollout.spec, r.rollout.status
    return {
        "name": r.name, "file": r.path, "model": spec.model, "from_version": spec.from_version,
        "to_version": spec.to_version, "phase": status.phase, "current_wave": status.current_wave,
        "since": status.since, "paused": spec.paused, "devices_not_live": r.not_live,
        "last_decision": status.last_decision.model_dump(mode="json") if status.last_decision else None,
        "waves": [{"index": w.index, "name": w.name, "devices": w.devices, "live": w.live,
                   "live_since": w.live_since, **({"tally": w.tally.to_json()} if w.live else {}),
                   "gates": None if w.result is None else {
                       "verdict": w.result.verdict, "reason": w.result.reason, "message": w.result.message,
                       "checks": [c.model_dump(mode="json") for c in w.result.checks]}}
                  for w in r.waves],
        "by_class": {k: t.to_json() for k, t in r.by_class.items()},
        "by_site": {k: t.to_json() for k, t in r.by_site.items()},
    }


def render_json(result, now) -> str:
    return json.dumps(status_json(result, now), indent=2, sort_keys=True) + "\n"


def _ms(value) -> str:
    return "-" if value is None else f"{value:g}"


def _row(name: str, t: dict) -> list[str]:
    lat = t["latency_ms"]
    return [name, str(t["devices"]), str(t["on_new_version"]), str(t["healthy"]), str(t["failed"]),
            str(t["rolled_back"]), str(t["degraded"]), str(t["frozen"]), str(t["pending"]), str(t["silent"]),
            f"{_ms(lat['p50'])}/{_ms(lat['p95'])}/{_ms(lat['p99'])}"]


HEADER = ["", "devices", "on new", "healthy", "failed", "rolled back", "degraded", "frozen", "pending", "silent",
          "p50/p95/p99 ms"]


def _tables(r: dict) -> list[tuple[str, list[list[str]]]]:
    waves = [_row(f"wave {w['name']}", w["tally"]) for w in r["waves"] if w["live"]]
    return [("waves", waves),
            ("hardware classes", [_row(k, t) for k, t in r["by_class"].items()]),
            ("sites", [_row(k, t) for k, t in r["by_site"].items()])]


def _headline(r: dict) -> str:
    wave = r["current_wave"]
    where = f", wave {r['waves'][wave]['name']} live since {r['since']}" if wave is not None else ""
    return (f"rollout {r['name']}: {r['model']} {r['from_version']} → {r['to_version']}, {r['phase']}{where}"
            + (" (spec.paused)" if r["paused"] else "") + f"; {r['devices_not_live']} device(s) not live yet")


def render_text(result, now) -> str:
    data = status_json(result, now)
    out: list[str] = []
    rep = data["reports"]
    out.append(f"reports: {rep['accepted']} accepted, {rep['rejected']} refused"
               + (" (" + ", ".join(f"{c}: {n}" for c, n in rep["rejected_by_code"].items()) + ")"
                  if rep["rejected"] else ""))
    for r in data["rollouts"]:
        out += ["", _headline(r)]
        for title, rows in _tables(r):
            if not rows:
                continue
            widths = [max(len(x) for x in col) for col in zip(HEADER, *rows)]
            out.append(f"  {title}:")
            for row in [HEADER, *rows]:
                out.append("    " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                              for i, (c, w) in enumerate(zip(row, widths))))
        for w in r["waves"]:
            if w["gates"]:
                out.append(f"  gates of wave {w['name']}: {w['gates']['verdict']} ({w['gates']['reason']})")
                for c in w["gates"]["checks"]:
                    out.append(f"    {c['result']:<12} {c['gate']}: {c['detail']} (threshold {c['threshold']:g})")
    if rep["rejections"]:
        out += ["", "refused reports:"]
        for x in rep["rejections"]:
            out.append(f"  {x['device']}: error[{x['code']}]: {x['reason']}")
    return "\n".join(out) + "\n"


def render_markdown(result, now) -> str:
    data = status_json(result, now)
    out = ["<!-- edgefleet-status -->", f"**reports**: {data['reports']['accepted']} accepted, "
           f"{data['reports']['rejected']} refused", ""]
    for r in data["rollouts"]:
        out += [f"### {_headline(r)}", ""]
        for title, rows in _tables(r):
            if not rows:
                continue
            out += [f"| {title} | " + " | ".join(HEADER[1:]) + " |", "|---" * len(HEADER) + "|"]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("")
        for w in r["waves"]:
            if w["gates"]:
                out += [f"**gates of wave {w['name']}**: {w['gates']['verdict']} ({w['gates']['reason']})", ""]
                out += [f"- {c['result']}: `{c['gate']}` {c['detail']} (threshold {c['threshold']:g})"
                        for c in w["gates"]["checks"]]
                out.append("")
    if data["reports"]["rejections"]:
        out += ["<details><summary>refused reports</summary>", ""]
        out += [f"- `{x['device']}` {x['code']}: {x['reason']}" for x in data["reports"]["rejections"]]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# -- HTML: one self-contained file with a progress chart per wave (plotly, JS inlined) -------

def wave_series(result, report, wave) -> tuple[list[str], list[float], list[float]]:
    """Cumulative share of the wave's devices on the new version and failed, over report time."""
    from edgefleet.desired.activation import parse_time
    from edgefleet.rollout.observe import standing

    spec = report.rollout.spec
    since = parse_time(wave.live_since) if wave.live_since else None
    events: list[tuple[datetime, int, int]] = []
    for device_id in report.members.get(wave.index, []):
        on_new_at = failed_at = None
        for obs in result.verified.timeline.get((device_id, spec.model), []):
            where = standing(obs, spec.to_version, since)
            if where in ("healthy", "degraded") and on_new_at is None:
                on_new_at = obs.observed_at
            if where in ("failed", "rolled_back") and failed_at is None:
                failed_at = obs.observed_at
        if on_new_at is not None:
            events.append((on_new_at, 1, 0))
        if failed_at is not None:
            events.append((failed_at, 0, 1))
    events.sort()
    n = max(wave.devices, 1)
    times, on_new, failed = [], [], []
    if since is not None:
        times, on_new, failed = [since.strftime("%Y-%m-%dT%H:%M:%SZ")], [0.0], [0.0]
    a = b = 0
    for when, x, y in events:
        a, b = a + x, b + y
        times.append(when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        on_new.append(a / n)
        failed.append(b / n)
    return times, on_new, failed


def render_html(result, now) -> str:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        from edgefleet.cli import UsageError

        raise UsageError("--format html needs plotly: pip install 'edgefleet[report]'") from None
    from datetime import timedelta

    from edgefleet.desired.activation import parse_time
    from edgefleet.spec.common import duration_seconds

    data = status_json(result, now)
    sections = []
    js_included = False
    for report, r in zip(result.rollouts, data["rollouts"]):
        live = [w for w in report.waves if w.live]
        body = f"<h2>{html.escape(_headline(r))}</h2>"
        for title, rows in _tables(r):
            if rows:
                body += f"<h3>{html.escape(title)}</h3><table><tr>" + "".join(
                    f"<th>{html.escape(h)}</th>" for h in HEADER) + "</tr>" + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"
        if live:
            fig = make_subplots(rows=len(live), cols=1, subplot_titles=[f"wave {w.name}" for w in live],
                                vertical_spacing=0.12 if len(live) > 1 else 0.1)
            for row, wave in enumerate(live, start=1):
                gates = report.rollout.spec.waves[wave.index].gates
                times, on_new, failed = wave_series(result, report, wave)
                fig.add_trace(go.Scatter(x=times, y=on_new, mode="lines+markers", line_shape="hv",
                                         name=f"{wave.name}: on {report.rollout.spec.to_version}",
                                         line={"color": "#1f77b4"}), row=row, col=1)
                fig.add_trace(go.Scatter(x=times, y=failed, mode="lines+markers", line_shape="hv",
                                         name=f"{wave.name}: failed", line={"color": "#d62728"}), row=row, col=1)
                fig.add_hline(y=gates.min_reporting, line_dash="dash", line_color="#2ca02c",
                              annotation_text=f"min_reporting {gates.min_reporting:g}", row=row, col=1)
                fig.add_hline(y=gates.max_failure_rate, line_dash="dot", line_color="#d62728",
                              annotation_text=f"max_failure_rate {gates.max_failure_rate:g}", row=row, col=1)
                if wave.live_since:
                    start = parse_time(wave.live_since)
                    for label, seconds, color in (("soak", duration_seconds(gates.soak), "#9467bd"),
                                                  ("timeout", duration_seconds(gates.timeout), "#7f7f7f")):
                        x = (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
                        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, line={"dash": "dash", "color": color},
                                      row=row, col=1)
                        fig.add_annotation(x=x, y=1.02, text=f"{label} {getattr(gates, label)}", showarrow=False,
                                           row=row, col=1)
                fig.update_yaxes(range=[0, 1.08], title_text="share of wave", row=row, col=1)
            fig.update_layout(height=360 * len(live), template="plotly_white",
                              title=f"{report.name}: wave progress over time")
            body += "<div class='chart' id='chart-" + html.escape(report.name) + "'>" + fig.to_html(
                full_html=False, include_plotlyjs=not js_included,
                div_id=f"plot-{report.name}") + "</div>"
            js_included = True
        sections.append(body)
    rejected = data["reports"]["rejections"]
    rejected_html = ("<h2>refused reports</h2><ul>" + "".join(
        f"<li><code>{html.escape(x['device'])}</code> {html.escape(x['code'])}: {html.escape(x['reason'])}</li>"
        for x in rejected) + "</ul>") if rejected else ""
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgefleet status</title>"
            f"<style>{style}</style></head><body><h1>edgefleet status at {html.escape(data['now'])}</h1>"
            f"<p>reports: {data['reports']['accepted']} accepted, {data['reports']['rejected']} refused</p>"
            + "".join(sections) + rejected_html + "</body></html>\n")


def render_history(entries, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"history": [e.to_json() for e in entries]}, indent=2, sort_keys=True) + "\n"
    out = []
    for e in entries:
        d = e.decision
        line = f"{d.at}  {e.rollout}  {d.action:<9} wave {d.wave}  {d.reason}  by {d.by}  ({e.commit[:12]})"
        out.append(line if fmt == "text" else f"- `{e.commit[:12]}` {line}")
        out.append(("    " if fmt == "text" else "  ") + d.message)
        if d.evidence is not None:
            ev = d.evidence
            out.append(("    " if fmt == "text" else "  ") +
                       f"evidence: {ev.devices} devices, {ev.on_new_version} on new, {ev.failed} failed, "
                       f"{ev.rolled_back} rolled back, {ev.silent} silent; reports sha256 {ev.reports_sha256[:16]}…")
    return "\n".join(out) + ("\n" if out else "no decisions recorded\n")
