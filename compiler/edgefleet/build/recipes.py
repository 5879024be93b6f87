"""Which recipes a (model, version, hardware class) is built with, first preferred.

The most specific declaration wins, as a whole chain (chains are not merged: a model that
overrides the class's chain states its full order of fallbacks):

  1. the model version's `recipes[<runtime>]`
  2. the model's `spec.recipes[<runtime>]`
  3. the hardware class's `spec.recipes`
  4. none declared: one plain recipe in the best precision the class runs, so that every
     artifact still goes through the same gates. Pure.
"""

from __future__ import annotations

from edgefleet.repo import FleetRepo
from edgefleet.spec import Recipe

# Where no chain is declared: FP32 if the class runs it, else the next most exact.
_DEFAULT_ORDER = ("fp32", "fp16", "int8")


def recipe_chain(repo: FleetRepo, model: str, version: str, hardware_class: str) -> list[Recipe]:
    hw = repo.hardware[hardware_class].doc.spec
    spec = repo.models[model].doc.spec
    runtime = hw.runtime.name
    entry = next(v for v in spec.versions if v.version == version)
    for chain in (entry.recipes.get(runtime), spec.recipes.get(runtime), hw.recipes):
        if chain:
            return list(chain)
    return [default_recipe(tuple(hw.precisions))]


def default_recipe(precisions: tuple[str, ...]) -> Recipe:
    precision = next(p for p in _DEFAULT_ORDER if p in precisions)
    if precision == "int8":
        return Recipe(name="int8-static", precision="int8", quantization="static")
    return Recipe(name=precision, precision=precision)
