"""The device agent end to end, with real parts: the example fleet really built and compiled,
a real git daemon and HTTP servers on 127.0.0.1, real onnxruntime inference.

nothing -> serving; an update staged, probed, switched, committed (the fallback stays
staged); a build whose probe fails is never switched to; one that fails after the switch
is rolled back; tampered, rolled-back and other-device states are refused while the old
model serves; HTTP mirror; frozen metadata; accelerator failure -> declared fallback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.build.record import parse_record, record_bytes
from edgefleet.signing.keys import init_keys
from tests.agent_support import (DEVICE, V1, V2, DesiredRepo, agent_env, agent_state, check_invariants, cli_in_process, git,
                                 git_daemon, http_server, run_agent)
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("agent-keys") / "keys"
    init_keys(path)
    return path


@pytest.fixture
def desired(tmp_path, store, keys) -> DesiredRepo:
    return DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)


@pytest.fixture
def remote(desired):
    with git_daemon(desired.base) as (url, _proc):
        yield f"{url}/desired"


def serving(state: Path) -> dict | None:
    return agent_state(state)["serving"]


def test_enroll_prints_the_inventory_entry_and_refuses_a_second_key(tmp_path):
    env = agent_env()
    cmd = [sys.executable, "-m", "edgefleet", "agent", "enroll", "--state-dir", str(tmp_path / "s"), "--device", DEVICE]
    first = subprocess.run([*cmd, "--format", "json"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    entry = json.loads(first.stdout)
    assert entry["id"] == DEVICE and entry["public_key"].startswith("ed25519:") and len(entry["public_key"]) == 72
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "E650" in again.stderr
    usage = subprocess.run([sys.executable, "-m", "edgefleet", "agent", "run", "--state-dir", str(tmp_path)],
                           env=env, capture_output=True, text=True)
    assert usage.returncode == 2


def test_nothing_to_serving_then_update_committed_with_fallback_staged(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    v1 = desired.publish(wave=0)
    assert v1["workloads"][0]["run"]["version"] == V1
    first = run_agent(state, remote, desired.root, store)
    assert first.returncode == 0, first.stderr
    s = agent_state(state)
    assert s["device"] == DEVICE and s["degraded"] is False
    assert s["serving"]["version"] == V1 and s["serving"]["digest"] == "sha256:" + v1["workloads"][0]["run"]["artifact"]["digest"]
    assert {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"
    old_slot = s["serving"]["slot"]

    # a no-op poll: the ref did not move, nothing is fetched, still in sync
    head = git("rev-parse", "HEAD", cwd=state / "desired").strip()
    again = run_agent(state, remote, desired.root, store)
    assert again.returncode == 0 and git("rev-parse", "HEAD", cwd=state / "desired").strip() == head

    v2 = desired.publish(wave=1)
    assert v2["workloads"][0]["run"]["version"] == V2 and v2["workloads"][0]["fallback"]["version"] == V1
    update = run_agent(state, remote, desired.root, store)
    assert update.returncode == 0, update.stderr
    s = agent_state(state)
    assert s["serving"]["version"] == V2 and s["serving"]["slot"] != old_slot
    journal = json.loads((state / "journal.json").read_text())
    assert journal["step"] == "idle" and journal["committed"] == s["serving"]["slot"]
    assert journal["last_counter"] == journal["generation"]["release_counter"]
    fallback = json.loads((state / "slots" / old_slot / "slot.json").read_text())
    assert fallback["version"] == V1  # the fallback stays staged in the idle slot
    check_invariants(state, desired.allowed_digests())
    # a tree:0 partial clone walked down to this device's files: no other device's target
    # or bin was fetched, and only those files are in the checkout
    checkout = state / "desired"
    assert git("config", "remote.origin.partialclonefilter", cwd=checkout).strip() == "tree:0"
    local = set(git("cat-file", "--batch-all-objects", "--batch-check=%(objectname)", cwd=checkout).split())
    listed = git("ls-tree", "-r", "-t", "HEAD", cwd=checkout).splitlines()
    others = [line.split()[2] for line in listed if line.split()[1] == "blob" and "/devices/" in line
              and f".{DEVICE}.json" not in line]
    assert others and not set(others) & local
    files = sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*")
                   if p.is_file() and ".git" not in p.relative_to(checkout).parts)
    own = [f for f in files if f.startswith("targets/devices/")]
    assert own and all(f.endswith(f".{DEVICE}.json") for f in own)
    bins = [f for f in files if f.startswith("metadata/bins/")]
    assert bins and len({f.rsplit(".", 2)[1] for f in bins}) == 1  # versions of one bin: the device's
    assert not (state / "desired" / ".git" / "shallow").exists()


def _bad_probe_store(store: Path, dest: Path, version: str) -> Path:
    """A copy of the store whose medical-cart build of `version` records a wrong expected output."""
    shutil.copytree(store, dest)
    for record_path in (dest / "keys").glob("*/record.json"):
        record = parse_record(record_path.read_bytes())
        if record.version == version and record.hardware_class == "medical-cart-cpu":
            wrong = [v + 5.0 for v in record.probe.expected_output]
            record = record.model_copy(update={"probe": record.probe.model_copy(update={"expected_output": wrong})})
            record_path.chmod(0o644)
            record_path.write_bytes(record_bytes(record))
    return dest


def test_probe_failure_is_never_switched_to(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    bad_store = _bad_probe_store(store, tmp_path / "bad-store", V2)
    desired.publish(wave=1, store=bad_store)
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 1 and "E609" in res.stderr, res.stderr
    s = agent_state(state)
    assert s["serving"]["version"] == V1
    assert {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}["UpdateFailed"] == ("True", "ProbeFailed")
    assert s["update"] == "ProbeFailed"
    # the refused build is not left staged, and not retried: the next poll says the same, fast
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 1 and serving(state)["version"] == V1
    check_invariants(state, desired.allowed_digests())


def test_failure_after_switch_rolls_back(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    desired.publish(wave=1)
    res = run_agent(state, remote, desired.root, store, env={"EDGEFLEET_AGENT_TEST_FAIL_SERVING": V2})
    assert res.returncode == 1 and "E611" in res.stderr, res.stderr
    s = agent_state(state)
    assert s["serving"]["version"] == V1
    conds = {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}
    assert conds["RolledBack"] == ("True", "FailedAfterSwitch") and s["update"] == "RolledBack"
    check_invariants(state, desired.allowed_digests())


def test_tampered_replayed_and_other_device_states_are_refused(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    release1 = desired.snapshot(tmp_path / "release1")
    assert run_agent(state, remote, desired.root, store).returncode == 0
    desired.publish(wave=1)
    tree = desired.tree

    def target(device):
        from edgefleet.signing import device_target_path
        from edgefleet.signing.layout import target_file

        data = (json.dumps(desired.device_state(device), sort_keys=True, separators=(",", ":"))).encode()
        found = [p for p in tree.glob(f"targets/devices/**/*.{device}.json")
                 if json.loads(p.read_bytes()) == json.loads(data)]
        assert found, device
        path = tree / target_file(device_target_path(device), __import__("hashlib").sha256(found[0].read_bytes()).hexdigest())
        assert path == found[0]
        return path

    # tampered: this device's newest target made to ask for something else
    mine = target(DEVICE)
    good = mine.read_bytes()
    mine.write_bytes(good.replace(V2.encode(), V1.encode()))
    desired.commit("tampered")
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 1 and "E555" in res.stderr, res.stderr
    assert serving(state)["version"] == V1

    # another device's (validly signed) state in this device's place
    mine.write_bytes(target("sm-cart-002").read_bytes())
    desired.commit("other device")
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 1 and ("E555" in res.stderr or "E556" in res.stderr), res.stderr
    assert serving(state)["version"] == V1

    # the good state, then a replay of the older tree
    mine.write_bytes(good)
    desired.commit("restored")
    assert run_agent(state, remote, desired.root, store).returncode == 0
    assert serving(state)["version"] == V2
    desired.restore(release1)
    desired.commit("replay of release 1")
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 1 and "E553" in res.stderr, res.stderr
    assert serving(state)["version"] == V2
    check_invariants(state, desired.allowed_digests())


def test_http_mirror_and_http_store(tmp_path, desired, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    with http_server(desired.tree) as (mirror, tree_handler), http_server(store) as (store_url, store_handler):
        res = run_agent(state, mirror, desired.root, store_url)
        assert res.returncode == 0, res.stderr
        assert serving(state)["version"] == V1
        tree_handler.requests.clear()
        res = run_agent(state, mirror, desired.root, store_url)
        assert res.returncode == 0
        paths = sorted(p for p, _ in tree_handler.requests)
        assert paths == ["/metadata/2.root.json", "/metadata/timestamp.json"], paths  # a no-op poll
        desired.publish(wave=1)
        res = run_agent(state, mirror, desired.root, store_url)
        assert res.returncode == 0, res.stderr
        assert serving(state)["version"] == V2
        fetched = [p for p, _ in tree_handler.requests]
        assert not any("sm-cart-002" in p for p in fetched)  # only this device's target


def test_frozen_metadata_keeps_serving_and_accepts_nothing(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    desired.publish(wave=1)
    res = run_agent(state, remote, desired.root, store, "--now", "2099-01-01T00:00:00Z")
    assert res.returncode == 1 and "E552" in res.stderr
    s = agent_state(state)
    assert s["serving"]["version"] == V1
    conds = {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}
    assert conds["Frozen"] == ("True", "MetadataExpired")
    assert s["beyond_max_offline"] is False


def test_accelerator_failure_runs_the_declared_fallback_then_recovers(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    desired.publish(wave=1)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    # test fault: the class's execution provider is absent (medical-cart-cpu: on_accelerator_failure fallback_model)
    res = run_agent(state, remote, desired.root, store, env={"EDGEFLEET_AGENT_TEST_PROVIDER": "NoSuchExecutionProvider"})
    assert res.returncode == 1 and "E612" in res.stderr, res.stderr  # serving, but not what the state asks
    s = agent_state(state)
    assert s["degraded"] is True and s["serving"]["version"] == V1, (res.stderr, s)
    assert {c["type"]: c["status"] for c in s["conditions"]}["Degraded"] == "True"
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 0, res.stderr
    s = agent_state(state)
    assert s["degraded"] is False and s["serving"]["version"] == V2


def test_beyond_max_offline_is_said_in_state_and_the_next_report(tmp_path, desired, remote, store):
    from datetime import datetime, timedelta, timezone

    from edgefleet.agent.report import verify_report
    from edgefleet.agent.telemetry import TelemetryStore
    from tests.agent_support import cli_in_process

    state = tmp_path / "device"
    enrolled = cli_in_process(["agent", "enroll", "--state-dir", str(state), "--device", DEVICE, "--format", "json"], {})
    key = json.loads(enrolled.stdout)["public_key"]
    desired.publish(wave=0)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    later = (datetime.now(timezone.utc) + timedelta(days=91)).strftime("%Y-%m-%dT%H:%M:%SZ")  # cart: max_offline 90d
    res = run_agent(state, "git://127.0.0.1:9/nothing", desired.root, store, "--now", later)
    assert res.returncode == 1 and "E601" in res.stderr
    s = agent_state(state)
    assert s["beyond_max_offline"] is True and s["serving"]["version"] == V1
    assert {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}["Offline"] == ("True", "BeyondMaxOffline")
    outbox = TelemetryStore(state / "telemetry.db")
    try:
        newest = verify_report(outbox.pending_reports()[-1][1], key, DEVICE)
    finally:
        outbox.close()
    assert newest.offline.beyond_max_offline is True and newest.serving.version == V1


@pytest.mark.parametrize("args", [
    ["--listen", "0.0.0.0:8000"], ["--soak", "soon"], ["--interval", "5x"],
])
def test_usage_errors_exit_2(tmp_path, args, desired):
    from tests.agent_support import cli_in_process

    root = tmp_path / "root.json"
    root.write_text("{}")
    res = cli_in_process(["agent", "run", "--state-dir", str(tmp_path / "s"), "--device", DEVICE,
                          "--remote", "git://127.0.0.1:9/x", "--root", str(root), *args], {})
    assert res.returncode == 2, (res.stdout, res.stderr)


def test_openvino_artifact_without_its_npu_runs_on_the_cpu_path_degraded(tmp_path, desired, remote, store):
    """intel-lowpower-detector: OpenVINO on an NPU this host lacks; on_accelerator_failure: cpu."""
    state = tmp_path / "detector"
    desired.publish(wave=0)
    root = desired.root
    res = cli_in_process(["agent", "run", "--state-dir", str(state), "--device", "pa-detector-001", "--remote",
                          remote, "--root", str(root), "--store", str(store), "--once", "--soak", "0.2s",
                          "--confirm-inferences", "3"], {})
    assert res.returncode == 0, res.stderr  # serving the model asked for, on the CPU path
    s = agent_state(state)
    assert s["serving"]["version"] == V1 and s["degraded"] is True
    slot = state / "slots" / s["serving"]["slot"]
    assert sorted(p.name for p in slot.iterdir()) == ["golden.npy", "model.bin", "model.xml", "slot.json"]
    degraded = {c["type"]: c for c in s["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and "NPU" in degraded["message"]


def test_activation_window_closed_serves_the_fallback_until_it_opens(tmp_path, store, keys):
    """The example rollout's maintenance window (carts switch 01:00-05:00 London) is honoured."""
    from datetime import datetime, timedelta, timezone

    import re

    desired = DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)  # no spread, no windows
    rollout = desired.fleet / "rollouts" / "meter-digits-1-1.yaml"
    text = rollout.read_text()
    window = ('  maintenance:\n    - start: "01:00"\n      end: "05:00"\n      timezone: UTC\n'
              '      sites: [st-marys-hospital]\n')
    rollout.write_text(re.sub(r"(?m)^status:", window + "status:", text, count=1))
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        state = tmp_path / "device"
        desired.publish(wave=0)
        assert run_agent(state, remote, desired.root, store).returncode == 0
        v2 = desired.publish(wave=1)
        activation = v2["workloads"][0].get("activation")
        if not activation or not activation.get("windows"):
            pytest.skip("the compiler wrote no activation window for this device")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        closed = now if not 1 <= now.hour < 5 else now.replace(hour=6, minute=0)
        opened = closed.replace(hour=3, minute=0) + (timedelta(days=1) if closed.hour >= 3 else timedelta())
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        res = run_agent(state, remote, desired.root, store, "--now", closed.strftime(stamp))
        s = agent_state(state)
        assert s["serving"]["version"] == V1 and s["update"] == "Waiting", (res.stderr, s)
        res = run_agent(state, remote, desired.root, store, "--now", opened.strftime(stamp))
        assert res.returncode == 0, res.stderr
        assert agent_state(state)["serving"]["version"] == V2


def test_a_corrupted_active_slot_is_not_served_and_is_reinstalled(tmp_path, desired, remote, store):
    state = tmp_path / "device"
    desired.publish(wave=0)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    desired.publish(wave=1)
    assert run_agent(state, remote, desired.root, store).returncode == 0
    active = agent_state(state)["serving"]["slot"]
    model = state / "slots" / active / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit on disk
    model.write_bytes(bytes(data))
    res = run_agent(state, remote, desired.root, store)
    assert res.returncode == 0, res.stderr  # re-installed from the store, probed, switched
    s = agent_state(state)
    assert s["serving"]["version"] == V2 and s["serving"]["slot"] != active
    check_invariants(state, desired.allowed_digests())


def test_one_agent_per_state_directory(tmp_path):
    import fcntl
    import os

    from tests.agent_support import cli_in_process

    state = tmp_path / "device"
    state.mkdir()
    root = tmp_path / "root.json"
    root.write_text("{}")
    fd = os.open(state / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another agent"
        res = cli_in_process(["agent", "run", "--state-dir", str(state), "--device", DEVICE, "--remote",
                              "git://127.0.0.1:9/x", "--root", str(root), "--once"], {})
        assert res.returncode == 1 and "E619" in res.stderr
    finally:
        os.close(fd)
