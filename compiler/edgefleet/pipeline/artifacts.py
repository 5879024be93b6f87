"""What the store holds for a need, and what an artifact not built yet is expected to be.

Shared by `plan` (previews) and `explain` (what the build shipped): the key is computed
the way the build computes it (build.resolve + build.key), and the size of an artifact
not built yet is validation's own estimate (analysis: the chosen variant's parameters at
the precision the class's recipe chain builds, plus its graph) — the number behind E303,
so plan and validate cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgefleet.core.diagnostics import Diagnostic, has_errors
from edgefleet.load.repo import FleetRepo
from edgefleet.rules.needs import BuildNeed


@dataclass(frozen=True)
class KeyedNeed:
    need: BuildNeed
    resolved: Any  # build.resolve.ResolvedNeed
    key: str


def key_need(repo: FleetRepo, need: BuildNeed,
             file_sha256: Callable[[str], str]) -> tuple[KeyedNeed | None, list[Diagnostic]]:
    """The need's artifact key as the build computes it; None with the reasons when it cannot be built."""
    from edgefleet.build.key import artifact_key
    from edgefleet.build.resolve import resolve_need

    resolved, problems = resolve_need(repo, need)
    if resolved is None or has_errors(problems):
        return None, problems
    try:
        key = artifact_key(resolved, file_sha256)
    except OSError:
        return None, problems  # an input file is missing: validation reports it
    return KeyedNeed(need, resolved, key), problems


def stored_record(store, key: str):
    """The build record of `key` in `store`, or None (no store, not built, or unreadable)."""
    if store is None:
        return None
    try:
        return store.get_record(key)
    except Exception:  # noqa: BLE001 - a store we cannot read only costs the preview its exact values
        return None


@dataclass(frozen=True)
class SizeEstimate:
    size: int  # bytes
    precision: str | None
    recipe: str | None  # the recipe of the chain that builds that precision


def estimate_artifact(repo: FleetRepo, need: BuildNeed) -> SizeEstimate | None:
    """Validation's estimate of the artifact of `need` (the chosen variant), or None when none fits."""
    from edgefleet.analysis.selection import choose_variant

    choice = choose_variant(repo, need.model, need.version, need.hardware_class)
    fit = choice.chosen
    if fit is None or fit.facts is None or fit.precision is None:
        return None
    recipes = choice.chain.recipes if choice.chain is not None else ()
    recipe = next((r for r in recipes if r.precision == fit.precision), recipes[0] if recipes else None)
    return SizeEstimate(fit.facts.artifact_bytes_at(fit.precision), fit.precision, recipe.name if recipe else None)
