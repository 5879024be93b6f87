"""The recipe-validity rule: can this class's runtime build and run this recipe?

One definition for validation (E308, at the recipe's YAML) and the build's pre-flight
and engine (E420 / E421 / E412 / E422, `build.engine.check_recipe`). Pure.

What "unset" means: a recipe field left out takes the runtime's own choice, which is
always one that runtime can run. For TensorRT INT8 that is symmetric QDQ with the full
8-bit range: TensorRT's explicit quantization takes only zero point 0
(`build.optimize_ort.quant_settings` makes symmetric int8 Q/DQ for the TensorRT target
whatever the recipe says), so `symmetric` unset is valid and only `symmetric: false`
asks for something TensorRT cannot run.

Problems come in the order a person should fix them; each names the recipe field to
change (`field`, "" for the recipe as a whole) and what it conflicts with (`against`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from edgefleet.spec import Recipe

Kind = Literal["precision", "runtime", "calibration", "node"]
Against = Literal["precisions", "runtime", "data", "source"]


@dataclass(frozen=True)
class RecipeProblem:
    kind: Kind
    field: str  # the recipe's field to change ("" : the recipe itself)
    against: Against  # what it conflicts with: the class's precisions or runtime, the model's data or file
    message: str  # "recipe '<name>' " + message reads as a sentence
    hint: str


def recipe_problems(recipe: Recipe, runtime: str, precisions: Collection[str], *,
                    has_calibration: bool | None = None, nodes: Collection[str] | None = None,
                    class_label: str = "this hardware class") -> list[RecipeProblem]:
    """Everything that stops `recipe` from being built for a class with this runtime.

    `has_calibration` (does the model declare calibration data) and `nodes` (the node
    names of the source ONNX) are checked only when given: a class's own recipes are
    checked before any model is known.
    """
    out: list[RecipeProblem] = []

    def add(kind: Kind, field: str, against: Against, message: str, hint: str) -> None:
        out.append(RecipeProblem(kind, field, against, message, hint))

    listed = ", ".join(precisions)
    if recipe.precision not in precisions:
        add("precision", "precision", "precisions",
            f"builds {recipe.precision}, which is not a precision {class_label} runs (precisions: {listed})",
            f"use one of {listed}, remove the recipe, or add {recipe.precision} to the class's precisions "
            f"if the device runs it")
    int8 = recipe.precision == "int8"
    if not int8 and recipe.quantization is not None:
        add("runtime", "quantization", "runtime",
            f"sets quantization: {recipe.quantization}, which applies to int8 only, not {recipe.precision}",
            "remove quantization, or set precision: int8")
    dynamic = int8 and recipe.quantization == "dynamic"
    if runtime == "openvino":
        if dynamic:
            add("runtime", "quantization", "runtime", "quantizes dynamically, but OpenVINO has no dynamic INT8; "
                "NNCF quantizes statically", "use quantization: static (with calibration data)")
        if int8 and recipe.calibration == "entropy":
            add("runtime", "calibration", "runtime", "asks for entropy calibration, but NNCF offers no entropy "
                "calibration", "use calibration: minmax or percentile")
    if runtime == "tensorrt" and int8:
        if dynamic:
            add("runtime", "quantization", "runtime", "quantizes dynamically, but TensorRT has no dynamic INT8; "
                "it takes INT8 only from static QDQ", "use quantization: static")
        if recipe.symmetric is False:
            add("runtime", "symmetric", "runtime", "sets symmetric: false, but TensorRT INT8 needs symmetric QDQ "
                "(zero point 0)", "set symmetric: true, or leave it unset (TensorRT's default is symmetric)")
        if recipe.reduce_range:
            add("runtime", "reduce_range", "runtime", "sets reduce_range, but TensorRT INT8 uses the full 8-bit range",
                "remove reduce_range")
    if runtime != "onnxruntime" and recipe.graph_optimization == "extended":
        add("runtime", "graph_optimization", "runtime",
            f"sets graph_optimization: extended, an onnxruntime setting; {runtime} optimizes the graph itself",
            "remove graph_optimization")
    if int8 and not dynamic and has_calibration is False:
        add("calibration", "", "data", "is static INT8, which needs calibration data, and the model declares none",
            "add spec.data.calibration (an npz of real inputs, key 'input'), or use quantization: dynamic")
    if nodes is not None:
        missing = sorted(set(recipe.exclude_nodes) - set(nodes))
        if missing:
            add("node", "exclude_nodes", "source",
                f"lists exclude_nodes {', '.join(missing)}, which the model does not contain",
                "use node names of the source ONNX graph (as Netron shows them)")
    return out
