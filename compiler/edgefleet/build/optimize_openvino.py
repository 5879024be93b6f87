"""OpenVINO recipes: IR via `ov.convert_model`/`ov.save_model`, INT8 via NNCF, FP16 IR.

openvino and nncf are the `openvino` extra: imported here only, lazily, and their absence
is a BuildError that says how to install them.

The artifact is ONE file, `model.ov.tar`: an uncompressed tar of model.xml and model.bin
with sorted members, mtime 0, uid/gid 0 and fixed modes, so equal IR gives equal bytes.
OpenVINO and NNCF name the nodes they create from process-wide counters
(`Constant_31155`), which differ from run to run; every op whose name the source model did
not give is renamed `<Type>_<position in topological order>` before saving.

Recipe mapping onto NNCF post-training quantization:
  calibration minmax -> MINMAX range estimator; percentile -> quantile estimator with
  outlier probability 1 - percentile/100; entropy -> not offered by NNCF (refused before
  building). symmetric true/unset -> PERFORMANCE preset (symmetric), false -> MIXED
  (asymmetric activations). per_channel false -> per-tensor weights. reduce_range
  true/false/unset -> overflow fix enable/disable/first layer only. exclude_nodes
  (ONNX node names) and exclude_op_types -> NNCF ignored scope.
FP16 and INT8 IR keep float constants in FP16 (what the NPU computes in); FP32 IR keeps FP32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import onnx

from edgefleet.build.data import chunks
from edgefleet.build.errors import BuildError
from edgefleet.spec import Recipe

INSTALL_HINT = "install the OpenVINO toolchain: pip install 'edgefleet[openvino]'"


def import_openvino():
    """(openvino, nncf) or a BuildError naming the extra."""
    try:
        import openvino as ov
    except ImportError:
        raise BuildError("E430", "building for the openvino runtime needs the openvino package, "
                                 "which is not installed", INSTALL_HINT, subject="toolchain") from None
    return ov


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise BuildError("E430", "INT8 for the openvino runtime needs nncf, which is not installed",
                         INSTALL_HINT, subject="toolchain") from None
    nncf.set_log_level(logging.ERROR)
    return nncf


def source_names(model: onnx.ModelProto) -> set[str]:
    """Names the source gives: node names, tensor names, inputs, outputs, initializers."""
    names = {n.name for n in model.graph.node} | {x for n in model.graph.node for x in n.output}
    names |= {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    names |= {t.name for t in model.graph.initializer}
    return {n for n in names if n}


def canonical_names(model, known: set[str]) -> None:
    """Rename every op whose name the source did not give to `<Type>_<topological index>`."""
    for index, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        if name in known or any(name.startswith(k + "/") for k in known):
            continue
        op.set_friendly_name(f"{op.get_type_name()}_{index}")


def ignored_ops(model, onnx_model: onnx.ModelProto, exclude_nodes: list[str]) -> tuple[list[str], list[str]]:
    """OpenVINO op names that come from the excluded ONNX nodes, and nodes that match none."""
    by_node = {n.name: {n.name, *n.output} for n in onnx_model.graph.node if n.name}
    names: list[str] = []
    unmatched: list[str] = []
    ops = [op.get_friendly_name() for op in model.get_ordered_ops()]
    for node in exclude_nodes:
        keys = by_node.get(node, {node})
        hits = [o for o in ops if o in keys or any(o.startswith(k + "/") for k in keys)]
        names += hits
        if not hits:
            unmatched.append(node)
    return sorted(set(names)), unmatched


def quantize_nncf(model, recipe: Recipe, onnx_model: onnx.ModelProto, calibration: np.ndarray, chunk: int):
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   RangeEstimatorParametersSet, StatisticsCollectorParameters,
                                                   StatisticsType)

    if recipe.calibration == "percentile":
        outlier = 1.0 - recipe.percentile / 100.0

        def quantile(aggregate):
            return StatisticsCollectorParameters(StatisticsType.QUANTILE, aggregate, quantile_outlier_prob=outlier)

        ranges = RangeEstimatorParameters(min=quantile(AggregatorType.MIN), max=quantile(AggregatorType.MAX))
    else:
        ranges = RangeEstimatorParametersSet.MINMAX
    overflow = {True: OverflowFix.ENABLE, False: OverflowFix.DISABLE,
                None: OverflowFix.FIRST_LAYER}[recipe.reduce_range]
    advanced = AdvancedQuantizationParameters(
        overflow_fix=overflow,
        activations_range_estimator_params=ranges,
        weights_quantization_params=None if recipe.per_channel else QuantizationParameters(per_channel=False))
    names, unmatched = ignored_ops(model, onnx_model, list(recipe.exclude_nodes))
    if unmatched:
        raise BuildError("E422", f"recipe '{recipe.name}' excludes node(s) {', '.join(unmatched)}, which the "
                                 "OpenVINO model does not contain",
                         "use node names of the source ONNX graph (as Netron shows them)",
                         subject="recipe", recipe=recipe)
    scope = nncf.IgnoredScope(names=names, types=list(recipe.exclude_op_types), validate=False)
    preset = nncf.QuantizationPreset.MIXED if recipe.symmetric is False else nncf.QuantizationPreset.PERFORMANCE
    batches = [batch for batch, _ in chunks(calibration, chunk)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(model, nncf.Dataset(batches), preset=preset, subset_size=len(batches),
                             fast_bias_correction=True, ignored_scope=scope, advanced_parameters=advanced)


def build_ir(onnx_model: onnx.ModelProto, recipe: Recipe, calibration: np.ndarray | None, chunk: int,
             workdir: Path) -> tuple[Path, list[str]]:
    """Write model.xml/model.bin for `recipe` into `workdir`; returns the xml path and notes."""
    ov = import_openvino()
    src = workdir / "model.onnx"  # a fixed name: OpenVINO records it in the IR's rt_info
    onnx.save(onnx_model, str(src))
    model = ov.convert_model(str(src))
    notes = [f"OpenVINO IR converted with openvino {ov.get_version().split('-')[0]}"]
    if recipe.precision == "int8":
        assert calibration is not None, "checked before building"
        model = quantize_nncf(model, recipe, onnx_model, calibration, chunk)
        notes.append(f"NNCF post-training INT8 ({recipe.calibration} ranges) on {len(calibration)} declared samples")
    canonical_names(model, source_names(onnx_model))
    xml = workdir / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=recipe.precision != "fp32")
    src.unlink()
    return xml, notes


def deterministic_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
        end = tar.offset
    # A tar ends with two zero blocks; tarfile then pads to a 10 KiB record, which readers do
    # not need and a 512 KB link budget should not pay for.
    return buffer.getvalue()[:end + 2 * tarfile.BLOCKSIZE]


def ir_tar(xml: Path) -> bytes:
    return deterministic_tar({"model.xml": xml.read_bytes(), "model.bin": xml.with_suffix(".bin").read_bytes()})
