"""What an ONNX model is, read from the file without running it: `ModelFacts`.

`read_model` is the I/O edge: it loads the protobuf without external weight files
(`load_external_data=False`), runs the onnx checker on the path and turns every way a
file can be broken into a `ModelReadError` with a sentence a person can act on.
`model_facts` and `activation_estimate` are pure functions of the loaded proto.

Weights are never copied: parameter counts come from tensor dims, and
`model_facts` empties the payload of every large tensor in place (marking it as
external data) before shape inference, so inferring shapes of a 100 MB model
serialises a few kilobytes, not the weights.

Memory estimate (`activation_estimate`): the graph's nodes are topologically
ordered, so a tensor is live from the node that makes it to the last node that
reads it (graph inputs from the start, graph outputs to the end). The peak of the
summed sizes of live activations is taken after shape inference with concrete input
shapes. Weights (initializers, Constant nodes) are counted separately, and tensors
inside subgraphs (If/Loop bodies) are not counted.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import onnx

Dim = int | str | None  # a fixed size, a symbolic name, or unknown
PrecisionName = Literal["fp32", "fp16", "int8"]

DEFAULT_DOMAIN = "ai.onnx"
# Bytes a weight or float activation takes at each precision of a recipe.
PRECISION_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "int8": 1}
FLOAT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})
# Payloads above this size are emptied before shape inference; smaller ones stay,
# because data propagation needs small int64 tensors (Reshape targets, axes).
STRIP_ABOVE_BYTES = 4096
# Operators that compute in integers: a model using them is already quantized.
INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
    "QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSoftmax", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QAttention",
})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

# ONNX TensorProto data types: (name used in facts, bits per element); None: no fixed size.
_DTYPES: dict[int, tuple[str, int | None]] = {
    1: ("float32", 32), 2: ("uint8", 8), 3: ("int8", 8), 4: ("uint16", 16), 5: ("int16", 16),
    6: ("int32", 32), 7: ("int64", 64), 8: ("string", None), 9: ("bool", 8), 10: ("float16", 16),
    11: ("float64", 64), 12: ("uint32", 32), 13: ("uint64", 64), 14: ("complex64", 64),
    15: ("complex128", 128), 16: ("bfloat16", 16), 17: ("float8e4m3fn", 8), 18: ("float8e4m3fnuz", 8),
    19: ("float8e5m2", 8), 20: ("float8e5m2fnuz", 8), 21: ("uint4", 4), 22: ("int4", 4),
    23: ("float4e2m1", 4), 24: ("float8e8m0", 8), 25: ("uint2", 2), 26: ("int2", 2),
}


def dtype_name(elem_type: int) -> str:
    return _DTYPES.get(elem_type, (f"type{elem_type}", None))[0]


def dtype_bits(name: str) -> int | None:
    for dname, bits in _DTYPES.values():
        if dname == name:
            return bits
    return None


def element_bytes(dtype: str, precision: str) -> float:
    """Bytes per element of a tensor once the model is built at `precision`.

    Float tensors shrink to the precision (never grow: an fp16 tensor stays 2 bytes
    in an fp32 build); integer and bool tensors keep their size.
    """
    bits = dtype_bits(dtype)
    if bits is None:
        return 0.0
    if dtype in FLOAT_DTYPES:
        return min(bits / 8, PRECISION_BYTES[precision])
    return bits / 8


class ModelReadError(Exception):
    """The file is not a model edgefleet can analyse; the message says why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorInfo(_Frozen):
    name: str
    dtype: str
    shape: tuple[Dim, ...] | None  # None: rank unknown

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"


class OperatorUse(_Frozen):
    domain: str  # "ai.onnx" for the standard operators
    op_type: str
    count: int
    # The standard operator's schema version this model's opset selects, and whether
    # that schema is a function (runtimes may expand it into other operators).
    since_version: int | None = None
    function: bool = False

    @property
    def key(self) -> str:
        return self.op_type if self.domain == DEFAULT_DOMAIN else f"{self.domain}.{self.op_type}"


class QuantFacts(_Frozen):
    qdq_nodes: int = 0
    asymmetric_nodes: int = 0  # QuantizeLinear/DequantizeLinear with a non-zero zero point
    zero_point_types: tuple[str, ...] = ()
    integer_ops: tuple[str, ...] = ()


class ModelFacts(_Frozen):
    """Everything edgefleet knows about one ONNX file (cached by its sha256)."""

    sha256: str
    file_size: int  # bytes, including external data files
    ir_version: int
    producer: str
    opsets: dict[str, int]  # domain ("ai.onnx" for the default) -> version
    operators: tuple[OperatorUse, ...]
    node_count: int
    # Elements of every initializer and Constant-node tensor (the model's weights).
    parameter_count: int
    weight_elements: dict[str, int]  # dtype -> elements
    weight_bytes: int  # as stored in the file
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    quantization: QuantFacts
    native_precision: PrecisionName
    checker_error: str = ""  # what onnx.checker said, if it rejected the model

    @property
    def opset(self) -> int | None:
        return self.opsets.get(DEFAULT_DOMAIN)

    @property
    def overhead_bytes(self) -> int:
        """Bytes of the file that are not weights (graph, names, metadata)."""
        return max(0, self.file_size - self.weight_bytes)

    def weight_bytes_at(self, precision: str) -> int:
        return math.ceil(sum(n * element_bytes(dt, precision) for dt, n in self.weight_elements.items()))

    def artifact_bytes_at(self, precision: str) -> int:
        return self.overhead_bytes + self.weight_bytes_at(precision)

    def dynamic_dims(self) -> list[tuple[str, int, str | None]]:
        """(input name, axis, symbol) for every input dimension not fixed in the model."""
        return [(t.name, axis, d) for t in self.inputs for axis, d in enumerate(t.shape or ())
                if not isinstance(d, int)]


class ActivationEstimate(_Frozen):
    """Peak bytes of live activations for one set of concrete input shapes."""

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    peak_bytes: dict[str, int]  # precision -> bytes
    tensors: int  # activations counted
    unknown_tensors: int  # activations whose size shape inference could not tell
    error: str = ""  # shape inference failed; nothing counted


# --------------------------------------------------------------------- I/O edge


def read_model(path: Path) -> tuple["onnx.ModelProto", int, str]:
    """Load a model without its external weights: (proto, total bytes on disk, checker error).

    Raises ModelReadError for anything that is not a loadable ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    # The checker reads the file itself; run it before parsing so that its copy of a
    # large model is freed before ours exists (peak memory ~2x the file, not 3x).
    checker_error = ""
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the checker raises several types; any of them is a finding
        checker_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise ModelReadError("not an ONNX model: the protobuf cannot be parsed (corrupt or another format)")
    except (OSError, ValueError) as exc:
        raise ModelReadError(f"cannot be read: {exc}")
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise ModelReadError("not an ONNX model: no ir_version, nodes or outputs "
                             "(the bytes parse as protobuf but hold no model)")
    external = external_data_locations(model)
    if external:
        # A model is pinned by the sha256 of its one file (the declared digest and the build
        # key); weights in side files would change the artifact unseen, so they are refused.
        raise ModelReadError(external_data_refusal(external))
    return model, path.stat().st_size, checker_error


def external_data_locations(model: "onnx.ModelProto") -> list[str]:
    """Side files (ONNX external data) that tensors of `model` point at, sorted."""
    return sorted({loc for tensor in _all_tensors(model) if (loc := _external_location(tensor)) is not None})


def external_data_refusal(locations: list[str]) -> str:
    shown = ", ".join(repr(loc) for loc in locations[:3]) + (" ..." if len(locations) > 3 else "")
    return (f"stored with external data ({shown}), which edgefleet refuses: a model is pinned by the "
            "sha256 of its one file, so weights in side files could change unseen; embed them with "
            "onnx.save_model(onnx.load(PATH), PATH, save_as_external_data=False) and declare the new sha256")


# ------------------------------------------------------------------ pure core


def model_facts(model: "onnx.ModelProto", *, sha256: str, file_size: int, checker_error: str = "") -> ModelFacts:
    """The facts of a loaded model. Empties large tensor payloads of `model` in place."""
    import onnx

    graph = model.graph
    opsets = {(o.domain or DEFAULT_DOMAIN): o.version for o in model.opset_import}
    weights: Counter[str] = Counter()
    weight_bytes = 0
    for tensor in _weight_tensors(graph):
        n = _elements(tensor.dims)
        dtype = dtype_name(tensor.data_type)
        weights[dtype] += n
        bits = dtype_bits(dtype)
        weight_bytes += len(tensor.raw_data) if tensor.raw_data else (n * bits + 7) // 8 if bits else 0
    for node in _nodes(graph):
        if node.op_type == "Constant" and node.domain in ("", DEFAULT_DOMAIN):
            for attr in node.attribute:
                if attr.name in ("value_floats", "value_ints"):
                    n = len(attr.floats) or len(attr.ints)
                    weights["float32" if attr.name == "value_floats" else "int64"] += n
                    weight_bytes += n * (4 if attr.name == "value_floats" else 8)
                elif attr.name in ("value_float", "value_int"):
                    weights["float32" if attr.name == "value_float" else "int64"] += 1
                    weight_bytes += 4 if attr.name == "value_float" else 8
    quant = _quant_facts(graph)
    _strip_payloads(model)
    inferred = _infer(model)
    initializer_names = {t.name for t in graph.initializer}
    inputs = tuple(_tensor_info(v) for v in graph.input if v.name not in initializer_names)
    outputs = tuple(_tensor_info(v) for v in (inferred.graph.output if inferred else graph.output))
    operators = _operator_uses(model, opsets, onnx)
    return ModelFacts(
        sha256=sha256, file_size=file_size, ir_version=model.ir_version,
        producer=" ".join(filter(None, (model.producer_name, model.producer_version))),
        opsets=dict(sorted(opsets.items())), operators=operators,
        node_count=sum(1 for _ in _nodes(graph)), parameter_count=sum(weights.values()),
        weight_elements=dict(sorted(weights.items())), weight_bytes=weight_bytes,
        inputs=inputs, outputs=outputs, quantization=quant,
        native_precision=_native_precision(weights, quant), checker_error=checker_error,
    )


def activation_estimate(model: "onnx.ModelProto", input_shapes: dict[str, tuple[int, ...]]) -> ActivationEstimate:
    """Peak live activation bytes with every graph input fixed to a concrete shape.

    `model` should be the proto `model_facts` already stripped; it is not changed.
    """
    import onnx

    shapes_key = tuple(sorted((k, tuple(v)) for k, v in input_shapes.items()))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for value in probe.graph.input:
        if value.name in input_shapes and value.type.HasField("tensor_type"):
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in input_shapes[value.name]:
                dims.add().dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception as exc:  # inference errors come in several types; report, don't crash
        return ActivationEstimate(input_shapes=shapes_key, peak_bytes={p: 0 for p in PRECISION_BYTES},
                                  tensors=0, unknown_tensors=0, error=str(exc).splitlines()[0][:200])
    graph = inferred.graph
    weights = {t.name for t in graph.initializer}
    weights |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    infos = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
    n = len(graph.node)
    birth: dict[str, int] = {v.name: 0 for v in graph.input if v.name not in weights}
    death: dict[str, int] = dict(birth)
    for i, node in enumerate(graph.node):
        for name in _node_reads(node):
            if name in birth:
                death[name] = i
        for name in node.output:
            if name and name not in weights:
                birth[name] = i
                death[name] = i
    for value in graph.output:
        if value.name in birth:
            death[value.name] = n
    deltas = {p: [0.0] * (n + 2) for p in PRECISION_BYTES}
    unknown = 0
    for name, start in birth.items():
        elements, dtype = _concrete_size(infos.get(name))
        if elements is None:
            unknown += 1
            continue
        for p, delta in deltas.items():
            size = elements * element_bytes(dtype, p)
            delta[start] += size
            delta[death[name] + 1] -= size
    peaks: dict[str, int] = {}
    for p, delta in deltas.items():
        live = peak = 0.0
        for step in delta:
            live += step
            peak = max(peak, live)
        peaks[p] = math.ceil(peak)
    return ActivationEstimate(input_shapes=shapes_key, peak_bytes=peaks,
                              tensors=len(birth) - unknown, unknown_tensors=unknown)


# ------------------------------------------------------------------- helpers


def _elements(dims: Iterable[int]) -> int:
    return math.prod(max(0, int(d)) for d in dims)


def _nodes(graph) -> Iterator:
    """Every node of a graph, including those in subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def _weight_tensors(graph) -> Iterator:
    """Initializers (all graphs) and the tensors Constant nodes hold."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.HasField("t"):
                yield attr.t
            elif node.op_type == "Constant" and attr.name == "sparse_value":
                yield attr.sparse_tensor.values
            if attr.HasField("g"):
                yield from _weight_tensors(attr.g)
            for sub in attr.graphs:
                yield from _weight_tensors(sub)


def _all_tensors(model) -> Iterator:
    yield from _weight_tensors(model.graph)


def _external_location(tensor) -> str | None:
    import onnx

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    for entry in tensor.external_data:
        if entry.key == "location":
            return entry.value
    return None


def _strip_payloads(model) -> None:
    """Empty large tensor payloads; shape inference then reads dims, not weights."""
    import onnx

    for tensor in _all_tensors(model):
        payload = len(tensor.raw_data) + 4 * (len(tensor.float_data) + len(tensor.int32_data)) \
            + 8 * (len(tensor.int64_data) + len(tensor.double_data) + len(tensor.uint64_data))
        if payload <= STRIP_ABOVE_BYTES:
            continue
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            tensor.ClearField(field)
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            tensor.data_location = onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", "edgefleet-stripped"


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a model ORT can run may still trip the inference; keep the declared shapes
        return None


def _tensor_info(value) -> TensorInfo:
    t = value.type
    if not t.HasField("tensor_type"):
        kind = t.WhichOneof("value") or "unknown"
        return TensorInfo(name=value.name, dtype=kind, shape=None)
    tt = t.tensor_type
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return TensorInfo(name=value.name, dtype=dtype_name(tt.elem_type), shape=shape)


def _concrete_size(value) -> tuple[int | None, str]:
    if value is None or not value.type.HasField("tensor_type"):
        return None, ""
    tt = value.type.tensor_type
    if not tt.HasField("shape") or dtype_bits(dtype_name(tt.elem_type)) is None:
        return None, ""
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None, ""
        dims.append(d.dim_value)
    return _elements(dims), dtype_name(tt.elem_type)


def _node_reads(node) -> Iterator[str]:
    """Names a node reads, including outer-scope names its subgraphs capture."""
    yield from (n for n in node.input if n)
    for attr in node.attribute:
        subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for sub in subs:
            local = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                local.update(inner.output)
            for inner in sub.node:
                yield from (n for n in _node_reads(inner) if n not in local)


def _operator_uses(model, opsets: dict[str, int], onnx) -> tuple[OperatorUse, ...]:
    local_functions = {(f.domain or DEFAULT_DOMAIN, f.name): f for f in model.functions}
    counts: Counter[tuple[str, str]] = Counter()

    def visit(nodes, depth: int = 0) -> None:
        for node in nodes:
            key = (node.domain or DEFAULT_DOMAIN, node.op_type)
            if key in local_functions and depth < 8:
                visit(local_functions[key].node, depth + 1)  # runtimes inline model-local functions
                continue
            counts[key] += 1
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub.node, depth)

    visit(model.graph.node)
    uses = []
    for (domain, op_type), count in sorted(counts.items()):
        since, function = None, False
        if domain in (DEFAULT_DOMAIN, "ai.onnx.ml"):
            try:
                schema = onnx.defs.get_schema(op_type, opsets.get(domain, 1), "" if domain == DEFAULT_DOMAIN else domain)
                since = schema.since_version
                function = bool(schema.has_function or schema.has_context_dependent_function)
            except Exception:  # onnx.defs raises SchemaError for unknown ops/versions
                pass
        uses.append(OperatorUse(domain=domain, op_type=op_type, count=count, since_version=since, function=function))
    return tuple(uses)


def _quant_facts(graph) -> QuantFacts:
    from onnx import numpy_helper

    constants: dict[str, object] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    constants[node.output[0]] = attr.t
    qdq = asymmetric = 0
    zp_types: set[str] = set()
    integer_ops: set[str] = set()
    for node in _nodes(graph):
        if node.op_type in INTEGER_OPS:
            integer_ops.add(node.op_type)
        if node.op_type not in QDQ_OPS:
            continue
        qdq += 1
        if len(node.input) < 3 or not node.input[2]:
            zp_types.add("uint8")  # the default zero point of QuantizeLinear is uint8 0
            continue
        tensor = constants.get(node.input[2])
        if tensor is None:
            asymmetric += 1  # computed at run time: cannot be proven zero
            continue
        zp_types.add(dtype_name(tensor.data_type))
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # external or malformed payload: cannot be proven zero
            asymmetric += 1
            continue
        if values.size and bool((values != 0).any()):
            asymmetric += 1
    return QuantFacts(qdq_nodes=qdq, asymmetric_nodes=asymmetric,
                      zero_point_types=tuple(sorted(zp_types)), integer_ops=tuple(sorted(integer_ops)))


def _native_precision(weights: Counter[str], quant: QuantFacts) -> PrecisionName:
    if quant.integer_ops or any(t in ("int8", "uint8") for t in quant.zero_point_types):
        return "int8"
    floats = {k: v for k, v in weights.items() if k in FLOAT_DTYPES}
    if floats and max(floats, key=lambda k: (floats[k], k)) in ("float16", "bfloat16"):
        return "fp16"
    return "fp32"
