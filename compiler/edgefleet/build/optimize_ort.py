"""onnxruntime recipes: portable graph optimization, static QDQ / dynamic INT8, FP16.

Graph optimization saves only onnxruntime's *basic* level: constant folding, redundant
node removal and semantics-preserving fusions that any runtime executes. Extended and
layout levels produce graphs tied to this host's runtime build and CPU, so they are never
saved; a recipe asking for `extended` gets the basic graph, and the device applies the
higher level in its session (the gate runs that session too).

Static INT8 is calibrated on the model's declared calibration data only. Ranges are
computed once with onnxruntime's calibrators (entropy with a real 2048-bin histogram, not
the 128/128 default that degenerates to min-max), snapped to 6 significant digits so that
last-bit float differences between hosts do not change the artifact, and handed to
`quantize_static` as a calibration cache.

Signedness and range follow the target:
  * CPU (x86/ARM): asymmetric uint8 activations (full range for post-ReLU tensors) and
    symmetric int8 weights (U8S8, what MLAS runs fastest); `symmetric: true` gives int8
    activations. `reduce_range` (7-bit weights) defaults to on for x86_64, where
    non-VNNI CPUs saturate U8S8 products, and off elsewhere; a recipe can set it.
  * TensorRT: symmetric int8 activations and weights (zero point 0, what TensorRT's
    explicit quantization accepts), full range, float biases, and Q/DQ only on the inputs
    of weighted layers (Conv, ConvTranspose, Gemm, MatMul).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from edgefleet.build.data import chunks
from edgefleet.build.onnx_io import at_least_opset, lift_constants
from edgefleet.spec import Recipe

TRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
RANGE_DIGITS = 6


@dataclass(frozen=True)
class QuantSettings:
    """What one INT8 recipe means for onnxruntime's quantizer on one target. Pure data."""

    activation_type: str  # "QUInt8" | "QInt8"
    weight_type: str
    activation_symmetric: bool
    weight_symmetric: bool
    reduce_range: bool
    per_channel: bool
    calibration: str
    percentile: float
    op_types: tuple[str, ...] | None  # None: every type the quantizer supports
    exclude_nodes: tuple[str, ...]
    quantize_bias: bool
    notes: tuple[str, ...] = field(default=())

    def extra_options(self) -> dict:
        return {
            "ActivationSymmetric": self.activation_symmetric,
            "WeightSymmetric": self.weight_symmetric,
            "QuantizeBias": self.quantize_bias,
        }


def quant_settings(recipe: Recipe, target: str, cpu_arch: str, op_types_in_model: set[str]) -> QuantSettings:
    """`target` is "cpu" (onnxruntime) or "tensorrt"."""
    excluded = set(recipe.exclude_op_types)
    if target == "tensorrt":
        ops = tuple(sorted(set(TRT_QUANTIZED_OPS) & op_types_in_model - excluded))
        return QuantSettings("QInt8", "QInt8", True, True, False, recipe.per_channel, recipe.calibration,
                             recipe.percentile, ops, tuple(recipe.exclude_nodes), quantize_bias=False,
                             notes=("symmetric int8 Q/DQ on weighted layers for TensorRT explicit quantization",))
    symmetric = bool(recipe.symmetric)
    if recipe.reduce_range is None:
        reduce_range = cpu_arch == "x86_64"
        why = f"reduce_range {'on' if reduce_range else 'off'}: default for {cpu_arch} (set it in the recipe)"
    else:
        reduce_range = recipe.reduce_range
        why = f"reduce_range {'on' if reduce_range else 'off'} as the recipe says"
    ops = tuple(sorted(op_types_in_model - excluded)) if excluded else None
    return QuantSettings("QInt8" if symmetric else "QUInt8", "QInt8", symmetric, True, reduce_range,
                         recipe.per_channel, recipe.calibration, recipe.percentile, ops,
                         tuple(recipe.exclude_nodes), quantize_bias=True, notes=(why,))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime's quantizer prints progress to stdout; a CLI's JSON output must stay clean."""
    ort_logger = logging.getLogger("onnxruntime")
    root = logging.getLogger()
    levels = (ort_logger.level, root.level)
    ort_logger.setLevel(logging.ERROR)
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        ort_logger.setLevel(levels[0])
        root.setLevel(levels[1])


def prepare(model: onnx.ModelProto, level: str, workdir: Path) -> onnx.ModelProto:
    """The float graph every recipe starts from: basic-optimized, or only constants lifted."""
    lifted = lift_constants(model)
    if level == "none":
        return lifted
    import onnxruntime as ort

    src = workdir / "prepare-in.onnx"
    dst = workdir / "prepare-basic.onnx"
    onnx.save(lifted, str(src))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # never higher: see module doc
    options.optimized_model_filepath = str(dst)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(dst))


def to_fp16(model: onnx.ModelProto, recipe: Recipe) -> onnx.ModelProto:
    """FP16 weights and arithmetic; inputs and outputs stay float32 as the device feeds them."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    with quiet():
        return convert_float_to_float16(
            model, keep_io_types=True,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(recipe.exclude_op_types)),
            node_block_list=sorted(recipe.exclude_nodes))


class _Reader:
    """Calibration samples in chunks of the model's batch (1 where the batch is free)."""

    def __init__(self, name: str, data: np.ndarray, chunk: int):
        self._items = [{name: batch} for batch, _ in chunks(data, chunk)]
        self._next = 0

    def get_next(self):
        if self._next >= len(self._items):
            return None
        self._next += 1
        return self._items[self._next - 1]

    def __len__(self) -> int:
        return len(self._items)

    def set_range(self, start_index: int, end_index: int) -> None:  # part of the reader protocol
        self._items = self._items[start_index:end_index]
        self._next = 0


def quantize_static_int8(model: onnx.ModelProto, settings: QuantSettings, input_name: str,
                         calibration: np.ndarray, chunk: int, workdir: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    options: dict = {}
    if settings.calibration == "entropy":
        options = {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    elif settings.calibration == "percentile":
        options = {"percentile": settings.percentile, "num_bins": 2048,
                   "symmetric": settings.activation_symmetric}
    float_path = workdir / "float.onnx"
    onnx.save(at_least_opset(model, 13), str(float_path))
    reader = _Reader(input_name, calibration, chunk)
    with quiet():
        calibrator = create_calibrator(float_path, None, str(workdir / "augmented.onnx"),
                                       calibrate_method=method, extra_options=options)
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
        _snap_ranges(ranges)
        cache = workdir / "ranges.json"
        save_tensors_data(ranges, cache)
        out = workdir / "int8.onnx"
        quantize_static(
            str(float_path), str(out), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(settings.op_types) if settings.op_types is not None else None,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=getattr(QuantType, settings.activation_type),
            weight_type=getattr(QuantType, settings.weight_type),
            nodes_to_exclude=list(settings.exclude_nodes),
            calibrate_method=method,
            extra_options=settings.extra_options(),
            calibration_cache_path=str(cache),
        )
    return onnx.load(str(out))


def quantize_dynamic_int8(model: onnx.ModelProto, settings: QuantSettings, workdir: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = workdir / "float.onnx"
    onnx.save(at_least_opset(model, 13), str(float_path))
    out = workdir / "int8-dynamic.onnx"
    with quiet():
        quantize_dynamic(str(float_path), str(out), per_channel=settings.per_channel,
                         reduce_range=settings.reduce_range, weight_type=getattr(QuantType, settings.weight_type),
                         nodes_to_exclude=list(settings.exclude_nodes),
                         op_types_to_quantize=list(settings.op_types) if settings.op_types is not None else None)
    return onnx.load(str(out))


def _snap_ranges(ranges) -> None:
    """Round calibrated ranges to 6 significant digits (see module doc)."""
    for name in list(ranges.keys()):
        data = ranges[name]
        for attr in ("lowest", "highest"):
            value = getattr(data, attr, None)
            if value is None:
                continue
            arr = np.asarray(value)
            snapped = np.array([float(f"{v:.{RANGE_DIGITS}g}") for v in arr.reshape(-1)],
                               dtype=arr.dtype).reshape(arr.shape)
            setattr(data, attr, snapped)


def optimize(model: onnx.ModelProto, recipe: Recipe, *, target: str, cpu_arch: str, input_name: str,
             calibration: np.ndarray | None, chunk: int, workdir: Path) -> tuple[onnx.ModelProto, list[str]]:
    """The ONNX graph for `recipe` from the prepared float graph, and notes for the record."""
    notes: list[str] = []
    if recipe.precision == "fp32":
        return model, notes
    if recipe.precision == "fp16":
        return to_fp16(model, recipe), ["fp16 weights and arithmetic, float32 inputs and outputs"]
    settings = quant_settings(recipe, target, cpu_arch, {n.op_type for n in model.graph.node})
    notes += list(settings.notes)
    if (recipe.quantization or "static") == "dynamic":
        notes.append("dynamic int8 (activations quantized at run time)")
        return quantize_dynamic_int8(model, settings, workdir), notes
    assert calibration is not None, "checked before building"
    notes.append(f"static int8 QDQ, {recipe.calibration} calibration on {len(calibration)} declared samples, "
                 f"{'per-channel' if recipe.per_channel else 'per-tensor'} weights, "
                 f"{'int8 symmetric' if settings.activation_symmetric else 'uint8 asymmetric'} activations")
    return quantize_static_int8(model, settings, input_name, calibration, chunk, workdir), notes
