"""Which recipe chain a (model version, hardware class) is built with: the one definition
that validation's estimates, the build and its error locations all use. Pure.

The most specific non-empty declaration wins, as a whole chain (chains are not merged: a
model that overrides the class's chain states its full order of fallbacks):

  1. the model version's `recipes[<runtime>]`
  2. the model's `spec.recipes[<runtime>]`
  3. the hardware class's `spec.recipes`
  4. none declared: one plain recipe in the best precision the class runs, so that every
     artifact still goes through the same gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgefleet.spec import HardwareClass, Model, Recipe

# Where no chain is declared: FP32 if the class runs it, else the next most exact.
_DEFAULT_ORDER = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class RecipeChain:
    recipes: tuple[Recipe, ...]
    origin: Literal["version", "model", "class", "default"]
    # YAML path of the recipe list in its document (the model's for version/model, the
    # class's for class/default: where a chain would be declared).
    path: tuple[str | int, ...]


def resolve_chain(model: Model, version_index: int, hw: HardwareClass) -> RecipeChain:
    runtime = hw.spec.runtime.name
    version = model.spec.versions[version_index]
    if version.recipes.get(runtime):
        return RecipeChain(tuple(version.recipes[runtime]), "version",
                           ("spec", "versions", version_index, "recipes", runtime))
    if model.spec.recipes.get(runtime):
        return RecipeChain(tuple(model.spec.recipes[runtime]), "model", ("spec", "recipes", runtime))
    if hw.spec.recipes:
        return RecipeChain(tuple(hw.spec.recipes), "class", ("spec", "recipes"))
    return RecipeChain((default_recipe(tuple(hw.spec.precisions)),), "default", ("spec", "recipes"))


def default_recipe(precisions: tuple[str, ...]) -> Recipe:
    precision = next(p for p in _DEFAULT_ORDER if p in precisions)
    if precision == "int8":
        return Recipe(name="int8-static", precision="int8", quantization="static")
    return Recipe(name=precision, precision=precision)
