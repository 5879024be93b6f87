"""`edgefleet status` / `promote` on the command line: bad input gets a code and exit 1 or 2,
and two real `promote --commit` processes racing on one branch advance a wave once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import git
import pytest

from edgefleet.pipeline.promote import run_promote
from edgefleet.rollout.history import read_history
from tests.rollout_support import T0, hours, make_fleet


@pytest.fixture
def fleet(tmp_path):
    return make_fleet(tmp_path, {"site-a": 3, "site-b": 3})


def test_status_needs_reports_usage_error(fleet, run_cli):
    res = run_cli("status", str(fleet.root))
    assert res.code == 2 and "--reports" in res.err


def test_unreadable_reports_are_e704_and_a_missing_desired_branch_e705(fleet, run_cli, tmp_path):
    res = run_cli("status", str(fleet.root), "--reports", str(tmp_path / "nowhere.git"), "--desired", str(fleet.desired))
    assert res.code == 1 and "error[E704]" in res.err, res.err
    empty = tmp_path / "empty"
    git.Repo.init(empty)
    res = run_cli("status", str(fleet.root), "--reports", f"dir:{tmp_path}", "--desired", str(empty))
    assert res.code == 1 and "error[E705]" in res.err and "= hint:" in res.err, res.err


def test_unknown_rollout_is_e706(fleet, run_cli, tmp_path):
    res = run_cli("status", str(fleet.root), "--reports", f"dir:{tmp_path}", "--desired", str(fleet.desired),
                  "--rollout", "nope")
    assert res.code == 1 and "error[E706]" in res.err and "meter-rollout" in res.err


def test_a_person_action_the_phase_does_not_allow_is_e707(fleet, run_cli):
    res = run_cli("promote", str(fleet.root), "--resume", "--reason", "x")
    assert res.code == 1 and "error[E707]" in res.err and "pending" in res.err
    assert "status:" not in fleet.rollout_file.read_text()  # nothing written


def test_a_person_action_takes_no_reports(fleet, run_cli, tmp_path):
    res = run_cli("promote", str(fleet.root), "--pause", "--reports", str(tmp_path))
    assert res.code == 2


def test_commit_outside_git_is_e708(tmp_path, run_cli):
    fleet = make_fleet(tmp_path, {"site-a": 2})
    import shutil

    shutil.rmtree(fleet.root / ".git")
    res = run_cli("promote", str(fleet.root), "--pause", "--commit")
    assert res.code == 1 and "error[E708]" in res.err


def test_two_promote_processes_racing_advance_the_wave_once(fleet, tmp_path):
    from edgefleet.agent.status_remote import push_reports

    run_promote(fleet.root, [], T0, desired=fleet.desired, commit=True)
    fleet.compile(T0)
    for d, s in fleet.sites.items():
        if s == "site-a":
            fleet.report(d, T0 + hours(0.2))
    remote = f"dir:{tmp_path / 'reports'}"
    for device in sorted({d for d, _ in fleet.envelopes}):
        push_reports(remote, device, [e for d, e in fleet.envelopes if d == device])
    cmd = [sys.executable, "-m", "edgefleet", "promote", str(fleet.root), "--reports", remote,
           "--desired", str(fleet.desired), "--now", "2026-12-01T10:00:00Z", "--commit", "--format", "json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1000:] for o in outputs]
    decisions = sorted(json.loads(out)["promote"][0]["decision"]["action"] for out, _ in outputs)
    # Whichever read the tip first won; the other saw the new tip (before or after losing the swap).
    assert decisions == ["advance", "wait"]
    entries, _ = read_history(fleet.root)
    assert [e.decision.action for e in entries] == ["start", "advance"]
