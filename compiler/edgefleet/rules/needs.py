"""What must be built: each (model, version, hardware class) a device will run.

A device selected by a rollout runs the rollout's to_version once its wave is live and
its from_version before (that one is also its last-known-good fallback), so both are
needed for every hardware class the rollout selects. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.load.repo import FleetRepo
from edgefleet.rules.selectors import matches


@dataclass(frozen=True, order=True, slots=True)
class BuildNeed:
    model: str
    version: str
    hardware_class: str

    def __str__(self) -> str:
        return f"{self.model}@{self.version} for {self.hardware_class}"


def needed_builds(repo: FleetRepo) -> list[BuildNeed]:
    needs: set[BuildNeed] = set()
    for name in sorted(repo.rollouts):
        spec = repo.rollouts[name].doc.spec
        if spec.model not in repo.models:
            continue
        classes = {d.doc.hardware_class for d in repo.devices if matches(spec.selector, d.doc)}
        for version in filter(None, (spec.from_version, spec.to_version)):
            for cls in classes:
                if cls in repo.hardware:
                    needs.add(BuildNeed(spec.model, version, cls))
    return sorted(needs)
