"""`edgefleet validate`'s core: every check a fleet repository must pass.

Each stage is a pure function of the loaded repository; this module lists them in
the order they run. Later stages (model-vs-hardware constraints) add themselves here.
"""

from __future__ import annotations

from pathlib import Path

from edgefleet.rules.crossref import check_references
from edgefleet.core.diagnostics import Diagnostic, sorted_diagnostics
from edgefleet.load.repo import FleetRepo, read_repository


def check_fleet(repo: FleetRepo) -> list[Diagnostic]:
    from edgefleet.analysis.check import check_constraints  # reads model files; imported on use

    return check_references(repo, exists=lambda rel: (repo.root / rel).is_file()) + check_constraints(repo, with_notes=True)


def validate_repository(root: Path) -> tuple[FleetRepo, list[Diagnostic]]:
    """Load and check a repository; all problems of the run are returned together."""
    repo, diags = read_repository(root)
    diags = list(diags)
    diags += check_fleet(repo)
    return repo, sorted_diagnostics(diags)
