"""`edgefleet validate` proves each needed build fits its hardware class, or says where and why not.

Every E3xx constraint fires here on a realistic case in a copy of the example fleet,
and each error is checked for its file and line on both sides: the model YAML and
the hardware class field it breaks.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import EXAMPLE_FLEET
from edgefleet.analysis.check import check_constraints
from edgefleet.analysis.selection import choose_variant
from edgefleet.pipeline.validate import validate_repository
from edgefleet.load.repo import read_repository

STUDENT = EXAMPLE_FLEET / "models/meter-digits/1.1.0/student.onnx"
FULL = EXAMPLE_FLEET / "models/meter-digits/1.1.0/full.onnx"
CALIBRATION = EXAMPLE_FLEET / "models/meter-digits/data/calibration.npz"


# ------------------------------------------------------------------ fleet editing helpers


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str, after: str | None = None) -> int:
    """1-based line of the first line containing `needle` (after the line containing `after`)."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if after in ln) if after else 0
    return next(i for i, ln in enumerate(lines) if i >= start and needle in ln) + 1


def drop_variant(fleet: Path, variant: str) -> None:
    """Remove a variant from every version of meter-digits."""
    path = fleet / "models/meter-digits.yaml"
    text = re.sub(rf"\n        - name: {variant}\n(          .*\n)+", "\n", path.read_text())
    path.write_text(text)


def add_model(fleet: Path, name: str, variants: list[tuple[str, Path]], classes: list[str],
              evaluation: bool = True) -> Path:
    """A model YAML with one version 1.0.0 and a rollout of it to every device of `classes`."""
    lines = []
    for variant, source in variants:
        rel = f"models/{name}/{variant}.onnx"
        (fleet / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, fleet / rel)
        lines += [f"        - name: {variant}", f"          source: {rel}", f"          sha256: {sha(fleet / rel)}"]
    data = ["  data:", "    calibration: models/meter-digits/data/calibration.npz"]
    if evaluation:
        data.append("    evaluation: models/meter-digits/data/evaluation.npz")
    yaml = "\n".join([
        "apiVersion: edgefleet/v1", "kind: Model", "metadata:", f"  name: {name}", "spec:",
        "  task: classification", *data, "  accuracy:", "    metric: top1_agreement", "    threshold: 0.98",
        "  versions:", '    - version: "1.0.0"', "      variants:", *lines, ""])
    path = fleet / "models" / f"{name}.yaml"
    path.write_text(yaml)
    (fleet / "rollouts" / f"{name}.yaml").write_text("\n".join([
        "apiVersion: edgefleet/v1", "kind: Rollout", "metadata:", f"  name: {name}", "spec:",
        f"  model: {name}", '  to_version: "1.0.0"', "  selector:", f"    hardware_classes: [{', '.join(classes)}]",
        "  waves:", "    - name: all", "      percent: 100", ""]))
    return path


def add_ocr_class(fleet: Path, name: str = "ocr-kiosk", budget_mb: int = 512,
                  shape: str = "[1, 3, 640, 640]") -> Path:
    """A CPU kiosk reading printed labels with PP-OCR, and two devices of it."""
    path = fleet / "hardware" / f"{name}.yaml"
    path.write_text("\n".join([
        "apiVersion: edgefleet/v1", "kind: HardwareClass", "metadata:", f"  name: {name}", "spec:",
        "  cpu_arch: x86_64", "  runtime:", "    name: onnxruntime", '    version: "1.20"',
        "  precisions: [fp32, int8]", "  ram_mb: 8192", f"  model_ram_budget_mb: {budget_mb}",
        "  storage_mb: 4096", "  max_artifact_mb: 64", "  power_w: 20", "  latency_budget_ms: 200",
        f"  batch_size: {shape.strip('[').split(',')[0]}", "  input:", f"    shape: {shape}", ""]))
    (fleet / "devices" / f"{name}.yaml").write_text("\n".join([
        "apiVersion: edgefleet/v1", "kind: DeviceList", "metadata:", f"  name: {name}-devices", "spec:",
        "  devices:",
        *[line for i in (1, 2) for line in (
            f"    - id: {name}-00{i}", f"      hardware_class: {name}", "      site: plant-brno",
            f"      public_key: ed25519:{hashlib.sha256(f'{name}{i}'.encode()).hexdigest()}")], ""]))
    return path


def errors(diags, code: str) -> list:
    return [d for d in diags if d.code == code]


# ------------------------------------------------------------------ real models made for the cases


def ppocr_det() -> Path:
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    return Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def segnet(path: Path, unpool: bool = True) -> Path:
    """An 8x8 digit segmenter; the decoder upsamples with MaxUnpool (SegNet) or Resize."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    up = (helper.make_node("MaxUnpool", ["p", "idx"], ["u"], kernel_shape=[2, 2], strides=[2, 2]) if unpool else
          helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"))
    inits = [w] + ([] if unpool else [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p", "idx"] if unpool else ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             up, helper.make_node("ReduceMax", ["u"], ["mask"], keepdims=1, axes=[1])]
    graph = helper.make_graph(nodes, "segnet", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                              ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def image_decoder(path: Path) -> Path:
    """Reads JPEG bytes in the graph (ImageDecoder, opset 20)."""
    nodes = [helper.make_node("ImageDecoder", ["jpeg"], ["pixels"], pixel_format="Grayscale"),
             helper.make_node("Cast", ["pixels"], ["image"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("jpeg", TensorProto.UINT8, ["B"])],
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["H", "W", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return _save(model, path)


def opset22(path: Path) -> Path:
    """The student re-exported by a newer exporter (ai.onnx opset 22)."""
    from onnx import version_converter

    return _save(version_converter.convert_version(onnx.load(str(STUDENT)), 22), path)


def quantized(path: Path, symmetric: bool) -> Path:
    """The student quantized to INT8 QDQ by onnxruntime, calibrated on the fleet's real data."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = np.load(CALIBRATION)["input"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{"image": x[i:i + 32]} for i in range(0, len(x), 32)])

        def get_next(self):
            return next(self._batches, None)

    options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False} if symmetric else {}
    quantize_static(str(STUDENT), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, extra_options=options)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "segnet": segnet(d / "segnet.onnx"),
        "segnet-resize": segnet(d / "segnet-resize.onnx", unpool=False),
        "decoder": image_decoder(d / "decoder.onnx"),
        "opset22": opset22(d / "opset22.onnx"),
        "qdq-asymmetric": quantized(d / "qdq-asym.onnx", symmetric=False),
        "qdq-symmetric": quantized(d / "qdq-sym.onnx", symmetric=True),
    }


# ------------------------------------------------------------------ the example fleet


def test_example_fleet_validates_and_selects_per_class(fleet_copy, run_cli):
    res = run_cli("validate", fleet_copy)
    assert res.code == 0, res.err
    # Nothing but the one note that the NPU was checked on CPU as a proxy.
    assert [ln.split(": ")[1] for ln in res.err.splitlines() if not ln.startswith("  ")] == ["note[N301]"]
    repo, diags = validate_repository(fleet_copy)
    assert [d.code for d in diags] == ["N301"]
    for version in ("1.0.0", "1.1.0"):
        picked = {cls: choose_variant(repo, "meter-digits", version, cls) for cls in sorted(repo.hardware)}
        assert {cls: c.variant.name for cls, c in picked.items()} == {
            "factory-gateway-gpu": "full", "intel-lowpower-detector": "student",
            "jetson-vision-standard": "full", "medical-cart-cpu": "full"}
        low = picked["intel-lowpower-detector"]
        assert low.reasons[0].startswith("full: does not fit") and "(E303)" in low.reasons[0]
        assert low.reasons[1].startswith("student: selected")
        # The public fields other stages use.
        assert (low.model, low.version, low.hardware_class) == ("meter-digits", version, "intel-lowpower-detector")


def test_the_note_about_a_proxied_npu_is_one_line(fleet_copy):
    pytest.importorskip("openvino")
    import openvino as ov

    if "NPU" in {d.split(".")[0] for d in ov.Core().available_devices}:
        pytest.skip("this host has an NPU")
    repo, _ = read_repository(fleet_copy)
    notes = check_constraints(repo, with_notes=True)
    assert len(notes) == 1
    for d in notes:
        assert d.severity.value == "note"
        assert d.code == "N301" and "NPU" in d.message and d.location.path.endswith("intel-lowpower-detector.yaml")


# ------------------------------------------------------------------ too big, then fixed


def test_too_big_for_a_class_fails_with_both_locations_and_fixing_the_yaml_passes(fleet_copy, run_cli):
    drop_variant(fleet_copy, "student")
    res = run_cli("validate", fleet_copy)
    assert res.code == 1
    model_yaml, hw_yaml = fleet_copy / "models/meter-digits.yaml", fleet_copy / "hardware/intel-lowpower-detector.yaml"
    for version in ("1.0.0", "1.1.0"):
        line = line_of(model_yaml, "source: models/meter-digits/" + version + "/full.onnx")
        assert f"meter-digits.yaml:{line}:" in res.err
    assert re.search(r"meter-digits\.yaml:\d+:\d+: error\[E303\]: meter-digits@1\.1\.0 variant 'full' does not fit "
                     r"hardware class 'intel-lowpower-detector': the estimated int8 artifact is 0\.524 MB", res.err)
    hw_line = line_of(hw_yaml, "max_artifact_mb:")
    # The related place is its own `-->` line (the second test alone was implied by the first).
    assert re.search(rf"--> \S*hardware/intel-lowpower-detector\.yaml:{hw_line}:\d+: ", res.err), res.err
    assert "max_artifact_mb of hardware class 'intel-lowpower-detector'" in res.err

    edit(hw_yaml, "max_artifact_mb: 0.5", "max_artifact_mb: 1")
    res = run_cli("validate", fleet_copy)
    assert res.code == 0, res.err


def test_an_operator_the_runtime_lacks_fails_and_a_variant_without_it_passes(fleet_copy, run_cli, models):
    model_yaml = add_model(fleet_copy, "meter-seg", [("unpool", models["segnet"])], ["jetson-vision-standard"])
    res = run_cli("validate", fleet_copy)
    assert res.code == 1
    line = line_of(model_yaml, "source: models/meter-seg/unpool.onnx")
    hw_line = line_of(fleet_copy / "hardware/jetson-vision-standard.yaml", "name: tensorrt")
    assert re.search(rf"meter-seg\.yaml:{line}:\d+: error\[E306\]: meter-seg@1\.0\.0 variant 'unpool' does not fit "
                     rf"hardware class 'jetson-vision-standard': TensorRT's ONNX parser cannot import MaxUnpool", res.err)
    assert re.search(rf"--> .*jetson-vision-standard\.yaml:{hw_line}:\d+: runtime\.name of hardware class", res.err)

    # The fix: offer a variant that upsamples with Resize, after the preferred one.
    shutil.copy(models["segnet-resize"], fleet_copy / "models/meter-seg/resize.onnx")
    text = model_yaml.read_text() + (f"        - name: resize\n          source: models/meter-seg/resize.onnx\n"
                                     f"          sha256: {sha(fleet_copy / 'models/meter-seg/resize.onnx')}\n")
    model_yaml.write_text(text)
    res = run_cli("validate", fleet_copy)
    assert res.code == 0, res.err
    repo, _ = validate_repository(fleet_copy)
    choice = choose_variant(repo, "meter-seg", "1.0.0", "jetson-vision-standard")
    assert choice.variant.name == "resize" and "MaxUnpool" in choice.reasons[0]


# ------------------------------------------------------------------ every constraint error


@dataclass
class Case:
    setup: Callable[[Path, dict], None]
    code: str
    model_file: str  # the model-side YAML file
    model_line: str  # a text on the error's line there
    class_file: str | None  # the class-side YAML file (None: no class side)
    class_line: str | None
    message: str  # a regex the message matches


def _replace_student_file(fleet: Path, models: dict) -> None:
    shutil.copy(EXAMPLE_FLEET / "models/meter-digits/1.0.0/student.onnx",
                fleet / "models/meter-digits/1.1.0/student.onnx")


def _student_not_onnx(fleet: Path, models: dict) -> None:
    path = fleet / "models/meter-digits/1.1.0/student.onnx"
    path.write_bytes(b"version: 1\nweights: see the shared drive\n")
    _set_sha(fleet, "1.1.0/student.onnx", sha(path))


def _set_sha(fleet: Path, rel: str, new: str) -> None:
    path = fleet / "models/meter-digits.yaml"
    lines = path.read_text().splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if f"source: models/meter-digits/{rel}" in ln)
    lines[i + 1] = re.sub(r"sha256: [0-9a-f]{64}", f"sha256: {new}", lines[i + 1])
    path.write_text("".join(lines))


def _storage(fleet: Path, models: dict) -> None:
    drop_variant(fleet, "student")
    edit(fleet / "hardware/medical-cart-cpu.yaml", "storage_mb: 4096", "storage_mb: 1")


def _memory(fleet: Path, models: dict) -> None:
    add_ocr_class(fleet, budget_mb=64, shape="[4, 3, 960, 960]")
    add_model(fleet, "label-det", [("ppocr", ppocr_det())], ["ocr-kiosk"])


def _class_recipe_precision(fleet: Path, models: dict) -> None:
    edit(fleet / "hardware/intel-lowpower-detector.yaml", "- name: ov-fp16\n      precision: fp16",
         "- name: ov-fp16\n      precision: fp32")


def _trt_recipe_not_symmetric(fleet: Path, models: dict) -> None:
    # Unset is TensorRT's default, symmetric (the build makes zero-point-0 QDQ for it); only false is wrong.
    edit(fleet / "hardware/jetson-vision-standard.yaml", "      symmetric: true\n", "      symmetric: false\n")


def _trt_asymmetric_qdq(fleet: Path, models: dict) -> None:
    add_model(fleet, "meter-int8", [("qdq", models["qdq-asymmetric"])], ["jetson-vision-standard"])


def _int8_model_on_float_class(fleet: Path, models: dict) -> None:
    edit(fleet / "hardware/factory-gateway-gpu.yaml", "precisions: [fp32, fp16, int8]", "precisions: [fp32, fp16]")
    add_model(fleet, "meter-int8", [("qdq", models["qdq-symmetric"])], ["factory-gateway-gpu"])


def _camera_feeds_uint8(fleet: Path, models: dict) -> None:
    edit(fleet / "hardware/medical-cart-cpu.yaml", "    shape: [1, 1, 8, 8]\n", "    shape: [1, 1, 8, 8]\n    dtype: uint8\n")


def _ocr_on_a_digit_class(fleet: Path, models: dict) -> None:
    add_model(fleet, "label-det", [("ppocr", ppocr_det())], ["medical-cart-cpu"])


def _no_evaluation(fleet: Path, models: dict) -> None:
    edit(fleet / "models/meter-digits.yaml", "    evaluation: models/meter-digits/data/evaluation.npz\n", "")


CASES = {
    "E301-file-replaced-yaml-not-updated": Case(
        _replace_student_file, "E301", "models/meter-digits.yaml", "sha256: faca6810", None, None,
        r"'models/meter-digits/1\.1\.0/student\.onnx' has sha256 88321d7c5baf4d1b.*declares faca6810"),
    "E302-not-an-onnx-file": Case(
        _student_not_onnx, "E302", "models/meter-digits.yaml", "source: models/meter-digits/1.1.0/student.onnx",
        None, None, r"'models/meter-digits/1\.1\.0/student\.onnx' is not an ONNX model"),
    "E303-artifact-over-link-budget": Case(
        lambda f, m: drop_variant(f, "student"), "E303", "models/meter-digits.yaml",
        "source: models/meter-digits/1.1.0/full.onnx", "hardware/intel-lowpower-detector.yaml", "max_artifact_mb:",
        r"estimated int8 artifact is 0\.524 MB .* over max_artifact_mb 0\.5 MB"),
    "E304-two-slots-over-storage": Case(
        _storage, "E304", "models/meter-digits.yaml", "source: models/meter-digits/1.1.0/full.onnx",
        "hardware/medical-cart-cpu.yaml", "storage_mb:", r"two slots .* need 1\.049 MB, over storage_mb 1 MB"),
    "E305-ocr-batch-over-ram-budget": Case(
        _memory, "E305", "models/label-det.yaml", "source: models/label-det/ppocr.onnx",
        "hardware/ocr-kiosk.yaml", "model_ram_budget_mb:",
        r"estimated memory at fp32 is .* peak activations .* for x \[4, 3, 960, 960\]\), over model_ram_budget_mb 64"),
    "E306-openvino-no-maxunpool": Case(
        lambda f, m: (pytest.importorskip("openvino"),
                      add_model(f, "meter-seg", [("unpool", m["segnet"])], ["intel-lowpower-detector"])),
        "E306", "models/meter-seg.yaml", "source: models/meter-seg/unpool.onnx",
        "hardware/intel-lowpower-detector.yaml", "name: openvino",
        r"no conversion rule for MaxUnpool"),
    "E306-onnxruntime-no-imagedecoder": Case(
        lambda f, m: add_model(f, "jpeg-reader", [("decoder", m["decoder"])], ["medical-cart-cpu"]),
        "E306", "models/jpeg-reader.yaml", "source: models/jpeg-reader/decoder.onnx",
        "hardware/medical-cart-cpu.yaml", "name: onnxruntime", r"onnxruntime has no kernel for ImageDecoder"),
    "E306-tensorrt-no-maxunpool": Case(
        lambda f, m: add_model(f, "meter-seg", [("unpool", m["segnet"])], ["jetson-vision-standard"]),
        "E306", "models/meter-seg.yaml", "source: models/meter-seg/unpool.onnx",
        "hardware/jetson-vision-standard.yaml", "name: tensorrt", r"cannot import MaxUnpool \(not supported\)"),
    "E307-opset22-on-onnxruntime-1.20": Case(
        lambda f, m: add_model(f, "meter-new", [("student", m["opset22"])], ["medical-cart-cpu"]),
        "E307", "models/meter-new.yaml", "source: models/meter-new/student.onnx",
        "hardware/medical-cart-cpu.yaml", 'version: "1.20"',
        r"uses ai\.onnx opset 22, onnxruntime 1\.20 implements up to 21"),
    "E308-class-recipe-precision-not-listed": Case(
        _class_recipe_precision, "E308", "hardware/intel-lowpower-detector.yaml", "- name: ov-fp16",
        "hardware/intel-lowpower-detector.yaml", "precisions:",
        r"recipe 'ov-fp16' of hardware class 'intel-lowpower-detector' builds fp32"),
    "E308-tensorrt-int8-recipe-not-symmetric": Case(
        _trt_recipe_not_symmetric, "E308", "hardware/jetson-vision-standard.yaml", "symmetric: false",
        "hardware/jetson-vision-standard.yaml", "name: tensorrt", r"TensorRT INT8 needs symmetric QDQ"),
    "E308-asymmetric-qdq-model-on-tensorrt": Case(
        _trt_asymmetric_qdq, "E308", "models/meter-int8.yaml", "source: models/meter-int8/qdq.onnx",
        "hardware/jetson-vision-standard.yaml", "precisions:",
        r"TensorRT INT8 needs symmetric QDQ, but \d+ of the model's \d+ QuantizeLinear/DequantizeLinear"),
    "E308-int8-model-on-class-without-int8": Case(
        _int8_model_on_float_class, "E308", "models/meter-int8.yaml", "source: models/meter-int8/qdq.onnx",
        "hardware/factory-gateway-gpu.yaml", "precisions:",
        r"already quantized to INT8 .* the class executes only fp32, fp16"),
    "E309-camera-feeds-uint8": Case(
        _camera_feeds_uint8, "E309", "models/meter-digits.yaml", "source: models/meter-digits/1.1.0/full.onnx",
        "hardware/medical-cart-cpu.yaml", "dtype: uint8", r"input 'image' is float32, the class feeds uint8"),
    "E309-ocr-model-on-a-digit-class": Case(
        _ocr_on_a_digit_class, "E309", "models/label-det.yaml", "source: models/label-det/ppocr.onnx",
        "hardware/medical-cart-cpu.yaml", "shape: [1, 1, 8, 8]", r"input 'x' \[.*,3,.*\]: axis 1 is 3, the class feeds 1"),
    "E310-no-evaluation-data": Case(
        _no_evaluation, "E310", "models/meter-digits.yaml", "  data:", "hardware/factory-gateway-gpu.yaml", "spec:",
        r"model 'meter-digits' cannot be gated for hardware classes 'factory-gateway-gpu', 'intel-lowpower-detector', "
        r"'jetson-vision-standard', 'medical-cart-cpu': the model has no evaluation data"),
}


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_constraint_error_names_both_places(fleet_copy, models, case_id):
    case = CASES[case_id]
    case.setup(fleet_copy, models)
    _, diags = validate_repository(fleet_copy)
    found = errors(diags, case.code)
    assert found, [f"{d.location}: {d.code} {d.message}" for d in diags if d.is_error]
    model_line = line_of(fleet_copy / case.model_file, case.model_line)
    hits = [d for d in found if d.location.path.endswith(case.model_file) and d.location.line == model_line]
    assert hits, [f"{d.location}: {d.message}" for d in found]
    d = hits[0]
    assert re.search(case.message, d.message), d.message
    assert d.hint
    if case.class_file is None:
        return
    cls = case.class_file.split("/")[-1].removesuffix(".yaml")
    assert len(hits) == 1  # one diagnostic per place, not one per version or class
    assert f"'{cls}'" in d.message  # the message names both the model side and the class
    where, label = d.related[0]
    assert where.path.endswith(case.class_file) and where.line == line_of(fleet_copy / case.class_file,
                                                                           case.class_line)
    assert cls in label


def test_sha_mismatch_tells_the_real_hash_and_how_to_fix(fleet_copy, run_cli):
    _replace_student_file(fleet_copy, {})
    res = run_cli("validate", fleet_copy)
    assert res.code == 1
    real = sha(fleet_copy / "models/meter-digits/1.1.0/student.onnx")
    assert f"set sha256: {real}" in res.err and "restore the file" in res.err
    assert "Traceback" not in res.err


def test_corrupt_model_is_an_error_not_a_traceback(fleet_copy, run_cli):
    _student_not_onnx(fleet_copy, {})
    res = run_cli("validate", fleet_copy)
    assert res.code == 1 and "error[E302]" in res.err and "Traceback" not in res.err + res.out


def test_when_no_variant_fits_each_variants_failure_is_listed(fleet_copy, models):
    pytest.importorskip("openvino")
    # The low-power class gets a SegNet that OpenVINO cannot convert and a too-big second variant.
    add_model(fleet_copy, "meter-seg", [("unpool", models["segnet"]), ("big", FULL)], ["intel-lowpower-detector"])
    _, diags = validate_repository(fleet_copy)
    mine = [d for d in diags if d.location.path.endswith("meter-seg.yaml")]
    assert {d.code for d in mine} == {"E306", "E303"}
    for d in mine:
        assert "no variant of meter-seg@1.0.0 fits 'intel-lowpower-detector': unpool: E306; big: E303" in d.hint


def test_only_needed_builds_are_checked(fleet_copy):
    # A version no rollout uses may hold a file that is not a model yet: nothing to prove.
    path = fleet_copy / "models/meter-digits/2.0.0/full.onnx"
    path.parent.mkdir()
    path.write_bytes(b"placeholder until training finishes")
    edit(fleet_copy / "models/meter-digits.yaml", "  versions:\n",
         f'  versions:\n    - version: "2.0.0"\n      variants:\n        - name: full\n'
         f"          source: models/meter-digits/2.0.0/full.onnx\n          sha256: {sha(path)}\n")
    _, diags = validate_repository(fleet_copy)
    assert not [d for d in diags if d.is_error]


def test_a_model_version_recipe_override_is_checked_against_the_class(fleet_copy):
    edit(fleet_copy / "models/meter-digits.yaml", '    - version: "1.1.0"\n',
         '    - version: "1.1.0"\n      recipes:\n        openvino:\n          - name: ov-fp32\n'
         '            precision: fp32\n')
    _, diags = validate_repository(fleet_copy)
    model_yaml = fleet_copy / "models/meter-digits.yaml"
    (d,) = [d for d in errors(diags, "E308") if d.location.line == line_of(model_yaml, "- name: ov-fp32")]
    assert d.location.path.endswith("models/meter-digits.yaml")
    assert "recipe 'ov-fp32' of model 'meter-digits' builds fp32" in d.message
    assert "intel-lowpower-detector" in d.message
    assert d.related[0][0].path.endswith("hardware/intel-lowpower-detector.yaml")
    # With no recipe left that the class runs, no variant of 1.1.0 can be built for it.
    assert {x.location.line for x in errors(diags, "E308")} > {d.location.line}
    choice = choose_variant(validate_repository(fleet_copy)[0], "meter-digits", "1.1.0", "intel-lowpower-detector")
    assert choice.variant is None


def test_checker_rejection_is_a_warning_not_an_error(fleet_copy, tmp_path):
    # Some exporters leave the output's shape out; runtimes load it, onnx.checker does not.
    model = onnx.load(str(STUDENT))
    model.graph.output[0].type.tensor_type.ClearField("shape")
    path = tmp_path / "student-noshape.onnx"
    onnx.save(model, str(path))
    add_model(fleet_copy, "meter-lite", [("student", path)], ["medical-cart-cpu"])
    _, diags = validate_repository(fleet_copy)
    (w,) = [d for d in diags if d.code == "W301"]
    assert w.severity.value == "warning" and "onnx.checker rejects" in w.message
    assert not [d for d in diags if d.is_error]


def test_a_tensorrt_release_newer_than_the_table_is_a_note_not_an_error(fleet_copy):
    edit(fleet_copy / "hardware/jetson-vision-standard.yaml", 'version: "10.3"', 'version: "11.0"')
    repo, diags = validate_repository(fleet_copy)
    assert [d for d in diags if d.severity.value != "note"] == []
    (n,) = [d for d in check_constraints(repo, with_notes=True) if d.code == "N302"]
    assert n.location.path.endswith("jetson-vision-standard.yaml")
    assert n.location.line == line_of(fleet_copy / "hardware/jetson-vision-standard.yaml", 'version: "11.0"')
    assert "TensorRT 11.0 is not in edgefleet's TensorRT table" in n.message


# ------------------------------------------------------------------ hardware class consistency (E220-E222)


HW_CONSISTENCY = {
    # (class file, {field: new value}, code, field the error stands at, related field)
    "budget-over-ram": ("medical-cart-cpu.yaml", {"model_ram_budget_mb": "32768"}, "E220",
                        "model_ram_budget_mb:", "ram_mb:"),
    "ram-below-budget": ("intel-lowpower-detector.yaml", {"ram_mb": "128"}, "E220",
                         "model_ram_budget_mb:", "ram_mb:"),
    "two-slots-over-storage": ("jetson-vision-standard.yaml", {"max_artifact_mb": "5000"}, "E221",
                               "max_artifact_mb:", "storage_mb:"),
    "storage-holds-one-slot-only": ("intel-lowpower-detector.yaml", {"max_artifact_mb": "300"},
                                    "E221", "max_artifact_mb:", "storage_mb:"),
    "tensorrt-leaves-no-room": ("jetson-vision-standard.yaml", {"ram_mb": "2560"}, "E222",
                                "model_ram_budget_mb:", "ram_mb:"),
    "openvino-budget-equals-ram": ("intel-lowpower-detector.yaml", {"model_ram_budget_mb": "8192"}, "E222",
                                   "model_ram_budget_mb:", "ram_mb:"),
}


def _set_field(path: Path, field: str, value: str) -> None:
    text = path.read_text()
    new, count = re.subn(rf"^(  {field}: )\S+", rf"\g<1>{value}", text, count=1, flags=re.M)
    assert count == 1, f"{field} not in {path}"
    path.write_text(new)


@pytest.mark.parametrize("case_id", sorted(HW_CONSISTENCY))
def test_an_inconsistent_hardware_class_names_both_fields(fleet_copy, case_id):
    name, changes, code, at, related = HW_CONSISTENCY[case_id]
    path = fleet_copy / "hardware" / name
    for field, value in changes.items():
        _set_field(path, field, value)
    _, diags = validate_repository(fleet_copy)
    found = [d for d in errors(diags, code) if d.location.path.endswith(f"hardware/{name}")]
    assert len(found) == 1, [f"{d.location}: {d.code} {d.message}" for d in diags if d.is_error]
    (d,) = found
    assert d.location.line == line_of(path, at)
    assert [r.line for r, _ in d.related][0] == line_of(path, related)
    assert all(r.path.endswith(f"hardware/{name}") for r, _ in d.related)
    assert f"'{name.removesuffix('.yaml')}'" in d.message and d.hint
    # Each inconsistency has its own code: no other E22x for this class.
    assert {x.code for x in diags if x.code.startswith("E22") and x.location.path.endswith(name)} == {code}


def test_runtime_resident_memory_counts_against_ram(fleet_copy):
    from edgefleet.rules.hardware import RUNTIME_RESIDENT_MB, runtime_resident_mb

    path = fleet_copy / "hardware/jetson-vision-standard.yaml"
    room = 16384 - runtime_resident_mb("tensorrt")
    _set_field(path, "model_ram_budget_mb", str(room))  # exactly fits: no error
    assert not errors(validate_repository(fleet_copy)[1], "E222")
    _set_field(path, "model_ram_budget_mb", str(room + 1))
    (d,) = errors(validate_repository(fleet_copy)[1], "E222")
    assert f"model_ram_budget_mb at most {room}" in d.hint and "tensorrt" in d.message
    assert d.related[1][0].line == line_of(path, "name: tensorrt")
    assert set(RUNTIME_RESIDENT_MB) == {"onnxruntime", "openvino", "tensorrt"}  # every Runtime has a figure
    assert all(f.mb > 0 and f.source for f in RUNTIME_RESIDENT_MB.values())


def test_the_example_fleet_is_consistent():
    _, diags = validate_repository(EXAMPLE_FLEET)
    assert not [d for d in diags if d.code in ("E220", "E221", "E222")]
