"""A device with two workloads (two models from two rollouts), with real parts: the example
fleet plus a second model (`meter-ocr`, the meter-digits students, really built), a real git
daemon on 127.0.0.1, real onnxruntime, real SIGKILLs.

nothing -> serving both, each answering by name over KServe v2; one model's new version
fails its probe while the other's update commits (and the signed report lets each rollout
judge its own model); a one-workload state directory upgrades in place; a kill in every
per-model state of the second model's update leaves both models serving and recovers.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from edgefleet.build.record import parse_record, record_bytes
from edgefleet.signing.keys import init_keys
from tests.agent_support import (DEVICE, V1, V2, DesiredRepo, agent_state, check_invariants, cli_in_process,
                                 git_daemon, run_agent)
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

OCR = "meter-ocr"
DIGITS = "meter-digits"
UNREACHABLE = "git://127.0.0.1:9/nothing"

OCR_MODEL = """\
apiVersion: edgefleet/v1
kind: Model
metadata:
  name: meter-ocr
  description: The second model of the two-workload agent tests (the meter-digits students)
spec:
  task: classification
  data:
    calibration: models/meter-digits/data/calibration.npz
    evaluation: models/meter-digits/data/evaluation.npz
  accuracy:
    metric: top1_agreement
    threshold: 0.98
  versions:
    - version: "1.0.0"
      variants:
        - name: student
          source: models/meter-digits/1.0.0/student.onnx
          sha256: 88321d7c5baf4d1b6b3f328ceb164e33eb1b62f133d36eda0346e414e554d0fd
    - version: "1.1.0"
      variants:
        - name: student
          source: models/meter-digits/1.1.0/student.onnx
          sha256: faca6810618973fe5d2ff1e84549b4d0c80bae0e584181962074da1540270bd5
"""


def ocr_rollout(live: bool) -> str:
    """The second rollout, for this one device: pending (it runs 1.0.0) or live (1.1.0)."""
    status = ('status:\n  phase: progressing\n  current_wave: 0\n  since: "2026-11-20T08:00:00Z"\n'
              '  wave_started:\n    all: "2026-11-20T08:00:00Z"\n') if live else "status:\n  phase: pending\n"
    return ("apiVersion: edgefleet/v1\nkind: Rollout\nmetadata:\n  name: meter-ocr-1-1\nspec:\n"
            "  model: meter-ocr\n  from_version: \"1.0.0\"\n  to_version: \"1.1.0\"\n"
            f"  selector:\n    devices: [{DEVICE}]\n  waves:\n    - name: all\n      percent: 100\n" + status)


@pytest.fixture(scope="module")
def two_fleet(tmp_path_factory) -> Path:
    fleet = tmp_path_factory.mktemp("two-workloads") / "fleet"
    shutil.copytree(EXAMPLE_FLEET, fleet, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    (fleet / "models" / "meter-ocr.yaml").write_text(OCR_MODEL)
    return fleet


@pytest.fixture(scope="module")
def two_store(tmp_path_factory, two_fleet) -> Path:
    """The example fleet's builds plus the two meter-ocr builds for the cart (real builds)."""
    from edgefleet.cli import main

    store = tmp_path_factory.mktemp("two-store") / "store"
    shutil.copytree(built_store(tmp_path_factory), store)
    build_fleet = two_fleet.parent / "build-fleet"
    shutil.copytree(two_fleet, build_fleet)
    (build_fleet / "rollouts" / "meter-ocr-1-1.yaml").write_text(ocr_rollout(True))
    assert main(["build", str(build_fleet), "--store", str(store)]) == 0
    return store


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two-keys") / "keys"
    init_keys(path)
    return path


class TwoRepo(DesiredRepo):
    def set_ocr(self, live: bool | None) -> None:
        """Publish the second rollout pending / live, or (None) not at all."""
        path = self.fleet / "rollouts" / "meter-ocr-1-1.yaml"
        if live is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(ocr_rollout(live))

    def publish_both(self, digits_v2: bool, ocr_v2: bool | None, store: Path | None = None) -> dict:
        self.set_ocr(ocr_v2)
        return self.publish(wave=1 if digits_v2 else 0, store=store)


@pytest.fixture
def desired(tmp_path, two_store, keys, two_fleet) -> TwoRepo:
    return TwoRepo(tmp_path / "origin", two_store, keys, two_fleet)


@pytest.fixture
def remote(desired):
    with git_daemon(desired.base) as (url, _):
        yield f"{url}/desired"


def versions(state: Path) -> dict[str, str | None]:
    return {w["model"]: (w["serving"] or {}).get("version") for w in agent_state(state)["workloads"]}


def check_both(state: Path, allowed: set[str]) -> dict[str, dict]:
    """The crash invariant for each model's home: one active slot, allowed, committed, probe passing."""
    return {DIGITS: check_invariants(state, allowed), OCR: check_invariants(state / "workloads" / OCR, allowed)}


def _bad_probe_store(store: Path, dest: Path, model: str, version: str) -> Path:
    """A copy of the store whose cart build of `model`@`version` records a wrong expected output."""
    shutil.copytree(store, dest)
    for record_path in (dest / "keys").glob("*/record.json"):
        record = parse_record(record_path.read_bytes())
        if record.model == model and record.version == version and record.hardware_class == "medical-cart-cpu":
            wrong = [v + 5.0 for v in record.probe.expected_output]
            record = record.model_copy(update={"probe": record.probe.model_copy(update={"expected_output": wrong})})
            record_path.chmod(0o644)
            record_path.write_bytes(record_bytes(record))
    return dest


def test_nothing_to_serving_both_models_each_answering_by_name(tmp_path, desired, remote, two_store):
    from edgefleet.agent.cycle import Agent, AgentConfig
    from edgefleet.agent.registry import Registry
    from edgefleet.agent.serving import InferenceServer, request

    state = desired.publish_both(digits_v2=False, ocr_v2=False)
    assert [(w["model"], w["run"]["version"]) for w in state["workloads"]] == [(DIGITS, V1), (OCR, V1)]
    device = tmp_path / "device"
    from edgefleet.agent.identity import enroll
    from edgefleet.agent.telemetry import TelemetryStore

    identity = enroll(device, DEVICE)
    telemetry = TelemetryStore(device / "telemetry.db")
    config = AgentConfig(state_dir=device, device=DEVICE, remote=remote, trusted_root=desired.root.read_bytes(),
                         store=str(two_store), confirm_inferences=5, soak_s=0.2, probe_runs=3)
    agent = Agent(config, Registry(telemetry=telemetry))
    agent.start()
    result = agent.cycle()
    assert result.in_sync, result.reason
    assert [(w.model, w.in_sync) for w in result.workloads] == [(DIGITS, True), (OCR, True)]
    assert agent.registry.runner.name == DIGITS  # the primary (first) workload, as for one model
    assert sorted(agent.registry.models()) == [DIGITS, OCR]

    # the layout: the first model where a one-workload device keeps it, the second in its own home
    assert json.loads((device / "workload.json").read_text())["model"] == DIGITS
    assert (device / "workloads" / OCR / "current").is_symlink()
    homes = check_both(device, desired.allowed_digests())
    assert homes[DIGITS]["version"] == V1 and homes[OCR]["version"] == V1
    assert homes[DIGITS]["digest"] != homes[OCR]["digest"]

    with InferenceServer(agent.registry, "127.0.0.1:0") as server:
        outputs = {}
        for model, home in ((DIGITS, device), (OCR, device / "workloads" / OCR)):
            golden = np.load(home / "slots" / homes[model]["active"] / "golden.npy")
            status, meta = request(server.address, "GET", f"/v2/models/{model}")
            assert status == 200 and meta["name"] == model and meta["versions"] == [V1]
            assert request(server.address, "GET", f"/v2/models/{model}/ready") == (200, {"name": model, "ready": True})
            body = {"inputs": [{"name": meta["inputs"][0]["name"], "shape": list(golden.shape), "datatype": "FP32",
                                "data": golden.ravel().tolist()}]}
            status, answer = request(server.address, "POST", f"/v2/models/{model}/infer", body)
            assert status == 200 and answer["model_name"] == model, answer
            outputs[model] = np.array(answer["outputs"][0]["data"])
        assert request(server.address, "GET", "/v2/models/no-such-model")[0] == 404
    assert outputs[DIGITS].shape == outputs[OCR].shape
    assert not np.allclose(outputs[DIGITS], outputs[OCR])  # two different networks answered

    from edgefleet.agent.report import verify_report
    from edgefleet.agent.reporting import after_cycle
    from edgefleet.rollout.observe import observe

    import time

    time.sleep(1.01 - time.time() % 1)  # a report's window ends at a whole second: let it cover the inferences
    after_cycle(agent, result, telemetry=telemetry, identity=identity)  # what `agent run` does after each cycle
    s = agent_state(device)
    assert s["serving"]["model"] == DIGITS and s["serving"]["version"] == V1  # `serving`: the primary
    assert [(w["model"], w["serving"]["version"], w["ready"]) for w in s["workloads"]] == [
        (DIGITS, V1, True), (OCR, V1, True)]
    # The signed report carries each model's own latency, and a rollout of one model reads only its own.
    (_, envelope), = telemetry.pending_reports()
    report = verify_report(envelope, identity.public_key, DEVICE)
    by_model = telemetry.latency_by_model(until=report.observed_at)
    assert set(by_model) == {DIGITS, OCR} and by_model == telemetry.latency_by_model()  # every inference
    assert {w.model: w.latency_ms for w in report.workloads} == by_model
    for model in (DIGITS, OCR):
        assert observe(report, model).latency == (by_model[model].p50, by_model[model].p95, by_model[model].p99)
    telemetry.close()


def test_one_models_bad_probe_leaves_the_other_models_update_going_through(tmp_path, desired, remote, two_store):
    from edgefleet.agent.report import verify_report
    from edgefleet.agent.telemetry import TelemetryStore
    from edgefleet.rollout.observe import observe, standing

    device = tmp_path / "device"
    enrolled = cli_in_process(["agent", "enroll", "--state-dir", str(device), "--device", DEVICE,
                               "--format", "json"], {})
    key = json.loads(enrolled.stdout)["public_key"]
    desired.publish_both(digits_v2=False, ocr_v2=False)
    first = run_agent(device, remote, desired.root, two_store)
    assert first.returncode == 0, first.stderr
    assert versions(device) == {DIGITS: V1, OCR: V1}

    bad = _bad_probe_store(two_store, tmp_path / "bad-store", OCR, V2)
    desired.publish_both(digits_v2=True, ocr_v2=True, store=bad)
    res = run_agent(device, remote, desired.root, two_store)
    assert res.returncode == 1 and "E609" in res.stderr and OCR in res.stderr, res.stderr
    assert versions(device) == {DIGITS: V2, OCR: V1}
    s = agent_state(device)
    by_model = {w["model"]: w for w in s["workloads"]}
    assert by_model[DIGITS]["update"] == "Committed" and by_model[DIGITS]["ready"] is True
    assert by_model[OCR]["update"] == "ProbeFailed" and by_model[OCR]["update_failed"] is True
    assert by_model[OCR]["code"] == "E609" and by_model[OCR]["ready"] is False
    conds = {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}
    assert conds["UpdateFailed"] == ("True", "ProbeFailed") and conds["Ready"][0] == "False"
    homes = check_both(device, desired.allowed_digests())
    assert homes[DIGITS]["version"] == V2 and homes[OCR]["version"] == V1
    ocr_home = device / "workloads" / OCR
    assert not any(json.loads(p.read_text())["version"] == V2 for p in ocr_home.glob("slots/*/slot.json"))

    # the signed report: each rollout judges its own model from it
    outbox = TelemetryStore(device / "telemetry.db")
    try:
        report = verify_report(outbox.pending_reports()[-1][1], key, DEVICE)
    finally:
        outbox.close()
    assert report.serving.model == DIGITS and report.serving.version == V2
    assert [(w.model, w.serving_version, w.update) for w in report.workloads] == [
        (DIGITS, V2, "Committed"), (OCR, V1, "ProbeFailed")]
    assert standing(observe(report, DIGITS), V2, None) == "healthy"
    assert standing(observe(report, OCR), V2, None) == "failed"

    # not retried for this desired state; the committed model keeps serving
    res = run_agent(device, remote, desired.root, two_store)
    assert res.returncode == 1 and versions(device) == {DIGITS: V2, OCR: V1}


def test_a_one_workload_state_dir_upgrades_in_place_when_a_second_model_arrives(tmp_path, desired, remote,
                                                                                 two_store):
    device = tmp_path / "device"
    desired.publish_both(digits_v2=False, ocr_v2=None)
    assert run_agent(device, remote, desired.root, two_store).returncode == 0
    # what an agent before multi-workload support left: no marker, no workloads/
    (device / "workload.json").unlink()
    status = json.loads((device / "status.json").read_text())
    for key in ("workloads",):
        status.pop(key)
    (device / "status.json").write_text(json.dumps(status))
    journal_before = json.loads((device / "journal.json").read_text())
    assert not (device / "workloads").exists()

    desired.publish_both(digits_v2=True, ocr_v2=False)
    res = run_agent(device, remote, desired.root, two_store)
    assert res.returncode == 0, res.stderr
    assert json.loads((device / "workload.json").read_text())["model"] == DIGITS  # adopted, not moved
    journal = json.loads((device / "journal.json").read_text())
    assert journal["committed"] != journal_before["committed"] and journal["step"] == "idle"
    assert versions(device) == {DIGITS: V2, OCR: V1}
    homes = check_both(device, desired.allowed_digests())
    assert homes[DIGITS]["version"] == V2 and homes[OCR]["version"] == V1

    # the second rollout leaves the device: its model stops serving, its slots stay on disk
    desired.publish_both(digits_v2=True, ocr_v2=None)
    res = run_agent(device, remote, desired.root, two_store)
    assert res.returncode == 0, res.stderr
    assert versions(device) == {DIGITS: V2}
    assert not (device / "workloads" / OCR / "current").exists()
    assert list((device / "workloads" / OCR / "slots").glob("*/slot.json"))


# -- crash safety with two workloads ----------------------------------------------------------

# Kill the second model's update (meter-ocr, in its own home) in this state -> what it serves
# after the restart; the first model (meter-digits) committed its update before and serves V2.
OCR_KILL_TABLE = {
    "download": V1, "stage": V1, "probe": V1,
    "switch": V1,    # switched but not confirmed: rolled back
    "confirm": V1,   # not proved in use: rolled back
    "commit": V2,    # proved: the commit is finished
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, two_store, keys, two_fleet):
    """A device serving V1 of both models (template); V2 of both published."""
    base = tmp_path_factory.mktemp("two-crash")
    desired = TwoRepo(base / "origin", two_store, keys, two_fleet)
    desired.publish_both(digits_v2=False, ocr_v2=False)
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        template = base / "template"
        res = run_agent(template, remote, desired.root, two_store)
        assert res.returncode == 0, res.stderr
        desired.publish_both(digits_v2=True, ocr_v2=True)
        yield {"desired": desired, "remote": remote, "store": two_store, "template": template}


@pytest.mark.parametrize("step", list(OCR_KILL_TABLE))
def test_kill_in_every_state_of_the_second_models_update(step, world, tmp_path):
    from edgefleet.agent.journal import STEPS

    assert set(OCR_KILL_TABLE) == set(STEPS) - {"idle", "fetch", "verify"}  # fetch, verify: the device's
    desired, store = world["desired"], world["store"]
    device = tmp_path / "device"
    shutil.copytree(world["template"], device, symlinks=True)
    killed = run_agent(device, world["remote"], desired.root, store,
                       env={"EDGEFLEET_AGENT_TEST_KILL_AT": f"{OCR}:{step}"}, subprocess_=True)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert json.loads((device / "workloads" / OCR / "journal.json").read_text())["step"] == step
    assert json.loads((device / "journal.json").read_text())["step"] == "idle"  # meter-digits was done

    res = run_agent(device, UNREACHABLE, desired.root, store)  # restart: every journal replayed
    assert res.returncode == 1 and "E601" in res.stderr, res.stderr
    after = check_both(device, desired.allowed_digests())
    assert after[DIGITS]["version"] == V2 and after[OCR]["version"] == OCR_KILL_TABLE[step]
    assert versions(device) == {DIGITS: V2, OCR: OCR_KILL_TABLE[step]}

    res = run_agent(device, world["remote"], desired.root, store)  # the next poll completes it
    assert res.returncode == 0, res.stderr
    after = check_both(device, desired.allowed_digests())
    assert after[DIGITS]["version"] == V2 and after[OCR]["version"] == V2


def test_disk_failure_staging_one_model_leaves_the_other_models_update_going_through(tmp_path, desired, remote,
                                                                                     two_store, monkeypatch):
    """An injected ENOSPC (named as such: a real full disk under one model's slots only cannot be
    made here without root) while meter-ocr stages; meter-digits' update commits."""
    import errno

    from edgefleet.agent import slots
    from edgefleet.agent.cycle import Agent, AgentConfig

    desired.publish_both(digits_v2=False, ocr_v2=False)
    device = tmp_path / "device"
    assert run_agent(device, remote, desired.root, two_store).returncode == 0
    desired.publish_both(digits_v2=True, ocr_v2=True)
    real_stage = slots.stage

    def full_disk(state_dir, slot, meta, *args, **kwargs):
        if meta["model"] == OCR:
            raise OSError(errno.ENOSPC, "No space left on device (injected)", str(state_dir))
        return real_stage(state_dir, slot, meta, *args, **kwargs)

    monkeypatch.setattr(slots, "stage", full_disk)
    config = AgentConfig(state_dir=device, device=DEVICE, remote=remote, trusted_root=desired.root.read_bytes(),
                         store=str(two_store), confirm_inferences=5, soak_s=0.2, probe_runs=3)
    agent = Agent(config)
    agent.start()
    result = agent.cycle()
    by_model = {w.model: w for w in result.workloads}
    assert by_model[DIGITS].in_sync and not by_model[OCR].in_sync
    assert by_model[OCR].code == "E607" and result.code == "E607"
    assert agent.registry.runner_of(DIGITS).version == V2 and agent.registry.runner_of(OCR).version == V1
    assert json.loads((device / "workloads" / OCR / "journal.json").read_text())["step"] == "idle"
    check_both(device, desired.allowed_digests())

    monkeypatch.setattr(slots, "stage", real_stage)  # space again: the next cycle installs it
    result = agent.cycle()
    assert result.in_sync, result.reason
    assert agent.registry.runner_of(OCR).version == V2
    check_both(device, desired.allowed_digests())


def test_each_rollout_judges_its_own_model_and_older_reports_by_the_conditions():
    """rollout.observe: the per-workload fields when a report has them, else (an older agent's
    one-workload report) the device-wide conditions, as before."""
    from edgefleet.agent.conditions import Condition
    from edgefleet.agent.report import Report, WorkloadStatus
    from edgefleet.rollout.observe import observe, standing

    at = "2026-12-01T10:00:00Z"

    def cond(type_, status, reason):
        return Condition(type=type_, status=status, reason=reason, last_transition=at)

    device_wide = [cond("Ready", "False", "NotInSync"), cond("UpdateFailed", "True", "ProbeFailed")]
    two = Report(device=DEVICE, counter=3, observed_at=at, conditions=device_wide, workloads=[
        WorkloadStatus(model=DIGITS, desired_version=V2, serving_version=V2, update="Committed", ready=True,
                       degraded=False, update_failed=False, rolled_back=False),
        WorkloadStatus(model=OCR, desired_version=V2, serving_version=V1, update="ProbeFailed", ready=False,
                       degraded=False, update_failed=True, rolled_back=False, code="E609")])
    assert standing(observe(two, DIGITS), V2, None) == "healthy"
    assert standing(observe(two, OCR), V2, None) == "failed"
    older = Report(device=DEVICE, counter=4, observed_at=at, conditions=device_wide, workloads=[
        WorkloadStatus(model=DIGITS, desired_version=V2, serving_version=V2, update="Committed")])
    assert standing(observe(older, DIGITS), V2, None) == "failed"  # UpdateFailed said so, device-wide
    healthy_old = Report(device=DEVICE, counter=5, observed_at=at, conditions=[cond("Ready", "True", "Serving")],
                         workloads=[WorkloadStatus(model=DIGITS, serving_version=V2, update="Committed")])
    assert standing(observe(healthy_old, DIGITS), V2, None) == "healthy"


def test_latency_of_a_model_is_its_own_never_a_mix_of_models():
    """rollout.observe: a workload's own latency when the report gives it; the device-wide figure
    only when the device serves one model; a multi-model report without per-model latency (an
    older agent's) has no latency for either model rather than a mix of both."""
    from edgefleet.agent.report import Latency, Report, TelemetrySummary, WorkloadStatus
    from edgefleet.rollout.observe import observe

    at = "2026-12-01T10:00:00Z"
    wide = TelemetrySummary(inferences=200, latency_ms=Latency(p50=50, p95=180, p99=199))
    own = Report(device=DEVICE, counter=1, observed_at=at, telemetry=wide, workloads=[
        WorkloadStatus(model=DIGITS, latency_ms=Latency(p50=4, p95=9, p99=10)),
        WorkloadStatus(model=OCR, latency_ms=Latency(p50=150, p95=190, p99=198))])
    assert observe(own, DIGITS).latency == (4, 9, 10) and observe(own, OCR).latency == (150, 190, 198)
    mixed = Report(device=DEVICE, counter=2, observed_at=at, telemetry=wide,
                   workloads=[WorkloadStatus(model=DIGITS), WorkloadStatus(model=OCR)])
    assert observe(mixed, DIGITS).latency is None and observe(mixed, OCR).latency is None
    single = Report(device=DEVICE, counter=3, observed_at=at, telemetry=wide, workloads=[WorkloadStatus(model=DIGITS)])
    assert observe(single, DIGITS).latency == (50, 180, 199)
