"""The accuracy gate catches a naive INT8 recipe on a real model, and a declared fallback ships.

Model: the PP-OCRv4 text detector that rapidocr-onnxruntime ships (4.7 MB ONNX, dynamic
input shape). Data: photos bundled with scikit-image, preprocessed as PP-OCR expects
(tests/ppocr_support.py); calibration and evaluation use different photos and crops.
Metric: IoU of the text-probability maps thresholded at 0.3 (PP-OCR's own binarization
threshold), against the FP32 model on the same inputs.

Measured here (`python bench/bench_recipes.py` prints the same numbers):
  * naive: MinMax, per-tensor weights, reduce_range (the x86 default) -> IoU ~0.62: text
    boxes shrink and phantom text appears on the cat photo. Rejected by the accuracy gate.
  * fallback: per-channel weights with the hard-swish/SE elementwise ops (Add, Mul, Div,
    Clip, HardSigmoid) kept in float -> IoU ~0.91. Chosen; FP16 after it is never tried.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from edgefleet.build.engine import BuildRequest, build_artifact
from edgefleet.spec import Recipe
from edgefleet.spec.hardware import RuntimeSpec
from edgefleet.spec.model import AccuracyBudget
from ppocr_support import CALIBRATION, EVALUATION, inputs, ppocr_detector

NAIVE = Recipe(name="int8-minmax-naive", precision="int8", quantization="static", calibration="minmax",
               per_channel=False, reduce_range=True)
FALLBACK = Recipe(name="int8-per-channel-float-hswish", precision="int8", quantization="static",
                  calibration="minmax", per_channel=True,
                  exclude_op_types=["Add", "Mul", "Div", "Clip", "HardSigmoid"])
FP16 = Recipe(name="fp16", precision="fp16")
BUDGET = AccuracyBudget(metric="iou", threshold=0.85, binarize_at=0.3)


@pytest.fixture(scope="module")
def ppocr_request() -> BuildRequest:
    if not ppocr_detector().is_file():
        pytest.fail(f"rapidocr-onnxruntime ships no detector at {ppocr_detector()}")
    return BuildRequest(
        model="ppocr-det", version="4.0.0", variant="mobile", hardware_class="medical-cart-cpu",
        source_path=ppocr_detector(),
        runtime=RuntimeSpec(name="onnxruntime", version="1.20", device="CPUExecutionProvider"),
        class_precisions=("fp32", "fp16", "int8"), max_artifact_bytes=64 << 20, latency_budget_ms=200.0,
        batch_size=1, recipes=(NAIVE, FALLBACK, FP16), accuracy=BUDGET,
        calibration=inputs(CALIBRATION), evaluation=inputs(EVALUATION), labels=None,
        cpu_arch="x86_64", warmup_runs=2, latency_runs=10,
    )


@pytest.mark.slow
def test_naive_int8_is_caught_and_the_fallback_ships(ppocr_request, tmp_path):
    outcome = build_artifact(ppocr_request, tmp_path)

    naive, fallback = outcome.attempts  # FP16 is never tried: the fallback passed
    assert naive.recipe == NAIVE and not naive.passed
    failed = [g for g in naive.gates if not g.passed]
    assert [g.name for g in failed] == ["iou"]  # rejected by accuracy, nothing else
    assert failed[0].value < 0.75 and failed[0].limit == 0.85
    assert naive.reason.startswith("iou 0.")

    assert fallback.recipe == FALLBACK and fallback.passed and fallback.reason == ""
    assert outcome.chosen == FALLBACK
    assert outcome.metrics["accuracy"]["value"] >= 0.88  # a clear margin over the 0.85 budget
    assert outcome.metrics["size_ratio"] < 0.4  # it is really int8
    assert outcome.probe.output_shape == (1, 1, 320, 320)
    assert list(tmp_path.iterdir()) == []

    # The chosen artifact is byte-identical when built again (same data, same toolchain).
    again = build_artifact(replace(ppocr_request, recipes=(FALLBACK,)), tmp_path)
    assert hashlib.sha256(again.artifact).digest() == hashlib.sha256(outcome.artifact).digest()
