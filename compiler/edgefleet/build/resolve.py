"""What one build need resolves to: the variant, recipe chain, data and class limits.

Pure (given the loaded repository): the YAML is turned into one typed `ResolvedNeed`
that the key, the pre-flight checks and the build request are all made from, so the
three can never disagree. It also keeps where each value was written, so that every
later error points at the YAML line a person has to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.analysis.selection import choose_variant
from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.rules.gates import gate_problems
from edgefleet.rules.needs import BuildNeed
from edgefleet.rules.recipe_chain import RecipeChain, resolve_chain
from edgefleet.load.repo import FleetRepo
from edgefleet.core.source import Location
from edgefleet.spec import Recipe, Variant
from edgefleet.spec.hardware import InputSpec, RuntimeSpec
from edgefleet.spec.model import AccuracyBudget

MIB = 1024 * 1024


@dataclass(frozen=True)
class DataFile:
    role: str  # "calibration" | "evaluation"
    path: str  # relative to the repository root
    at: Location


@dataclass(frozen=True)
class ResolvedNeed:
    need: BuildNeed
    variant: Variant
    source_at: Location
    sha256_at: Location
    recipes: tuple[Recipe, ...]
    recipe_at: tuple[Location, ...]  # one per recipe
    calibration: DataFile | None
    evaluation: DataFile | None
    data_at: Location  # spec.data of the model, where a missing data file must be declared
    accuracy: AccuracyBudget | None
    accuracy_at: Location
    runtime: RuntimeSpec
    precisions: tuple[str, ...]
    precisions_at: Location
    max_artifact_bytes: int
    latency_budget_ms: float
    batch_size: int
    input: InputSpec | None
    model_ram_budget_mb: int
    requires_accuracy_gate: bool
    cpu_arch: str
    compute_capability: str | None
    runtime_at: Location  # the class's runtime: where a missing toolchain is declared


def resolve_need(repo: FleetRepo, need: BuildNeed) -> tuple[ResolvedNeed | None, list[Diagnostic]]:
    """Resolve a need of a validated repository; diagnostics when it cannot be built."""
    model = repo.models[need.model]
    hw = repo.hardware[need.hardware_class]
    spec, msrc = model.doc.spec, model.source
    vi, entry = next((i, v) for i, v in enumerate(spec.versions) if v.version == need.version)
    choice = choose_variant(repo, need.model, need.version, need.hardware_class)
    if choice.variant is None:
        return None, [error(
            "E406", f"no variant of {need.model}@{need.version} fits hardware class '{need.hardware_class}': "
                    + "; ".join(choice.reasons),
            msrc.at("spec", "versions", vi, "variants"),
            "fix what each variant's reason names, add a variant that fits, or relax the class "
            "(`edgefleet explain` shows every constraint)",
            related=[(hw.source.at("metadata", "name"), "the hardware class")])]
    wi = next(i for i, w in enumerate(entry.variants) if w.name == choice.variant.name)
    chain = resolve_chain(model.doc, vi, hw.doc)  # the rule validation's estimates used too
    recipes = chain.recipes
    data = spec.data
    hspec = hw.doc.spec
    resolved = ResolvedNeed(
        need=need,
        variant=choice.variant,
        source_at=msrc.at("spec", "versions", vi, "variants", wi, "source"),
        sha256_at=msrc.at("spec", "versions", vi, "variants", wi, "sha256"),
        recipes=recipes,
        recipe_at=tuple(recipe_location(repo, need, chain, i) for i in range(len(recipes))),
        calibration=DataFile("calibration", data.calibration, msrc.at("spec", "data", "calibration"))
        if data.calibration else None,
        evaluation=DataFile("evaluation", data.evaluation, msrc.at("spec", "data", "evaluation"))
        if data.evaluation else None,
        data_at=msrc.at("spec", "data"),
        accuracy=spec.accuracy,
        accuracy_at=msrc.at("spec", "accuracy"),
        runtime=hspec.runtime,
        precisions=tuple(hspec.precisions),
        precisions_at=hw.source.at("spec", "precisions"),
        # MiB: the example's 0.5 is the "512 KB" LTE-M budget its comment states.
        max_artifact_bytes=int(hspec.max_artifact_mb * MIB),
        latency_budget_ms=hspec.latency_budget_ms,
        batch_size=hspec.batch_size,
        input=hspec.input,
        model_ram_budget_mb=hspec.model_ram_budget_mb,
        requires_accuracy_gate=hspec.requires_accuracy_gate,
        cpu_arch=hspec.cpu_arch,
        compute_capability=hspec.accelerator.compute_capability,
        runtime_at=hw.source.at("spec", "runtime"),
    )
    return resolved, check_recipes(resolved)


def recipe_location(repo: FleetRepo, need: BuildNeed, chain: RecipeChain, index: int) -> Location:
    """Where recipe `index` of the chain is written (a default chain: where to declare one)."""
    if chain.origin in ("version", "model"):
        return repo.models[need.model].source.at(*chain.path, index)
    hw = repo.hardware[need.hardware_class].source
    return hw.at(*chain.path, index) if chain.origin == "class" else hw.at(*chain.path)


def check_recipes(resolved: ResolvedNeed) -> list[Diagnostic]:
    """What must hold before a build starts that no recipe check covers. Pure.

    Whether each recipe can run on the class's runtime is the engine's `check_recipe`
    (one definition), applied in `orchestrate`'s pre-flight once the ONNX is read.
    """
    need = resolved.need
    problems = gate_problems(resolved.requires_accuracy_gate, resolved.accuracy, resolved.evaluation is not None)
    if not problems:
        return []
    first = problems[0]  # the rule of `rules.gates`, as validation's E310 and the engine's E412/E415
    return [error("E407", f"model '{need.model}' cannot be gated for hardware class '{need.hardware_class}': "
                          f"{first.message}",
                  resolved.data_at if first.missing == "evaluation" else resolved.accuracy_at, first.hint)]
