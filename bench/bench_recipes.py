"""Benchmark: every runtime recipe on real models and real data; prints JSON.

    python bench/bench_recipes.py [--model meter-digits|ppocr|all] [--runs 50]

For each (model, runtime, recipe) the engine builds the artifact alone (one-recipe chain,
so a recipe's numbers are reported whether or not it passes) and reports, against the
FP32 source on the same host and the same runtime: size ratio (and zlib-compressed size
ratio), latency ratio (median and p95 over `--runs` timed runs after warm-up, one thread,
batch of the class) and accuracy on the model's evaluation data with its metric.

Models and data:
  * meter-digits 1.0.0 `full` (the example fleet; 128 calibration / 360 evaluation digits,
    top-1 agreement with FP32, budget 0.98).
  * PP-OCRv4 text detector from rapidocr-onnxruntime (photos bundled with scikit-image,
    6 calibration / 8 evaluation 320x320 inputs, IoU of maps thresholded at 0.3, budget 0.85).
TensorRT recipes are gated on onnxruntime CPU (no GPU here): their latency is the CPU's,
not a GPU's. Entropy calibration is skipped on PP-OCR (onnxruntime's 2048-bin entropy
search over its 329 tensors takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from edgefleet.build.engine import build_artifact, toolchain_versions  # noqa: E402
from edgefleet.spec import Recipe  # noqa: E402
from edgefleet.spec.model import AccuracyBudget  # noqa: E402
from engine_support import RUNTIMES, meter_request  # noqa: E402

HSWISH = ["Add", "Mul", "Div", "Clip", "HardSigmoid"]


def R(name: str, precision: str, **fields) -> Recipe:
    return Recipe(name=name, precision=precision, **fields)


RECIPES = {
    "onnxruntime": [
        R("ort-fp32-basic", "fp32"),
        R("ort-fp16", "fp16"),
        R("ort-int8-dynamic", "int8", quantization="dynamic", per_channel=True),
        R("ort-int8-minmax-per-tensor", "int8", quantization="static", reduce_range=True),
        R("ort-int8-minmax-per-channel", "int8", quantization="static", per_channel=True, reduce_range=False),
        R("ort-int8-percentile-per-channel", "int8", quantization="static", calibration="percentile",
          percentile=99.999, per_channel=True, reduce_range=False),
        R("ort-int8-entropy-per-channel", "int8", quantization="static", calibration="entropy", per_channel=True,
          reduce_range=False),
        R("ort-int8-per-channel-float-hswish", "int8", quantization="static", per_channel=True,
          exclude_op_types=HSWISH),
        R("ort-fp32-pruned-50", "fp32", sparsity=0.5),
    ],
    "openvino": [
        R("ov-fp32-ir", "fp32"),
        R("ov-fp16-ir", "fp16"),
        R("ov-int8-nncf-minmax", "int8", quantization="static"),
        R("ov-int8-nncf-percentile", "int8", quantization="static", calibration="percentile", percentile=99.99),
    ],
    "tensorrt": [
        R("trt-int8-qdq-entropy", "int8", quantization="static", calibration="entropy", symmetric=True,
          per_channel=True),
        R("trt-int8-qdq-minmax", "int8", quantization="static", symmetric=True, per_channel=True),
        R("trt-fp16", "fp16"),
    ],
}
SKIP = {("ppocr", "ort-int8-entropy-per-channel"), ("ppocr", "trt-int8-qdq-entropy"),
        ("meter-digits", "ort-int8-per-channel-float-hswish")}  # no hard-swish in meter-digits


def ppocr_request(runtime: str, recipe: Recipe, runs: int):
    from ppocr_support import CALIBRATION, EVALUATION, inputs, ppocr_detector

    global _PPOCR_DATA
    if "_PPOCR_DATA" not in globals():
        _PPOCR_DATA = (inputs(CALIBRATION), inputs(EVALUATION))
    calibration, evaluation = _PPOCR_DATA
    return replace(meter_request(runtime, recipe), model="ppocr-det", variant="v4-mobile",
                   source_path=ppocr_detector(), calibration=calibration, evaluation=evaluation, labels=None,
                   accuracy=AccuracyBudget(metric="iou", threshold=0.85, binarize_at=0.3),
                   latency_budget_ms=200.0, warmup_runs=5, latency_runs=runs)


def meter(runtime: str, recipe: Recipe, runs: int):
    return meter_request(runtime, recipe, variant="full",
                         accuracy=AccuracyBudget(metric="top1_agreement", threshold=0.98),
                         warmup_runs=10, latency_runs=runs)


def one(model: str, runtime: str, recipe: Recipe, runs: int) -> dict:
    request = (ppocr_request if model == "ppocr" else meter)(runtime, recipe, runs)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        outcome = build_artifact(request, Path(work))
    seconds = time.perf_counter() - start
    attempt = outcome.attempts[0]
    m = attempt.metrics
    return {
        "model": model, "runtime": runtime, "recipe": recipe.name, "precision": recipe.precision,
        "passed": attempt.passed, "rejected_by": [g.name for g in attempt.gates if not g.passed],
        "size_ratio": m.get("size_ratio"), "compressed_ratio": m.get("compressed_ratio"),
        "artifact_bytes": m.get("artifact_bytes"),
        "latency_ratio": m.get("latency_ratio"), "latency_ms": m.get("latency_ms"),
        "reference_latency_ms": m.get("reference_latency_ms"),
        "accuracy": m.get("accuracy"), "peak_memory_bytes": m.get("peak_memory_bytes"),
        "sparsity": m.get("sparsity", {}).get("achieved"),
        "gate_runtime": m.get("gate_runtime"), "build_seconds": round(seconds, 2),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["meter-digits", "ppocr", "all"], default="all")
    parser.add_argument("--runtime", choices=[*RECIPES, "all"], default="all")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model (after warm-up)")
    args = parser.parse_args()
    models = ["meter-digits", "ppocr"] if args.model == "all" else [args.model]
    runtimes = list(RECIPES) if args.runtime == "all" else [args.runtime]
    results = [one(model, runtime, recipe, args.runs)
               for model in models for runtime in runtimes for recipe in RECIPES[runtime]
               if (model, recipe.name) not in SKIP]
    print(json.dumps({
        "host": {"machine": platform.machine(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
                 "python": platform.python_version()},
        "toolchain": {r: toolchain_versions(RUNTIMES[r]) for r in runtimes},
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
