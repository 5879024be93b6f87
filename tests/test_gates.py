"""Gate metrics, data loading, and measurement with the real runtimes."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.build.data import check_fits, chunks, load_npz
from edgefleet.build.errors import BuildError
from edgefleet.build.gates import (GateResult, RuntimeRefused, accuracy, accuracy_gate, latency_gate, measure,
                                   memory_gate, rejection_reason, size_gate)
from edgefleet.spec.model import AccuracyBudget
from engine_support import FLEET, meter_data

STUDENT = FLEET / "models" / "meter-digits" / "1.0.0" / "student.onnx"

# -- metrics --------------------------------------------------------------------------------


def test_top1_agreement_and_accuracy():
    reference = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    candidate = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.9, 0.1]])  # second sample flips
    assert accuracy("top1_agreement", reference, candidate) == 0.75
    labels = np.array([1, 1, 1, 0])
    assert accuracy("top1_accuracy", reference, candidate, labels) == 1.0
    with pytest.raises(ValueError, match="labels"):
        accuracy("top1_accuracy", reference, candidate)


def test_iou_of_thresholded_maps():
    reference = np.zeros((2, 1, 4, 4))
    reference[0, 0, :2, :2] = 0.9  # 4 pixels on
    candidate = reference.copy()
    candidate[0, 0, 2, 2] = 0.8  # one extra pixel: 4 / 5
    assert accuracy("iou", reference, candidate, binarize_at=0.5) == pytest.approx(0.8)
    # Below the threshold, the extra pixel does not count.
    assert accuracy("iou", reference, candidate, binarize_at=0.85) == 1.0
    # Two empty maps agree completely.
    assert accuracy("iou", np.zeros((1, 3)), np.zeros((1, 3))) == 1.0


def test_cosine_and_max_abs_error():
    reference = np.array([[1.0, 0.0], [0.0, 0.0]])
    candidate = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert accuracy("cosine", reference, candidate) == pytest.approx(0.5)  # orthogonal, then both zero
    assert accuracy("max_abs_error", reference, candidate) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy("cosine", reference, candidate[:1])


@pytest.mark.parametrize("metric, threshold, value, passed", [
    ("top1_agreement", 0.9, 0.95, True),
    ("top1_agreement", 0.99, 0.95, False),
    ("max_abs_error", 0.5, 0.25, True),  # lower is better
    ("max_abs_error", 0.1, 0.25, False),
], ids=["agreement-pass", "agreement-fail", "maxabs-pass", "maxabs-fail"])
def test_accuracy_gate_direction(metric, threshold, value, passed):
    reference = np.array([[0.0, 1.0]] * 20)
    if metric == "top1_agreement":
        flips = round((1 - value) * 20)
        candidate = reference.copy()
        candidate[:flips] = [1.0, 0.0]
    else:
        candidate = reference + value
    gate = accuracy_gate(AccuracyBudget(metric=metric, threshold=threshold), reference, candidate, None)
    assert gate.value == pytest.approx(value)
    assert gate.passed is passed
    assert gate.name == metric and "20 evaluation samples" in gate.detail


def test_limit_gates_and_reason():
    assert size_gate(100, 100).passed and not size_gate(101, 100).passed
    assert latency_gate(1.2, 1.5).passed and not latency_gate(1.6, 1.5).passed
    assert memory_gate(10, 10).passed and not memory_gate(11, 10).passed
    gates = (size_gate(2048, 1024), GateResult("iou", 0.5, 0.9, False, "iou on 8 samples"),
             GateResult("cosine", 1.0, 0.9, True, "fine"))
    reason = rejection_reason(gates)
    assert "size_bytes 2048 (limit 1024)" in reason and "iou 0.5 (limit 0.9)" in reason
    assert "cosine" not in reason


# -- data ------------------------------------------------------------------------------------


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


BAD_DATA = {
    "missing-file": (lambda p: p / "nope.npz", "E412", "does not exist"),
    "not-npz": (lambda p: (p / "x.npz").write_bytes(b"not a zip at all") and p / "x.npz", "E413", "not a readable npz"),
    "no-input-key": (lambda p: _write(p / "x.npz", images=np.zeros((2, 3), np.float32)), "E413", "no array 'input'"),
    "float64": (lambda p: _write(p / "x.npz", input=np.zeros((2, 3))), "E413", "float64, not float32"),
    "no-batch": (lambda p: _write(p / "x.npz", input=np.zeros(3, np.float32)), "E413", "expected (N, ...)"),
    "empty": (lambda p: _write(p / "x.npz", input=np.zeros((0, 3), np.float32)), "E413", "expected (N, ...)"),
    "nan": (lambda p: _write(p / "x.npz", input=np.full((2, 3), np.nan, np.float32)), "E413", "NaN"),
    "labels-count": (lambda p: _write(p / "x.npz", input=np.zeros((2, 3), np.float32), label=np.zeros(3, np.int64)),
                     "E413", "must be 2 integers"),
    "labels-float": (lambda p: _write(p / "x.npz", input=np.zeros((2, 3), np.float32), label=np.zeros(2)),
                     "E413", "must be 2 integers"),
}


@pytest.mark.parametrize("case", list(BAD_DATA), ids=list(BAD_DATA))
def test_bad_data_files_are_clear_errors(tmp_path, case):
    make, code, words = BAD_DATA[case]
    path = make(tmp_path)
    with pytest.raises(BuildError) as caught:
        load_npz(path, "evaluation", "models/m/data/evaluation.npz")
    assert caught.value.code == code
    assert words in caught.value.message
    assert "models/m/data/evaluation.npz" in caught.value.message
    assert caught.value.hint and caught.value.subject == "evaluation"


def test_good_data_loads(tmp_path):
    calibration, evaluation, labels = meter_data()
    data = load_npz(_write(tmp_path / "e.npz", input=evaluation, label=labels), "evaluation")
    assert data.inputs.shape == (360, 1, 8, 8) and data.labels.dtype == np.int64
    assert load_npz(_write(tmp_path / "c.npz", input=calibration, label=labels[:128]), "calibration").labels is None


def test_data_must_fit_the_model_input():
    check_fits(np.zeros((4, 1, 8, 8), np.float32), (None, 1, 8, 8), "evaluation", "image")
    check_fits(np.zeros((4, 3, 64, 96), np.float32), (None, 3, None, None), "evaluation", "x")
    with pytest.raises(BuildError, match=r"\(1, 9, 9\), but the model input 'image' takes \?x1x8x8") as caught:
        check_fits(np.zeros((4, 1, 9, 9), np.float32), (None, 1, 8, 8), "calibration", "image")
    assert caught.value.code == "E414"


def test_chunks_pad_the_last_batch():
    data = np.arange(5, dtype=np.float32).reshape(5, 1)
    got = [(b.ravel().tolist(), real) for b, real in chunks(data, 2)]
    assert got == [([0, 1], 2), ([2, 3], 2), ([4, 4], 1)]


# -- measuring with the real runtimes ---------------------------------------------------------


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_measure_runs_the_real_runtime(tmp_path, runtime):
    _, evaluation, _ = meter_data()
    config = {"INFERENCE_PRECISION_HINT": "f32"} if runtime == "openvino" else None
    result = measure(runtime, STUDENT, evaluation=evaluation[:37], golden=evaluation[:1], chunk=8, workdir=tmp_path,
                     warmup=2, runs=7, ov_config=config)
    assert result.outputs.shape == (37, 10)  # the padded last chunk is trimmed
    assert len(result.latency_ms) == 7 and all(t > 0 for t in result.latency_ms)
    assert result.p95_ms >= result.median_ms > 0
    assert result.peak_bytes > 0
    assert runtime in result.runtime.lower()
    # The golden batch's output is the same as its evaluation output (same model, same input).
    np.testing.assert_allclose(result.golden_outputs[0], result.outputs[:1], rtol=1e-5, atol=1e-6)
    assert list(tmp_path.iterdir()) == []  # the job files are cleaned up


def test_measure_reports_a_refusal(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(RuntimeRefused, match="could not run broken.onnx"):
        measure("onnxruntime", broken, evaluation=None, golden=np.zeros((1, 1, 8, 8), np.float32), chunk=1,
                workdir=tmp_path / "m", warmup=1, runs=1)
