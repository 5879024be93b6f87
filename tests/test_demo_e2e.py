"""`edgefleet demo` end to end, as a person runs it (small N): the real build, compile, git
server and agents; the good version completes wave by wave, the bad one is rolled back in its
first wave because its probe is too slow on the low-power class, every invariant holds, exit 0."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("edgefleet.simulate.engine", reason="the simulator engine (issue 12) is not in this tree")
pytest.importorskip("plotly", reason="the HTML report needs the 'report' extra (plotly)")

from edgefleet.cli import main  # noqa: E402
from edgefleet.simulate import demo  # noqa: E402
from edgefleet.simulate.record import SIMULATED_LABEL  # noqa: E402


@pytest.mark.slow
def test_edgefleet_demo_rolls_the_bad_version_back_in_its_first_wave(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEFLEET_CACHE_DIR", str(tmp_path / "cache"))  # a cold first run: it builds
    report = tmp_path / "report"
    code = main(["demo", "--devices", "8", "--no-live", "--format", "json", "--report", str(report)])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert code == 0, (data["demo"], captured.err[-3000:])
    assert data["demo"] == {**data["demo"], "ok": True, "good_rollout_complete": True,
                            "bad_rollout_rolled_back": True, "caught_in_wave": 0, "invariants_hold": True}
    record = data["record"]
    actions = [(d["rollout"], d["wave"], d["action"]) for d in record["decisions"] if d["action"] != "wait"]
    good = [a for a in actions if a[0] == demo.GOOD_ROLLOUT]
    # promote names the wave an advance makes live: 1 after the canary, 2 after half
    assert good[-1] == (demo.GOOD_ROLLOUT, 2, "complete") and (demo.GOOD_ROLLOUT, 1, "advance") in good
    bad = [a for a in actions if a[0] == demo.BAD_ROLLOUT]
    assert bad[-1] == (demo.BAD_ROLLOUT, 0, "rollback") and not any(a[2] == "advance" for a in bad)
    rollback = next(d for d in record["decisions"] if d["rollout"] == demo.BAD_ROLLOUT and d["action"] == "rollback")
    assert "max_failure_rate" in json.dumps(rollback)
    # The slow class's canary device tried 1.2.0 and was refused by its probe; at the end every
    # device serves 1.1.0 again, and the invariants were checked, not just declared.
    assert any(t["devices"]["rolled_back"] for t in record["ticks"]) or "ProbeTooSlow" in json.dumps(record)
    assert record["ticks"][-1]["versions"] == {f"{demo.MODEL}@{demo.GOOD_VERSION}": 8}
    assert record["invariants"] and all(i["violations"] == 0 for i in record["invariants"])
    checked = {i["name"]: i["checks"] for i in record["invariants"]}
    # checked every tick on every device, and at every decision (no faults here: nothing is forged)
    assert all(checked[n] > 0 for n in ("always_serving_verified", "only_allowed_versions", "gates_respected"))
    assert all(e["label"] == SIMULATED_LABEL for e in record["envelopes"])
    assert {e["hardware_class"]: e["factor"] for e in record["envelopes"]} == demo.LATENCY_FACTORS
    # The report folder: three files, the same record.
    assert sorted(p.name for p in report.iterdir()) == ["record.json", "report.html", "report.txt"]
    assert json.loads((report / "record.json").read_text())["decisions"] == record["decisions"]
    text = (report / "report.txt").read_text()
    assert "rolled back in wave 0 (the first)" in text and SIMULATED_LABEL in text
    assert (report / "report.html").read_text().count("Plotly.newPlot") == 4
