"""Reading the source ONNX model and writing artifacts as canonical, reproducible bytes.

Every ONNX artifact leaves through `canonical_bytes`: producer fields fixed to edgefleet,
doc strings dropped, opset imports cut to the domains the graph really uses (onnxruntime
stamps every domain it knows on a saved graph, which older device runtimes refuse), and
the source's metadata kept in sorted order. Same graph in, same bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from edgefleet import __version__
from edgefleet.analysis.onnx_facts import external_data_locations, external_data_refusal
from edgefleet.build.errors import BuildError

PRODUCER = "edgefleet"


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int | None, ...]  # None for a dynamic dimension
    output_names: tuple[str, ...]

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0] if self.shape else None


def load_source(path: Path, shown: str | None = None) -> onnx.ModelProto:
    """The source model, checked; a corrupt or invalid file is a BuildError (E410)."""
    shown = shown or str(path)
    if not path.is_file():
        raise BuildError("E410", f"source model {shown} does not exist",
                         "fix the variant's source path (relative to the repository root)")
    try:
        # Weights in external-data side files are not covered by the source's sha256 (the
        # build key): such a model is refused before anything reads the side files.
        model = onnx.load(str(path), load_external_data=False)
        external = external_data_locations(model)
        if external:
            raise BuildError("E410", f"source model {shown} is {external_data_refusal(external)}",
                             "embed the weights in the .onnx file and update the variant's sha256")
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError("E410", f"source model {shown} is not a valid ONNX model ({detail})",
                         "re-export the model and update the variant's sha256; "
                         "`python -c \"import onnx; onnx.checker.check_model('FILE')\"` shows the problem") from None
    if not model.graph.node:
        raise BuildError("E410", f"source model {shown} has an empty graph", "re-export the model")
    return model


def input_info(model: onnx.ModelProto, shown: str) -> InputInfo:
    """The one float input the engine feeds (data files carry a single 'input' array)."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BuildError("E411", f"source model {shown} has {len(inputs)} inputs "
                                 f"({', '.join(i.name for i in inputs)}); the build engine feeds exactly one",
                         "export the model with a single input tensor (the data files hold one 'input' array)")
    value = inputs[0]
    tensor = value.type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise BuildError("E411", f"input '{value.name}' of {shown} is "
                                 f"{onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)}, not float32",
                         "export the model with a float32 input (normalization inside or before it)")
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                  for d in tensor.shape.dim)
    if not shape:
        raise BuildError("E411", f"input '{value.name}' of {shown} has no declared rank",
                         "export the model with a shaped input (batch first)")
    return InputInfo(value.name, shape, tuple(o.name for o in model.graph.output))


def node_names(model: onnx.ModelProto) -> set[str]:
    return {n.name for n in model.graph.node if n.name}


def lift_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant nodes holding tensors become initializers, so quantizers see weights as weights.

    Exporters (paddle2onnx among them) often feed Conv weights through Constant nodes; a
    quantizer then treats them as activations and never quantizes them per channel.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = []
    for node in out.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None \
                and len(node.attribute) == 1:
            tensor = numpy_helper.to_array(value.t)
            out.graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
        else:
            kept.append(node)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def at_least_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """Per-channel QDQ (axis on QuantizeLinear) needs opset 13; convert older graphs."""
    if default_opset(model) >= version:
        return model
    from onnx import version_converter

    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(model)
    _used_domains_only(trimmed)
    return version_converter.convert_version(trimmed, version)


def canonical_bytes(model: onnx.ModelProto) -> bytes:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.producer_name = PRODUCER
    out.producer_version = __version__
    out.doc_string = ""
    out.graph.doc_string = ""
    for node in out.graph.node:
        node.doc_string = ""
    props = sorted((p.key, p.value) for p in out.metadata_props)
    del out.metadata_props[:]
    for key, value in props:
        out.metadata_props.add(key=key, value=value)
    _used_domains_only(out)
    return out.SerializeToString(deterministic=True)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _used_domains_only(model: onnx.ModelProto) -> None:
    used = {n.domain or "" for n in _all_nodes(model.graph)} | {f.domain for f in model.functions} | {""}
    keep = sorted(((o.domain, o.version) for o in model.opset_import if (o.domain or "") in used))
    del model.opset_import[:]
    for domain, version in keep:
        model.opset_import.add(domain=domain, version=version)
