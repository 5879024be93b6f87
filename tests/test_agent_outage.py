"""Outage: with the git server stopped the agent keeps serving and buffers its signed reports;
once the server is back every buffered report arrives, in order, each verifying against the
device's enrolled key (the status remote's pre-receive hook checks them too). And the
daemon mode: the KServe endpoint serves the model while cycles run, and SIGTERM stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgefleet.agent.report import verify_report
from edgefleet.agent.status_remote import install_status_hook, read_reports
from edgefleet.signing.keys import init_keys
from tests.agent_support import (DEVICE, V1, V2, DesiredRepo, agent_env, agent_state, cli_in_process, free_port,
                                 git, git_daemon, run_agent)
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture
def setup(tmp_path, store):
    keys = tmp_path / "keys"
    init_keys(keys)
    desired = DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)
    desired.publish(wave=0)
    state = tmp_path / "device"
    enrolled = cli_in_process(["agent", "enroll", "--state-dir", str(state), "--device", DEVICE, "--format", "json"], {})
    assert enrolled.returncode == 0, enrolled.stderr
    public_key = json.loads(enrolled.stdout)["public_key"]
    status_repo = desired.base / "status.git"
    git("init", "-q", "--bare", str(status_repo), cwd=desired.base)
    install_status_hook(status_repo, {DEVICE: public_key})
    return desired, state, public_key, status_repo


def test_outage_keeps_serving_buffers_reports_and_delivers_all(setup, store):
    desired, state, public_key, status_repo = setup
    port = free_port()
    with git_daemon(desired.base, port=port, receive=True) as (url, _):
        remote, status_remote = f"{url}/desired", f"{url}/status.git"
        res = run_agent(state, remote, desired.root, store, "--status-remote", status_remote)
        assert res.returncode == 0, res.stderr
        assert agent_state(state)["pending_reports"] == 0
    # the server is down: keep serving, report Offline, buffer
    for i in range(3):
        res = run_agent(state, remote, desired.root, store, "--status-remote", status_remote)
        assert res.returncode == 1 and "E601" in res.stderr
        s = agent_state(state)
        assert s["serving"]["version"] == V1 and s["pending_reports"] == i + 1
        assert {c["type"]: c["status"] for c in s["conditions"]}["Offline"] == "True"
    desired.publish(wave=1)
    with git_daemon(desired.base, port=port, receive=True):
        res = run_agent(state, remote, desired.root, store, "--status-remote", status_remote)
        assert res.returncode == 0, res.stderr
        s = agent_state(state)
        assert s["pending_reports"] == 0 and s["serving"]["version"] == V2
    delivered = [env for device, env in read_reports(status_repo) if device == DEVICE]
    reports = [verify_report(env, public_key, DEVICE) for env in delivered]
    assert len(reports) == 5  # 1 before, 3 buffered during the outage, 1 after
    counters = [r.counter for r in reports]
    assert counters == sorted(counters) and len(set(counters)) == 5
    offline = [r for r in reports if any(c.type == "Offline" and c.status == "True" for c in r.conditions)]
    assert len(offline) == 3
    assert reports[-1].serving.version == V2 and reports[-1].workloads[0].update == "Committed"
    assert reports[0].generation is not None and reports[-1].generation.release_counter > reports[0].generation.release_counter


def test_daemon_serves_kserve_and_stops_on_sigterm(setup, store, tmp_path):
    desired, state, _, _ = setup
    with git_daemon(desired.base) as (url, _):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "edgefleet", "agent", "run", "--state-dir", str(state),
                                 "--device", DEVICE, "--remote", f"{url}/desired", "--root", str(desired.root),
                                 "--store", str(store), "--interval", "1s", "--soak", "0.2s",
                                 "--confirm-inferences", "3", "--listen", f"127.0.0.1:{port}"],
                                env=agent_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            meta = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{base}/v2/models/meter-digits", timeout=2) as resp:
                        meta = json.loads(resp.read())
                    break
                except OSError:
                    time.sleep(0.2)
            assert meta is not None and meta["versions"] == [V1], meta
            body = json.dumps({"inputs": [{"name": meta["inputs"][0]["name"], "shape": [1, 1, 8, 8],
                                           "datatype": "FP32", "data": [0.5] * 64}]}).encode()
            req = urllib.request.Request(f"{base}/v2/models/meter-digits/infer", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                out = json.loads(resp.read())
            assert len(out["outputs"][0]["data"]) == 10
            desired.publish(wave=1)  # the daemon picks it up on its next poll
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with urllib.request.urlopen(f"{base}/v2/models/meter-digits", timeout=2) as resp:
                    if json.loads(resp.read())["versions"] == [V2]:
                        break
                time.sleep(0.2)
            else:
                pytest.fail("the daemon did not switch to the new version")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = None
        assert code == 0, proc.stderr.read() if proc.stderr else ""
