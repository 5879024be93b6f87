"""`edgefleet validate`'s core: every check a fleet repository must pass.

Each stage is a pure function of the loaded repository; this module lists them in
the order they run. `validate` (a repository on disk) and `validate_files` (one given
as bytes, e.g. a git revision for `plan`) run the same checks, so `plan`, `build`
and `compile` never disagree with `validate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edgefleet.core.diagnostics import Diagnostic, has_errors, sorted_diagnostics
from edgefleet.load.repo import FleetRepo, load_fleet, read_repository
from edgefleet.rules.crossref import check_references


def private_key_diagnostics(repo: FleetRepo) -> list[Diagnostic]:
    """E510 for every private key inside the repository: every command that reads it refuses."""
    from edgefleet.core.diagnostics import error
    from edgefleet.core.source import Location
    from edgefleet.signing.key_scan import find_private_keys

    return [error(
        "E510", "a private key is inside the fleet repository",
        Location(repo.display(path.relative_to(repo.root).as_posix()), 1, 1),
        "move it out of the repository (keys live in a 0600 directory outside git, or in "
        "EDGEFLEET_KEY_<ROLE> variables); if it was ever committed, treat it as leaked: "
        "rotate it with `edgefleet keys rotate` and purge it from the git history")
        for path in find_private_keys(repo.root)]


def check_fleet(repo: FleetRepo) -> list[Diagnostic]:
    from edgefleet.analysis.check import check_constraints  # reads model files; imported on use
    from edgefleet.load.boundary import check_repo_paths

    # Paths leading outside the repository are reported once (E011/E012), not again as missing.
    boundary = check_repo_paths(repo)
    exists = lambda rel: rel in repo.refused or repo.is_file(rel)  # noqa: E731
    return boundary + check_references(repo, exists=exists) + check_constraints(repo, with_notes=True)


def validate_repository(root: Path) -> tuple[FleetRepo, list[Diagnostic]]:
    """Load and check a repository; all problems of the run are returned together."""
    repo, diags = read_repository(root)
    diags = list(diags)
    diags += check_fleet(repo)
    diags += private_key_diagnostics(repo)
    return repo, sorted_diagnostics(diags)


def validate_files(files: Mapping[str, bytes], root: Path, display_root: str) -> tuple[FleetRepo, list[Diagnostic]]:
    """The same checks over a repository given as {relative path: bytes} (model files read from `root`)."""
    repo, diags = load_fleet(files, root, display_root)
    return repo, sorted_diagnostics([*diags, *check_fleet(repo)])


@dataclass(frozen=True)
class Validation:
    repo: FleetRepo
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)

    @property
    def counts(self) -> dict[str, int]:
        return {"hardware_classes": len(self.repo.hardware), "models": len(self.repo.models),
                "devices": len(self.repo.devices), "rollouts": len(self.repo.rollouts)}


def validate(root: Path) -> Validation:
    repo, diags = validate_repository(root)
    return Validation(repo, tuple(diags))
