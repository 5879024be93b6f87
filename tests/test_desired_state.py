"""The per-device desired state: its format, its canonical bytes, and what each device
is told to run (and keep as fallback) in each phase of a rollout."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import jinja2
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.desired.canonical import canonical, canonical_document, join_object
from edgefleet.desired.compile import UnbuiltArtifact, compile_all, compile_fleet, identity_json, prepare
from edgefleet.desired.runtime_config import RuntimeConfigError, render_runtime_config, templates_dir
from edgefleet.desired.state import DesiredState
from edgefleet.core.diagnostics import DiagnosticError
from edgefleet.rules.needs import BuildNeed
from edgefleet.load.repo import read_repository
from edgefleet.pipeline.schema import schema_files
from edgefleet.spec import Device
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import synthetic_artifacts


def load(root: Path):
    repo, diags = read_repository(root)
    assert not [d for d in diags if d.is_error], diags
    return repo


@pytest.fixture(scope="module")
def example():
    repo = load(EXAMPLE_FLEET)
    return repo, synthetic_artifacts(repo)


def set_state(fleet: Path, phase: str, current: int | None) -> None:
    path = fleet / "rollouts/meter-digits-1-1.yaml"
    text = path.read_text()
    text = re.sub(r"phase: \w+", f"phase: {phase}", text)
    text = re.sub(r"current_wave: \w+", f"current_wave: {'null' if current is None else current}", text)
    path.write_text(text)


# ---- format -----------------------------------------------------------------------------

def test_every_device_state_validates_and_is_canonical(example):
    repo, artifacts = example
    states = compile_all(repo, artifacts)
    assert len(states) == 48
    for device_id, compiled in states.items():
        state = DesiredState.model_validate_json(compiled.data)
        assert state.device.id == device_id
        # Assembled from shared fragments, yet byte-identical to canonicalising the whole.
        assert compiled.data == canonical_document(state.model_dump(mode="json"))
        assert compiled.data == rfc8785.dumps(json.loads(compiled.data)) + b"\n"


def test_state_carries_model_artifact_runtime_probe_wave_and_agent_settings(example):
    repo, artifacts = example
    compiled = compile_all(repo, artifacts)["sm-cart-001"]
    state = DesiredState.model_validate_json(compiled.data)
    assert state.fleet == "acme-meter-readers"
    assert (state.runtime.name, state.runtime.version) == ("onnxruntime", "1.20")
    assert state.agent.poll_interval == "5m" and state.offline.on_accelerator_failure == "fallback_model"
    [workload] = state.workloads
    assert workload.model == "meter-digits" and workload.rollout.name == "meter-digits-1-1"
    assert workload.rollout.wave in ("canary", "half", "all")
    built = artifacts[BuildNeed("meter-digits", workload.run.version, "medical-cart-cpu")]
    assert workload.run.artifact.digest == built.digest and workload.run.artifact.size == built.size
    assert workload.run.artifact.path == f"blobs/sha256/{built.digest}"
    assert workload.run.probe.golden_input_sha256 == built.probe.golden_input_sha256
    assert workload.run.probe.latency_budget_ms == 20
    assert workload.run.runtime_config["session"]["execution_providers"] == ["CPUExecutionProvider"]


def test_no_timestamps_or_absolute_paths_in_any_state(fleet_copy):
    repo = load(fleet_copy)
    for compiled in compile_all(repo, synthetic_artifacts(repo)).values():
        text = compiled.data.decode()
        assert str(fleet_copy) not in text and "/tmp" not in text and '"/' not in text
        # The one time allowed: a workload's activation (fixed once its wave went live).
        text = re.sub(r'"not_before":"[^"]*"', "", text)
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), "a timestamp in the desired state"


def test_same_inputs_same_bytes_whatever_the_inventory_order(example):
    repo, artifacts = example
    first = {k: v.data for k, v in compile_all(repo, artifacts).items()}
    shuffled = load(EXAMPLE_FLEET)
    random.Random(3).shuffle(shuffled.devices)
    second = {k: v.data for k, v in compile_all(shuffled, artifacts).items()}
    assert first == second


def test_desired_state_schema_is_generated():
    files = schema_files()
    schema = json.loads(files["desiredstate.schema.json"])
    assert schema["additionalProperties"] is False
    assert {"device", "runtime", "workloads", "agent"} <= set(schema["required"])


# ---- canonical JSON ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53 + 1, 2**53 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_join_object_equals_canonicalising_the_whole(value):
    # Keys include non-BMP characters, whose UTF-16 order differs from code point order.
    assert join_object({k: canonical(v) for k, v in value.items()}) == canonical(value)


def test_utf16_member_order():
    # U+FF61 sorts after U+1F600 by code point, before it by UTF-16 code unit (RFC 8785 3.2.3).
    assert join_object({"\U0001f600": b"1", "\uff61": b"2"}) == canonical({"\U0001f600": 1, "\uff61": 2})
    assert canonical({"\U0001f600": 1, "\uff61": 2}).index("\U0001f600".encode()) < \
        canonical({"\U0001f600": 1, "\uff61": 2}).index("\uff61".encode())


# ---- which version each device runs, by rollout phase ------------------------------------

def _states(fleet: Path):
    repo = load(fleet)
    compiled = compile_all(repo, synthetic_artifacts(repo))
    return {k: DesiredState.model_validate_json(v.data) for k, v in compiled.items()}


@pytest.mark.parametrize(("phase", "current", "expect"), [
    ("pending", None, {"canary": "1.0.0", "half": "1.0.0", "all": "1.0.0"}),
    ("progressing", 0, {"canary": "1.1.0", "half": "1.0.0", "all": "1.0.0"}),
    ("paused", 1, {"canary": "1.1.0", "half": "1.1.0", "all": "1.0.0"}),
    ("complete", 2, {"canary": "1.1.0", "half": "1.1.0", "all": "1.1.0"}),
    ("rolled_back", 1, {"canary": "1.0.0", "half": "1.0.0", "all": "1.0.0"}),
], ids=["pending", "canary-live", "paused-half", "complete", "rolled-back"])
def test_each_wave_runs_the_version_its_state_says(fleet_copy, phase, current, expect):
    set_state(fleet_copy, phase, current)
    for state in _states(fleet_copy).values():
        [workload] = state.workloads
        assert workload.run.version == expect[workload.rollout.wave]
        if workload.run.version == "1.1.0":  # on the new version: last-known-good is the old one
            assert workload.fallback is not None and workload.fallback.version == "1.0.0"
            assert workload.fallback.artifact.digest != workload.run.artifact.digest
        else:
            assert workload.fallback is None


def test_pausing_a_rollout_changes_no_device(fleet_copy):
    before = {k: v.data for k, v in compile_all(load(fleet_copy), synthetic_artifacts(load(fleet_copy))).items()}
    set_state(fleet_copy, "paused", 0)
    repo = load(fleet_copy)
    after = {k: v.data for k, v in compile_all(repo, synthetic_artifacts(repo)).items()}
    assert before == after


def test_without_from_version_devices_outside_live_waves_run_nothing(fleet_copy):
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    path.write_text(path.read_text().replace('  from_version: "1.0.0"\n', ""))
    states = _states(fleet_copy)
    live = [s for s in states.values() if s.workloads]
    assert live and len(live) < len(states)
    for state in live:
        assert state.workloads[0].rollout.wave == "canary" and state.workloads[0].fallback is None
    assert all(s.workloads[0].run.version == "1.1.0" for s in live)


def test_device_outside_every_rollout_gets_no_workload(fleet_copy):
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    path.write_text(path.read_text().replace("selector: {}             # every device of the fleet",
                                             "selector: {sites: [plant-brno]}"))
    states = _states(fleet_copy)
    assert states["sm-cart-001"].workloads == []
    assert states["pb-robot-001"].workloads


# ---- refusing to compile ------------------------------------------------------------------

def test_missing_artifact_is_reported_before_any_device(example):
    repo, artifacts = example
    missing = BuildNeed("meter-digits", "1.1.0", "jetson-vision-standard")
    partial = {k: v for k, v in artifacts.items() if k != missing}
    with pytest.raises(DiagnosticError) as exc:
        compile_fleet(repo, partial)  # raises at the call, before a generator exists
    [diag] = exc.value.diagnostics
    assert diag.code == "E511" and str(missing) in diag.message and "edgefleet build" in diag.hint
    assert diag.location.path.endswith("rollouts/meter-digits-1-1.yaml") and diag.location.line > 0


# ---- runtime configs --------------------------------------------------------------------------

@pytest.mark.parametrize("hardware_class", ["jetson-vision-standard", "intel-lowpower-detector",
                                            "factory-gateway-gpu", "medical-cart-cpu"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", None])
def test_runtime_templates_render_json_objects_for_every_class(example, hardware_class, precision):
    repo, _ = example
    hardware = repo.hardware[hardware_class].doc.spec
    config = render_runtime_config(hardware, {"precision": precision, "recipe": "r", "path": "blobs/x"},
                                   model="m", version="1.0.0", variant="full")
    assert config["precision"] == precision and config["batch_size"] == hardware.batch_size
    assert config["input"] == hardware.input.model_dump(mode="json")


def test_tensorrt_config_builds_the_engine_on_the_device_for_its_gpu(example):
    repo, _ = example
    hardware = repo.hardware["jetson-vision-standard"].doc.spec
    config = render_runtime_config(hardware, {"precision": "int8"}, model="m", version="1", variant="v")
    assert config["engine"]["build_on_device"] is True and config["engine"]["compute_capability"] == "8.7"
    assert config["engine"]["int8"] is True and config["engine"]["tensorrt_version"] == "10.3"


@pytest.mark.parametrize(("text", "needle"), [
    ('{"x": {{ hardware.no_such_field }}}', "no_such_field"),
    ('{"x": 1,}', "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"x": {{ hardware.batch_size }}', "not JSON"),
], ids=["undefined-name", "trailing-comma", "not-an-object", "unclosed"])
def test_broken_runtime_template_is_an_error_naming_it(example, tmp_path, text, needle):
    repo, _ = example
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime/onnxruntime.json.j2").write_text(text)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(tmp_path)), undefined=jinja2.StrictUndefined)
    with pytest.raises(RuntimeConfigError) as exc:
        render_runtime_config(repo.hardware["medical-cart-cpu"].doc.spec, {"precision": "int8"},
                              model="m", version="1", variant="v", env=env)
    assert "runtime/onnxruntime.json.j2" in str(exc.value) and needle in str(exc.value)


def test_every_runtime_has_a_template():
    for runtime in ("onnxruntime", "openvino", "tensorrt"):
        assert (templates_dir() / "runtime" / f"{runtime}.json.j2").is_file()


def test_unbuilt_artifacts_compile_for_previews(example):
    repo, _ = example
    unbuilt = {n: UnbuiltArtifact(n.model, n.version, "full", n.hardware_class, f"k-{n}", 5000, "int8")
               for n in synthetic_artifacts(repo)}
    compiler, diags = prepare(repo, unbuilt)
    assert compiler is not None and not diags
    state = DesiredState.model_validate_json(compiler.device(repo.devices[0].doc).data)
    assert state.workloads[0].run.artifact.digest is None and state.workloads[0].run.probe is None


label_text = st.text(max_size=6) | st.text(alphabet="abc-_=;\"\\ ~/", max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(label_text, label_text, max_size=5))
def test_fast_identity_serialisation_is_rfc8785(labels):
    device = Device(id="dev-1", hardware_class="medical-cart-cpu", site="ward-3",
                    labels=labels, public_key="ed25519:" + "0" * 64)
    expected = canonical({"id": "dev-1", "hardware_class": "medical-cart-cpu", "site": "ward-3", "labels": labels})
    assert identity_json(device) == expected


def test_streaming_leaves_the_inventory_as_it_was_and_gives_the_same_states_twice(fleet_copy):
    repo = load(fleet_copy)
    before = list(repo.devices)
    artifacts = synthetic_artifacts(repo)
    compiler, _ = prepare(repo, artifacts)
    first = [(d.device_id, d.data) for d in compiler.stream(lambda _: (0, None), 1)]
    second = [(d.device_id, d.data) for d in compiler.stream(lambda _: (0, None), 1)]
    assert first == second and len(first) == len(before) == 48
    assert repo.devices == before and all(a is b for a, b in zip(repo.devices, before))


def test_release_counter_stays_for_same_bytes_and_grows_above_every_issued_one(example):
    repo, artifacts = example
    compiler, _ = prepare(repo, artifacts)
    device = repo.devices[0].doc
    first = compiler.device(device)
    assert first.release == 1
    same = compiler.device(device, lambda _: (5, first.sha256), next_release=9)
    assert same.release == 5, "unchanged bytes keep their counter"
    changed = compiler.device(device, lambda _: (5, b"\0" * 32), next_release=9)
    assert changed.release == 9, "changed bytes jump above every counter issued before"
    assert compiler.device(device, lambda _: (12, b"\0" * 32), next_release=9).release == 13
    assert first.custom() == {"device_id": device.id, "hardware_class": device.hardware_class, "release_counter": 1}
