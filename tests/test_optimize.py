"""The optimization engine on real models: recipes per runtime, determinism, gates, errors."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgefleet.build import optimize_tensorrt
from edgefleet.build.engine import BuildError, build_artifact, toolchain_versions
from edgefleet.build.optimize_ort import quant_settings
from edgefleet.build.prune import magnitude_prune
from edgefleet.build.recipes import default_recipe, recipe_chain
from edgefleet.load.repo import read_repository
from edgefleet.spec import Recipe
from edgefleet.spec.model import AccuracyBudget
from engine_support import FLEET, RUNTIMES, meter_request, sha

FP32 = Recipe(name="fp32", precision="fp32")
FP16 = Recipe(name="fp16", precision="fp16")
INT8 = Recipe(name="int8", precision="int8", quantization="static", per_channel=True)
TRT_INT8 = Recipe(name="trt-int8", precision="int8", quantization="static", calibration="entropy",
                  symmetric=True, per_channel=True)


def _build(request, tmp_path: Path):
    work = tmp_path / "work"
    outcome = build_artifact(request, work)
    assert list(work.iterdir()) == []  # nothing left behind
    return outcome


def _zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]


# -- recipe chains ---------------------------------------------------------------------------


def test_recipe_chain_most_specific_wins(fleet_copy):
    model_yaml = fleet_copy / "models" / "meter-digits.yaml"
    text = model_yaml.read_text()
    text = text.replace("    threshold: 0.98\n", "    threshold: 0.98\n  recipes:\n    onnxruntime:\n"
                        "      - name: model-fp32\n        precision: fp32\n")
    text = text.replace('    - version: "1.1.0"\n', '    - version: "1.1.0"\n      recipes:\n        onnxruntime:\n'
                        '          - name: version-dynamic\n            precision: int8\n'
                        '            quantization: dynamic\n')
    model_yaml.write_text(text)
    repo, diags = read_repository(fleet_copy)
    assert not [d for d in diags if d.is_error]
    names = lambda v, c: [r.name for r in recipe_chain(repo, "meter-digits", v, c)]  # noqa: E731
    assert names("1.1.0", "medical-cart-cpu") == ["version-dynamic"]  # the version's own chain
    assert names("1.0.0", "medical-cart-cpu") == ["model-fp32"]  # the model's chain for onnxruntime
    # Classes on other runtimes keep their own chains; the model declared none for them.
    assert names("1.0.0", "jetson-vision-standard") == ["trt-int8-qdq", "trt-fp16"]
    assert names("1.0.0", "intel-lowpower-detector") == ["ov-int8-nncf", "ov-fp16"]


def test_default_recipe_when_none_is_declared():
    assert default_recipe(("int8", "fp32")).precision == "fp32"
    assert default_recipe(("int8", "fp16")).precision == "fp16"
    only_int8 = default_recipe(("int8",))
    assert (only_int8.precision, only_int8.quantization) == ("int8", "static")


# -- quantizer settings per target ---------------------------------------------------------


def test_tensorrt_int8_is_symmetric_full_range_with_float_bias():
    s = quant_settings(TRT_INT8, "tensorrt", "aarch64", {"Conv", "Relu", "Gemm", "Add"})
    assert (s.activation_type, s.weight_type) == ("QInt8", "QInt8")
    assert s.extra_options() == {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    assert s.reduce_range is False and s.per_channel is True
    assert s.op_types == ("Conv", "Gemm")  # Q/DQ on weighted layers only


@pytest.mark.parametrize("arch, declared, expected", [
    ("x86_64", None, True), ("aarch64", None, False), ("x86_64", False, False), ("armv7l", True, True),
], ids=["x86-default", "arm-default", "x86-vnni-off", "arm-forced-on"])
def test_cpu_reduce_range_follows_recipe_then_cpu(arch, declared, expected):
    s = quant_settings(replace_recipe(INT8, reduce_range=declared), "cpu", arch, {"Conv"})
    assert s.reduce_range is expected
    assert (s.activation_type, s.activation_symmetric) == ("QUInt8", False)  # U8S8 on CPUs


def test_cpu_symmetric_activations_and_excluded_types():
    recipe = Recipe(name="s", precision="int8", symmetric=True, exclude_op_types=["Add"])
    s = quant_settings(recipe, "cpu", "x86_64", {"Conv", "Add", "Relu"})
    assert (s.activation_type, s.activation_symmetric) == ("QInt8", True)
    assert s.op_types == ("Conv", "Relu")


# -- building with each runtime --------------------------------------------------------------


@pytest.mark.slow
def test_onnxruntime_int8_is_byte_identical_and_gated(tmp_path):
    request = meter_request("onnxruntime", INT8, variant="full")
    first, second = _build(request, tmp_path), _build(request, tmp_path)
    assert first.chosen == INT8 and first.artifact_name == "model.onnx"
    assert sha(first.artifact) == sha(second.artifact)
    model = onnx.load_from_string(first.artifact)
    assert model.producer_name == "edgefleet" and not model.doc_string
    assert [o.domain for o in model.opset_import] == [""]  # no stray runtime domains
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0
    m = first.metrics
    assert m["size_ratio"] < 0.35  # int8 weights
    assert m["accuracy"]["metric"] == "top1_agreement" and m["accuracy"]["value"] >= 0.95
    assert m["latency_ms"]["p95"] >= m["latency_ms"]["median"] > 0 and m["latency_runs"] == 10
    assert set(m["latency_ratio"]) == {"median", "p95"} and m["peak_memory_bytes"] > 0
    assert m["top1_accuracy"] > 0.9 and "reference_top1_accuracy" in m
    assert [g.name for g in first.attempts[0].gates] == ["size_bytes", "top1_agreement"]
    probe = first.probe
    golden = np.load(io.BytesIO(probe.input_npy))
    assert golden.shape == probe.input_shape == (1, 1, 8, 8)
    assert len(probe.expected_output) == 10 and probe.tolerance > 0
    assert probe.latency_budget_ms == 20.0 and probe.output_name == "logits"


def test_fp16_keeps_float32_inputs_and_outputs(tmp_path):
    outcome = _build(meter_request("onnxruntime", FP16), tmp_path)
    model = onnx.load_from_string(outcome.artifact)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert outcome.metrics["accuracy"]["value"] >= 0.99


def test_only_the_portable_basic_graph_is_saved(tmp_path):
    basic = _build(meter_request("onnxruntime", FP32), tmp_path)
    extended = _build(meter_request("onnxruntime", replace_recipe(FP32, graph_optimization="extended")), tmp_path)
    # "extended" is applied by the session at load time, never saved: the bytes are the basic graph's.
    assert sha(basic.artifact) == sha(extended.artifact)
    assert any("applies the extended level" in n for n in extended.metrics["notes"])
    ops = {n.op_type for n in onnx.load_from_string(basic.artifact).graph.node}
    assert ops <= {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}  # no host-specific fused kernels


def replace_recipe(recipe: Recipe, **changes) -> Recipe:
    return Recipe(**{**recipe.model_dump(), **changes})


@pytest.mark.slow
def test_tensorrt_ready_onnx_and_build_spec(tmp_path):
    request = meter_request("tensorrt", TRT_INT8, FP16, ram_budget_bytes=2048 << 20)
    first, second = _build(request, tmp_path), _build(request, tmp_path)
    assert sha(first.artifact) == sha(second.artifact)
    assert first.extra_files == second.extra_files
    model = onnx.load_from_string(first.artifact)
    zero_points = _zero_points(model)
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric int8
    spec = json.loads(first.extra_files["tensorrt-build-spec.json"])
    assert spec["tensorrt_version"] == "10.3" and spec["compute_capability"] == "8.7"
    assert spec["timing_cache_key"] == "trt10.3-sm87" and spec["strongly_typed"] is True
    assert spec["min_shape"] == spec["opt_shape"] == spec["max_shape"] == [1, 1, 8, 8]
    assert spec["workspace_mb"] == 1024 and spec["onnx_sha256"] == sha(first.artifact)
    notes = first.metrics["notes"]
    assert any("engine deferred to device" in n for n in notes)
    assert any("gated on onnxruntime CPU" in n for n in notes)
    assert first.engine is None


@pytest.mark.slow
def test_openvino_int8_ir_tar_is_byte_identical(tmp_path):
    recipe = Recipe(name="ov-int8", precision="int8", quantization="static")
    request = meter_request("openvino", recipe)
    first, second = _build(request, tmp_path), _build(request, tmp_path)
    assert first.artifact_name == "model.ov.tar" and sha(first.artifact) == sha(second.artifact)
    with tarfile.open(fileobj=io.BytesIO(first.artifact)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["model.bin", "model.xml"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        xml = tar.extractfile("model.xml").read().decode()
    assert "FakeQuantize" in xml and "/tmp" not in xml
    assert "OpenVINO" in first.metrics["gate_runtime"] and "f32" in first.metrics["gate_runtime"]
    assert first.metrics["accuracy"]["value"] >= 0.95


def test_pruning_records_sparsity_and_compressed_size(tmp_path):
    pruned = Recipe(name="pruned", precision="fp32", sparsity=0.5)
    dense, sparse = (_build(meter_request("onnxruntime", r, variant="full"), tmp_path) for r in (FP32, pruned))
    s = sparse.metrics["sparsity"]
    assert s["target"] == 0.5 and 0.5 <= s["achieved"] < 0.51 and s["tensors"] == 4
    # Dense kernels: the file stays the same size, the compressed transfer shrinks.
    assert abs(sparse.metrics["artifact_bytes"] - dense.metrics["artifact_bytes"]) < 1024
    assert sparse.metrics["compressed_bytes"] < 0.8 * dense.metrics["compressed_bytes"]
    assert "accuracy" in sparse.metrics  # judged by the same gates


def test_magnitude_prune_is_exact_and_skips_excluded_nodes():
    weight = numpy_helper.from_array(np.array([[1.0, -4.0], [0.5, 2.0]], np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph)
    pruned, stats = magnitude_prune(model, 0.5)
    assert numpy_helper.to_array(pruned.graph.initializer[0]).tolist() == [[0.0, -4.0], [0.0, 2.0]]
    assert (stats.sparsity, stats.weights, stats.zeros) == (0.5, 4, 2)
    untouched, stats = magnitude_prune(model, 0.5, frozenset({"mm"}))
    assert stats.tensors == 0 and numpy_helper.to_array(untouched.graph.initializer[0])[0, 0] == 1.0


# -- fallbacks and failing gates --------------------------------------------------------------


def test_failed_gates_fall_back_and_record_why(tmp_path):
    # A size limit the int8 graph meets and FP32 does not: the FP32 recipe first is rejected.
    request = meter_request("onnxruntime", FP32, INT8, variant="full", max_artifact_bytes=1 << 20)
    outcome = _build(request, tmp_path)
    assert outcome.chosen == INT8
    rejected = outcome.attempts[0]
    assert not rejected.passed and rejected.reason.startswith("size_bytes 2196")
    assert [g.passed for g in rejected.gates] == [False, True]  # accuracy was still measured


def test_no_recipe_passes_is_an_outcome_not_an_error(tmp_path):
    request = meter_request("onnxruntime", FP32, FP16, max_artifact_bytes=100,
                            accuracy=AccuracyBudget(metric="max_abs_error", threshold=1e-12))
    outcome = _build(request, tmp_path)
    assert outcome.artifact is None and outcome.chosen is None and outcome.probe is None
    assert [a.recipe.name for a in outcome.attempts] == ["fp32", "fp16"]
    fp16 = outcome.attempts[1]
    assert "size_bytes" in fp16.reason and "max_abs_error" in fp16.reason
    assert fp16.metrics["accuracy"]["value"] > 1e-12  # the numbers travel with the failure


def test_latency_and_memory_limits_are_gated_when_declared(tmp_path):
    slow = replace_recipe(FP32, max_latency_ratio=1e-6)
    outcome = _build(meter_request("onnxruntime", slow, ram_budget_bytes=1), tmp_path)
    failed = {g.name for g in outcome.attempts[0].gates if not g.passed}
    assert failed == {"latency_ratio", "peak_memory_bytes"}


# -- bad inputs: clear errors, nothing left behind ----------------------------------------------


def _corrupt(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.onnx"
    source = (FLEET / "models" / "meter-digits" / "1.0.0" / "student.onnx").read_bytes()
    if kind == "garbage":
        path.write_bytes(b"\x00\xffthis is not protobuf\x13\x37" * 20)
    elif kind == "truncated":
        path.write_bytes(source[: len(source) // 3])
    elif kind == "dangling-input":
        node = helper.make_node("Relu", ["nowhere"], ["y"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
        path.write_bytes(helper.make_model(graph).SerializeToString())
    elif kind == "empty-file":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["garbage", "truncated", "dangling-input", "empty-file", "missing"])
def test_corrupt_onnx_is_a_clear_error(tmp_path, kind):
    path = tmp_path / "absent.onnx" if kind == "missing" else _corrupt(kind, tmp_path)
    request = meter_request("onnxruntime", INT8, source_path=path, source_shown=f"models/m/{path.name}")
    work = tmp_path / "work"
    with pytest.raises(BuildError) as caught:
        build_artifact(request, work)
    assert caught.value.code == "E410"
    assert f"models/m/{path.name}" in caught.value.message and caught.value.hint
    assert not work.exists() or list(work.iterdir()) == []


BAD_REQUESTS = {
    "no-calibration": ("onnxruntime", (INT8,), {"calibration": None}, "E412", "needs calibration data"),
    "no-evaluation": ("onnxruntime", (FP32,), {"evaluation": None, "labels": None}, "E412", "evaluation data"),
    "openvino-dynamic": ("openvino", (Recipe(name="d", precision="int8", quantization="dynamic"),), {},
                         "E420", "no dynamic INT8"),
    "openvino-entropy": ("openvino", (Recipe(name="e", precision="int8", calibration="entropy"),), {},
                         "E420", "no entropy calibration"),
    "tensorrt-asymmetric": ("tensorrt", (Recipe(name="a", precision="int8", symmetric=False),), {},
                            "E420", "needs symmetric"),
    "tensorrt-reduce-range": ("tensorrt", (Recipe(name="r", precision="int8", reduce_range=True),), {},
                              "E420", "full 8-bit range"),
    "tensorrt-extended": ("tensorrt", (replace_recipe(FP16, graph_optimization="extended"),), {},
                          "E420", "onnxruntime setting"),
    "fp16-quantized": ("onnxruntime", (Recipe(name="q", precision="fp16", quantization="static"),), {},
                       "E420", "applies to int8 only"),
    "precision-not-run": ("onnxruntime", (FP16,), {"class_precisions": ("fp32", "int8")}, "E421", "not a precision"),
    "unknown-node": ("onnxruntime", (replace_recipe(INT8, exclude_nodes=["conv9"]),), {}, "E422", "conv9"),
    "no-recipes": ("onnxruntime", (), {}, "E420", "no recipe"),
    "data-shape": ("onnxruntime", (FP32,), {"evaluation": np.zeros((4, 1, 9, 9), np.float32), "labels": None},
                   "E414", "model input 'image'"),
    "labels-needed": ("onnxruntime", (FP32,), {"labels": None,
                                               "accuracy": AccuracyBudget(metric="top1_accuracy", threshold=0.9)},
                      "E415", "needs labels"),
    "accuracy-required": ("onnxruntime", (FP32,), {"accuracy": None}, "E415", "requires an accuracy gate"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_recipes_and_data_the_runtime_cannot_use_are_clear_errors(tmp_path, case):
    runtime, recipes, changes, code, words = BAD_REQUESTS[case]
    request = meter_request(runtime, *recipes, **changes)
    work = tmp_path / "work"
    with pytest.raises(BuildError) as caught:
        build_artifact(request, work)
    assert caught.value.code == code and words in caught.value.message
    assert caught.value.hint
    if recipes and caught.value.subject == "recipe":
        assert caught.value.recipe == recipes[0]  # so the caller can point at its YAML line
    assert not work.exists() or list(work.iterdir()) == []


def test_missing_openvino_extra_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an install without the extra looks like
    with pytest.raises(BuildError) as caught:
        build_artifact(meter_request("openvino", FP16), tmp_path / "work")
    assert caught.value.code == "E430" and "edgefleet[openvino]" in caught.value.hint


def test_toolchain_versions_name_what_decides_the_bytes():
    ort = toolchain_versions("onnxruntime")
    assert set(ort) == {"numpy", "onnx", "onnxruntime", "edgefleet", "edgefleet-build-engine"}
    assert toolchain_versions(RUNTIMES["tensorrt"]) == ort  # a RuntimeSpec works too
    ov = toolchain_versions("openvino")
    assert {"openvino", "nncf"} <= set(ov) and "onnxruntime" not in ov


# -- TensorRT engines (the GPU path, with a stand-in for the library that cannot run here) -------


def _spec(cc: str | None = "8.7") -> optimize_tensorrt.TensorRTBuildSpec:
    return optimize_tensorrt.build_spec(b"graph", precision="int8", tensorrt_version="10.3", compute_capability=cc,
                                        input_name="image", shape=(1, 1, 8, 8), workspace=512)


@pytest.mark.parametrize("installed, gpus, cc, here, words", [
    (None, (), "8.7", False, "tensorrt is not installed"),
    ("10.3.0", (), "8.7", False, "no NVIDIA GPU"),
    ("10.3.0", ("8.9",), "8.7", False, "needs compute capability 8.7"),
    ("10.8.0", ("8.7",), "8.7", False, "the class runs 10.3"),
    ("10.3.0", ("8.7",), None, False, "no compute_capability"),
    ("10.3.0", ("8.9", "8.7"), "8.7", True, "engine built here"),
], ids=["no-tensorrt", "no-gpu", "other-gpu", "other-version", "no-cc", "matching"])
def test_engine_is_built_only_on_a_matching_gpu(installed, gpus, cc, here, words):
    decision = optimize_tensorrt.decide_engine(_spec(cc), installed, gpus)
    assert decision.build_here is here and words in decision.reason


class FakeTensorRT(types.ModuleType):
    """MOCK of the `tensorrt` module (GPU-only; cannot be installed here). It records the
    calls `build_engine` makes; the real path is the same function with the real module."""

    def __init__(self):
        super().__init__("tensorrt")
        calls = self.calls = []
        self.__version__ = "10.3.0"

        class Logger:
            WARNING = 2

            def __init__(self, level):
                calls.append(("logger", level))

        class Flag:
            STRONGLY_TYPED = 5

        class Pool:
            WORKSPACE = "workspace"

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                calls.append(("parse", data))
                return True

        class Config:
            def set_memory_pool_limit(self, pool, size):
                calls.append(("workspace", size))

            def add_optimization_profile(self, profile):
                calls.append(("profile", profile.shapes))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                self.shapes = (name, lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls.append(("network", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"ENGINE"

        self.Logger, self.NetworkDefinitionCreationFlag, self.MemoryPoolType = Logger, Flag, Pool
        self.OnnxParser, self.Builder = Parser, Builder


def test_build_engine_drives_tensorrt_strongly_typed(monkeypatch):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    assert optimize_tensorrt.build_engine(b"graph", _spec()) == b"ENGINE"
    assert ("parse", b"graph") in fake.calls  # the engine is built from the ONNX it was given
    assert ("network", 1 << 5) in fake.calls  # strongly typed: precision from the graph
    assert ("workspace", 512 << 20) in fake.calls
    assert ("profile", ("image", (1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8))) in fake.calls


def test_engine_ships_beside_the_onnx_on_a_matching_builder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    monkeypatch.setattr(optimize_tensorrt, "tensorrt_version", lambda: "10.3.0")
    monkeypatch.setattr(optimize_tensorrt, "local_gpu_capabilities", lambda: ("8.7",))
    outcome = _build(meter_request("tensorrt", FP16), tmp_path)
    assert outcome.engine == b"ENGINE" and outcome.artifact_name == "model.onnx"
    assert any("engine built here" in n for n in outcome.metrics["notes"])
