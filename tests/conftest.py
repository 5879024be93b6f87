"""Shared fixtures: a private copy of the example fleet, and running the CLI in-process."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import os

import pytest
from hypothesis import settings

# Under CI the property tests explore a fixed set of examples, so a submission's result does
# not depend on luck; locally they explore new examples on every run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FLEET = ROOT / "fleet"
SHARED = ROOT.parent / "shared"
SIGSTORE_TESTDATA = SHARED / "testdata" / "sigstore"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def fleet_copy(tmp_path: Path) -> Path:
    """A writable copy of the example fleet (without the helper script's caches)."""
    dest = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    return dest


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `edgefleet ARGS...` in this process; return exit code and captured output."""
    from edgefleet.cli import main

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
