"""The agent's pure core and small edges: state-machine transitions, journal replay after a
crash in each state, the loop guard, backoff bounds, atomic slot switching, artifact caps."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgefleet.agent import artifacts, machine, slots
from edgefleet.agent.daemon import backoff_delay
from edgefleet.agent.errors import AgentError
from edgefleet.agent.journal import STEPS, Generation, Journal, load, save

GEN = Generation(target_sha256="ab" * 32, release_counter=7)


def installing(active="a") -> Journal:
    j = machine.enter(machine.enter(Journal(committed=active, last_counter=3), "fetch"), "verify")
    return machine.begin_install(j, model="m", version="1.1.0", variant="full", digest="cd" * 32, size=10,
                                 generation=GEN, active=active)


def test_the_steps_run_in_order_and_nothing_else():
    j = installing()
    assert j.step == "download" and j.install.slot == "b" and j.install.previous_slot == "a"
    for step in ("stage", "probe", "switch", "confirm", "commit"):
        j = machine.enter(j, step)
    done = machine.commit(j)
    assert (done.step, done.committed, done.last_counter, done.install) == ("idle", "b", 7, None)
    with pytest.raises(ValueError):
        machine.enter(installing(), "switch")  # download -> switch skips stage and probe


def test_loop_guard_stops_an_update_that_saves_too_often():
    j = installing()
    with pytest.raises(AgentError) as exc:
        for _ in range(machine.MAX_SAVES + 1):
            j = j.model_copy(update={"step": "download"})
            j = machine.enter(j, "stage")
    assert exc.value.code == "E614"


@pytest.mark.parametrize("step,action,restore", [
    ("download", "restart", None), ("stage", "restart", None), ("probe", "restart", None),
    ("switch", "rollback", "a"), ("confirm", "rollback", "a"), ("commit", "finish_commit", None),
])
def test_recovery_after_a_kill_in_each_state(step, action, restore):
    j = installing()
    for s in STEPS[STEPS.index("stage"):STEPS.index(step) + 1]:
        j = machine.enter(j, s)
    rec = machine.recover(j)
    assert rec.action == action and rec.restore_slot == restore
    if action != "finish_commit":
        assert rec.journal.step == "idle" and rec.journal.install is None
        assert rec.journal.committed == "a" and rec.journal.attempts[j.install.digest] == 1
        assert j.install.digest not in rec.journal.failed  # tried again, up to MAX_ATTEMPTS


def test_a_build_interrupted_max_attempts_times_is_given_up():
    j = installing()
    for _ in range(machine.MAX_ATTEMPTS):
        j = machine.enter(machine.enter(machine.enter(j, "stage"), "probe"), "switch")
        rec = machine.recover(j)
        j = rec.journal
        if j.install is None and j.failed:
            break
        j = installing().model_copy(update={"attempts": j.attempts})
    assert "cd" * 32 in j.failed


def test_journal_round_trip_and_damage_is_e613(tmp_path):
    path = tmp_path / "journal.json"
    save(path, installing())
    assert load(path) == installing()
    path.write_text('{"step": "nonsense"}')
    with pytest.raises(AgentError) as exc:
        load(path)
    assert exc.value.code == "E613"


def test_backoff_is_exponential_bounded_and_jittered():
    assert backoff_delay(0, 300) == 300
    lows = [backoff_delay(n, 300, 5, rand=lambda: 0.0) for n in range(1, 12)]
    highs = [backoff_delay(n, 300, 5, rand=lambda: 0.999999) for n in range(1, 12)]
    assert lows[:4] == [2.5, 5.0, 10.0, 20.0] and max(highs) < 300 and max(lows) == 150.0


def test_the_active_link_is_replaced_by_rename_never_missing(tmp_path):
    (tmp_path / "slots" / "a").mkdir(parents=True)
    (tmp_path / "slots" / "b").mkdir()
    slots.activate(tmp_path, "a")
    inode_before = os.lstat(tmp_path / "current").st_ino
    slots.activate(tmp_path, "b")
    assert os.readlink(tmp_path / "current") == "slots/b" and slots.active_slot(tmp_path) == "b"
    assert os.lstat(tmp_path / "current").st_ino != inode_before  # a new link renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "slots"]
    with pytest.raises(ValueError):
        slots.clear(tmp_path, "b")  # the active slot is never written


def _store(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    digest = hashlib.sha256(data).hexdigest()
    blob = tmp_path / "store" / "blobs" / "sha256" / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    return tmp_path / "store", digest


def test_declared_size_is_a_hard_cap_and_digest_is_checked(tmp_path):
    store, digest = _store(tmp_path, b"x" * 1000)
    with pytest.raises(AgentError) as exc:
        artifacts.fetch_blob(str(store), digest, 999, tmp_path / "cache", margin=0)
    assert exc.value.code == "E606" and not (tmp_path / "cache" / f"{digest}.part").exists()
    ok = artifacts.fetch_blob(str(store), digest, 1000, tmp_path / "cache", margin=0)
    assert ok.read_bytes() == b"x" * 1000
    # the store's bytes changed under the same name: refused before use
    (store / "blobs" / "sha256" / digest).write_bytes(b"y" * 1000)
    ok.unlink()
    with pytest.raises(AgentError) as exc:
        artifacts.fetch_blob(str(store), digest, 1000, tmp_path / "cache", margin=0)
    assert exc.value.code == "E605"


def test_free_space_is_checked_first(tmp_path):
    store, digest = _store(tmp_path, b"z" * 10)
    with pytest.raises(AgentError) as exc:
        artifacts.fetch_blob(str(store), digest, 10, tmp_path / "cache", margin=1 << 60)
    assert exc.value.code == "E607" and not any((tmp_path / "cache").iterdir())


def test_a_failed_build_is_not_retried_for_the_same_state_but_for_a_new_one():
    j = machine.fail(installing(), "probe output differs")
    digest = "cd" * 32
    assert machine.given_up(j, digest, GEN) == "probe output differs"
    newer = Generation(target_sha256="ef" * 32, release_counter=8)
    assert machine.given_up(j, digest, newer) is None
    retried = machine.retry(j, digest)
    assert digest not in retried.failed and digest not in retried.failed_in


def test_confirm_counts_application_traffic_and_fails_on_any_error():
    import numpy as np

    from edgefleet.agent.probe import confirm
    from edgefleet.agent.registry import Registry
    from edgefleet.agent.runner import Runner

    calls = []
    runner = Runner(name="m", version="1", variant="v", digest="d", slot="a", platform="p", device="CPU", load_ms=0,
                    _run=lambda inputs: calls.append(1) or {"y": np.zeros(1)}, inputs=[{"name": "x"}])
    reg = Registry()
    reg.set(runner)
    for _ in range(4):  # an application's requests through the serving path
        reg.models()["m"].infer({"x": np.zeros(1)})
    confirm(reg.infer, runner, np.zeros(1), inferences=5, soak_s=0.0, served=lambda: reg.served,
            failures=lambda: reg.failures)
    assert len(calls) == 5  # the agent added only the one that was missing
    runner._run = lambda inputs: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(AgentError) as exc:
        confirm(reg.infer, runner, np.zeros(1), inferences=10, soak_s=0.0, served=lambda: reg.served,
                failures=lambda: reg.failures)
    assert exc.value.code == "E611"
