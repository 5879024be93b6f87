"""The gates every artifact passes before it can ship, measured with its real runtime.

Pure part: accuracy metrics against the FP32 reference (top-1 agreement or accuracy, IoU
of thresholded maps, cosine similarity, max-abs error), latency statistics and the gate
decisions. I/O part: `measure` runs a model in a fresh process (`edgefleet.build.runner`)
and returns its outputs on the evaluation data, its latency on the golden batch (warm-up,
then repeated runs: median and p95) and its peak memory.

Runtimes: onnxruntime CPU for onnxruntime artifacts and for TensorRT-ready ONNX (this host
has no GPU; the TensorRT graph's numerics are judged on onnxruntime CPU and the record says
so); OpenVINO CPU for IR, at f32 inference precision for the reference and the artifact
alike (this CPU would otherwise run bf16, and the artifact's own quantization is what is
judged). Metrics use the model's first output. Latency on a build host is not a device's:
it is recorded as a ratio to FP32 on the same host and gated only where a recipe sets
`max_latency_ratio`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefleet.spec.model import AccuracyBudget

HIGHER_IS_BETTER = {"top1_agreement": True, "top1_accuracy": True, "iou": True, "cosine": True,
                    "max_abs_error": False}


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float
    limit: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Measurement:
    runtime: str  # what ran it, e.g. "onnxruntime 1.32.0 CPUExecutionProvider, 1 thread(s), ..."
    outputs: np.ndarray | None  # first output over the evaluation data
    golden_outputs: tuple[np.ndarray, ...]
    latency_ms: tuple[float, ...]
    peak_bytes: int

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latency_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latency_ms, 95))


class RuntimeRefused(Exception):
    """The runtime could not load or run a model (for an artifact: a rejected attempt)."""


# -- accuracy --------------------------------------------------------------------------


def accuracy(metric: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None,
             binarize_at: float = 0.5) -> float:
    """`candidate` judged against `reference` (the FP32 model's outputs) or the labels."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    if metric == "top1_agreement":
        return float(np.mean(_top1(reference) == _top1(candidate)))
    if metric == "top1_accuracy":
        if labels is None:
            raise ValueError("top1_accuracy needs labels")
        return float(np.mean(_top1(candidate) == labels))
    if metric == "iou":
        a, b = reference > binarize_at, candidate > binarize_at
        union = np.logical_or(a, b).sum()
        # Both empty everywhere: the maps agree completely.
        return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
    if metric == "cosine":
        r = reference.reshape(len(reference), -1)
        c = candidate.reshape(len(candidate), -1)
        nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
        both_zero = (nr == 0) & (nc == 0)
        sims = np.where(both_zero, 1.0, np.sum(r * c, axis=1) / np.maximum(nr * nc, 1e-300))
        return float(np.mean(sims))
    if metric == "max_abs_error":
        return float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    raise ValueError(f"unknown metric {metric!r}")


def _top1(outputs: np.ndarray) -> np.ndarray:
    return outputs.argmax(axis=1) if outputs.ndim > 1 else (outputs > 0).astype(np.int64)


def accuracy_gate(budget: AccuracyBudget, reference: np.ndarray, candidate: np.ndarray,
                  labels: np.ndarray | None) -> GateResult:
    value = accuracy(budget.metric, reference, candidate, labels, budget.binarize_at)
    higher = HIGHER_IS_BETTER[budget.metric]
    passed = value >= budget.threshold if higher else value <= budget.threshold
    against = "the labels" if budget.metric == "top1_accuracy" else "the FP32 reference"
    extra = f", maps thresholded at {budget.binarize_at:g}" if budget.metric == "iou" else ""
    detail = (f"{budget.metric} against {against} on {len(candidate)} evaluation samples{extra}; "
              f"{'at least' if higher else 'at most'} {budget.threshold:g} allowed")
    return GateResult(budget.metric, round(value, 6), budget.threshold, bool(passed), detail)


def size_gate(size: int, limit: int) -> GateResult:
    return GateResult("size_bytes", size, limit, size <= limit,
                      f"artifact of {size} bytes; the class accepts at most {limit}")


def latency_gate(ratio: float, limit: float) -> GateResult:
    return GateResult("latency_ratio", round(ratio, 4), limit, ratio <= limit,
                      f"median latency {ratio:.3g}x FP32 on the build host; the recipe allows {limit:g}x")


def memory_gate(peak: int, limit: int) -> GateResult:
    return GateResult("peak_memory_bytes", peak, limit, peak <= limit,
                      f"peak resident memory of loading and running the model: {peak} bytes; "
                      f"the class budget is {limit}")


def rejection_reason(gates: tuple[GateResult, ...]) -> str:
    failed = [g for g in gates if not g.passed]
    return "; ".join(f"{g.name} {_fmt(g.value)} (limit {_fmt(g.limit)}): {g.detail}" for g in failed)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- measuring with the real runtime (I/O) ------------------------------------------------


def measure(runtime: str, model: Path, *, evaluation: np.ndarray | None, golden: np.ndarray, chunk: int,
            workdir: Path, warmup: int, runs: int, ort_level: str = "basic", ov_config: dict | None = None,
            threads: int = 1, timeout: float = 1800) -> Measurement:
    """Run `model` in a fresh process; RuntimeRefused if the runtime cannot load or run it."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "measure-data.npz"
    arrays = {"golden": golden}
    if evaluation is not None:
        arrays["evaluation"] = evaluation
    np.savez(data, **arrays)
    out = workdir / "measure-out.npz"
    job = workdir / "measure-job.json"
    job.write_text(json.dumps({
        "runtime": runtime, "model": str(model), "data": str(data), "out": str(out), "chunk": chunk,
        "warmup": warmup, "runs": runs, "threads": threads, "ort_level": ort_level,
        "ov_config": ov_config or {},
    }))
    proc = subprocess.run([sys.executable, "-m", "edgefleet.build.runner", str(job)],
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "error" in result:
        why = result.get("error") or (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeRefused(f"{runtime} could not run {model.name}: {why}")
    with np.load(out, allow_pickle=False) as saved:
        outputs = saved["eval_0"] if "eval_0" in saved.files else None
        golden_outputs = tuple(saved[k] for k in sorted((k for k in saved.files if k.startswith("golden_")),
                                                        key=lambda k: int(k.split("_")[1])))
    for path in (data, out, job):
        path.unlink(missing_ok=True)
    return Measurement(result["runtime"], outputs, golden_outputs, tuple(result["latency_ms"]),
                       int(result["peak_bytes"]))
