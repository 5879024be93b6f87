"""The rollout document: spec.state refused (E701), status written round-trip, activation windows."""

from __future__ import annotations

import difflib
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from edgefleet.desired.activation import (Activation, activation_allowed, activation_for, next_activation,
                                          spread_offset)
from edgefleet.desired.compile import compile_all
from edgefleet.load.repo import read_repository
from edgefleet.pipeline.validate import validate_repository
from edgefleet.rollout.document import replace_status
from edgefleet.spec.rollout import Decision, RolloutStatus
from tests.desired_support import synthetic_artifacts

UTC = timezone.utc

ODD = """\
# yaml-language-server: $schema=../../schemas/rollout.schema.json
#   A rollout written by hand, with comments everywhere and odd formatting.
apiVersion:   edgefleet/v1     # aligned comment
kind: Rollout
metadata: {name: meter-digits-1-1}
spec:
    model: meter-digits        # four-space indent
    from_version: '1.0.0'
    to_version: "1.1.0"
    selector: {   }
    waves:
    -   name: canary           # sequence not indented
        percent: 10
        gates: {min_reporting: 0.9,   soak: 2h}
    - {name: all, percent: 100}
    rollback:
        on_gate_failure: rollback
# the status below is promote's
status:
  phase: progressing
  current_wave: 0
  since: "2026-11-20T08:00:00Z"

# trailing comment about nothing
"""


def test_promote_writes_only_the_status_lines(fleet_copy):
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    path.write_text(ODD, encoding="utf-8")
    decision = Decision(action="advance", wave=1, at="2026-11-20T10:00:00Z", reason="GatesPassed", message="ok")
    new = replace_status(ODD, RolloutStatus(phase="progressing", current_wave=1, since="2026-11-20T10:00:00Z",
                                            wave_started={"canary": "2026-11-20T08:00:00Z",
                                                          "all": "2026-11-20T10:00:00Z"},
                                            last_decision=decision))
    old_lines, new_lines = ODD.splitlines(), new.splitlines()
    start = old_lines.index("status:")
    changed = [line for line in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed, "the status changed"
    # Every line before `status:` and the trailing comment are byte for byte the same.
    assert new_lines[:start + 1] == old_lines[:start + 1]
    assert new.endswith("\n# trailing comment about nothing\n")
    assert "\n\n# trailing comment about nothing" in new
    # And the result is still a valid rollout with the new status.
    path.write_text(new, encoding="utf-8")
    repo, diags = read_repository(fleet_copy)
    assert not [d for d in diags if d.is_error], diags
    status = repo.rollouts["meter-digits-1-1"].doc.status
    assert status.current_wave == 1 and status.last_decision.reason == "GatesPassed"
    # Writing the same status again changes nothing.
    assert replace_status(new, status) == new


def test_a_file_without_status_gets_one_appended():
    text = ODD.split("# the status below")[0]
    new = replace_status(text, RolloutStatus(phase="progressing", current_wave=0))
    assert new.startswith(text) and new[len(text):].startswith("status:\n  phase: progressing\n")


def test_spec_state_is_refused_with_the_status_form(fleet_copy):
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    text = path.read_text(encoding="utf-8").split("status:")[0]
    text = text.replace("  rollback:", "  state:\n    phase: paused\n    current_wave: 1\n  rollback:")
    path.write_text(text, encoding="utf-8")
    _, diags = validate_repository(fleet_copy)
    [d] = [d for d in diags if d.is_error]
    line = text.splitlines().index("  state:") + 1
    assert d.code == "E701" and (d.location.line, d.location.col) == (line, 3)
    assert d.location.path.endswith("rollouts/meter-digits-1-1.yaml")
    assert "status:" in d.hint and "phase: \"paused\"" in d.hint and "current_wave: 1" in d.hint


# -- activation: spread and maintenance windows ------------------------------------------------

def test_spread_activation_times_are_uniform_across_the_window():
    """Kolmogorov-Smirnov bound over 10,000 fixed device ids (deterministic population)."""
    spread = 6 * 3600
    n = 10_000
    offsets = sorted(spread_offset("meter-digits-1-1", f"device-{i:05d}", spread) / spread for i in range(n))
    assert all(0 <= x < 1 for x in offsets)
    ks = max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(offsets))
    assert ks < 1.63 / n ** 0.5, ks  # the 1% critical value of the KS statistic
    # And chi-square over 20 equal bins (19 degrees of freedom: 1% critical value 36.19).
    bins = [0] * 20
    for x in offsets:
        bins[int(x * 20)] += 1
    chi2 = sum((b - n / 20) ** 2 / (n / 20) for b in bins)
    assert chi2 < 36.19, chi2


def test_activation_is_a_pure_function_of_rollout_device_and_wave_start():
    a = activation_for("r", "dev-1", "2026-11-20T08:00:00Z", 1800, [])
    assert a == activation_for("r", "dev-1", "2026-11-20T08:00:00Z", 1800, [])
    assert a != activation_for("r", "dev-2", "2026-11-20T08:00:00Z", 1800, [])
    expected = int.from_bytes(hashlib.sha256(b"activation\0r\0dev-1").digest()[:8], "big") * 1800 >> 64
    start = datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert a.not_before == (start + timedelta(seconds=expected)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert activation_for("r", "dev-1", "2026-11-20T08:00:00Z", 0, []) is None


@pytest.mark.parametrize(("now", "allowed"), [
    ("2026-11-23T01:30:00+00:00", False),  # Monday 02:30 in Berlin: in the window, but before not_before
    ("2026-11-24T01:30:00+00:00", True),   # Tuesday 02:30 Berlin
    ("2026-11-24T03:30:00+00:00", False),  # Tuesday 04:30 Berlin: after the window
    ("2026-11-28T01:30:00+00:00", False),  # Saturday: not a window day
], ids=["before-not-before", "inside", "after-window", "weekend"])
def test_activation_allowed_in_a_window_in_its_time_zone(now, allowed):
    act = Activation(not_before="2026-11-23T12:00:00Z",
                     windows=[{"start": "02:00", "end": "04:00", "timezone": "Europe/Berlin",
                               "days": ["mon", "tue", "wed", "thu", "fri"]}])
    assert activation_allowed(act, datetime.fromisoformat(now)) is allowed


def test_next_activation_finds_the_next_opening_across_midnight_and_weekends():
    night = Activation(windows=[{"start": "23:00", "end": "01:00", "timezone": "America/New_York", "days": ["fri"]}])
    friday_noon = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)  # Friday 12:00 in New York
    opening = next_activation(night, friday_noon)
    assert opening == datetime(2026, 11, 28, 4, 0, tzinfo=UTC)  # Friday 23:00 EST
    assert activation_allowed(night, opening + timedelta(minutes=90))  # Saturday 00:30: still Friday's window
    assert not activation_allowed(night, opening + timedelta(minutes=121))
    assert next_activation(None, friday_noon) == friday_noon


def test_compile_writes_activation_and_a_later_promote_leaves_bytes_alone(fleet_copy):
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    repo, _ = read_repository(fleet_copy)
    before = compile_all(repo, synthetic_artifacts(repo))
    brno = [d for d, c in before.items() if c.site == "plant-brno"]
    live = {d for d, c in before.items() if c.assignments[0].live}
    assert live & set(brno) and live - set(brno), "the canary has devices with and without a window"
    for device, compiled in before.items():
        workload = json.loads(compiled.data)["workloads"][0]
        if device not in live:
            assert workload["activation"] is None
            continue
        assert "2026-11-20T08:00:00Z" <= workload["activation"]["not_before"] < "2026-11-20T08:30:00Z"
        assert bool(workload["activation"]["windows"]) == (device in brno)
    # The next wave goes live later: wave-0 devices keep their bytes; only the new wave's change.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("current_wave: 0", "current_wave: 1").replace(
        'since: "2026-11-20T08:00:00Z"', 'since: "2026-11-21T09:00:00Z"').replace(
        '    canary: "2026-11-20T08:00:00Z"', '    canary: "2026-11-20T08:00:00Z"\n    half: "2026-11-21T09:00:00Z"'),
        encoding="utf-8")
    repo, _ = read_repository(fleet_copy)
    after = compile_all(repo, synthetic_artifacts(repo))
    changed = {d for d in before if before[d].data != after[d].data}
    now_live = {d for d, c in after.items() if c.assignments[0].live}
    assert changed == now_live - live and changed
    for device in changed:
        workload = json.loads(after[device].data)["workloads"][0]
        assert workload["activation"]["not_before"] >= "2026-11-21T09:00:00Z"


def test_a_hand_edited_status_without_a_start_time_waits_instead_of_guessing():
    from edgefleet.rollout.decide import decide
    from edgefleet.spec.rollout import RolloutSpec

    spec = RolloutSpec(model="m", to_version="1.0.0", waves=[{"name": "all", "percent": 100}])
    outcome = decide(spec, RolloutStatus(phase="progressing", current_wave=0), None, None,
                     datetime(2026, 12, 1, tzinfo=UTC))
    assert outcome.status is None and outcome.decision.reason == "NoLiveTime"
