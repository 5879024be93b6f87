"""Shared CLI plumbing: where the repository is, and how diagnostics are printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgefleet.core.diagnostics import Diagnostic, has_errors
from edgefleet.cli.render import render_github, render_json, render_text, summary


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


def example_fleet() -> Path:
    """The example fleet (package data; see `core.resources.example_fleet`)."""
    from edgefleet.core.resources import example_fleet as packaged_example_fleet

    return packaged_example_fleet()


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "repo", nargs="?", default=None,
        help="fleet repository (default: the current directory if it has fleet.yaml, else the example fleet)")


def add_format_argument(parser: argparse.ArgumentParser, choices=("text", "json")) -> None:
    parser.add_argument("--format", choices=choices, default="text", help="output format (default: text)")


def resolve_repo(value: str | None) -> Path:
    if value is None:
        here = Path.cwd()
        if (here / "fleet.yaml").is_file():
            return here
        fallback = example_fleet()
        if (fallback / "fleet.yaml").is_file():
            print(f"note: no fleet.yaml here; using the example fleet at {fallback}", file=sys.stderr)
            return fallback
        raise UsageError("no fleet.yaml in the current directory; pass the fleet repository's path")
    path = Path(value)
    if not path.exists():
        raise UsageError(f"{value}: no such directory")
    if not path.is_dir():
        raise UsageError(f"{value}: not a directory (give the fleet repository's folder)")
    return path


def emit(diags: list[Diagnostic], fmt: str, out=None, **extra) -> int:
    """Print diagnostics in the chosen format; return the exit code they imply."""
    out = out or sys.stdout
    if fmt == "json":
        render_json(diags, out, **extra)
    else:
        render_text(diags, sys.stderr if out is sys.stdout else out)
        if has_errors(diags):
            print(summary(diags), file=sys.stderr)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        render_github(diags, out)
    return 1 if has_errors(diags) else 0
