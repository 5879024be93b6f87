"""How a simulation is shown to a person: the final report (text, JSON, one HTML file) and the
live view while it runs.

Everything here reads a `SimulationRecord` / `Tick` (simulate/record.py) and returns text;
`LiveView` is the one part that writes, to the console it is given. Latencies are always
labelled `SIMULATED_LABEL`: they are measured CPU latencies scaled by a declared class factor,
not numbers from the real hardware.
"""

from __future__ import annotations

import html
import json
import sys
import time
from datetime import datetime

from edgefleet.simulate.record import (DEVICE_VIEWS, SIMULATED_LABEL, Decision, SimulationRecord, Tick)

# Colours per device state, the same in the HTML chart and the live view.
STATE_COLOURS = {
    "unenrolled": "#c7c7c7", "serving": "#2ca02c", "updating": "#1f77b4", "rolled_back": "#d62728",
    "degraded": "#ff7f0e", "frozen": "#9467bd", "offline": "#7f7f7f", "down": "#000000",
}
RICH_STYLES = {
    "unenrolled": "dim", "serving": "green", "updating": "blue", "rolled_back": "red",
    "degraded": "dark_orange", "frozen": "magenta", "offline": "grey50", "down": "bold red",
}
ACTION_COLOURS = {"advance": "#2ca02c", "complete": "#1f77b4", "rollback": "#d62728", "pause": "#ff7f0e",
                  "wait": "#7f7f7f"}


def _t(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not seconds else ""]
    return "".join(parts)


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Left-aligned first column, right-aligned numbers; one line per row."""
    if not rows:
        return []
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    out = []
    for row in [header, *rows]:
        out.append(indent + "  ".join(c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return out


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace("/", "").replace("x", "", 1).isdigit()


EVIDENCE_COUNTS = ("devices", "reported", "on_new_version", "healthy", "failed", "rolled_back", "degraded", "frozen",
                   "silent", "rejected_reports")


def _num(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _evidence(d: Decision) -> str:
    """promote's evidence in one line: the counts, then each gate check as result(observed/threshold)."""
    ev = d.evidence
    if not ev:
        return ""
    parts = [f"{k}={ev[k]}" for k in EVIDENCE_COUNTS if k in ev and ev[k] not in (0, None)] or \
            [f"{k}={ev[k]}" for k in sorted(ev) if isinstance(ev[k], (int, float, str)) and k != "reports_sha256"]
    checks = ev.get("checks")
    if isinstance(checks, list) and checks:
        parts.append("gates " + ", ".join(
            f"{c.get('gate')} {c.get('result')}({_num(c.get('observed'))}/{_num(c.get('threshold'))})"
            for c in checks if isinstance(c, dict)))
    return "; " + ", ".join(parts) if parts else ""


def verdict_line(record: SimulationRecord) -> str:
    broken = [i.name for i in record.invariants if not i.holds]
    if broken:
        return f"FAILED: {len(broken)} invariant(s) broken: {', '.join(broken)}"
    return f"ok: all {len(record.invariants)} invariants hold"


# -- text ----------------------------------------------------------------------------------------

def render_text(record: SimulationRecord) -> str:
    out = [f"edgefleet simulation of {record.fleet}",
           f"  {record.devices} devices ({record.mode}), seed {record.seed}, simulated "
           f"{_duration(record.duration_s)} from {_t(record.started)}, {record.wall_s:.1f} s wall time",
           f"  faults: {record.faults_spec or 'none'}",
           f"  outcome: {record.outcome}"]
    last = record.ticks[-1] if record.ticks else None
    if last is not None:
        out += ["", f"devices at the end ({_t(last.sim_time)}):"]
        out += _table(["state", "devices"], [[s, str(last.devices.get(s, 0))] for s in DEVICE_VIEWS
                                             if last.devices.get(s, 0)])
        out += ["", "versions served at the end:"]
        out += _table(["model@version", "devices"], [[v, str(n)] for v, n in sorted(last.versions.items())])
        for r in last.rollouts:
            out += ["", f"rollout {r.rollout}: {r.model} {r.from_version} -> {r.to_version}, {r.phase}"
                    + (f", wave {r.current_wave}" if r.phase not in ("complete", "rolled_back") else "")]
            out += _table(["wave", "devices", f"on {r.to_version}", "gate"],
                          [[f"{w.wave} {w.name}", str(w.devices), str(w.on_new_version), w.gate] for w in r.waves])
    out += ["", "decisions:"]
    if record.decisions:
        for d in record.decisions:
            out.append(f"  {_t(d.sim_time)}  {d.rollout}  wave {d.wave}  {d.action:<8}  {d.reason}{_evidence(d)}")
    else:
        out.append("  none")
    out += ["", "invariants (checked continuously):"]
    out += _table(["invariant", "checks", "violations", "result"],
                  [[i.name, str(i.checks), str(i.violations), "holds" if i.holds else "BROKEN"]
                   for i in record.invariants])
    for i in record.invariants:
        out.append(f"  - {i.name}: {i.description}")
        out += [f"      violation: {e}" for e in i.examples]
    out += ["", "faults injected:"]
    if record.faults:
        out += _table(["fault", "injected", "what", "outcome"],
                      [[f.kind, str(f.injected), f.description, f.outcome or "-"] for f in record.faults])
    else:
        out.append("  none")
    out += ["", f"latency per hardware class, {SIMULATED_LABEL}:"]
    out += _table(["class", "devices", "factor", "CPU p50/p95 ms", "simulated p50/p95 ms"],
                  [[e.hardware_class, str(e.devices), f"{e.factor:g}x",
                    f"{e.measured_cpu_p50_ms:.3g}/{e.measured_cpu_p95_ms:.3g}",
                    f"{e.simulated_p50_ms:.3g}/{e.simulated_p95_ms:.3g}"] for e in record.envelopes])
    out += ["", f"git server bytes per device update: {record.git_bytes_per_update:,.0f}",
            f"agent peak memory: {record.agent_rss_mb:.1f} MB ({record.mode})",
            "", verdict_line(record)]
    return "\n".join(out) + "\n"


def record_json(record: SimulationRecord) -> dict:
    data = record.model_dump(mode="json")
    data["ok"] = record.ok
    data["latency_label"] = SIMULATED_LABEL
    return data


def render_json(record: SimulationRecord) -> str:
    return json.dumps(record_json(record), indent=2, sort_keys=True) + "\n"


# -- HTML ----------------------------------------------------------------------------------------

def _plotly():
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        from edgefleet.cli import UsageError

        raise UsageError("the HTML report needs plotly: pip install 'edgefleet[report]'") from None
    return go, make_subplots


def _states_figure(go, record: SimulationRecord):
    times = [_t(t.sim_time) for t in record.ticks]
    fig = go.Figure()
    for state in DEVICE_VIEWS:
        counts = [t.devices.get(state, 0) for t in record.ticks]
        if not any(counts):
            continue
        fig.add_trace(go.Scatter(x=times, y=counts, name=state, mode="lines", stackgroup="devices",
                                 line={"color": STATE_COLOURS[state], "shape": "hv"}))
    fig.update_layout(title="devices per state over time (simulated clock)", template="plotly_white",
                      height=380, yaxis_title="devices", xaxis_title="simulated time")
    return fig


def _versions_figure(go, record: SimulationRecord):
    times = [_t(t.sim_time) for t in record.ticks]
    versions = sorted({v for t in record.ticks for v in t.versions})
    fig = go.Figure()
    for v in versions:
        fig.add_trace(go.Scatter(x=times, y=[t.versions.get(v, 0) for t in record.ticks], name=v, mode="lines",
                                 line={"shape": "hv"}))
    fig.update_layout(title="devices serving each version", template="plotly_white", height=320,
                      yaxis_title="devices", xaxis_title="simulated time")
    return fig


def _waves_figure(go, make_subplots, record: SimulationRecord):
    """One panel per rollout: share of each wave's devices on the new version; decisions marked."""
    names: list[str] = []
    for t in record.ticks:
        names += [r.rollout for r in t.rollouts if r.rollout not in names]
    if not names:
        return None
    fig = make_subplots(rows=len(names), cols=1, subplot_titles=[f"rollout {n}" for n in names],
                        vertical_spacing=0.18 if len(names) > 1 else 0.1)
    for row, name in enumerate(names, start=1):
        series: dict[tuple[int, str], tuple[list[str], list[float]]] = {}
        for t in record.ticks:
            for r in t.rollouts:
                if r.rollout != name:
                    continue
                for w in r.waves:
                    xs, ys = series.setdefault((w.wave, w.name), ([], []))
                    xs.append(_t(t.sim_time))
                    ys.append(w.on_new_version / w.devices if w.devices else 0.0)
        for (index, wave), (xs, ys) in sorted(series.items()):
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{name} wave {index} {wave}",
                                     line={"shape": "hv"}, legendgroup=name), row=row, col=1)
        decisions = [d for d in record.decisions if d.rollout == name]
        if decisions:
            fig.add_trace(go.Scatter(
                x=[_t(d.sim_time) for d in decisions], y=[1.04] * len(decisions), mode="markers+text",
                name=f"{name} decisions", text=[f"{d.action} w{d.wave}" for d in decisions],
                textposition="top center", hovertext=[f"{d.action} wave {d.wave}: {d.reason}" for d in decisions],
                marker={"symbol": "diamond", "size": 11, "color": [ACTION_COLOURS.get(d.action, "#000")
                                                                    for d in decisions]},
                legendgroup=name), row=row, col=1)
            for d in decisions:
                fig.add_shape(type="line", x0=_t(d.sim_time), x1=_t(d.sim_time), y0=0, y1=1,
                              line={"dash": "dot", "color": ACTION_COLOURS.get(d.action, "#000"), "width": 1},
                              row=row, col=1)
        fig.update_yaxes(range=[0, 1.15], title_text="share on new version", row=row, col=1)
    fig.update_layout(title="wave progress, decisions marked", template="plotly_white", height=340 * len(names))
    return fig


def _envelopes_figure(go, record: SimulationRecord):
    if not record.envelopes:
        return None
    classes = [e.hardware_class for e in record.envelopes]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=classes, y=[e.measured_cpu_p50_ms for e in record.envelopes],
                         name="measured CPU p50 ms (this machine)", marker_color="#aec7e8"))
    fig.add_trace(go.Bar(x=classes, y=[e.simulated_p50_ms for e in record.envelopes],
                         name="simulated p50 ms", marker_color="#1f77b4"))
    fig.add_trace(go.Bar(x=classes, y=[e.simulated_p95_ms for e in record.envelopes],
                         name="simulated p95 ms", marker_color="#ff7f0e"))
    fig.update_layout(title=f"class latency envelopes: {SIMULATED_LABEL}", barmode="group",
                      template="plotly_white", height=360, yaxis_title="ms")
    return fig


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join(f"<tr class='{html.escape((classes or [''] * len(rows))[i])}'>"
                   + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table>{head}{body}</table>"


def render_html(record: SimulationRecord) -> str:
    go, make_subplots = _plotly()
    charts = []
    js_included = False
    for key, fig in (("states", _states_figure(go, record)), ("waves", _waves_figure(go, make_subplots, record)),
                     ("versions", _versions_figure(go, record)), ("envelopes", _envelopes_figure(go, record))):
        if fig is None:
            continue
        charts.append(f"<div class='chart' id='chart-{key}'>" + fig.to_html(
            full_html=False, include_plotlyjs=not js_included, div_id=f"plot-{key}") + "</div>")
        js_included = True
    invariants = _html_table(
        ["invariant", "description", "checks", "violations", "result", "first violations"],
        [[i.name, i.description, str(i.checks), str(i.violations), "holds" if i.holds else "BROKEN",
          "; ".join(i.examples)] for i in record.invariants],
        ["ok" if i.holds else "broken" for i in record.invariants])
    faults = (_html_table(["fault", "injected", "what was done", "outcome"],
                          [[f.kind, str(f.injected), f.description, f.outcome or "-"] for f in record.faults])
              if record.faults else "<p>no faults injected</p>")
    decisions = (_html_table(["simulated time", "rollout", "wave", "action", "reason", "evidence"],
                             [[_t(d.sim_time), d.rollout, str(d.wave), d.action, d.reason, _evidence(d)[2:]]
                              for d in record.decisions]) if record.decisions else "<p>no decisions</p>")
    envelopes = _html_table(
        ["class", "devices", "factor", "measured CPU p50 ms", "measured CPU p95 ms", "simulated p50 ms",
         "simulated p95 ms", "label"],
        [[e.hardware_class, str(e.devices), f"{e.factor:g}", f"{e.measured_cpu_p50_ms:.4g}",
          f"{e.measured_cpu_p95_ms:.4g}", f"{e.simulated_p50_ms:.4g}", f"{e.simulated_p95_ms:.4g}", e.label]
         for e in record.envelopes])
    verdict = verdict_line(record)
    style = ("body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}tr.broken td{background:#fdd}"
             "tr.ok td:nth-child(5){color:#2ca02c}.verdict{font-size:1.2em;font-weight:bold}"
             ".bad{color:#d62728}.good{color:#2ca02c}.label{color:#555;font-style:italic}")
    esc = html.escape
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgefleet simulation</title>"
        f"<style>{style}</style></head><body>"
        f"<h1>edgefleet simulation of {esc(record.fleet)}</h1>"
        f"<p>{record.devices} devices ({esc(record.mode)}), seed {record.seed}, simulated "
        f"{esc(_duration(record.duration_s))} from {esc(_t(record.started))}, {record.wall_s:.1f} s wall time; "
        f"faults: <code>{esc(record.faults_spec or 'none')}</code></p>"
        f"<p>outcome: {esc(record.outcome)}</p>"
        f"<p class='verdict {'good' if record.ok else 'bad'}' id='verdict'>{esc(verdict)}</p>"
        "<h2>invariants</h2>" + invariants
        + "<h2>faults</h2>" + faults
        + "<h2>decisions</h2>" + decisions
        + f"<h2>class latency envelopes</h2><p class='label'>{esc(SIMULATED_LABEL)}</p>" + envelopes
        + f"<p>git server bytes per device update: {record.git_bytes_per_update:,.0f}; agent peak memory: "
          f"{record.agent_rss_mb:.1f} MB</p>"
        + "<h2>charts</h2>" + "".join(charts) + "</body></html>\n")


# -- live view -----------------------------------------------------------------------------------

def tick_line(tick: Tick) -> str:
    """One plain line per tick: what a log file or CI job shows instead of the live table."""
    states = " ".join(f"{s}={tick.devices[s]}" for s in DEVICE_VIEWS if tick.devices.get(s))
    rollouts = "; ".join(
        f"{r.rollout} {r.phase} wave {r.current_wave}"
        + "".join(f" [{w.name} {w.on_new_version}/{w.devices} {w.gate}]" for w in r.waves)
        for r in tick.rollouts)
    faults = ",".join(f"{k}={n}" for k, n in sorted(tick.faults_active.items()) if n)
    return (f"[{tick.wall_s:6.1f}s] {_t(tick.sim_time)} {states}"
            + (f" | {rollouts}" if rollouts else "") + (f" | faults {faults}" if faults else ""))


class LiveView:
    """The simulation as it runs; pass the instance as the engine's observer.

    On a terminal it is a `rich.live.Live` table (waves, devices per state, versions, active
    faults, last decision), redrawn at most `refresh_per_second`. Anywhere else (a pipe, a CI
    log) it prints one plain line every `interval_s` of real time and whenever a rollout's
    phase or wave changes, so a log shows every transition without a flood of lines.
    """

    def __init__(self, title: str = "edgefleet simulation", *, console=None, interval_s: float = 5.0,
                 live: bool | None = None, refresh_per_second: float = 4.0) -> None:
        from rich.console import Console

        self.title = title
        self.console = console if console is not None else Console(file=sys.stdout)
        self.live_mode = self.console.is_terminal if live is None else live
        self.interval_s = interval_s
        self.refresh_per_second = refresh_per_second
        self.last_tick: Tick | None = None
        self.last_change = ""          # "sim_time rollout: phase, wave N" of the last transition
        self.ticks = 0
        self._printed_at: float | None = None
        self._last_line = ""
        self._live = None

    def __enter__(self) -> "LiveView":
        if self.live_mode:
            from rich.live import Live

            self._live = Live(self._render(), console=self.console, refresh_per_second=self.refresh_per_second,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(*exc)
            self._live = None
        elif self.last_tick is not None and self._last_line != tick_line(self.last_tick):
            self._print(self.last_tick)  # the final state, once

    def __call__(self, tick: Tick) -> None:
        changed = self._transition(tick)
        self.last_tick = tick
        self.ticks += 1
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if changed or self._printed_at is None or now - self._printed_at >= self.interval_s:
            self._print(tick)

    def _print(self, tick: Tick) -> None:
        line = tick_line(tick)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._last_line = line
        self._printed_at = time.monotonic()

    def _transition(self, tick: Tick) -> bool:
        """Did a rollout change phase or wave since the last tick? Remembered as the last decision."""
        before = {r.rollout: (r.phase, r.current_wave) for r in (self.last_tick.rollouts if self.last_tick else [])}
        changed = False
        for r in tick.rollouts:
            if before.get(r.rollout) != (r.phase, r.current_wave):
                changed = True
                self.last_change = f"{_t(tick.sim_time)} {r.rollout}: {r.phase}, wave {r.current_wave}"
        return changed

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        tick = self.last_tick
        if tick is None:
            return Text(f"{self.title}: starting…")
        head = Text(f"{self.title} — simulated {_t(tick.sim_time)}, {tick.wall_s:.0f} s real time", style="bold")
        states = Table(title="devices per state", show_edge=False)
        for s in DEVICE_VIEWS:
            states.add_column(s, justify="right", style=RICH_STYLES[s])
        states.add_row(*[str(tick.devices.get(s, 0)) for s in DEVICE_VIEWS])
        waves = Table(title="waves", show_edge=False)
        for col in ("rollout", "phase", "wave", "devices", "on new", "gate"):
            waves.add_column(col, justify="right" if col in ("devices", "on new") else "left")
        for r in tick.rollouts:
            for w in r.waves:
                current = w.wave == r.current_wave and r.phase not in ("complete", "rolled_back")
                waves.add_row(r.rollout if w.wave == 0 else "", r.phase if w.wave == 0 else "",
                              f"{'▶ ' if current else ''}{w.wave} {w.name}", str(w.devices), str(w.on_new_version),
                              w.gate, style="bold" if current else None)
        versions = Table(title="versions", show_edge=False)
        versions.add_column("model@version")
        versions.add_column("devices", justify="right")
        for v, n in sorted(tick.versions.items()):
            versions.add_row(v, str(n))
        active = ", ".join(f"{k} {n}" for k, n in sorted(tick.faults_active.items()) if n) or "none"
        return Group(head, states, waves, versions, Text(f"active faults: {active}"),
                     Text(f"last decision: {self.last_change or 'none yet'}"))


# -- the report folder ----------------------------------------------------------------------------

REPORT_FILES = ("report.txt", "report.html", "record.json")


def write_report_dir(record: SimulationRecord, out, extra_text: str = "") -> dict[str, object]:
    """report.txt, report.html and record.json in `out` (created), each written atomically.

    Every renderer runs before the first file is written, so a renderer that fails (plotly
    missing) leaves the folder as it was. Returns file name -> path.
    """
    from pathlib import Path

    from edgefleet.pipeline.promote import atomic_write_bytes

    out = Path(out)
    texts = {"report.txt": render_text(record) + (extra_text + "\n" if extra_text else ""),
             "report.html": render_html(record), "record.json": render_json(record)}
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in REPORT_FILES:
        atomic_write_bytes(out / name, texts[name].encode("utf-8"))
        paths[name] = out / name
    return paths
