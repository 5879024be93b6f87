"""Model analysis on real models: facts, activation estimates, the sha256 cache, runtime support.

Known facts are derived in the tests themselves (numpy over the file's tensors, the
architecture in make_model.py, real onnxruntime runs), never copied from the code
under test.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import EXAMPLE_FLEET
from edgefleet.analysis import cache as cache_mod
from edgefleet.analysis.cache import Analyzer, sha256_file
from edgefleet.analysis.constraints import bind_inputs
from edgefleet.analysis.onnx_facts import ModelReadError, activation_estimate, model_facts, read_model
from edgefleet.analysis.runtime_support import (OpenVinoProbe, installed_onnxruntime_kernels, onnxruntime_support,
                                                openvino_support, probe_openvino, tensorrt_support)
from edgefleet.load.repo import read_repository
from edgefleet.spec.hardware import RuntimeSpec

FULL = EXAMPLE_FLEET / "models/meter-digits/1.1.0/full.onnx"
STUDENT = EXAMPLE_FLEET / "models/meter-digits/1.1.0/student.onnx"
MEDICAL_CART = read_repository(EXAMPLE_FLEET)[0].hardware["medical-cart-cpu"].doc


def ppocr_det() -> Path:
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    return Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def analyse(path: Path):
    proto, size, checker = read_model(path)
    return proto, model_facts(proto, sha256=sha256_file(path), file_size=size, checker_error=checker)


def weight_arrays(model: onnx.ModelProto) -> list[np.ndarray]:
    """Every initializer and Constant-node tensor of the main graph, as numpy arrays."""
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            arrays += [numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"]
    return arrays


# ------------------------------------------------------------------ meter-digits


def test_meter_digits_full_facts_match_the_file_and_architecture():
    proto, facts = analyse(FULL)
    model = onnx.load(str(FULL))
    # Independent count: numpy over the stored tensors, and the architecture in make_model.py
    # (Conv 1->32 3x3, Conv 32->64 3x3, Gemm 1024->512, Gemm 512->10, each with bias).
    by_numpy = sum(a.size for a in weight_arrays(model))
    by_architecture = (32 * 1 * 9 + 32) + (64 * 32 * 9 + 64) + (1024 * 512 + 512) + (512 * 10 + 10)
    assert facts.parameter_count == by_numpy == by_architecture
    assert facts.weight_elements == {"float32": by_numpy}
    assert {op.key for op in facts.operators} == {n.op_type for n in model.graph.node}
    assert {op.key: op.count for op in facts.operators} == {"Conv": 2, "Relu": 3, "MaxPool": 1, "Flatten": 1,
                                                            "Gemm": 2}
    assert facts.opsets == {"ai.onnx": 17} and facts.ir_version == 8
    assert facts.file_size == FULL.stat().st_size
    assert facts.sha256 == sha256_file(FULL)
    assert [(t.name, t.dtype, t.shape) for t in facts.inputs] == [("image", "float32", ("N", 1, 8, 8))]
    assert [(t.name, t.dtype, t.shape) for t in facts.outputs] == [("logits", "float32", ("N", 10))]
    assert facts.dynamic_dims() == [("image", 0, "N")]
    assert facts.native_precision == "fp32" and facts.quantization.qdq_nodes == 0
    assert facts.checker_error == ""
    # Artifact estimate: non-weight bytes + one byte per parameter at int8.
    assert facts.artifact_bytes_at("int8") == FULL.stat().st_size - 4 * by_numpy + by_numpy
    assert facts.artifact_bytes_at("fp32") == FULL.stat().st_size


def test_payloads_are_stripped_but_counts_kept():
    proto, facts = analyse(FULL)
    assert max(len(t.raw_data) for t in proto.graph.initializer) <= 4096
    assert facts.weight_bytes == 4 * facts.parameter_count


def _chain_peak_with_onnxruntime(path: Path, x: np.ndarray) -> int:
    """Peak of (inputs + outputs) over the nodes of a chain graph, from real tensors."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    weights = {t.name for t in model.graph.initializer}
    names = [o for n in model.graph.node for o in n.output]
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, sess.run(names, {"image": x})))
    values["image"] = x
    return max(sum(values[i].nbytes for i in n.input if i not in weights) + values[n.output[0]].nbytes
               for n in model.graph.node)


@pytest.mark.parametrize("batch", [1, 8])
def test_activation_peak_matches_real_tensor_sizes(batch):
    proto, facts = analyse(FULL)
    estimate = activation_estimate(proto, {"image": (batch, 1, 8, 8)})
    x = np.zeros((batch, 1, 8, 8), np.float32)
    assert estimate.peak_bytes["fp32"] == _chain_peak_with_onnxruntime(FULL, x)
    assert estimate.peak_bytes["fp16"] * 2 == estimate.peak_bytes["fp32"]
    assert estimate.unknown_tensors == 0 and estimate.error == ""


def test_student_is_smaller_in_every_measure():
    _, full = analyse(FULL)
    _, student = analyse(STUDENT)
    assert student.parameter_count == sum(a.size for a in weight_arrays(onnx.load(str(STUDENT))))
    assert student.parameter_count * 100 < full.parameter_count
    assert student.artifact_bytes_at("int8") < 0.5 * 1024 * 1024 < full.artifact_bytes_at("int8")


# ------------------------------------------------------------------ PP-OCR det


def test_ppocr_det_facts_match_the_file():
    path = ppocr_det()
    proto, facts = analyse(path)
    model = onnx.load(str(path))
    assert facts.parameter_count == sum(a.size for a in weight_arrays(model))
    assert facts.parameter_count > 1_000_000  # a real detector, weights held in Constant nodes
    assert {op.key for op in facts.operators} == {n.op_type for n in model.graph.node}
    assert {"Conv", "ConvTranspose", "HardSigmoid", "Resize", "Sigmoid"} <= {op.key for op in facts.operators}
    assert facts.opsets == {"ai.onnx": model.opset_import[0].version}
    (x,) = facts.inputs
    declared = model.graph.input[0].type.tensor_type.shape.dim
    assert x.name == model.graph.input[0].name and x.dtype == "float32"
    assert x.shape == tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in declared)
    assert x.shape[1] == 3 and [axis for _, axis, _ in facts.dynamic_dims()] == [0, 2, 3]
    (y,) = facts.outputs
    assert y.name == model.graph.output[0].name and y.shape[1] == 1 and len(y.shape) == 4


def test_ppocr_det_activations_scale_with_the_image_area():
    proto, _ = analyse(ppocr_det())
    small = activation_estimate(proto, {"x": (1, 3, 320, 320)})
    large = activation_estimate(proto, {"x": (1, 3, 640, 640)})
    batch = activation_estimate(proto, {"x": (2, 3, 320, 320)})
    assert small.unknown_tensors == large.unknown_tensors == 0
    assert large.peak_bytes["fp32"] == pytest.approx(4 * small.peak_bytes["fp32"], rel=0.02)
    assert batch.peak_bytes["fp32"] == 2 * small.peak_bytes["fp32"]
    # The input alone is live at the start: the peak is at least that.
    assert small.peak_bytes["fp32"] >= 3 * 320 * 320 * 4


# ------------------------------------------------------------------ bad files


def _truncated(tmp: Path) -> bytes:
    return FULL.read_bytes()[: FULL.stat().st_size // 2]


BAD_FILES = {
    "text": lambda tmp: b"name: not a model\n",
    "empty": lambda tmp: b"",
    "truncated": _truncated,
    "png-header": lambda tmp: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_broken_files_raise_a_readable_error(tmp_path, kind):
    path = tmp_path / "model.onnx"
    path.write_bytes(BAD_FILES[kind](tmp_path))
    with pytest.raises(ModelReadError, match="not an ONNX model"):
        read_model(path)


# External data is refused (not pinned by the source's sha256): tests/test_hostile_models.py.


# ------------------------------------------------------------------ cache


def test_cache_is_written_by_sha256_and_read_without_parsing(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    shutil.copy(STUDENT, root / "m" / "student.onnx")
    first = Analyzer(root).analyse("m/student.onnx")
    record_path = root / ".edgefleet/cache/analysis" / f"{first.sha256}.json"
    record = json.loads(record_path.read_text())
    assert record["sha256"] == first.sha256 and record["facts"]["parameter_count"] == first.facts.parameter_count


    def no_parsing(path):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(cache_mod, "read_model", no_parsing)
    second = Analyzer(root).analyse("m/student.onnx")
    assert second.facts == first.facts


CORRUPT_RECORDS = {
    "garbage": b"\x00\xff not json",
    "truncated-json": b'{"schema": 1, "sha256": ',
    "wrong-schema": None,  # filled in by the test from a good record
    "facts-not-valid": None,
    "other-sha": None,
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_RECORDS))
def test_corrupt_cache_files_are_ignored_and_rewritten(tmp_path, kind):
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    shutil.copy(STUDENT, root / "m" / "student.onnx")
    good = Analyzer(root).analyse("m/student.onnx")
    record_path = root / ".edgefleet/cache/analysis" / f"{good.sha256}.json"
    record = json.loads(record_path.read_text())
    if kind == "wrong-schema":
        record["schema"] = 999
        data = json.dumps(record).encode()
    elif kind == "facts-not-valid":
        record["facts"]["parameter_count"] = "many"
        data = json.dumps(record).encode()
    elif kind == "other-sha":
        record["sha256"] = "0" * 64
        data = json.dumps(record).encode()
    else:
        data = CORRUPT_RECORDS[kind]
    record_path.write_bytes(data)
    again = Analyzer(root).analyse("m/student.onnx")
    assert again.facts == good.facts
    assert json.loads(record_path.read_text())["facts"] == good.facts.model_dump(mode="json")


def test_unwritable_cache_directory_still_analyses(tmp_path):
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    shutil.copy(STUDENT, root / "m" / "student.onnx")
    (root / ".edgefleet").write_text("a file where the cache directory should be")
    result = Analyzer(root).analyse("m/student.onnx")
    assert result.facts is not None and result.facts.parameter_count > 0


def test_activation_estimates_are_cached_per_shape(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    shutil.copy(FULL, root / "m" / "full.onnx")
    analyzer = Analyzer(root)
    analysis = analyzer.analyse("m/full.onnx")
    one = analyzer.activations(analysis, {"image": (1, 1, 8, 8)})
    eight = analyzer.activations(analysis, {"image": (8, 1, 8, 8)})
    assert eight.peak_bytes["fp32"] == 8 * one.peak_bytes["fp32"]
    monkeypatch.setattr(cache_mod, "activation_estimate", lambda *a: pytest.fail("recomputed"))
    analyzer = Analyzer(root)
    assert analyzer.activations(analyzer.analyse("m/full.onnx"), {"image": (8, 1, 8, 8)}) == eight


# ------------------------------------------------------------------ runtime support


def _model(tmp_path: Path, name: str, nodes, inputs, outputs, opset=17, initializers=(), ir=8) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def image_decoder_model(tmp_path: Path) -> Path:
    """Decodes JPEG bytes in the graph (ImageDecoder, opset 20), then scales to [0, 1]."""
    nodes = [helper.make_node("ImageDecoder", ["jpeg"], ["pixels"], pixel_format="Grayscale"),
             helper.make_node("Cast", ["pixels"], ["image"], to=TensorProto.FLOAT)]
    return _model(tmp_path, "decoder", nodes, [helper.make_tensor_value_info("jpeg", TensorProto.UINT8, ["B"])],
                  [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["H", "W", 1])], opset=20)


def maxunpool_model(tmp_path: Path) -> Path:
    """A SegNet-style decoder: MaxPool indices feed MaxUnpool."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxUnpool", ["p", "idx"], ["u"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("ReduceMax", ["u"], ["mask"], keepdims=1, axes=[1])]
    return _model(tmp_path, "segnet", nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["N", 1, 8, 8])],
                  [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, 8, 8])], opset=17,
                  initializers=[w])


ORT_CPU = RuntimeSpec(name="onnxruntime", version="1.20", device="CPUExecutionProvider")


def test_onnxruntime_support_agrees_with_a_real_session(tmp_path):
    import onnxruntime as ort

    kernels = installed_onnxruntime_kernels()
    good = onnxruntime_support(analyse(FULL)[1], ORT_CPU, kernels)
    assert good.operators.status == "pass" and good.opset.status == "pass"
    path = image_decoder_model(tmp_path)
    bad = onnxruntime_support(analyse(path)[1], ORT_CPU, kernels)
    assert bad.operators.status == "fail" and bad.unsupported_ops == ("ImageDecoder",)
    assert "ImageDecoder (no kernel)" in bad.operators.detail
    with pytest.raises(Exception, match="ImageDecoder"):  # the real runtime refuses it too
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset,ir,pinned,status", [
    (21, 10, "1.20", "pass"),
    (22, 10, "1.20", "fail"),
    (22, 10, "1.21", "pass"),
    (17, 11, "1.20", "fail"),
    (17, 8, "1.25", "unchecked"),
], ids=["opset21-on-1.20", "opset22-on-1.20", "opset22-on-1.21", "ir11-on-1.20", "pin-not-in-table"])
def test_onnxruntime_opset_and_ir_limits(tmp_path, opset, ir, pinned, status):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = _model(tmp_path, "relu", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], opset=opset, ir=ir)
    proto, size, _ = read_model(path)  # the checker may reject IR 11; analysis must not care
    facts = model_facts(proto, sha256="0" * 64, file_size=size)
    report = onnxruntime_support(facts, RuntimeSpec(name="onnxruntime", version=pinned), installed_onnxruntime_kernels())
    assert report.opset.status == status, report.opset


def test_function_operators_count_as_supported(tmp_path):
    # Mish (opset 18) has no onnxruntime kernel but is an ONNX function: runtimes expand it.
    nodes = [helper.make_node("Mish", ["x"], ["y"])]
    path = _model(tmp_path, "mish", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], opset=18)
    facts = analyse(path)[1]
    assert facts.operators[0].function
    assert onnxruntime_support(facts, ORT_CPU, installed_onnxruntime_kernels()).operators.status == "pass"


def test_openvino_probe_on_real_models(tmp_path):
    pytest.importorskip("openvino")
    good = probe_openvino(FULL, "CPU")
    assert good.used == "CPU" and not good.unconverted and not good.unsupported and not good.error
    segnet = maxunpool_model(tmp_path)
    bad = probe_openvino(segnet, "CPU")
    assert bad.unconverted == ("MaxUnpool",)
    report = openvino_support(analyse(segnet)[1], RuntimeSpec(name="openvino", version="2024.6"), bad)
    assert report.operators.status == "fail" and "MaxUnpool" in report.operators.detail


def test_openvino_missing_device_is_checked_on_cpu_and_said(tmp_path):
    pytest.importorskip("openvino")
    import openvino as ov

    if "NPU" in {d.split(".")[0] for d in ov.Core().available_devices}:
        pytest.skip("this host has an NPU")
    probe = probe_openvino(STUDENT, "NPU")
    assert probe.requested == "NPU" and probe.used == "CPU"
    report = openvino_support(analyse(STUDENT)[1], RuntimeSpec(name="openvino", version="2024.6", device="NPU"),
                              probe)
    assert report.operators.status == "pass"
    assert any("NPU is not present" in n and "proxy" in n for n in report.notes)


def test_openvino_not_installed_is_not_checked():
    facts = analyse(STUDENT)[1]
    report = openvino_support(facts, RuntimeSpec(name="openvino", version="2024.6", device="NPU"),
                              OpenVinoProbe(installed="", requested="NPU"))
    assert report.operators.status == "unchecked" and "not installed" in report.operators.detail


@pytest.mark.parametrize("version,opset,status,table", [
    ("10.3", 17, "pass", "10.1"),
    ("10.0", 20, "pass", "10.0"),
    ("10.3", 21, "fail", "10.1"),
    ("10.3", 8, "fail", "10.1"),
    ("8.6", 18, "fail", "8.6"),
    ("11.0", 17, "unchecked", None),
], ids=["10.3-uses-10.1-row", "10.0-opset20", "opset21-too-new", "opset8-too-old", "8.6-opset18", "unknown-major"])
def test_tensorrt_opset_table(tmp_path, version, opset, status, table):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = _model(tmp_path, "relu", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], opset=opset)
    report = tensorrt_support(analyse(path)[1], RuntimeSpec(name="tensorrt", version=version, device="GPU"))
    assert report.opset.status == status
    if table:
        assert f"TensorRT {table}" in report.checked_with


def test_tensorrt_rejects_operators_its_parser_lacks(tmp_path):
    report = tensorrt_support(analyse(maxunpool_model(tmp_path))[1],
                              RuntimeSpec(name="tensorrt", version="10.3", device="GPU"))
    assert report.unsupported_ops == ("MaxUnpool",)
    assert "MaxUnpool (not supported)" in report.operators.detail
    ppocr = tensorrt_support(analyse(ppocr_det())[1], RuntimeSpec(name="tensorrt", version="10.3", device="GPU"))
    assert ppocr.operators.status == "pass"


# ------------------------------------------------------------------ fuzzing the edge


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=STUDENT.stat().st_size - 1),
                          st.integers(min_value=0, max_value=255)), min_size=1, max_size=6),
       st.booleans())
def test_damaged_model_bytes_never_crash_the_analysis(edits, truncate):
    """Flipped bytes give facts or a readable error, never an exception."""
    data = bytearray(STUDENT.read_bytes())
    for offset, value in edits:
        data[offset] = value
    if truncate:
        data = data[: edits[0][0]]
    hw = MEDICAL_CART
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "m.onnx").write_bytes(bytes(data))
        analyzer = Analyzer(root)
        result = analyzer.analyse("m.onnx")
        assert (result.facts is None) == bool(result.error)
        if result.facts is not None:
            estimate = analyzer.activations(result, bind_inputs(result.facts, hw).shapes)
            if estimate.error:  # inference gave up: nothing is counted, and the reason is kept
                assert not any(estimate.peak_bytes.values()) and estimate.tensors == 0
            else:  # float activations shrink with the precision, never grow
                peaks = estimate.peak_bytes
                assert set(peaks) == {"fp32", "fp16", "int8"}
                assert 0 <= peaks["int8"] <= peaks["fp16"] <= peaks["fp32"]
            report = onnxruntime_support(result.facts, hw.spec.runtime, installed_onnxruntime_kernels())
            assert {report.operators.status, report.opset.status} <= {"pass", "fail", "unchecked"}
            assert report.operators.status != "fail" or report.unsupported_ops  # a refusal names the operator
