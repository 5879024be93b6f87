"""Benchmark: analysing a ~100 MB ONNX model, cold and from the sha256 cache.

Makes the model itself (a CNN feature extractor with a wide MLP head, float32
weights from a fixed seed) in a temporary directory, then runs the analysis in two
fresh processes so that each one's time and peak memory are its own:

* cold:   hash the file, parse it (without copying weights), run the onnx checker,
          infer shapes, estimate activations for a batch of 8, check operators
          against the installed onnxruntime's kernels; results written to the cache.

Peak memory is the process's VmHWM (peak resident set since exec, Linux), which
includes the interpreter and the imported onnx/onnxruntime (`rss_after_imports_mb`).
* cached: a new process, same file: hash it and read the cached record.

Prints one JSON object. Run from the repository root:

    python bench/bench_analysis.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REL = "models/big/model.onnx"


def make_model(path: Path) -> int:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def weight(name, shape):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape, dtype=np.float32) * 0.01, name))
        return name

    x, channels = "image", 3
    for i, out in enumerate((32, 64, 128, 256)):
        w, b = weight(f"conv{i}.w", (out, channels, 3, 3)), weight(f"conv{i}.b", (out,))
        nodes += [helper.make_node("Conv", [x, w, b], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])]
        x, channels = f"p{i}", out
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    x, width = "flat", channels * 14 * 14  # 224 / 2**4 = 14
    for i, out in enumerate((256, 4096, 2048, 1000)):
        w, b = weight(f"fc{i}.w", (out, width)), weight(f"fc{i}.b", (out,))
        nodes.append(helper.make_node("Gemm", [x, w, b], [f"g{i}"], transB=1))
        if i < 3:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            x = f"h{i}"
        else:
            x = f"g{i}"
        width = out
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                             ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return sum(int(np.prod(t.dims)) for t in inits)


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmHWM: peak resident set since exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def child(root: Path) -> dict:
    """One analysis in this process: time and peak RSS of the work, not of the imports."""
    t0 = time.perf_counter()
    import onnx  # noqa: F401  (imported here so that its time is not counted as analysis)
    import onnxruntime  # noqa: F401

    from edgefleet.analysis.cache import Analyzer, sha256_file
    from edgefleet.analysis.runtime_support import installed_onnxruntime_kernels, onnxruntime_support
    from edgefleet.spec.hardware import RuntimeSpec

    imports = time.perf_counter() - t0
    rss_after_imports = _status_mb("VmRSS")
    t1 = time.perf_counter()
    sha256_file(root / REL)
    t_sha = time.perf_counter()
    analyzer = Analyzer(root)
    analysis = analyzer.analyse(REL)
    t2 = time.perf_counter()
    estimate = analyzer.activations(analysis, {"image": (8, 3, 224, 224)})
    t3 = time.perf_counter()
    support = analyzer.memo(analysis.sha256, "support", "bench onnxruntime", type(onnxruntime_support(
        analysis.facts, RuntimeSpec(name="onnxruntime", version="1.20"), None)),
        lambda: onnxruntime_support(analysis.facts, RuntimeSpec(name="onnxruntime", version="1.20"),
                                    installed_onnxruntime_kernels()))
    t4 = time.perf_counter()
    return {
        "seconds": round(t4 - t1, 3),
        "sha256_seconds": round(t_sha - t1, 3),
        "facts_seconds": round(t2 - t_sha, 3),
        "activations_seconds": round(t3 - t2, 3),
        "runtime_support_seconds": round(t4 - t3, 3),
        "import_seconds": round(imports, 3),
        "peak_rss_mb": _status_mb("VmHWM"),
        "rss_after_imports_mb": rss_after_imports,
        "parameters": analysis.facts.parameter_count,
        "peak_activation_bytes_fp32": estimate.peak_bytes["fp32"],
        "operators_supported": support.operators.status,
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(Path(sys.argv[2]))))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        parameters = make_model(root / REL)
        generate = time.perf_counter() - t0
        runs = {}
        for name in ("cold", "cached"):
            proc = subprocess.run([sys.executable, __file__, "--child", str(root)], check=True,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert runs["cold"]["parameters"] == runs["cached"]["parameters"] == parameters
        result = {
            "benchmark": "analysis of a generated ONNX model",
            "model_bytes": (root / REL).stat().st_size,
            "parameters": parameters,
            "generate_seconds": round(generate, 2),
            "cold": runs["cold"],
            "cached": runs["cached"],
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
