"""Benchmark: resident memory a runtime itself takes on this host, before any model's own.

    python bench/bench_runtime_resident.py [--runtime onnxruntime|openvino|all]

For each runtime, a fresh interpreter reads its own resident set (VmRSS) before importing
the runtime, then imports it and loads the smallest real model of the example fleet
(meter-digits 1.1.0 `student`, 70 KB) and runs it once; the difference is what the runtime
and its session cost beyond the model. Prints one JSON document. These are the figures
behind `edgefleet.rules.hardware.RUNTIME_RESIDENT_MB` for onnxruntime and OpenVINO
(TensorRT does not run here; its figure is NVIDIA's, see that table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parents[1] / "fleet/models/meter-digits/1.1.0/student.onnx"

_CHILD = r"""
import json, sys
import numpy as np
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kb()
runtime, model = sys.argv[1], sys.argv[2]
x = np.zeros((1, 1, 8, 8), np.float32)
if runtime == "onnxruntime":
    import onnxruntime as ort
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    s.run(None, {s.get_inputs()[0].name: x})
    version = ort.__version__
else:
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
    compiled(x)
    version = ov.__version__
print(json.dumps({"runtime": runtime, "version": version, "baseline_kb": before, "after_kb": rss_kb(),
                  "resident_mb": round((rss_kb() - before) / 1024, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino", "all"), default="all")
    args = parser.parse_args()
    runtimes = ("onnxruntime", "openvino") if args.runtime == "all" else (args.runtime,)
    results = []
    for runtime in runtimes:
        proc = subprocess.run([sys.executable, "-c", _CHILD, runtime, str(MODEL)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
        results.append(json.loads(line) if line else {"runtime": runtime, "error": proc.stderr.strip()[-300:]})
    print(json.dumps({"benchmark": "runtime_resident", "model": MODEL.name, "results": results}, indent=2))


if __name__ == "__main__":
    main()
