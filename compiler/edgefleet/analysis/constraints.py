"""Does a model version fit a hardware class: every constraint, as data and as diagnostics.

Pure: facts about the model files (measured by `cache.Analyzer`), runtime answers
(`runtime_support`) and the typed documents come in; `Check`s and E3xx diagnostics
go out. Every diagnostic stands at the model's YAML (the variant, the recipe, the
data) and points with `related` at the hardware class field it breaks.

Estimates rest on stated rules, so a person can redo them by hand:

* precision: the smallest precision among the recipe chain (the model version's
  `recipes[runtime]`, else the model's, else the class's `recipes`) that the class
  lists in `precisions`; with no usable recipe, the model's own precision.
* artifact size: the file's non-weight bytes plus every weight at that precision
  (float weights 4/2/1 bytes at fp32/fp16/int8; integer weights keep their size).
  MB means MiB (1,048,576 bytes). The real artifact is gated again by the build;
  this check proves it *can* fit.
* storage: two artifacts (the A/B slots) must fit `storage_mb`.
* memory: weights at that precision plus the peak of live activations for the
  class's `batch_size` (float activations at that precision too), with dynamic
  dimensions bound as `bind_inputs` documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgefleet.analysis.onnx_facts import PRECISION_BYTES, ActivationEstimate, ModelFacts
from edgefleet.analysis.runtime_support import RuntimeSupport, Verdict
from edgefleet.core.diagnostics import Diagnostic, error, warning
from edgefleet.load.repo import FleetRepo, Loaded
from edgefleet.rules.digests import digest_mismatch
from edgefleet.rules.gates import gate_problems
from edgefleet.rules.recipe_chain import RecipeChain, resolve_chain
from edgefleet.rules.recipes import RecipeProblem, recipe_problems
from edgefleet.spec import HardwareClass, Model, Variant

MB = 1024 * 1024
# A dynamic dimension that is neither the batch nor fixed by the class's input.shape
# (image height/width, sequence length) is taken as this many elements.
DEFAULT_DYNAMIC_DIM = 512
# Quantized types TensorRT accepts in QDQ (operators.md: INT8, FP8, INT4; zero point 0).
TENSORRT_QDQ_TYPES = frozenset({"int8", "int4", "float8e4m3fn"})

CheckStatus = Literal["pass", "fail", "unchecked", "warning"]

# Codes: one per constraint.
E_SHA256 = "E301"
E_UNREADABLE = "E302"
E_ARTIFACT = "E303"
E_STORAGE = "E304"
E_MEMORY = "E305"
E_OPERATOR = "E306"
E_OPSET = "E307"
E_PRECISION = "E308"
E_INPUT = "E309"
E_GATE = "E310"
W_CHECKER = "W301"
E_MISSING = "E212"  # reported by crossref; kept here only to explain the choice


@dataclass(frozen=True)
class Check:
    """One line of `explain`: a measured property against the class's limit."""

    name: str
    code: str
    status: CheckStatus
    measured: str
    limit: str
    detail: str = ""  # the sentence for a failure (or why it was not checked)
    class_field: tuple[str | int, ...] = ("spec",)  # where the limit stands in the class YAML
    model_field: tuple[str | int, ...] = ("source",)  # where it stands under the variant
    hint: str = ""


@dataclass(frozen=True)
class InputBinding:
    """Concrete input shapes for the estimate, and what had to be assumed."""

    shapes: dict[str, tuple[int, ...]]
    assumptions: tuple[str, ...] = ()
    mismatch: str = ""  # why the model cannot take the class's declared input
    mismatch_field: tuple[str | int, ...] = ("spec", "input", "shape")  # the class field it contradicts


@dataclass(frozen=True)
class VariantEvidence:
    """What was measured about one variant for one class (gathered at the I/O edge)."""

    variant: Variant
    index: int
    actual_sha256: str | None  # None: the file does not exist
    facts: ModelFacts | None = None
    read_error: str = ""
    support: RuntimeSupport | None = None
    binding: InputBinding | None = None
    activations: ActivationEstimate | None = None


@dataclass(frozen=True)
class VariantFit:
    variant: Variant
    index: int
    checks: tuple[Check, ...]
    precision: str | None = None
    facts: ModelFacts | None = None
    notes: tuple[str, ...] = field(default=())
    support: RuntimeSupport | None = None

    @property
    def fits(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "fail")


# ------------------------------------------------------------------ inputs


# One rule for which chain applies, shared with the build (default chain included).
recipe_chain = resolve_chain


def build_precision(chain: RecipeChain, hw: HardwareClass, facts: ModelFacts) -> tuple[str, str]:
    """(precision the estimates use, why)."""
    usable = [r for r in chain.recipes if r.precision in hw.spec.precisions]
    if usable:
        best = min(usable, key=lambda r: PRECISION_BYTES[r.precision])
        names = ", ".join(r.name for r in chain.recipes)
        return best.precision, f"smallest the class executes among recipes {names}"
    return facts.native_precision, "the model's own precision (no recipe of the chain runs on this class)"


def bind_inputs(facts: ModelFacts, hw: HardwareClass) -> InputBinding:
    """Concrete shapes for every model input.

    The first input takes the class's `input.shape` where declared; elsewhere axis 0
    is the class's `batch_size` and any other dynamic axis is DEFAULT_DYNAMIC_DIM.
    """
    spec = hw.spec
    shapes: dict[str, tuple[int, ...]] = {}
    assumptions: list[str] = []
    mismatch = ""
    field_at: tuple[str | int, ...] = ("spec", "input", "shape")
    for position, tensor in enumerate(facts.inputs):
        dims = tuple(tensor.shape or ())
        declared = spec.input.shape if (position == 0 and spec.input is not None) else None
        if declared is not None:
            problems = []
            if tensor.shape is None:
                problems.append(f"the model does not state the rank of input '{tensor.name}'")
            elif len(declared) != len(dims):
                problems.append(f"input '{tensor.name}' has rank {len(dims)} {tensor.shape_text()}, "
                                f"the class feeds rank {len(declared)} {list(declared)}")
            else:
                bad = [f"axis {i} is {d}, the class feeds {declared[i]}" for i, d in enumerate(dims)
                       if isinstance(d, int) and d != declared[i]]
                if bad:
                    problems.append(f"input '{tensor.name}' {tensor.shape_text()}: " + "; ".join(bad))
            shape_ok = not problems
            if spec.input.dtype != tensor.dtype:
                problems.append(f"input '{tensor.name}' is {tensor.dtype}, the class feeds {spec.input.dtype}")
            if not problems:
                shapes[tensor.name] = tuple(declared)
                continue
            if not mismatch:
                mismatch = "; ".join(problems)
                field_at = ("spec", "input", "dtype") if shape_ok else ("spec", "input", "shape")
            if shape_ok:
                shapes[tensor.name] = tuple(declared)
                continue
        if position == 0 and spec.input is None and spec.batch_size > 1 and dims and isinstance(dims[0], int) \
                and dims[0] != spec.batch_size and not mismatch:
            mismatch = (f"input '{tensor.name}' {tensor.shape_text()} has a fixed batch of {dims[0]}, "
                        f"the class runs batches of {spec.batch_size}")
            field_at = ("spec", "batch_size")
        if tensor.shape is None:
            assumptions.append(f"input '{tensor.name}' has no declared shape; its activations are not counted")
            continue
        concrete = []
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                concrete.append(d)
            elif axis == 0:
                concrete.append(spec.batch_size)
            else:
                concrete.append(DEFAULT_DYNAMIC_DIM)
                assumptions.append(f"input '{tensor.name}' axis {axis} ({d or 'unnamed'}) taken as "
                                   f"{DEFAULT_DYNAMIC_DIM}")
        shapes[tensor.name] = tuple(concrete)
    return InputBinding(shapes, tuple(assumptions), mismatch, field_at)


# ------------------------------------------------------------------ checks


def _mb(nbytes: float) -> str:
    value = nbytes / MB
    return f"{value:.3f} MB" if value < 10 else f"{value:,.1f} MB"


def _limit_mb(value: float) -> str:
    return f"{value:g} MB"


def evaluate_variant(ev: VariantEvidence, hw: HardwareClass, chain: RecipeChain) -> VariantFit:
    """Every constraint of one variant on one class."""
    variant = ev.variant
    if ev.actual_sha256 is None:
        return VariantFit(variant, ev.index, (Check(
            "model file", E_MISSING, "fail", variant.source, "must exist",
            f"model file '{variant.source}' does not exist"),))
    mismatch = digest_mismatch(variant.source, ev.actual_sha256, variant.sha256)
    if mismatch is not None:
        return VariantFit(variant, ev.index, (Check(
            "sha256", E_SHA256, "fail", ev.actual_sha256, f"declared {variant.sha256}", mismatch.message,
            model_field=("sha256",), hint=mismatch.hint),))
    facts = ev.facts
    if facts is None:
        return VariantFit(variant, ev.index, (Check(
            "ONNX model", E_UNREADABLE, "fail", variant.source, "a valid ONNX model",
            f"'{variant.source}' is {ev.read_error}",
            hint="point source: at an ONNX file (re-export the model), and update sha256"),))
    checks: list[Check] = [Check("sha256", E_SHA256, "pass", facts.sha256[:16] + "…", "matches the YAML",
                                 model_field=("sha256",))]
    if facts.checker_error:
        checks.append(Check("onnx checker", W_CHECKER, "warning", "rejected", "onnx.checker.check_model",
                            f"onnx.checker rejects '{variant.source}': {facts.checker_error}",
                            hint="runtimes may still load it; re-export the model with a current exporter"))
    precision, why = build_precision(chain, hw, facts)
    checks.append(_precision_check(facts, hw, chain, precision, why))
    checks += _size_checks(facts, hw, precision)
    checks.append(_memory_check(facts, hw, precision, ev.binding, ev.activations))
    if ev.support is not None:
        checks.append(_verdict_check("operators", E_OPERATOR, ev.support.operators, ("spec", "runtime", "name"),
                                     "use a variant without these operators, re-export replacing them, or pick "
                                     "a runtime that has them"))
        checks.append(_verdict_check("opset", E_OPSET, ev.support.opset, ("spec", "runtime", "version"),
                                     "re-export the model at an opset the runtime implements "
                                     "(onnx.version_converter), or upgrade the class's runtime"))
    checks.append(_input_check(facts, hw, ev.binding))
    notes = tuple(ev.support.notes if ev.support else ()) + tuple(ev.binding.assumptions if ev.binding else ())
    return VariantFit(variant, ev.index, tuple(checks), precision, facts, notes, ev.support)


def _precision_check(facts: ModelFacts, hw: HardwareClass, chain: RecipeChain, precision: str, why: str) -> Check:
    spec = hw.spec
    listed = ", ".join(spec.precisions)
    measured = f"{precision} ({why})"
    limit = f"precisions: {listed}"
    problems = []
    if facts.native_precision == "int8" and "int8" not in spec.precisions:
        problems.append("the model is already quantized to INT8 (QuantizeLinear/DequantizeLinear or integer "
                        f"operators), but the class executes only {listed}")
    elif precision not in spec.precisions:
        problems.append(f"the model is {facts.native_precision} and no recipe of the chain converts it to a "
                        f"precision the class executes ({listed})")
    q = facts.quantization
    if spec.runtime.name == "tensorrt" and q.qdq_nodes:
        if q.asymmetric_nodes:
            problems.append(f"TensorRT INT8 needs symmetric QDQ, but {q.asymmetric_nodes} of the model's "
                            f"{q.qdq_nodes} QuantizeLinear/DequantizeLinear nodes have a non-zero zero point")
        odd = sorted(set(q.zero_point_types) - TENSORRT_QDQ_TYPES)
        if odd:
            problems.append(f"TensorRT QDQ takes INT8/INT4/FP8, the model quantizes to {', '.join(odd)}")
    return Check("precision", E_PRECISION, "fail" if problems else "pass", measured, limit, "; ".join(problems),
                 class_field=("spec", "precisions"),
                 hint="quantize symmetrically to INT8 (recipe symmetric: true) or ship a float variant"
                 if spec.runtime.name == "tensorrt" and q.qdq_nodes else
                 "list the precision in the class if the device runs it, or ship a variant in a listed precision")


def _size_checks(facts: ModelFacts, hw: HardwareClass, precision: str) -> list[Check]:
    spec = hw.spec
    size = facts.artifact_bytes_at(precision)
    basis = f"{facts.parameter_count:,} parameters at {precision} + {facts.overhead_bytes:,} bytes of graph"
    limit_bytes = spec.max_artifact_mb * MB
    artifact = Check(
        "artifact size", E_ARTIFACT, "pass" if size <= limit_bytes else "fail",
        f"{_mb(size)} est. ({size:,} bytes: {basis})", f"max_artifact_mb: {spec.max_artifact_mb:g}",
        f"the estimated {precision} artifact is {_mb(size)} ({basis}), over max_artifact_mb "
        f"{_limit_mb(spec.max_artifact_mb)}",
        class_field=("spec", "max_artifact_mb"),
        hint="list a smaller variant (e.g. a distilled student) after this one, add an int8 recipe if the class "
             "runs int8, or raise max_artifact_mb if the class really takes larger updates")
    slots = 2 * size
    storage = Check(
        "storage (A/B)", E_STORAGE, "pass" if slots <= spec.storage_mb * MB else "fail",
        f"{_mb(slots)} (2 slots x {_mb(size)})", f"storage_mb: {spec.storage_mb:g}",
        f"two slots of the estimated {precision} artifact need {_mb(slots)}, over storage_mb "
        f"{_limit_mb(spec.storage_mb)}",
        class_field=("spec", "storage_mb"),
        hint="the device keeps the running and the staged artifact; ship a smaller variant or free storage")
    return [artifact, storage]


def _memory_check(facts: ModelFacts, hw: HardwareClass, precision: str, binding: InputBinding | None,
                  activations: ActivationEstimate | None) -> Check:
    spec = hw.spec
    weights = facts.weight_bytes_at(precision)
    limit = f"model_ram_budget_mb: {spec.model_ram_budget_mb:g}"
    if activations is None or activations.error:
        reason = activations.error if activations else "input shapes unknown"
        return Check("memory", E_MEMORY, "unchecked", f"weights {_mb(weights)}; activations unknown", limit,
                     f"activation sizes could not be inferred ({reason})", class_field=("spec", "model_ram_budget_mb"))
    peak = activations.peak_bytes[precision]
    total = weights + peak
    shapes = ", ".join(f"{name} {list(dims)}" for name, dims in activations.input_shapes)
    caveats = []
    defaulted = [a for a in (binding.assumptions if binding else ()) if "taken as" in a]
    if defaulted:
        caveats.append(f"assumes {len(defaulted)} dynamic dims = {DEFAULT_DYNAMIC_DIM}")
    if activations.unknown_tensors:
        caveats.append(f"{activations.unknown_tensors} activations of unknown size not counted")
    measured = (f"{_mb(total)} est. (weights {_mb(weights)} + peak activations {_mb(peak)} for {shapes}"
                + (f"; {'; '.join(caveats)}" if caveats else "") + ")")
    return Check("memory", E_MEMORY, "pass" if total <= spec.model_ram_budget_mb * MB else "fail", measured, limit,
                 f"the estimated memory at {precision} is {_mb(total)} (weights {_mb(weights)} + peak activations "
                 f"{_mb(peak)} for {shapes}), over model_ram_budget_mb {_limit_mb(spec.model_ram_budget_mb)}",
                 class_field=("spec", "model_ram_budget_mb"),
                 hint="ship a smaller variant, lower batch_size, or raise model_ram_budget_mb if the device has room")


def _verdict_check(name: str, code: str, verdict: Verdict, class_field: tuple, hint: str) -> Check:
    return Check(name, code, verdict.status, verdict.measured, verdict.limit, verdict.detail,
                 class_field=class_field, hint=hint)


def _input_check(facts: ModelFacts, hw: HardwareClass, binding: InputBinding | None) -> Check:
    spec = hw.spec
    measured = ", ".join(f"{t.name} {t.dtype} {t.shape_text()}" for t in facts.inputs) or "no inputs"
    if spec.input is not None:
        limit = f"input {spec.input.dtype} {list(spec.input.shape)}"
    else:
        limit = f"batch_size {spec.batch_size}"
    mismatch = binding.mismatch if binding else ""
    class_field = binding.mismatch_field if binding and mismatch else ("spec", "input" if spec.input else "batch_size")
    return Check("input", E_INPUT, "fail" if mismatch else "pass", measured, limit, mismatch,
                 class_field=class_field,
                 hint="export the model with this input (a dynamic batch axis takes any batch), or correct the "
                      "class's input if the device feeds something else")


def gate_check(model: Model, hw: HardwareClass) -> Check:
    """The accuracy gate (`rules.gates`): a class that requires one needs evaluation data and a budget."""
    spec = model.spec
    limit = "requires_accuracy_gate: " + ("true" if hw.spec.requires_accuracy_gate else "false")
    measured = (f"evaluation {spec.data.evaluation or 'none'}; "
                f"budget {spec.accuracy.metric + ' >= ' + format(spec.accuracy.threshold, 'g') if spec.accuracy else 'none'}")
    problems = gate_problems(hw.spec.requires_accuracy_gate, spec.accuracy, spec.data.evaluation is not None)
    if not problems:
        return Check("accuracy gate", E_GATE, "pass", measured, limit, class_field=("spec", "requires_accuracy_gate"))
    first = problems[0]
    if first.missing == "evaluation":
        model_field: tuple[str | int, ...] = ("spec", "data") if "data" in spec.model_fields_set else ("spec",)
    else:
        model_field = ("spec", "accuracy") if spec.accuracy is not None else ("spec",)
    return Check("accuracy gate", E_GATE, "fail", measured, limit, first.message,
                 class_field=("spec", "requires_accuracy_gate"), model_field=model_field, hint=first.hint)


def choose(fits: list[VariantFit], gate: Check) -> tuple[VariantFit | None, tuple[str, ...]]:
    """The first variant in preference order that fits, and a reason line per variant."""
    chosen = None
    reasons: list[str] = []
    for fit in sorted(fits, key=lambda f: f.index):
        if fit.fits and chosen is None and gate.status != "fail":
            chosen = fit
            first = "first variant in preference order" if fit.index == 0 else \
                "the first variant in preference order that fits"
            reasons.append(f"{fit.variant.name}: selected ({first}; {fit.precision})")
        elif fit.fits:
            reasons.append(f"{fit.variant.name}: fits, but " + (
                f"'{chosen.variant.name}' comes first" if chosen else "the accuracy gate blocks the version"))
        else:
            reasons.append(f"{fit.variant.name}: does not fit: " + "; ".join(
                f"{c.detail} ({c.code})" for c in fit.failures))
    if gate.status == "fail":
        reasons.append(f"accuracy gate: {gate.detail} ({gate.code})")
    return chosen, tuple(reasons)


# ------------------------------------------------------------- diagnostics


def _variant_path(version_index: int, variant_index: int) -> tuple:
    return ("spec", "versions", version_index, "variants", variant_index)


def choice_diagnostics(model: Loaded[Model], version_index: int, hw: Loaded[HardwareClass],
                       fits: list[VariantFit]) -> list[Diagnostic]:
    """E3xx for one (model version, class): integrity always, fit failures when nothing fits.

    The accuracy gate is reported once per model by `gate_diagnostics`.
    """
    out: list[Diagnostic] = []
    name, version = model.doc.metadata.name, model.doc.spec.versions[version_index].version
    cls = hw.doc.metadata.name
    msrc, hsrc = model.source, hw.source
    for fit in fits:
        here = _variant_path(version_index, fit.index)
        for c in fit.checks:
            if c.code in (E_SHA256, E_UNREADABLE) and c.status == "fail":
                out.append(error(c.code, f"model {name}@{version} variant '{fit.variant.name}': {c.detail}",
                                 msrc.at(*here, *c.model_field), c.hint))
            elif c.status == "warning":
                out.append(warning(c.code, f"model {name}@{version} variant '{fit.variant.name}': {c.detail}",
                                   msrc.at(*here, *c.model_field), c.hint))
    if any(f.fits for f in fits):
        return out
    summary = "; ".join(f"{f.variant.name}: " + ", ".join(c.code for c in f.failures) for f in fits)
    for fit in fits:
        here = _variant_path(version_index, fit.index)
        for c in fit.failures:
            if c.code in (E_SHA256, E_UNREADABLE, E_MISSING):
                continue
            hint = c.hint + (f" (no variant of {name}@{version} fits '{cls}': {summary})" if len(fits) > 1 else "")
            out.append(error(
                c.code, f"{name}@{version} variant '{fit.variant.name}' does not fit hardware class '{cls}': "
                        f"{c.detail}",
                msrc.at(*here, *c.model_field), hint,
                related=[(hsrc.at(*c.class_field), f"{_field_label(c.class_field)} of hardware class '{cls}'")]))
    return out


def gate_diagnostics(model: Loaded[Model], failures: list[tuple[Loaded[HardwareClass], Check]]) -> list[Diagnostic]:
    """One E310 per model and missing piece, pointing at every class that requires the gate."""
    out = []
    name = model.doc.metadata.name
    by_detail: dict[str, list[tuple[Loaded[HardwareClass], Check]]] = {}
    for hw, gate in failures:
        by_detail.setdefault(gate.detail, []).append((hw, gate))
    for detail, group in sorted(by_detail.items()):
        classes = sorted({hw.doc.metadata.name for hw, _ in group})
        gate = group[0][1]
        shown = ", ".join(f"'{c}'" for c in classes)
        related = []
        for hw, g in sorted(group, key=lambda item: item[0].doc.metadata.name):
            default = "" if "requires_accuracy_gate" in hw.doc.spec.model_fields_set else " (true by default)"
            # An unset field is reported at `spec:`, where a person would add it.
            related.append((hw.source.key_at(*(g.class_field if not default else ("spec",))),
                            f"requires_accuracy_gate of hardware class '{hw.doc.metadata.name}'{default}"))
        out.append(error(gate.code, f"model '{name}' cannot be gated for hardware class"
                                    f"{'es' if len(classes) > 1 else ''} {shown}: {detail}",
                         model.source.key_at(*gate.model_field), gate.hint, related=related))
    return out


def _field_label(path: tuple) -> str:
    return ".".join(str(p) for p in path[1:]) or "spec"


@dataclass(frozen=True)
class ChainUse:
    """A recipe chain one needed build uses, with what is known of its model."""

    model: str
    chain: RecipeChain
    hardware_class: str
    nodes: frozenset[str] | None = None  # node names of the chosen variant's ONNX (None: not read)


def recipe_diagnostics(repo: FleetRepo, uses: list[ChainUse]) -> list[Diagnostic]:
    """E308 for every recipe the class cannot build (`rules.recipes`, the build's rule too).

    Every class's own recipes are checked against the class alone; each use adds the
    model's side: recipes written in model YAML against their class, and every recipe of
    the chain against the model's data and the chosen variant's node names.
    """
    out: list[Diagnostic] = []
    for cls in sorted(repo.hardware):
        hw = repo.hardware[cls]
        chain = RecipeChain(tuple(hw.doc.spec.recipes), "class", ("spec", "recipes"))
        out += _chain_problems(chain, hw.source, hw, f"hardware class '{cls}'", "the class")
    for use in uses:
        if use.hardware_class not in repo.hardware or use.model not in repo.models:
            continue
        model, hw = repo.models[use.model], repo.hardware[use.hardware_class]
        own = use.chain.origin in ("version", "model")
        src = model.source if own else hw.source
        spec = hw.doc.spec
        for i, recipe in enumerate(use.chain.recipes):
            at = (*use.chain.path, i) if use.chain.origin != "default" else use.chain.path
            problems = recipe_problems(recipe, spec.runtime.name, spec.precisions,
                                       class_label=f"hardware class '{use.hardware_class}'",
                                       has_calibration=model.doc.spec.data.calibration is not None, nodes=use.nodes)
            for p in problems:
                if own or p.kind in ("calibration", "node"):
                    out.append(_recipe_error(p, recipe, src, at, hw, f"model '{use.model}'" if own else
                                             f"hardware class '{use.hardware_class}'", model))
    return out


def _chain_problems(chain: RecipeChain, src, hw: Loaded[HardwareClass], owner: str, label: str) -> list[Diagnostic]:
    spec = hw.doc.spec
    out = []
    for i, recipe in enumerate(chain.recipes):
        for p in recipe_problems(recipe, spec.runtime.name, spec.precisions, class_label=label):
            out.append(_recipe_error(p, recipe, src, (*chain.path, i), hw, owner, None))
    return out


def _recipe_error(p: RecipeProblem, recipe, src, at: tuple, hw: Loaded[HardwareClass], owner: str,
                  model: Loaded[Model] | None) -> Diagnostic:
    cls = hw.doc.metadata.name
    # A wrong value is shown where it is written; a precision, or a missing piece, at the recipe.
    where = src.key_at(*at, p.field) if p.field and p.field != "precision" and p.field in recipe.model_fields_set \
        else src.at(*at)
    related = {
        "precisions": [(hw.source.at("spec", "precisions"), f"precisions of hardware class '{cls}'")],
        "runtime": [(hw.source.at("spec", "runtime", "name"), f"runtime of hardware class '{cls}'")],
        "data": [(model.source.at("spec", "data"), f"data of model '{model.doc.metadata.name}'")] if model else [],
        "source": [],
    }[p.against]
    message = f"recipe '{recipe.name}' of {owner} {p.message}"
    if model is not None and p.kind in ("calibration", "node"):
        message += f" (model '{model.doc.metadata.name}', built for hardware class '{cls}')"
    elif "hardware class" not in owner:
        message += f" (hardware class '{cls}')" if f"'{cls}'" not in message else ""
    return error(E_PRECISION, message, where, p.hint, related=related)
