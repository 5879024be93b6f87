"""The simulation report renderers (cli/sim_render.py) on a hand-built SimulationRecord: text,
JSON, the one-file HTML (its plotly charts really render in headless Chromium, as the status
page's do) and the live view, on a terminal and off one."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from rich.console import Console

from edgefleet.cli.sim_render import (LiveView, record_json, render_json, render_text, tick_line,
                                      write_report_dir)
from edgefleet.simulate.record import (DEVICE_VIEWS, SIMULATED_LABEL, ClassEnvelope, Decision, FaultResult,
                                       InvariantResult, RolloutView, SimulationRecord, Tick, WaveView)

T0 = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)
R1, R2 = "meter-digits-1-1", "meter-digits-1-2"


def _tick(i: int) -> Tick:
    """48 devices; rollout 1-1 moves wave by wave until tick 6, then 1-2's canary fails at tick 8."""
    on_new = min(48, [0, 3, 5, 12, 24, 36, 48, 48, 48, 48][i])
    rolled_back = 1 if i == 8 else 0
    devices = {s: 0 for s in DEVICE_VIEWS}
    devices.update(serving=48 - (2 if i in (1, 3) else 0) - rolled_back - (1 if i == 5 else 0),
                   updating=2 if i in (1, 3) else 0, rolled_back=rolled_back, offline=1 if i == 5 else 0)
    r1 = RolloutView(rollout=R1, model="meter-digits", from_version="1.0.0", to_version="1.1.0",
                     phase="complete" if i >= 6 else "progressing", current_wave=min(2, i // 2),
                     waves=[WaveView(rollout=R1, wave=0, name="canary", devices=5, on_new_version=min(on_new, 5),
                                     gate="pass" if i >= 2 else "pending"),
                            WaveView(rollout=R1, wave=1, name="half", devices=24, on_new_version=min(on_new, 24),
                                     gate="pass" if i >= 4 else "pending"),
                            WaveView(rollout=R1, wave=2, name="all", devices=48, on_new_version=on_new,
                                     gate="pass" if i >= 6 else "pending")])
    rollouts = [r1]
    if i >= 7:
        rollouts = [RolloutView(rollout=R2, model="meter-digits", from_version="1.1.0", to_version="1.2.0",
                                phase="rolled_back" if i >= 9 else "progressing", current_wave=0,
                                waves=[WaveView(rollout=R2, wave=0, name="canary", devices=4, on_new_version=0,
                                                gate="fail" if i >= 8 else "pending")])]
    return Tick(sim_time=T0 + timedelta(minutes=30 * i), wall_s=3.0 * i, devices=devices,
                versions={"meter-digits@1.0.0": 48 - on_new, "meter-digits@1.1.0": on_new} if on_new < 48
                else {"meter-digits@1.1.0": 48},
                rollouts=rollouts, faults_active={"remote_unreachable": 1 if i == 5 else 0, "clock_skew": 0})


def make_record(broken: bool = False) -> SimulationRecord:
    at = lambda i: T0 + timedelta(minutes=30 * i)  # noqa: E731
    return SimulationRecord(
        fleet="fleet", seed=7, devices=48, duration_s=16 * 3600, faults_spec="remote_unreachable:scope=site",
        mode="in-process", started=T0, wall_s=123.4, ticks=[_tick(i) for i in range(10)],
        decisions=[Decision(sim_time=at(2), rollout=R1, wave=0, action="advance", reason="gates-passed: canary",
                            evidence={"devices": 5, "failed": 0}),
                   Decision(sim_time=at(4), rollout=R1, wave=1, action="advance", reason="gates-passed: half"),
                   Decision(sim_time=at(6), rollout=R1, wave=2, action="complete", reason="gates-passed: all"),
                   Decision(sim_time=at(8), rollout=R2, wave=0, action="rollback",
                            reason="gate-failed: max_failure_rate", evidence={"failed": 2, "devices": 4})],
        invariants=[
            InvariantResult(name="always_serving_verified", description="no device ever without a verified model",
                            checks=4321, violations=0),
            InvariantResult(name="only_allowed_versions", description="no device serving a version not allowed",
                            checks=987, violations=3 if broken else 0,
                            examples=["sim-0003 at 2026-11-23T23:00:00Z served 1.2.0"] if broken else []),
            InvariantResult(name="offline_reports_delivered", description="buffered reports eventually delivered",
                            checks=55, violations=0),
        ],
        faults=[FaultResult(kind="remote_unreachable", injected=6, description="site plant-brno unreachable for 1h",
                            outcome="kept serving 6/6; reports delivered 6/6"),
                FaultResult(kind="forged_report", injected=2, description="2 reports signed by a wrong key",
                            outcome="refused 2/2")],
        envelopes=[ClassEnvelope(hardware_class="intel-lowpower-detector", devices=12, factor=5.0,
                                 measured_cpu_p50_ms=6.25, measured_cpu_p95_ms=7.5, simulated_p50_ms=31.25,
                                 simulated_p95_ms=37.5),
                   ClassEnvelope(hardware_class="medical-cart-cpu", devices=12, factor=2.0, measured_cpu_p50_ms=0.03,
                                 measured_cpu_p95_ms=0.04, simulated_p50_ms=0.06, simulated_p95_ms=0.08)],
        git_bytes_per_update=23456.0, agent_rss_mb=61.5,
        outcome="meter-digits 1.2.0 rolled back in wave 0 (probe failed on intel-lowpower-detector)")


# -- text and JSON ------------------------------------------------------------------------------

def test_the_text_report_counts_every_invariant_and_fault_and_labels_latency():
    text = render_text(make_record())
    for name, checks in (("always_serving_verified", 4321), ("only_allowed_versions", 987),
                         ("offline_reports_delivered", 55)):
        line = next(x for x in text.splitlines() if x.strip().startswith(name + " "))
        assert line.split()[1:] == [str(checks), "0", "holds"], line
    fault = next(x for x in text.splitlines() if x.strip().startswith("forged_report"))
    assert " 2 " in fault and "refused 2/2" in fault
    assert SIMULATED_LABEL in text
    assert "intel-lowpower-detector" in text and "5x" in text and "6.25/7.5" in text and "31.2/37.5" in text
    assert "rollback" in text and "gate-failed: max_failure_rate" in text and "failed=2" in text
    assert text.rstrip().endswith("ok: all 3 invariants hold")
    assert "rollout meter-digits-1-2: meter-digits 1.1.0 -> 1.2.0, rolled_back" in text


def test_a_broken_invariant_is_named_with_its_first_violation():
    text = render_text(make_record(broken=True))
    line = next(x for x in text.splitlines() if x.strip().startswith("only_allowed_versions "))
    assert line.split()[1:] == ["987", "3", "BROKEN"]
    assert "violation: sim-0003 at 2026-11-23T23:00:00Z served 1.2.0" in text
    assert text.rstrip().endswith("FAILED: 1 invariant(s) broken: only_allowed_versions")


def test_json_is_the_record_plus_its_verdict_and_the_label():
    record = make_record(broken=True)
    data = json.loads(render_json(record))
    assert data["ok"] is False and data["latency_label"] == SIMULATED_LABEL
    again = SimulationRecord.model_validate({k: v for k, v in data.items() if k not in ("ok", "latency_label")})
    assert again == record
    assert render_json(record) == render_json(record)  # deterministic: sorted keys


# -- HTML ---------------------------------------------------------------------------------------

plotly = pytest.importorskip("plotly", reason="the HTML report needs the 'report' extra (plotly)")
from edgefleet.cli.sim_render import render_html  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def _figures(text: str) -> list[dict]:
    """The data of every Plotly.newPlot call in the page, parsed from the page itself."""
    decoder = json.JSONDecoder()
    out = []
    for chunk in text.split("Plotly.newPlot(")[1:]:
        div, rest = chunk.split(",", 1)
        data, _ = decoder.raw_decode(rest.lstrip())
        out.append({"div": div.strip().strip("\"'"), "data": data})
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    text = render_html(make_record())
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_the_html_is_one_file_with_four_charts_and_every_table(page):
    _, text = page
    assert "<script src=" not in text  # plotly.js inlined: opens offline
    figures = {f["div"]: f["data"] for f in _figures(text)}
    assert sorted(figures) == ["plot-envelopes", "plot-states", "plot-versions", "plot-waves"]
    states = {t["name"] for t in figures["plot-states"]}
    assert states == {"serving", "updating", "rolled_back", "offline"}  # the states that ever had a device
    waves = [t["name"] for t in figures["plot-waves"]]
    assert "meter-digits-1-1 wave 0 canary" in waves and "meter-digits-1-2 wave 0 canary" in waves
    marks = next(t for t in figures["plot-waves"] if t["name"] == "meter-digits-1-2 decisions")
    assert marks["text"] == ["rollback w0"]
    assert [t["name"] for t in figures["plot-envelopes"]] == [
        "measured CPU p50 ms (this machine)", "simulated p50 ms", "simulated p95 ms"]
    assert SIMULATED_LABEL in text and text.count(SIMULATED_LABEL) >= 3  # heading, chart title, table rows
    for cells in ("<td>always_serving_verified</td>", "<td>4321</td>", "<td>forged_report</td>", "<td>refused 2/2</td>",
                  "<td>rollback</td>"):
        assert cells in text
    assert "ok: all 3 invariants hold" in text
    assert render_html(make_record()) == text  # deterministic: fixed div ids, no timestamps


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this host (Debian: apt-get install -y chromium)")
def test_the_charts_render_in_headless_chromium(page, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to read the screenshot")
    path, _ = page
    run = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,4200",
           "--virtual-time-budget=8000"]
    dom = subprocess.run([*run, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="main-svg"') >= 4  # plotly drew all four figures
    assert dom.stdout.count('class="trace scatter') >= 8  # states, waves, decision marks, versions
    assert 'class="trace bars"' in dom.stdout or "trace bars" in dom.stdout  # the envelope bars
    assert "rollback w0" in dom.stdout and "class latency envelopes: simulated" in dom.stdout
    shot = tmp_path / "shot.png"
    shot_run = subprocess.run([*run, f"--screenshot={shot}", path.as_uri()], capture_output=True, text=True,
                              timeout=180)
    assert shot_run.returncode == 0 and shot.is_file(), shot_run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    green = int(((g > 130) & (r < 100) & (b < 100)).sum())  # the "serving" area, #2ca02c
    assert green > 2000, green


# -- the report folder --------------------------------------------------------------------------

def test_the_report_folder_holds_text_html_and_json(tmp_path):
    record = make_record()
    paths = write_report_dir(record, tmp_path / "out", extra_text="demo: ok")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["record.json", "report.html", "report.txt"]
    assert paths["report.txt"].read_text().endswith("demo: ok\n")
    assert json.loads(paths["record.json"].read_text()) == record_json(record)
    assert "Plotly.newPlot" in paths["report.html"].read_text()


# -- the live view ------------------------------------------------------------------------------

def test_off_a_terminal_the_live_view_prints_plain_lines_at_transitions():
    out = io.StringIO()
    console = Console(file=out, width=300)
    assert not console.is_terminal
    record = make_record()
    with LiveView(console=console, interval_s=3600) as view:  # no periodic line in this test's time
        for tick in record.ticks:
            view(tick)
    lines = out.getvalue().splitlines()
    # the first tick, then each tick where a rollout's phase or wave changed: 2, 4, 6, 7, 9
    assert [line.split("] ", 1)[1].split()[0] for line in lines] == [
        "2026-11-23T21:00:00Z", "2026-11-23T22:00:00Z", "2026-11-23T23:00:00Z", "2026-11-24T00:00:00Z",
        "2026-11-24T00:30:00Z", "2026-11-24T01:30:00Z"]
    assert lines == [tick_line(record.ticks[i]) for i in (0, 2, 4, 6, 7, 9)]
    assert "serving=48" in lines[0] and "[canary 0/5 pending]" in lines[0]
    assert "meter-digits-1-2 rolled_back wave 0 [canary 0/4 fail]" in lines[-1]
    assert "\x1b[" not in out.getvalue()  # no escape codes in a log
    assert view.last_change == "2026-11-24T01:30:00Z meter-digits-1-2: rolled_back, wave 0"


def test_off_a_terminal_a_quiet_stretch_still_prints_every_interval():
    out = io.StringIO()
    record = make_record()
    with LiveView(console=Console(file=out, width=300), interval_s=0) as view:
        for tick in record.ticks:
            view(tick)
    assert len(out.getvalue().splitlines()) == len(record.ticks)
    assert "faults remote_unreachable=1" in out.getvalue().splitlines()[5]


def test_on_a_terminal_the_live_view_draws_the_tables():
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    record = make_record()
    with LiveView("edgefleet demo", console=console, refresh_per_second=50) as view:
        for tick in record.ticks:
            view(tick)
    shown = out.getvalue()
    for text in ("edgefleet demo", "devices per state", "waves", "versions", "meter-digits@1.1.0",
                 "active faults: none", "last decision: 2026-11-24T01:30:00Z meter-digits-1-2: rolled_back"):
        assert text in shown, text
    assert "rolled_back" in shown and "canary" in shown
