"""Shared fixtures: a private copy of the example fleet, and running the CLI in-process."""

from __future__ import annotations

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
# pyproject's `pythonpath` puts compiler/ first for this process; subprocesses the tests start
# (`python -m edgefleet`, the `edgefleet` script) must import the same source, not an install.
_SOURCE = str(ROOT / "compiler")
if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != _SOURCE:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE, os.environ.get("PYTHONPATH")]))
SHARED = ROOT.parent / "shared"
SIGSTORE_TESTDATA = SHARED / "testdata" / "sigstore"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def example_analysis_cache(tmp_path_factory) -> Path:
    """The example fleet's analysis cache, made once per session by a real validation.

    Every copy of the fleet starts with it, as a checkout that was validated before does: the
    entries are keyed by the models' sha256 and checked (see analysis/cache.py), so a test that
    changes a model simply misses the cache. Without it each copy would analyse cold again."""
    from edgefleet.analysis.cache import CACHE_DIR
    from edgefleet.cli import main
    from edgefleet.core.resources import copy_example_fleet

    fleet = copy_example_fleet(tmp_path_factory.mktemp("warm") / "fleet")
    main(["validate", str(fleet), "--format", "json"])
    return fleet / CACHE_DIR


@pytest.fixture
def fleet_copy(tmp_path: Path, example_analysis_cache: Path) -> Path:
    """A writable copy of the packaged example fleet (no build outputs; a warm analysis cache)."""
    import shutil

    from edgefleet.analysis.cache import CACHE_DIR
    from edgefleet.core.resources import copy_example_fleet

    fleet = copy_example_fleet(tmp_path / "fleet")
    if example_analysis_cache.is_dir():
        shutil.copytree(example_analysis_cache, fleet / CACHE_DIR)
    return fleet


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
