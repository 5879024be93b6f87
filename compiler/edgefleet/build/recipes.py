"""The recipes a (model, version, hardware class) is built with, first preferred.

The rule lives in `edgefleet.rules.recipe_chain` (shared with validation); this is the build's
view of it by names. Pure.
"""

from __future__ import annotations

from edgefleet.rules.recipe_chain import default_recipe, resolve_chain
from edgefleet.load.repo import FleetRepo
from edgefleet.spec import Recipe

__all__ = ["default_recipe", "recipe_chain"]


def recipe_chain(repo: FleetRepo, model: str, version: str, hardware_class: str) -> list[Recipe]:
    loaded = repo.models[model].doc
    index = next(i for i, v in enumerate(loaded.spec.versions) if v.version == version)
    return list(resolve_chain(loaded, index, repo.hardware[hardware_class].doc).recipes)
