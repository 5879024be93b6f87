"""The `edgefleet demo` scenario (simulate/demo.py): its text transforms, its assets (meter-digits
1.2.0, package data), and what makes the bad version bad: built by the real build, it passes the
accuracy gate on every class, and on the low-power class it is really slower, measured, by enough
that the declared latency factor takes it over the class budget while 1.1.0 stays far under."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edgefleet.core.resources import copy_example_fleet
from edgefleet.simulate import demo
from edgefleet.simulate.record import Decision, InvariantResult, SimulationRecord


@pytest.fixture
def fleet(tmp_path) -> Path:
    return copy_example_fleet(tmp_path / "fleet")


def test_demo_speed_shortens_the_clock_and_keeps_every_threshold(fleet):
    from edgefleet.pipeline.validate import validate_repository

    before = validate_repository(fleet)[0].rollouts[demo.GOOD_ROLLOUT].doc.spec
    path = fleet / "rollouts" / f"{demo.GOOD_ROLLOUT}.yaml"
    demo.apply_demo_speed(fleet)
    repo, diags = validate_repository(fleet)
    assert not [d for d in diags if d.is_error]
    after = repo.rollouts[demo.GOOD_ROLLOUT].doc.spec
    assert after.spread == "10m" and after.maintenance == before.maintenance and after.rollback == before.rollback
    assert [w.name for w in after.waves] == [w.name for w in before.waves] == ["canary", "half", "all"]
    for b, a in zip(before.waves, after.waves):
        assert (a.gates.soak, a.gates.timeout) == ("10m", "4h")
        assert a.gates.max_latency_p95_ms is None  # no traffic in a simulation: never measurable
        same = ("min_reporting", "max_failure_rate", "max_offline")
        assert [getattr(a.gates, k) for k in same] == [getattr(b.gates, k) for k in same]
        assert a.percent == b.percent
    text = path.read_text(encoding="utf-8")
    assert "# Move every meter reader" in text and "spread: 10m              # demo speed (the example: 30m)" in text


def test_the_bad_version_step_leaves_a_valid_fleet_with_one_rollout_per_model(fleet):
    from edgefleet.pipeline.validate import validate_repository

    demo.apply_demo_speed(fleet)
    message = demo.apply_bad_version(fleet)
    repo, diags = validate_repository(fleet)
    assert not [d for d in diags if d.is_error], [d.message for d in diags if d.is_error]
    assert sorted(repo.rollouts) == [demo.BAD_ROLLOUT]
    spec = repo.rollouts[demo.BAD_ROLLOUT].doc.spec
    assert (spec.from_version, spec.to_version, spec.rollback.on_gate_failure) == ("1.1.0", "1.2.0", "rollback")
    canary = spec.waves[0].selector.devices
    classes = {d.doc.id: d.doc.hardware_class for d in repo.devices}
    assert sorted(classes[c] for c in canary) == sorted(repo.hardware)  # one device of every class
    versions = [v.version for v in repo.models[demo.MODEL].doc.spec.versions]
    assert versions == ["1.0.0", "1.1.0", "1.2.0"]
    assert "replaces the finished meter-digits-1-1" in message
    for name, data in demo.bad_model_files().items():  # the declared digests are the shipped bytes
        variant = next(v for v in repo.models[demo.MODEL].doc.spec.versions[2].variants if v.name == name)
        assert variant.sha256 == hashlib.sha256(data).hexdigest()
        assert (fleet / variant.source).read_bytes() == data


def test_canary_takes_the_first_device_of_each_class():
    inventory = [("sim-0003", "b"), ("sim-0001", "a"), ("sim-0002", "b"), ("sim-0004", "a")]
    assert demo.canary_devices(inventory) == ["sim-0001", "sim-0002"]


def test_the_example_fleet_itself_is_left_as_it_is(fleet):
    demo.apply_demo_speed(fleet)
    demo.apply_bad_version(fleet)
    from edgefleet.core.resources import example_fleet

    shipped = example_fleet()
    assert not (shipped / "models" / demo.MODEL / demo.BAD_VERSION).exists()
    assert (shipped / "rollouts" / f"{demo.GOOD_ROLLOUT}.yaml").is_file()


def _record(decisions: list[Decision], violations: int = 0) -> SimulationRecord:
    t0 = datetime(2026, 11, 23, 21, tzinfo=timezone.utc)
    return SimulationRecord(
        fleet="f", seed=0, devices=48, duration_s=3600, faults_spec="", mode="in-process", started=t0, wall_s=1,
        ticks=[], decisions=decisions, faults=[], envelopes=[], git_bytes_per_update=0, agent_rss_mb=0, outcome="",
        invariants=[InvariantResult(name="x", description="x", checks=5, violations=violations)])


@pytest.mark.parametrize("decisions,violations,ok", [
    ([("meter-digits-1-1", 2, "complete"), ("meter-digits-1-2", 0, "rollback")], 0, True),
    ([("meter-digits-1-1", 2, "complete"), ("meter-digits-1-2", 0, "rollback")], 1, False),
    ([("meter-digits-1-1", 2, "complete"), ("meter-digits-1-2", 1, "rollback")], 0, False),
    ([("meter-digits-1-1", 2, "complete")], 0, False),
    ([("meter-digits-1-2", 0, "rollback")], 0, False),
], ids=["caught-in-wave-0", "invariant-broke", "caught-too-late", "never-rolled-back", "good-never-completed"])
def test_the_verdict(decisions, violations, ok):
    t = datetime(2026, 11, 24, tzinfo=timezone.utc)
    record = _record([Decision(sim_time=t + timedelta(minutes=i), rollout=r, wave=w, action=a, reason="r")
                      for i, (r, w, a) in enumerate(decisions)], violations)
    verdict = demo.judge(record)
    assert verdict.ok is ok
    assert len(verdict.lines()) == 3 and (("NOT OK" in " ".join(verdict.lines())) is not ok)


# -- the bad version really is bad, and only where it should be ------------------------------------

def _cpu_latency_ms(model: bytes, runs: int = 30) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"image": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"image": x})
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def test_the_hires_variant_is_much_slower_than_the_student_it_replaces(fleet):
    hires = demo.bad_model_files()["hires"]
    student = (fleet / "models" / demo.MODEL / "1.1.0" / "student.onnx").read_bytes()
    ratio = _cpu_latency_ms(hires) / _cpu_latency_ms(student)
    assert ratio > 1000, ratio  # ~2.3 GMAC against ~0.1 MMAC; measured ~20 000x here (under load)


@pytest.mark.slow
def test_built_for_the_low_power_class_it_passes_the_accuracy_gate_and_misses_the_budget(fleet, tmp_path):
    """The real build of 1.1.0 and 1.2.0 for the slow class: both pass every gate (accuracy
    included), and the build's own latency measurement (this host) x the declared factor puts
    1.2.0 over the class budget and 1.1.0 far under it."""
    from edgefleet.pipeline.build import BuildRequest, build

    demo.apply_demo_speed(fleet)
    demo.apply_bad_version(fleet)
    store = tmp_path / "store"
    only = [f"{demo.MODEL}@{v}:{demo.SLOW_CLASS}" for v in (demo.GOOD_VERSION, demo.BAD_VERSION)]
    outcome = build(BuildRequest(root=fleet, store=str(store), only=only))
    assert outcome.ok, [d.message for d in outcome.diagnostics]
    by_version = {r.need.version: r for r in outcome.results}
    assert by_version["1.2.0"].variant == "hires" and by_version["1.1.0"].variant == "student"
    budget = 15.0  # fleet/hardware/intel-lowpower-detector.yaml latency_budget_ms
    factor = demo.LATENCY_FACTORS[demo.SLOW_CLASS]
    medians = {}
    for version, result in by_version.items():
        record = json.loads((store / "keys" / result.key / "record.json").read_text())  # the local store's layout
        accuracy = record["metrics"]["accuracy"]
        assert accuracy["metric"] == "top1_agreement" and accuracy["value"] >= accuracy["threshold"] == 0.98
        assert record["probe"]["latency_budget_ms"] == budget
        medians[version] = record["metrics"]["latency_ms"]["median"]
    assert medians["1.2.0"] * factor > 1.5 * budget, medians   # the probe fails, with room for noise
    assert medians["1.1.0"] * factor < 0.1 * budget, medians   # the good version passes, by far
    assert medians["1.2.0"] / medians["1.1.0"] > 20, medians


@pytest.mark.parametrize("argv,message", [
    (["--devices", "3"], "--devices 3: the demo needs at least 8"),
    (["--report", "{file}"], "exists and is not a folder"),
], ids=["too-few-devices", "report-is-a-file"])
def test_usage_errors_exit_2_before_anything_runs(argv, message, tmp_path, capsys):
    from edgefleet.cli import main

    pytest.importorskip("plotly", reason="the demo checks for plotly first")
    (tmp_path / "a-file").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "a-file")) for a in argv]
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "x"
