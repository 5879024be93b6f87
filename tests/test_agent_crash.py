"""Crash safety: SIGKILL the agent in every named state (Mender's table), and at 50+ random
moments of updates (OSTree's destructive test), then restart and check the invariant:
exactly one slot active, holding a verified artifact that a published desired state
allowed, the journal settled, the probe passing. Disk full (a real 2 MiB tmpfs), a
truncated download and a corrupted cache file end with the old model serving and a report.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edgefleet.agent.journal import STEPS
from edgefleet.signing.keys import init_keys
from tests.agent_support import (V1, V2, DesiredRepo, agent_args, agent_state, check_invariants, cli_in_process,
                                 git_daemon, http_server, run_agent)
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

UNREACHABLE = "git://127.0.0.1:9/nothing"   # port 9 (discard): refused at once


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A desired-state repo served by git daemon, a device serving v1 (template), v2 published."""
    store = built_store(tmp_path_factory)
    base = tmp_path_factory.mktemp("agent-crash")
    keys = base / "keys"
    init_keys(keys)
    desired = DesiredRepo(base / "origin", store, keys, EXAMPLE_FLEET)
    desired.publish(wave=0)
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        template = base / "template"
        res = run_agent(template, remote, desired.root, store)
        assert res.returncode == 0, res.stderr
        desired.publish(wave=1)
        yield {"desired": desired, "remote": remote, "store": store, "template": template, "base": base}


def device_from(template: Path, dest: Path, world=None) -> Path:
    """A copy of the v1-serving device; with `world`, v2 is (again) the published desired state."""
    if world is not None and world["desired"].device_state()["workloads"][0]["run"]["version"] != V2:
        world["desired"].publish(wave=1)  # the random test may have left v1 published
    shutil.copytree(template, dest, symlinks=True)
    return dest


def restart(state: Path, world) -> dict:
    """Start the agent again (journal replay) with the remote out of reach, then check the invariant."""
    res = run_agent(state, UNREACHABLE, world["desired"].root, world["store"])
    assert res.returncode == 1 and "E601" in res.stderr, res.stderr
    return check_invariants(state, world["desired"].allowed_digests())


# Kill in this state -> what serves after the restart (before the next poll).
KILL_TABLE = {
    "fetch": V1, "verify": V1, "download": V1, "stage": V1, "probe": V1,
    "switch": V1,    # switched but not confirmed: rolled back
    "confirm": V1,   # not proved in use: rolled back
    "commit": V2,    # proved: the commit is finished
}


@pytest.mark.parametrize("step", [s for s in STEPS if s != "idle"])
def test_kill_in_every_state(step, world, tmp_path):
    assert set(KILL_TABLE) == set(STEPS) - {"idle"}
    state = device_from(world["template"], tmp_path / "device", world)
    killed = run_agent(state, world["remote"], world["desired"].root, world["store"],
                       env={"EDGEFLEET_AGENT_TEST_KILL_AT": step}, subprocess_=True)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    journal = json.loads((state / "journal.json").read_text())
    assert journal["step"] == step  # it really died in that state
    after = restart(state, world)
    assert after["version"] == KILL_TABLE[step]
    if step in ("switch", "confirm"):
        conds = {c["type"]: c["status"] for c in agent_state(state)["conditions"]}
        assert conds["Ready"] == "False"
    # the next poll completes the update
    res = run_agent(state, world["remote"], world["desired"].root, world["store"])
    assert res.returncode == 0, res.stderr
    assert check_invariants(state, world["desired"].allowed_digests())["version"] == V2


def _child(args: list[str]) -> None:
    from edgefleet.cli import main

    os._exit(main(args))


@pytest.mark.slow
def test_random_kills_during_updates(world, tmp_path):
    """56+ SIGKILLs at seeded random moments of alternating updates (v1 <-> v2)."""
    rng = random.Random(20261201)
    desired, store = world["desired"], world["store"]
    state = device_from(world["template"], tmp_path / "device", world)
    # Children come from a fork server: a fresh process with the agent's modules imported
    # and no threads (forking this test process, which ran onnxruntime sessions, can hang a
    # child on a lock a thread held); each child is a real process, really SIGKILLed.
    fork = multiprocessing.get_context("forkserver")
    fork.set_forkserver_preload(["edgefleet.cli", "edgefleet.cli.agent", "edgefleet.agent.cycle",
                                 "edgefleet.agent.reporting", "onnxruntime", "tuf.ngclient", "tests.test_agent_crash"])
    wave = 1  # v2 is published; the device serves v1

    def start():
        proc = fork.Process(target=_child, args=(agent_args(state, world["remote"], desired.root, store),))
        proc.start()
        return proc

    # the mean cycle of an update, to time the kills (1.1x, so some land after it finished)
    t0 = time.monotonic()
    proc = start()
    proc.join(120)
    mean = time.monotonic() - t0
    assert proc.exitcode == 0
    kills, steps_hit, completed, given_up = 0, set(), 0, 0
    while kills < 56:
        wave = 0 if wave == 1 else 1
        desired.publish(wave=wave)
        want = V2 if wave == 1 else V1
        for attempt in range(8):
            proc = start()
            # OSTree's destructive test: most runs are interrupted, timed up to 1.1x the mean
            # cycle (so some interrupts miss); every 8th run of a generation is left alone.
            forced = attempt < 7 and rng.random() < 0.85
            proc.join(rng.uniform(0.0, 1.1 * mean) if forced else 120)
            if proc.exitcode is None:
                proc.kill()  # SIGKILL; a child that finished in the meantime is not an error ...
                proc.join(10)
            if proc.exitcode == -signal.SIGKILL:  # ... and then counts as the run it was, below
                kills += 1
                try:
                    steps_hit.add(json.loads((state / "journal.json").read_text())["step"])
                except (OSError, ValueError):
                    pass
                restart(state, world)
                continue
            if proc.exitcode == 1:
                # interrupted MAX_ATTEMPTS times in this generation: given up, reported, old model serving
                journal = json.loads((state / "journal.json").read_text())
                digest = desired.device_state()["workloads"][0]["run"]["artifact"]["digest"]
                assert "interrupted" in journal["failed"][digest], journal["failed"]
                given_up += 1
                break
            assert proc.exitcode == 0
            completed += 1
            break
        after = check_invariants(state, desired.allowed_digests())
        assert after["version"] == want or given_up
    assert len(steps_hit) >= 4, steps_hit  # the kills landed in many states, not only at start-up
    assert completed >= 3, (completed, given_up)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def test_disk_full_keeps_the_old_model_and_reports(world, tmp_path):
    state = device_from(world["template"], tmp_path / "device", world)
    downloads = state / "downloads"
    shutil.rmtree(downloads, ignore_errors=True)
    if not _mount_tmpfs(downloads, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        res = run_agent(state, world["remote"], world["desired"].root, world["store"])
        assert res.returncode == 1 and "E607" in res.stderr, res.stderr
        s = agent_state(state)
        assert s["serving"]["version"] == V1
        conds = {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}
        assert conds["UpdateFailed"] == ("True", "InsufficientSpace")
        check_invariants(state, world["desired"].allowed_digests())
    finally:
        subprocess.run(["umount", str(downloads)], check=False)


def test_truncated_download_keeps_the_old_model_then_resumes(world, tmp_path):
    state = device_from(world["template"], tmp_path / "device", world)
    v2 = world["desired"].device_state()["workloads"][0]["run"]["artifact"]
    with http_server(world["store"]) as (url, handler):
        handler.truncate.add(v2["digest"])
        res = run_agent(state, world["remote"], world["desired"].root, url)
        assert res.returncode == 1 and "E605" in res.stderr, res.stderr
        assert agent_state(state)["serving"]["version"] == V1
        part = state / "downloads" / f"{v2['digest']}.part"
        assert 0 < part.stat().st_size < v2["size"]
        res = run_agent(state, world["remote"], world["desired"].root, url)
        assert res.returncode == 0, res.stderr
        ranges = [r for p, r in handler.requests if v2["digest"] in p]
        assert ranges[-1] == f"bytes={v2['size'] // 2}-"  # resumed, not fetched again
    assert agent_state(state)["serving"]["version"] == V2


def test_corrupted_cache_file_is_discarded_and_reported(world, tmp_path):
    state = device_from(world["template"], tmp_path / "device", world)
    v2 = world["desired"].device_state()["workloads"][0]["run"]["artifact"]
    (state / "downloads").mkdir(exist_ok=True)
    part = state / "downloads" / f"{v2['digest']}.part"
    part.write_bytes(os.urandom(v2["size"]))
    res = run_agent(state, world["remote"], world["desired"].root, world["store"])
    assert res.returncode == 1 and "E605" in res.stderr and "digest mismatch" in res.stderr
    s = agent_state(state)
    assert s["serving"]["version"] == V1
    assert {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}["UpdateFailed"] == ("True", "DigestMismatch")
    assert not part.exists()
    res = run_agent(state, world["remote"], world["desired"].root, world["store"])
    assert res.returncode == 0 and agent_state(state)["serving"]["version"] == V2
