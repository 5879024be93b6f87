"""`edgefleet status --format html`: one self-contained file whose plotly chart really renders,
checked in headless Chromium (Debian's `chromium`) from a screenshot and the page's DOM."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("plotly", reason="the HTML chart needs the 'report' extra (plotly)")

from edgefleet.cli.status import render_html
from edgefleet.pipeline.promote import run_promote
from edgefleet.pipeline.status import run_status
from tests.rollout_support import T0, hours, make_fleet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture
def page(tmp_path):
    fleet = make_fleet(tmp_path, {"site-a": 6, "site-b": 6})
    run_promote(fleet.root, [], T0, desired=fleet.desired, commit=True)
    fleet.compile(T0)
    pilot = sorted(d for d, s in fleet.sites.items() if s == "site-a")
    for i, device in enumerate(pilot):
        fleet.report(device, T0 + hours(0.1 * (i + 1)), serving="1.0.0", update="Downloading")
        if i == 5:
            fleet.report(device, T0 + hours(0.8), serving="1.0.0", update="ProbeFailed", failed="UpdateFailed")
        else:
            fleet.report(device, T0 + hours(0.2 * (i + 1)))
    result = run_status(fleet.root, fleet.envelopes, T0 + hours(2), desired=fleet.desired, keep_timeline=True)
    text = render_html(result, T0 + hours(2))
    path = tmp_path / "status.html"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_the_html_is_one_self_contained_file(page):
    _, text = page
    assert "<script src=" not in text and "cdn.plot.ly" not in text.split("Plotly.newPlot")[0][-2000:]
    assert "Plotly.newPlot" in text and "min_reporting 0.9" in text and "max_failure_rate 0" in text
    assert "wave pilot" in text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this host (Debian: apt-get install -y chromium)")
def test_the_chart_renders_in_headless_chromium(page, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to read the screenshot")
    path, _ = page
    profile = tmp_path / "profile"
    shot = tmp_path / "shot.png"
    run = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,1400", "--virtual-time-budget=5000"]
    dom = subprocess.run([*run, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # plotly drew the figure: its SVG, two traces (on new version, failed) and the threshold lines.
    assert 'class="main-svg"' in dom.stdout
    assert dom.stdout.count('class="trace scatter') >= 2
    assert "min_reporting 0.9" in dom.stdout and "soak 1h" in dom.stdout
    shot_run = subprocess.run([*run, f"--screenshot={shot}", path.as_uri()], capture_output=True, text=True,
                              timeout=120)
    assert shot_run.returncode == 0 and shot.is_file(), shot_run.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    width, height = image.size
    # The chart area (below the tables) holds many non-white pixels, some of them the traces' blue.
    chart = image.crop((0, height // 3, width, height))
    pixels = np.asarray(chart).reshape(-1, 3).astype(int)
    non_white = int((pixels.min(axis=1) < 235).sum())
    r, g, b = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    blue = int(((b > 150) & (r < 80) & (g < 160)).sum())  # the "on the new version" trace, #1f77b4
    assert non_white > 0.01 * len(pixels), non_white
    assert blue > 50, blue
