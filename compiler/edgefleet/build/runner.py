"""Run one model with its real runtime in a fresh process: outputs, latency, peak memory.

    python -m edgefleet.build.runner JOB.json

The gates call this once for the FP32 reference and once per artifact, each in its own
process, so that (1) peak memory is the model's own (the resident set's high-water mark
is reset after the runtime is imported, and read after loading and running the model),
(2) every measurement starts from the same state, and (3) a runtime that crashes on an
artifact rejects that artifact instead of killing the build.

The job (JSON): runtime ("onnxruntime" | "openvino"), model (path), data (npz with
`evaluation` and `golden`), out (npz path for outputs), chunk (batch fed per evaluation
run), warmup and runs (latency loop on the golden batch), threads, ort_level
("none" | "basic" | "extended"), ov_config (compile properties).
The result is one JSON line on stdout; exit status 3 means the runtime refused the model.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Linux resets VmHWM to the current RSS on '5' to clear_refs (since 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _session(job: dict):
    """(describe, run(batch) -> list of outputs) for the job's runtime."""
    threads = int(job.get("threads", 1))
    if job["runtime"] == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }[job.get("ort_level", "basic")]
        session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        describe = f"onnxruntime {ort.__version__} CPUExecutionProvider, {threads} thread(s), " \
                   f"graph optimization {job.get('ort_level', 'basic')}"
        return describe, lambda batch: session.run(None, {name: batch})
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, **job.get("ov_config", {})}
    compiled = core.compile_model(core.read_model(job["model"]), "CPU", config)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    describe = f"OpenVINO {ov.get_version().split('-')[0]} CPU, {threads} thread(s), inference precision {precision}"

    def run(batch):
        result = request.infer({0: batch})
        return [result[o].copy() for o in outputs]

    return describe, run


def main(argv: list[str]) -> int:
    import numpy as np

    job = json.loads(Path(argv[0]).read_text())
    with np.load(job["data"], allow_pickle=False) as data:
        evaluation = data["evaluation"] if "evaluation" in data.files else None
        golden = data["golden"]
    if job["runtime"] == "onnxruntime":
        import onnxruntime  # noqa: F401  (imported before the baseline: its pages are not the model's)
    else:
        import openvino  # noqa: F401
    exact_peak = _reset_peak()
    baseline = _status_kb("VmRSS") or 0
    try:
        describe, run = _session(job)
        outputs: list[list] = []
        if evaluation is not None:
            from edgefleet.build.data import chunks

            for batch, real in chunks(evaluation, int(job["chunk"])):
                outputs.append([o[:real] for o in run(batch)])
        for _ in range(int(job["warmup"])):
            run(golden)
        times = []
        for _ in range(int(job["runs"])):
            start = time.perf_counter_ns()
            golden_out = run(golden)
            times.append((time.perf_counter_ns() - start) / 1e6)
    except Exception as exc:  # the runtime's own refusal, reported as data
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip()[:2000]}"}))
        return 3
    peak = _status_kb("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = {f"golden_{i}": o for i, o in enumerate(golden_out)}
    if outputs:
        for i in range(len(outputs[0])):
            saved[f"eval_{i}"] = np.concatenate([o[i] for o in outputs])
    np.savez(job["out"], **saved)
    print(json.dumps({
        "runtime": describe,
        "latency_ms": times,
        "peak_bytes": max(0, ((peak or 0) - baseline) * 1024),
        "peak_exact": exact_peak,
        "pid": os.getpid(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
