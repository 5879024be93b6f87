"""Choosing, per (model version, hardware class), the best variant that fits.

A model version lists its variants best first. Each is measured (`cache.Analyzer`:
sha256, ONNX facts, activation estimate; `runtime_support`: operators and opset on
the class's runtime) and checked against the class (`constraints`); the first that
passes every check is chosen, provided the class's accuracy gate can run. The
choice carries one reason line per variant, so `explain` and build logs can say
why a variant was taken or skipped.

`choose_variant` is the I/O edge (it reads model files through the analyzer);
`gather_evidence` collects the measurements and `constraints.choose` decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from edgefleet.analysis.cache import Analyzer, FileAnalysis
from edgefleet.analysis.constraints import (Check, RecipeChain, VariantEvidence, VariantFit, bind_inputs, choose,
                                            evaluate_variant, gate_check, recipe_chain)
from edgefleet.analysis.runtime_support import (OpenVinoProbe, RuntimeSupport, onnxruntime_support,
                                                openvino_support, probe_openvino, tensorrt_support)
from edgefleet.load.repo import FleetRepo
from edgefleet.rules.digests import digest_mismatch
from edgefleet.spec import HardwareClass, Variant


@dataclass(frozen=True)
class VariantChoice:
    model: str
    version: str
    hardware_class: str
    variant: Variant | None  # None when no variant fits
    reasons: tuple[str, ...]  # why each variant was taken or skipped, in order
    # The evidence behind the choice: every variant's checks, and the accuracy gate.
    fits: tuple[VariantFit, ...] = field(default=(), compare=False)
    gate: Check | None = field(default=None, compare=False)
    chain: RecipeChain | None = field(default=None, compare=False)

    @property
    def chosen(self) -> VariantFit | None:
        if self.variant is None:
            return None
        return next((f for f in self.fits if f.variant.name == self.variant.name), None)


def analyzer_for(repo: FleetRepo) -> Analyzer:
    """A new analyzer for the repository, caching under <root>/.edgefleet/cache/analysis.

    There is no registry: a caller that analyses several times in one run creates one analyzer
    and passes it on; what it keeps in memory is bounded and goes when the caller drops it."""
    return Analyzer(repo.root)


def choose_variant(repo: FleetRepo, model: str, version: str, hardware_class: str,
                   analyzer: Analyzer | None = None) -> VariantChoice:
    """Measure every variant of model@version against the class and pick the best that fits."""
    analyzer = analyzer or analyzer_for(repo)
    loaded = repo.models[model]
    hw = repo.hardware[hardware_class].doc
    version_index = next(i for i, v in enumerate(loaded.doc.spec.versions) if v.version == version)
    entry = loaded.doc.spec.versions[version_index]
    chain = recipe_chain(loaded.doc, version_index, hw)
    fits = [evaluate_variant(gather_evidence(analyzer, variant, i, hw), hw, chain)
            for i, variant in enumerate(entry.variants)]
    gate = gate_check(loaded.doc, hw)
    chosen, reasons = choose(fits, gate)
    return VariantChoice(model, version, hardware_class, chosen.variant if chosen else None, reasons,
                         tuple(fits), gate, chain)


def gather_evidence(analyzer: Analyzer, variant: Variant, index: int, hw: HardwareClass) -> VariantEvidence:
    analysis = analyzer.analyse(variant.source)
    if analysis.sha256 is None:
        return VariantEvidence(variant, index, None, read_error=analysis.error)
    if digest_mismatch(variant.source, analysis.sha256, variant.sha256) or analysis.facts is None:
        return VariantEvidence(variant, index, analysis.sha256, read_error=analysis.error)
    binding = bind_inputs(analysis.facts, hw)
    activations = analyzer.activations(analysis, binding.shapes)
    return VariantEvidence(variant, index, analysis.sha256, analysis.facts, support=runtime_support(
        analyzer, analysis, hw), binding=binding, activations=activations)


def runtime_support(analyzer: Analyzer, analysis: FileAnalysis, hw: HardwareClass) -> RuntimeSupport:
    """The class runtime's answer for this model, cached per model and runtime versions."""
    runtime, facts = hw.spec.runtime, analysis.facts
    assert facts is not None and analysis.sha256 is not None
    if runtime.name == "tensorrt":
        return tensorrt_support(facts, runtime)
    if runtime.name == "onnxruntime":
        key = f"onnxruntime {analyzer.tool_version('onnxruntime')} pin {runtime.version} {runtime.device}"
        return analyzer.memo(analysis.sha256, "support", key, RuntimeSupport,
                             lambda: onnxruntime_support(facts, runtime, analyzer.memory.kernels()))
    key = f"openvino-probe {analyzer.tool_version('openvino')} {runtime.device}"
    probe = analyzer.memo(analysis.sha256, "support", key, OpenVinoProbe,
                          lambda: probe_openvino(analyzer.path(analysis.rel), runtime.device))
    return openvino_support(facts, runtime, probe)


class _NodeNames(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    names: tuple[str, ...]


def source_node_names(analyzer: Analyzer, rel: str) -> frozenset[str] | None:
    """Node names of the main graph (what a recipe's exclude_nodes may name; the build's
    `onnx_io.node_names` reads the same set), cached with the file's analysis."""
    analysis = analyzer.analyse(rel)
    if analysis.sha256 is None or analysis.facts is None:
        return None

    def compute() -> _NodeNames:
        import onnx

        proto = onnx.load(str(analyzer.path(rel)), load_external_data=False)
        return _NodeNames(names=tuple(sorted({n.name for n in proto.graph.node if n.name})))

    try:
        return frozenset(analyzer.memo(analysis.sha256, "support", "node-names", _NodeNames, compute).names)
    except Exception:  # the file changed since it was hashed: the build's own check still runs
        return None

