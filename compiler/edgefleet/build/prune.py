"""Magnitude pruning of an ONNX graph's weights to a declared sparsity.

Each weight tensor of Conv, ConvTranspose, Gemm and MatMul (a float initializer feeding
the weight input) loses its smallest-magnitude `sparsity` share, set to exactly zero;
biases, norms and excluded nodes are left alone. Ties break by position (a stable sort),
so the result is reproducible.

ONNX runtimes run dense kernels: a pruned model is not faster and its file is not smaller.
What it gains is a smaller *compressed* size (zeros compress well), which is what a
constrained link pays for; the engine records both sizes and the achieved sparsity, and the
pruned model faces the same gates as any other.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# op type -> index of its weight input
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


@dataclass(frozen=True)
class PruneStats:
    target: float
    sparsity: float  # zeros / weights over the prunable tensors, after pruning
    weights: int  # prunable weights
    zeros: int
    tensors: int  # tensors pruned


def magnitude_prune(model: onnx.ModelProto, sparsity: float,
                    exclude_nodes: frozenset[str] = frozenset()) -> tuple[onnx.ModelProto, PruneStats]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    targets: list[str] = []
    for node in out.graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if index is None or node.name in exclude_nodes or len(node.input) <= index:
            continue
        name = node.input[index]
        tensor = inits.get(name)
        if tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) >= 2 \
                and name not in targets:
            targets.append(name)
    weights = zeros = 0
    for name in targets:
        tensor = inits[name]
        values = numpy_helper.to_array(tensor).copy()
        flat = values.reshape(-1)
        count = int(np.floor(sparsity * flat.size))
        if count:
            order = np.argsort(np.abs(flat), kind="stable")
            flat[order[:count]] = 0.0
        tensor.CopyFrom(numpy_helper.from_array(values, name))
        weights += flat.size
        zeros += int(np.count_nonzero(flat == 0.0))
    achieved = zeros / weights if weights else 0.0
    return out, PruneStats(sparsity, round(achieved, 6), weights, zeros, len(targets))


def compressed_size(data: bytes) -> int:
    """Bytes after zlib level 9: what a compressed transfer costs (deterministic)."""
    return len(zlib.compress(data, 9))
