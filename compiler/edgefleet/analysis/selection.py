"""Choosing, per (model version, hardware class), the best variant that fits.

PLACEHOLDER (to be replaced by the constraint-checking work of issue 3): takes the
first variant in preference order without checking constraints.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.repo import FleetRepo
from edgefleet.spec import Variant


@dataclass(frozen=True)
class VariantChoice:
    model: str
    version: str
    hardware_class: str
    variant: Variant | None  # None when no variant fits
    reasons: tuple[str, ...]  # why each variant was taken or skipped, in order


def choose_variant(repo: FleetRepo, model: str, version: str, hardware_class: str) -> VariantChoice:
    spec = repo.models[model].doc.spec
    entry = next(v for v in spec.versions if v.version == version)
    first = entry.variants[0]
    return VariantChoice(model, version, hardware_class, first, (f"{first.name}: first in preference order",))
