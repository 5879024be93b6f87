"""Validation accepts exactly what the build accepts (issue 8, "one rule, one place").

Hypothesis draws a hardware class (runtime, precisions, CPU, whether it requires an
accuracy gate) and a recipe chain (every runtime's options: precision, quantization,
calibration method and percentile, symmetric, per_channel, reduce_range, graph
optimization, sparsity, excluded nodes and operator types) placed on the class, the model
or the model version, and the model's data and accuracy budget. Each draw is written as a
small real fleet repository (the example's student model and data files) and judged twice:

* validation: `validate_repository` (the whole of `edgefleet validate`), accepted when it
  reports no error;
* build: `plan_builds` (resolution, input hashes, the pre-flight with the engine's
  `check_recipe`) and then `engine.check_request` on the real request (real ONNX, real
  npz data), accepted when neither refuses; no optimization runs.

The two verdicts must be equal, and a refusal on one side must name the same recipe.

Out of the draw on purpose: a class's own recipes are checked even when a model overrides
them (a class document must be valid on its own, and the build never reads unused ones),
so each draw puts its chain in exactly one place; and data-file contents (labels, shapes)
are the build pre-flight's alone (validation does not open npz files), so the evaluation
data is the example's labelled file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE_FLEET
from edgefleet.build.engine import BuildError, check_request
from edgefleet.build.orchestrate import build_request, plan_builds
from edgefleet.build.store import LocalStore
from edgefleet.load.repo import read_repository
from edgefleet.pipeline.validate import validate_repository
from edgefleet.rules.needs import needed_builds

STUDENT = "models/meter-digits/1.1.0/student.onnx"
CALIBRATION = "models/meter-digits/data/calibration.npz"
EVALUATION = "models/meter-digits/data/evaluation.npz"
NODES = ["conv1", "relu1", "pool", "flatten", "fc"]  # the student's node names
KEY = "ed25519:" + "ab" * 32
RUNTIME_VERSION = {"onnxruntime": "1.20", "openvino": "2024.6", "tensorrt": "10.3"}
RUNTIME_DEVICE = {"onnxruntime": "CPUExecutionProvider", "openvino": "CPU", "tensorrt": "GPU"}

names = st.sampled_from(["r-a", "r-b", "r-c", "r-d"])


@st.composite
def recipes(draw) -> dict:
    recipe: dict = {"name": draw(names), "precision": draw(st.sampled_from(["fp32", "fp16", "int8"]))}
    optional = {
        "quantization": st.sampled_from(["static", "dynamic"]),
        "calibration": st.sampled_from(["minmax", "entropy", "percentile"]),
        "percentile": st.sampled_from([99.0, 99.99, 99.999, 100.0]),
        "per_channel": st.booleans(),
        "symmetric": st.booleans(),
        "reduce_range": st.booleans(),
        "graph_optimization": st.sampled_from(["none", "basic", "extended"]),
        "sparsity": st.sampled_from([0.0, 0.5]),
        "exclude_nodes": st.lists(st.sampled_from([*NODES, "no-such-node"]), max_size=2, unique=True),
        "exclude_op_types": st.lists(st.sampled_from(["Conv", "Gemm", "Relu"]), max_size=2, unique=True),
    }
    for field, strategy in optional.items():
        if draw(sometimes):  # most fields left out, so a draw is often one mistake from valid
            recipe[field] = draw(strategy)
    return recipe


sometimes = st.sampled_from([False, False, True])
usually = st.sampled_from([True, True, True, False])


@st.composite
def cases(draw) -> dict:
    runtime = draw(st.sampled_from(["onnxruntime", "openvino", "tensorrt"]))
    chain = draw(st.lists(recipes(), max_size=3, unique_by=lambda r: r["name"]))
    precisions = draw(st.lists(st.sampled_from(["fp32", "fp16", "int8"]), min_size=1, max_size=3, unique=True))
    if draw(usually):  # a class that runs what its recipes build
        precisions = sorted(set(precisions) | {r["precision"] for r in chain})
    return {
        "runtime": runtime,
        "precisions": precisions,
        "cpu_arch": draw(st.sampled_from(["x86_64", "aarch64"])),
        "requires_gate": draw(st.booleans()),
        "chain": chain,
        "place": draw(st.sampled_from(["class", "model", "version"])),
        "calibration": draw(usually),
        "evaluation": draw(usually),
        "accuracy": draw(st.sampled_from([None, "top1_agreement", "top1_agreement", "top1_accuracy", "cosine"])),
    }


def _write_fleet(root: Path, case: dict) -> None:
    for sub in ("hardware", "models", "devices", "rollouts"):
        for old in (root / sub).glob("*.yaml"):
            old.unlink()
    runtime = case["runtime"]
    hw_spec = {
        "cpu_arch": case["cpu_arch"],
        "accelerator": {"kind": "gpu", "name": "test", "compute_capability": "8.7"} if runtime == "tensorrt"
        else {"kind": "none"},
        "runtime": {"name": runtime, "version": RUNTIME_VERSION[runtime], "device": RUNTIME_DEVICE[runtime]},
        "precisions": case["precisions"],
        "ram_mb": 16384, "model_ram_budget_mb": 2048, "storage_mb": 8192, "max_artifact_mb": 512,
        "power_w": 15, "latency_budget_ms": 50, "requires_accuracy_gate": case["requires_gate"],
    }
    if case["place"] == "class" and case["chain"]:
        hw_spec["recipes"] = case["chain"]
    _dump(root / "hardware/drawn.yaml", "HardwareClass", "drawn", hw_spec)
    data = {}
    if case["calibration"]:
        data["calibration"] = CALIBRATION
    if case["evaluation"]:
        data["evaluation"] = EVALUATION
    version: dict = {"version": "1.0.0", "variants": [
        {"name": "student", "source": STUDENT, "sha256": _sha(root / STUDENT)}]}
    model_spec: dict = {"task": "classification", "data": data, "versions": [version]}
    if case["accuracy"]:
        model_spec["accuracy"] = {"metric": case["accuracy"], "threshold": 0.5}
    if case["place"] == "model" and case["chain"]:
        model_spec["recipes"] = {runtime: case["chain"]}
    if case["place"] == "version" and case["chain"]:
        version["recipes"] = {runtime: case["chain"]}
    _dump(root / "models/m.yaml", "Model", "m", model_spec)
    _dump(root / "devices/d.yaml", "DeviceList", "d", {"devices": [
        {"id": "dev-1", "hardware_class": "drawn", "site": "s", "public_key": KEY}]})
    _dump(root / "rollouts/r.yaml", "Rollout", "r", {"model": "m", "to_version": "1.0.0", "selector": {},
                                                      "waves": [{"name": "all", "percent": 100}]})


def _dump(path: Path, kind: str, name: str, spec: dict) -> None:
    path.write_text(yaml.safe_dump({"apiVersion": "edgefleet/v1", "kind": kind, "metadata": {"name": name},
                                    "spec": spec}, sort_keys=False))


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("agreement")
    for rel in (STUDENT, CALIBRATION, EVALUATION):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE_FLEET / rel, root / rel)
    shutil.copy(EXAMPLE_FLEET / "fleet.yaml", root / "fleet.yaml")
    for sub in ("hardware", "models", "devices", "rollouts"):
        (root / sub).mkdir(exist_ok=True)
    return root


def validation_verdict(root: Path) -> tuple[bool, list[str]]:
    _, diags = validate_repository(root)
    errors = [f"{d.code} {d.message}" for d in diags if d.is_error]
    return not errors, errors


def build_verdict(root: Path, store: Path) -> tuple[bool, list[str]]:
    repo, diags = read_repository(root)
    assert not [d for d in diags if d.is_error], diags  # the draw is always well-formed YAML
    needs = needed_builds(repo)
    assert len(needs) == 1
    planned, problems = plan_builds(repo, needs, LocalStore(store))
    refused = [f"{d.code} {d.message}" for d in problems if d.is_error]
    if refused:
        return False, refused
    (p,) = planned
    try:
        check_request(build_request(p.resolved, root))
    except BuildError as exc:
        return False, [f"{exc.code} {exc.message}"]
    return True, []


def _case(runtime="onnxruntime", precisions=("fp32", "fp16", "int8"), place="class", calibration=True,
          evaluation=True, accuracy="top1_agreement", requires_gate=True, **recipe) -> dict:
    """One hand-written case: a chain of one recipe (none if `recipe` is empty)."""
    chain = [{"name": "r-a", "precision": "int8", **recipe}] if recipe else []
    return {"runtime": runtime, "precisions": list(precisions), "cpu_arch": "x86_64", "requires_gate": requires_gate,
            "chain": chain, "place": place, "calibration": calibration, "evaluation": evaluation,
            "accuracy": accuracy}


# Every rule's edge, always tried (the random draws explore the combinations around them).
EDGES = [
    _case("tensorrt", quantization="static"),  # symmetric unset: TensorRT's default, valid
    _case("tensorrt", symmetric=False),
    _case("tensorrt", symmetric=True, reduce_range=True),
    _case("tensorrt", quantization="dynamic"),
    _case("tensorrt", precision="fp16", graph_optimization="extended"),
    _case("openvino", quantization="dynamic"),
    _case("openvino", calibration="entropy"),
    _case("openvino", calibration="percentile", percentile=99.9, symmetric=False),  # valid
    _case("onnxruntime", precision="fp16", quantization="static"),
    _case("onnxruntime", precision="fp16", precisions=("fp32", "int8")),
    _case("onnxruntime", quantization="dynamic", calibration=False, reduce_range=True),  # valid: no data needed
    _case("onnxruntime", calibration=False, quantization="static"),
    _case("onnxruntime", precisions=("int8",), calibration=False),  # the default chain is static int8
    _case("onnxruntime", place="model", exclude_nodes=["no-such-node"]),
    _case("onnxruntime", place="version", exclude_nodes=["fc"], exclude_op_types=["Gemm"]),  # valid
    _case("openvino", place="class", precision="fp32", exclude_nodes=["conv9"]),
    _case(evaluation=False),
    _case(accuracy=None),
    _case(requires_gate=False, accuracy=None, evaluation=False),  # ungated: valid
    _case(requires_gate=False, evaluation=False),  # a declared budget still needs data
    _case(accuracy="top1_accuracy"),  # the example's evaluation data has labels
]


def with_edges(test):
    for case in reversed(EDGES):
        test = example(case=case)(test)
    return test


@with_edges
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=cases())
def test_validation_accepts_exactly_what_the_build_accepts(base, tmp_path, case):
    _write_fleet(base, case)
    valid, why_not = validation_verdict(base)
    builds, refused = build_verdict(base, tmp_path / "store")
    assert valid == builds, {"case": case, "validation": why_not, "build": refused}
    if not valid:
        # Both name the first recipe the build refuses (when a recipe is to blame).
        for text in refused:
            if text.startswith("recipe '"):
                name = text.split("'")[1]
                assert any(f"recipe '{name}'" in v for v in why_not), (why_not, refused)


def test_tensorrt_int8_with_symmetric_unset_is_accepted_by_both(base, tmp_path):
    """The case validation and build used to disagree on: TensorRT's default is symmetric."""
    case = {"runtime": "tensorrt", "precisions": ["fp16", "int8"], "cpu_arch": "aarch64", "requires_gate": True,
            "chain": [{"name": "trt-int8", "precision": "int8", "quantization": "static"}], "place": "class",
            "calibration": True, "evaluation": True, "accuracy": "top1_agreement"}
    _write_fleet(base, case)
    assert validation_verdict(base) == (True, [])
    assert build_verdict(base, tmp_path / "store") == (True, [])
    case["chain"][0]["symmetric"] = False
    _write_fleet(base, case)
    valid, why_not = validation_verdict(base)
    builds, refused = build_verdict(base, tmp_path / "store")
    assert not valid and not builds
    assert any(v.startswith("E308 recipe 'trt-int8'") and "needs symmetric" in v for v in why_not), why_not
    assert refused[0].startswith("E420 recipe 'trt-int8'") and "needs symmetric" in refused[0], refused
