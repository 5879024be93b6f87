"""`edgefleet simulate`: the fault grammar, the invariant checkers (each one can fail), the
command's input errors, and one end-to-end run with every fault kind on real agents, a real
git daemon, real HTTP servers and the real compile -> status -> promote loop."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgefleet.simulate import invariants as inv
from edgefleet.simulate.errors import SimulationError
from edgefleet.simulate.faults import parse_duration, parse_faults, schedule
from edgefleet.simulate.record import FAULT_KINDS
from tests.conftest import EXAMPLE_FLEET

T = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


# -- the fault grammar -------------------------------------------------------------------------------
def test_parse_faults_reads_every_parameter():
    specs = parse_faults("remote_unreachable:site=plant-brno,for=30m;agent_killed:rate=0.02;"
                         "clock_skew:at=1h,at=3h,by=-2h;accelerator_failure:class=jetson-vision-standard")
    assert [s.kind for s in specs] == ["remote_unreachable", "agent_killed", "clock_skew", "accelerator_failure"]
    assert specs[0].scope == "site" and specs[0].site == "plant-brno" and specs[0].duration_s == 1800
    assert specs[1].rate == 0.02
    assert specs[2].at == (3600.0, 10800.0) and specs[2].by_s == -7200.0
    assert specs[3].hardware_class == "jetson-vision-standard"


def test_all_is_every_kind_and_empty_is_none():
    kinds = [s.kind for s in parse_faults("all")]
    assert set(kinds) == set(FAULT_KINDS) and kinds.count("remote_unreachable") == 2
    assert parse_faults("") == [] and parse_faults("none") == []


@pytest.mark.parametrize("spec, words", [
    ("meteor_strike", "unknown fault kind 'meteor_strike'"),
    ("agent_killed:rate=2", "not a probability"),
    ("agent_killed:rate=x", "not a probability"),
    ("disk_full:for=10 minutes", "not a duration"),
    ("disk_full:size=3", "not NAME=VALUE with a known name"),
    ("clock_skew:at=-1h", "not a duration"),
    ("remote_unreachable:scope=planet", "scope=planet"),
])
def test_bad_fault_specs_are_refused_clearly(spec, words):
    with pytest.raises(SimulationError) as caught:
        parse_faults(spec)
    assert caught.value.code == "E801" and words in caught.value.message and caught.value.hint


def test_schedule_places_unscheduled_faults_in_the_first_half():
    import random

    occ = schedule(parse_faults("all"), 7200, 300, random.Random(3))
    assert len(occ) == len(FAULT_KINDS) + 1
    assert all(600 <= o.start_s <= 3600 for o in occ)
    assert parse_duration("+2d", "x", signed=True) == 172800


# -- the invariant checkers fail on violating histories -----------------------------------------------
def snap(**kw):
    base = dict(device="d1", at=T, running=True, installed_once=True, active_digest="a" * 64,
                serving_digest="a" * 64, allowed=frozenset({"a" * 64}))
    base.update(kw)
    return inv.DeviceSnapshot(**base)


def test_serving_checker_catches_a_device_serving_nothing():
    assert inv.check_serving(snap()) is None
    assert "nothing serves" in inv.check_serving(snap(serving_digest=None))
    assert "no active slot" in inv.check_serving(snap(active_digest=None))
    assert inv.check_serving(snap(active_digest=None, installed_once=False)) is None  # before the first install
    assert inv.check_serving(snap(serving_digest=None, running=False)) is None       # down: checked after restart


def test_allowed_checker_catches_a_version_never_given():
    assert inv.check_allowed(snap()) is None
    assert "never in its desired state" in inv.check_allowed(snap(active_digest="b" * 64, serving_digest="b" * 64))


def test_gate_checker_catches_an_advance_past_a_failing_or_inconclusive_gate():
    ok = [("min_reporting", "pass"), ("max_failure_rate", "pass")]
    assert inv.check_gate_decision("r", "advance", 1, ok, "t") is None
    assert inv.check_gate_decision("r", "wait", 0, [("soak", "inconclusive")], "t") is None
    assert "max_failure_rate=fail" in inv.check_gate_decision("r", "advance", 1, [("max_failure_rate", "fail")], "t")
    assert "soak=inconclusive" in inv.check_gate_decision("r", "complete", 2, [("soak", "inconclusive")], "t")
    assert "without evidence" in inv.check_gate_decision("r", "advance", 1, None, "t")


def test_delivery_and_forgery_checkers():
    assert inv.check_delivered("d1", 0) is None and "3 report(s)" in inv.check_delivered("d1", 3)
    forged = inv.Forged("d1", 1_000_007, "f" * 64, "wrong-key")
    assert inv.check_forged(forged, {"d1": 1}, {("d1", 7)}, {"d1": 7}) is None
    assert "used in a decision" in inv.check_forged(forged, {"d1": 1}, {("d1", 1_000_007)}, {"d1": 7})
    assert "accepted" in inv.check_forged(forged, {"d1": 1}, set(), {"d1": 1_000_007})
    assert "not refused" in inv.check_forged(forged, {}, set(), {"d1": 7})


def test_book_counts_checks_and_violations():
    book = inv.Book()
    book.check("gates_respected", None)
    book.check("gates_respected", "r at t: advance past x")
    result = {r.name: r for r in book.results()}["gates_respected"]
    assert (result.checks, result.violations, result.holds) == (2, 1, False)
    assert result.examples == ["r at t: advance past x"]


# -- the command's input errors -------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--devices", "0", "--duration", "1h"], "--devices 0"),
    (["--devices", "3", "--duration", "soon"], "not a duration"),
    (["--devices", "3", "--duration", "1h", "--faults", "meteor"], "unknown fault kind"),
    (["--devices", "3", "--duration", "1h", "--latency-factor", "fast"], "CLASS=F"),
])
def test_simulate_usage_errors_exit_2(run_cli, args, words):
    result = run_cli("simulate", str(EXAMPLE_FLEET), *args)
    assert result.code == 2 and words in result.err


def test_simulate_refuses_a_folder_that_is_not_a_fleet(run_cli, tmp_path):
    result = run_cli("simulate", str(tmp_path), "--devices", "2", "--duration", "1h")
    assert result.code == 1 and "error[E802]" in result.err and "no fleet.yaml" in result.err


# -- end to end: every fault kind ---------------------------------------------------------------------
def _fast_rollout(fleet: Path) -> str:
    """30% of the devices in the first wave, no spread and no maintenance window, short soaks."""
    path = fleet / "rollouts" / "meter-digits-1-1.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^  spread: .*\n", "", text)
    text = re.sub(r"(?m)^  maintenance:.*\n(?:    .*\n)+", "", text)
    text = re.sub(r"percent: 10\n", "percent: 30\n", text).replace("soak: 2h", "soak: 10m")
    path.write_text(text)
    return "rollout: first wave 30%, no spread, soak 10m"


# Every kind; the store faults at 20m, when the rollout starts and the first wave downloads.
EVERY_FAULT = ("remote_unreachable:at=30m;remote_unreachable:scope=site,at=40m;agent_killed;disk_full:at=50m;"
               "slow_download:at=20m;truncated_download:at=20m;corrupted_artifact:at=20m,for=20m;"
               "accelerator_failure;clock_skew;forged_report:at=30m;forged_report:at=60m")


@pytest.mark.slow
def test_simulation_with_every_fault_kind_keeps_every_invariant(tmp_path_factory, tmp_path):
    from edgefleet.simulate.engine import ScenarioStep, SimulationConfig, run_simulation
    from tests.desired_support import built_store

    store = built_store(tmp_path_factory)
    ticks = []
    record = run_simulation(SimulationConfig(
        repo=EXAMPLE_FLEET, devices=8, duration_s=5400, faults=EVERY_FAULT, seed=7, tick_s=600, store=store,
        start=T, report_dir=tmp_path / "report", scenario=[ScenarioStep("fast", None, _fast_rollout)]),
        observer=ticks.append)
    assert len(ticks) == 9 and ticks == record.ticks
    assert (tmp_path / "report" / "record.json").is_file()
    failed = [(i.name, i.examples) for i in record.invariants if not i.holds]
    assert not failed, failed
    checks = {i.name: i.checks for i in record.invariants}
    assert checks["always_serving_verified"] >= 8 * 9 and checks["reports_delivered"] == 8
    assert checks["gates_respected"] >= 1 and checks["forged_never_used"] >= 1
    injected = {f.kind: f.injected for f in record.faults}
    assert all(injected.get(k, 0) >= 1 for k in FAULT_KINDS), [(f.kind, f.injected, f.description)
                                                               for f in record.faults]
    forged = next(f for f in record.faults if f.kind == "forged_report")
    assert re.search(r"refused by the status remote's hook: [1-9]", forged.outcome), forged.outcome
    assert re.search(r"rejected by status: [1-9]", forged.outcome), forged.outcome
    assert max(t.devices["offline"] for t in record.ticks) >= 1      # remote unreachable was seen
    assert max(t.devices["degraded"] for t in record.ticks) >= 1     # accelerator failure was seen
    assert any(d.action == "start" for d in record.decisions)
    assert all(e.label.startswith("simulated") for e in record.envelopes)
    assert record.git_bytes_per_update > 0 and record.agent_rss_mb > 0


def test_a_status_with_a_no_data_gate_reads_back():
    """Found by the simulator: promote drops `observed: null` when it writes a decision's
    evidence, so the written rollout file must still validate (observed defaults to null)."""
    from edgefleet.pipeline.promote import _parse_rollout
    from edgefleet.rollout.document import replace_status
    from edgefleet.spec.rollout import Decision, Evidence, GateCheck, RolloutStatus

    evidence = Evidence(wave="canary", devices=1, reported=0, on_new_version=0, healthy=0, failed=0, rolled_back=0,
                        degraded=0, frozen=0, silent=1, checks=[GateCheck(gate="max_latency_p95_ms",
                                                                         result="inconclusive", observed=None,
                                                                         threshold=20)])
    status = RolloutStatus(phase="paused", current_wave=0, since="2026-12-01T08:00:00Z",
                           last_decision=Decision(action="pause", wave=0, at="2026-12-01T09:00:00Z",
                                                  reason="Timeout", message="m", evidence=evidence))
    text = replace_status((EXAMPLE_FLEET / "rollouts" / "meter-digits-1-1.yaml").read_text(), status)
    rollout, diags = _parse_rollout(text, "rollouts/meter-digits-1-1.yaml")
    assert rollout is not None, diags
    assert rollout.status.last_decision.evidence.checks[0].observed is None
