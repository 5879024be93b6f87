"""Staged rollouts end to end on real signed reports: a real fleet git repo, a real signed
desired-state tree on a real branch, device identities enrolled in tmp_path, and reports
made by agent-io's own report code (edgefleet.agent.report.sign_report)."""

from __future__ import annotations

import json
import threading

import git
import pytest

from edgefleet.load.repo import read_repository
from edgefleet.desired.compile import compile_all
from edgefleet.pipeline.promote import run_promote
from edgefleet.pipeline.status import run_status
from edgefleet.rollout.history import read_history
from tests.desired_support import synthetic_artifacts
from tests.rollout_support import T0, hours, make_fleet


def promote(fleet, now, **kw):
    run = run_promote(fleet.root, list(fleet.envelopes), now, desired=fleet.desired, commit=True, **kw)
    assert not [d for d in run.diagnostics if d.is_error], run.diagnostics
    [result] = run.results
    return result


def status_of(fleet):
    repo, _ = read_repository(fleet.root)
    return repo.rollouts["meter-rollout"].doc.status


def wave_members(fleet, index):
    from edgefleet.desired.waves import RolloutWaves

    repo, _ = read_repository(fleet.root)
    doc = repo.rollouts["meter-rollout"].doc
    waves = RolloutWaves.of("meter-rollout", doc.spec, doc.status)
    return [d.doc.id for d in repo.devices if waves.place(d.doc).wave == index]


def versions(fleet):
    repo, _ = read_repository(fleet.root)
    return {d: json.loads(c.data)["workloads"][0]["run"]["version"]
            for d, c in compile_all(repo, synthetic_artifacts(repo)).items()}


@pytest.fixture
def fleet(tmp_path):
    return make_fleet(tmp_path, {"site-a": 4, "site-b": 16})


def test_a_good_version_advances_through_every_wave_respecting_soak(fleet):
    assert promote(fleet, T0).decision.action == "start"
    fleet.compile(T0)
    pilot = wave_members(fleet, 0)
    assert sorted(pilot) == sorted(d for d, s in fleet.sites.items() if s == "site-a")
    for d in pilot:
        fleet.report(d, T0 + hours(0.2))
    early = promote(fleet, T0 + hours(0.5))  # every gate passes but the 1h soak
    assert (early.decision.action, early.decision.reason, early.changed) == ("wait", "Soaking", False)
    assert "soak" in early.decision.message
    now = T0 + hours(1)
    for index in (0, 1, 2):
        result = promote(fleet, now)
        assert result.decision.action == ("complete" if index == 2 else "advance"), result.decision
        assert result.commit is not None
        evidence = result.decision.evidence
        assert evidence.failed == 0 and evidence.on_new_version == evidence.devices > 0
        if index == 2:
            break
        fleet.compile(now)
        for d in wave_members(fleet, index + 1):
            fleet.report(d, now + hours(0.1))
        now += hours(2)
    final = status_of(fleet)
    assert final.phase == "complete" and set(final.wave_started) == {"pilot", "half", "all"}
    assert set(versions(fleet).values()) == {"1.1.0"}
    # The rollout file's git history is the audit log: every decision, with evidence.
    entries, _ = read_history(fleet.root)
    assert [e.decision.action for e in entries] == ["start", "advance", "advance", "complete"]
    assert all(e.decision.evidence.checks for e in entries[1:])
    message = git.Repo(fleet.root).head.commit.message
    assert "min_reporting: pass" in message and "reports: sha256" in message and "p95" in message


def test_promote_again_on_the_same_reports_changes_nothing(fleet):
    promote(fleet, T0)
    fleet.compile(T0)
    for d in wave_members(fleet, 0):
        fleet.report(d, T0 + hours(0.2))
    assert promote(fleet, T0 + hours(2)).decision.action == "advance"
    head = git.Repo(fleet.root).head.commit.hexsha
    text = fleet.rollout_file.read_bytes()
    again = promote(fleet, T0 + hours(2))
    assert again.decision.action == "wait" and not again.changed and again.commit is None
    assert git.Repo(fleet.root).head.commit.hexsha == head and fleet.rollout_file.read_bytes() == text


@pytest.mark.parametrize("policy", ["pause", "rollback"])
def test_a_probe_failure_on_one_hardware_class_pauses_or_rolls_back(fleet, policy, tmp_path):
    if policy != "pause":
        fleet.rollout_file.write_text(fleet.rollout_file.read_text().replace("on_gate_failure: pause",
                                                                             f"on_gate_failure: {policy}"))
        git.Repo(fleet.root).git.commit("-qam", f"policy {policy}")
    promote(fleet, T0)
    fleet.compile(T0)
    for d in wave_members(fleet, 0):
        if fleet.classes[d] == "intel-lowpower-detector":
            fleet.report(d, T0 + hours(0.3), serving="1.0.0", update="ProbeFailed", failed="UpdateFailed")
        else:
            fleet.report(d, T0 + hours(0.3))
    result = promote(fleet, T0 + hours(0.5))
    assert result.decision.action == policy and result.decision.reason == "GateFailed"
    bad = sorted(d for d in wave_members(fleet, 0) if fleet.classes[d] == "intel-lowpower-detector")
    assert result.decision.evidence.failed_devices == bad
    status = status_of(fleet)
    assert status.phase == ("paused" if policy == "pause" else "rolled_back")
    pilot = wave_members(fleet, 0)
    run = versions(fleet)
    if policy == "rollback":
        # The next compile sends every device of the wave its previous version.
        assert {run[d] for d in pilot} == {"1.0.0"}
    else:
        assert {run[d] for d in pilot} == {"1.1.0"}  # paused: nothing moves, a person decides
        assert promote(fleet, T0 + hours(3)).decision.action == "wait"  # stays paused
        report = run_status(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired).rollouts[0]
        assert report.by_class["intel-lowpower-detector"].counts["failed"] == len(bad)
        assert report.by_class["medical-cart-cpu"].counts["failed"] == 0


def test_silent_devices_wait_then_use_their_own_budget_then_pause(tmp_path):
    fleet = make_fleet(tmp_path, {"site-a": 10, "site-b": 4})
    promote(fleet, T0)
    fleet.compile(T0)
    pilot = sorted(wave_members(fleet, 0))
    for d in pilot[:8]:  # 2 of 10 never report
        fleet.report(d, T0 + hours(0.5))
    before = promote(fleet, T0 + hours(2))  # soak over, 8/10 < 0.9 reporting: inconclusive, waits
    assert before.decision.action == "wait" and before.decision.reason == "Inconclusive"
    assert "min_reporting: 8 of 10 devices run 1.1.0, need 9" in before.decision.message
    # After the 6h timeout the 2 silent devices leave the count (within max_offline 0.2): advance.
    after = promote(fleet, T0 + hours(6))
    assert after.decision.action == "advance"
    assert after.decision.evidence.silent == 2 and after.decision.evidence.healthy == 8
    report = run_status(fleet.root, fleet.envelopes, T0 + hours(6), desired=fleet.desired).rollouts[0]
    assert report.waves[0].tally.counts["silent"] == 2


def test_too_many_silent_devices_past_the_timeout_pause(tmp_path):
    fleet = make_fleet(tmp_path, {"site-a": 10, "site-b": 4})
    promote(fleet, T0)
    fleet.compile(T0)
    for d in sorted(wave_members(fleet, 0))[:7]:  # 3 of 10 silent > max_offline 0.2
        fleet.report(d, T0 + hours(0.5))
    result = promote(fleet, T0 + hours(7))
    assert (result.decision.action, result.decision.reason) == ("pause", "TooManySilent")
    assert status_of(fleet).phase == "paused"


def test_no_reports_at_all_is_inconclusive_never_success(fleet):
    promote(fleet, T0)
    fleet.compile(T0)
    result = promote(fleet, T0 + hours(3))  # soak long over, nobody reported
    assert (result.decision.action, result.decision.reason) == ("wait", "Inconclusive")
    checks = {c.gate: c for c in result.decision.evidence.checks}
    assert checks["max_failure_rate"].result == "inconclusive" and checks["max_failure_rate"].observed is None
    assert checks["max_latency_p95_ms"].result == "inconclusive"
    assert status_of(fleet).current_wave == 0


def test_forged_replayed_unenrolled_and_other_device_reports_are_refused_and_listed(fleet, tmp_path):
    from edgefleet.agent.identity import enroll

    promote(fleet, T0)
    fleet.compile(T0)
    a, b, c, d = sorted(wave_members(fleet, 0))
    fleet.report(a, T0 + hours(0.2))
    replay = fleet.envelopes[-1]
    fleet.envelopes.append(replay)  # the same report again: counter does not go up
    stranger = enroll(tmp_path / "stranger", b)  # same id, a key the inventory does not have
    fleet.report(b, T0 + hours(0.2), identity=stranger)  # forged
    outsider = enroll(tmp_path / "outsider", "dev-9999")
    fleet.report("dev-9999", T0 + hours(0.2), identity=outsider, generation=("ab" * 32, 1))  # unenrolled
    fleet.report(c, T0 + hours(0.2), as_device=d)  # c's report pushed as d's
    fleet.report(d, T0 + hours(0.2), generation=("cd" * 32, 99))  # a generation d was never given
    result = run_status(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired)
    codes = sorted((r.device, r.code) for r in result.verified.rejected)
    assert codes == sorted([(a, "E665"), (b, "E663"), ("dev-9999", "E702"), (d, "E664"), (d, "E703")])
    assert result.verified.accepted == 1
    tally = result.rollouts[0].waves[0].tally
    assert tally.counts["healthy"] == 1 and tally.counts["silent"] == 3  # refused reports are never used


def test_two_promotes_racing_on_the_branch_advance_the_wave_once(fleet):
    promote(fleet, T0)
    fleet.compile(T0)
    for d in wave_members(fleet, 0):
        fleet.report(d, T0 + hours(0.2))
    now = T0 + hours(2)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def one():
        try:
            results.append(run_promote(fleet.root, list(fleet.envelopes), now, desired=fleet.desired,
                                       commit=True, before_swap=lambda: barrier.wait(timeout=30)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    outcomes = sorted((r.results[0].decision.action, r.results[0].changed, r.results[0].attempts) for r in results)
    # Both decided "advance" on the same tip; one swap won, the other re-read and decided again.
    assert outcomes == [("advance", True, 1), ("wait", False, 2)]
    assert status_of(fleet).current_wave == 1
    entries, _ = read_history(fleet.root)
    assert [e.decision.action for e in entries] == ["start", "advance"]


def test_a_person_pauses_resumes_and_aborts_with_a_reason(fleet):
    promote(fleet, T0)
    paused = run_promote(fleet.root, None, T0 + hours(1), action="pause", reason="line 3 maintenance", commit=True)
    assert paused.results[0].decision.by == "person" and status_of(fleet).phase == "paused"
    again = run_promote(fleet.root, None, T0 + hours(1), action="pause", commit=True)
    assert [d.code for d in again.diagnostics if d.is_error] == ["E707"]
    run_promote(fleet.root, None, T0 + hours(2), action="resume", reason="done", commit=True)
    assert status_of(fleet).phase == "progressing"
    run_promote(fleet.root, None, T0 + hours(3), action="abort", reason="customer asked", commit=True)
    assert status_of(fleet).phase == "rolled_back"
    assert set(versions(fleet).values()) == {"1.0.0"}
    entries, _ = read_history(fleet.root)
    assert [(e.decision.action, e.decision.by) for e in entries] == [
        ("start", "promote"), ("pause", "person"), ("resume", "person"), ("abort", "person")]
    assert "customer asked" in entries[-1].decision.message


def test_status_and_promote_on_the_command_line(fleet, run_cli):
    promote(fleet, T0)
    fleet.compile(T0)
    for d in wave_members(fleet, 0):
        fleet.report(d, T0 + hours(0.2))
    from edgefleet.agent.status_remote import push_reports

    reports = fleet.root.parent / "status.git"  # a real git status remote, as devices push to it
    git.Repo.init(reports, bare=True)
    for device in sorted({d for d, _ in fleet.envelopes}):
        push_reports(str(reports), device, [e for d, e in fleet.envelopes if d == device])
    res = run_cli("status", str(fleet.root), "--reports", str(reports), "--desired", str(fleet.desired),
                  "--now", "2026-12-01T10:00:00Z", "--format", "json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["reports"]["accepted"] == 4 and data["rollouts"][0]["waves"][0]["gates"]["verdict"] == "pass"
    out = fleet.root.parent / "status.md"
    res = run_cli("status", str(fleet.root), "--reports", str(reports), "--desired", str(fleet.desired),
                  "--now", "2026-12-01T10:00:00Z", "--format", "markdown", "--out", str(out))
    assert res.code == 0 and out.read_text().startswith("<!-- edgefleet-status -->")
    assert "| waves |" in out.read_text() and "**gates of wave pilot**: pass" in out.read_text()
    res = run_cli("promote", str(fleet.root), "--reports", str(reports), "--desired", str(fleet.desired),
                  "--now", "2026-12-01T10:00:00Z", "--commit")
    assert res.code == 0 and "advance" in res.out, res.err
    res = run_cli("status", str(fleet.root), "--history")
    assert res.code == 0 and "advance" in res.out and "start" in res.out


def test_a_passed_wave_that_starts_failing_later_still_stops_the_rollout(fleet):
    promote(fleet, T0)
    fleet.compile(T0)
    pilot = sorted(wave_members(fleet, 0))
    for d in pilot:
        fleet.report(d, T0 + hours(0.2))
    assert promote(fleet, T0 + hours(2)).decision.action == "advance"
    fleet.report(pilot[0], T0 + hours(3), update="RolledBack", serving="1.0.0", failed="RolledBack")
    result = promote(fleet, T0 + hours(3.5))
    assert (result.decision.action, result.decision.wave) == ("pause", 1)
    assert "max_failure_rate[pilot]" in result.decision.message


def test_verification_in_worker_processes_gives_the_same_result(fleet, tmp_path, monkeypatch):
    import edgefleet.pipeline.status as status_module
    from edgefleet.agent.identity import enroll

    promote(fleet, T0)
    fleet.compile(T0)
    for d in wave_members(fleet, 0) + wave_members(fleet, 1):
        fleet.report(d, T0 + hours(0.2))
        fleet.report(d, T0 + hours(0.4), update="ProbeFailed", failed="UpdateFailed")
    fleet.envelopes.append(fleet.envelopes[0])  # a replay
    fleet.report("dev-9999", T0, identity=enroll(tmp_path / "x", "dev-9999"), generation=("ab" * 32, 1))
    one = run_status(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired)
    monkeypatch.setattr(status_module, "PARALLEL_FROM", 0)
    two = run_status(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired, jobs=2)
    assert one.verified.latest == two.verified.latest and one.verified.rejected == two.verified.rejected
    assert one.verified.accepted == two.verified.accepted > 0 and len(one.verified.rejected) == 2


def test_a_report_of_an_older_generation_after_a_newer_one_is_refused(fleet):
    old = fleet.generation()
    promote(fleet, T0)
    fleet.compile(T0)
    device = sorted(wave_members(fleet, 0))[0]
    new = fleet.generation()[device]
    assert new[1] > old[device][1]
    fleet.report(device, T0 + hours(0.2), generation=new)
    fleet.report(device, T0 + hours(0.3), generation=old[device], serving="1.0.0")  # given once, but older
    result = run_status(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired)
    assert [(r.device, r.code) for r in result.verified.rejected] == [(device, "E710")]
    assert result.rollouts[0].waves[0].tally.counts["healthy"] == 1


ODD_ROLLOUT = """\
# yaml-language-server: $schema=../../schemas/rollout.schema.json
apiVersion:   edgefleet/v1     # aligned comment
kind: Rollout
metadata: {name: meter-rollout}
spec:
    model: meter-digits        # four-space indent
    from_version: '1.0.0'
    to_version: "1.1.0"
    waves:
    -   name: pilot            # sequence not indented
        selector: { sites: [ site-a ] }
        gates: {min_reporting: 0.9,   soak: 1h, max_failure_rate: 0.0}
    - {name: all, percent: 100}
    rollback:
        on_gate_failure: POLICY   # the policy
# promote writes below this line
status: {}
# and this comment stays where it is
"""


def test_promote_changes_only_the_status_lines_of_a_hand_formatted_file(tmp_path):
    fleet = make_fleet(tmp_path, {"site-a": 3, "site-b": 3}, rollout=ODD_ROLLOUT)
    original = fleet.rollout_file.read_text()
    head, tail = original.split("status: {}\n")
    assert promote(fleet, T0).decision.action == "start"
    fleet.compile(T0)
    for d in wave_members(fleet, 0):
        fleet.report(d, T0 + hours(0.2))
    assert promote(fleet, T0 + hours(2)).decision.action == "advance"
    text = fleet.rollout_file.read_text()
    assert text.startswith(head + "status:\n") and text.endswith("\n" + tail)
    assert status_of(fleet).current_wave == 1
    # The committed file is the work-tree file: the checkout shows clean.
    assert not git.Repo(fleet.root).is_dirty()
