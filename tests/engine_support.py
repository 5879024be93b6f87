"""Build requests on the example fleet's real meter-digits models and data."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgefleet.build.engine import BuildRequest
from edgefleet.spec import Recipe
from edgefleet.spec.hardware import RuntimeSpec
from edgefleet.spec.model import AccuracyBudget

FLEET = Path(__file__).resolve().parents[1] / "fleet"
DATA = FLEET / "models" / "meter-digits" / "data"
RUNTIMES = {
    "onnxruntime": RuntimeSpec(name="onnxruntime", version="1.20", device="CPUExecutionProvider"),
    "openvino": RuntimeSpec(name="openvino", version="2024.6", device="NPU"),
    "tensorrt": RuntimeSpec(name="tensorrt", version="10.3", device="GPU"),
}


def meter_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(DATA / "calibration.npz") as c, np.load(DATA / "evaluation.npz") as e:
        return c["input"], e["input"], e["label"]


def meter_request(runtime: str, *recipes: Recipe, variant: str = "student", **changes) -> BuildRequest:
    calibration, evaluation, labels = meter_data()
    request = BuildRequest(
        model="meter-digits", version="1.0.0", variant=variant, hardware_class=f"test-{runtime}",
        source_path=FLEET / "models" / "meter-digits" / "1.0.0" / f"{variant}.onnx",
        runtime=RUNTIMES[runtime], class_precisions=("fp32", "fp16", "int8"),
        max_artifact_bytes=64 << 20, latency_budget_ms=20.0, batch_size=1, recipes=tuple(recipes),
        accuracy=AccuracyBudget(metric="top1_agreement", threshold=0.95),
        calibration=calibration, evaluation=evaluation, labels=labels,
        compute_capability="8.7" if runtime == "tensorrt" else None,
        warmup_runs=2, latency_runs=10,
    )
    return replace(request, **changes)


def sha(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()
