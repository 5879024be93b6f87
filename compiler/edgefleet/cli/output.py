"""Shared CLI plumbing: which repository a command works on, and how diagnostics are printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable

from edgefleet.cli.render import render_github, render_json, render_text
from edgefleet.core.diagnostics import Diagnostic, Severity, has_errors
from edgefleet.pipeline.common import RequestError, is_file_diagnostic


class UsageError(RequestError):
    """Bad command-line usage (exit 2); the pipeline's RequestError is reported the same way."""


def example_fleet() -> Path:
    """The example fleet (package data; see `core.resources.example_fleet`)."""
    from edgefleet.core.resources import example_fleet as packaged_example_fleet

    return packaged_example_fleet()


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "repo", nargs="?", default=None,
        help="fleet repository (default: the nearest folder holding fleet.yaml, from the current directory up)")
    add_example_argument(parser)


def add_example_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--example", action="store_true",
                        help=f"use the example fleet shipped with edgefleet ({example_fleet()})")


def add_format_argument(parser: argparse.ArgumentParser, choices=("text", "json")) -> None:
    parser.add_argument("--format", choices=choices, default="text", help="output format (default: text)")


def find_repository(start: Path) -> Path | None:
    """The nearest of `start` and its parents that holds fleet.yaml, as git finds `.git`."""
    start = start.absolute()
    for folder in (start, *start.parents):
        if (folder / "fleet.yaml").is_file():
            return folder
    return None


def resolve_repo(value: str | None, example: bool = False) -> Path:
    """The fleet repository a command works on: REPO, else discovered; the example only by name."""
    if example:
        if value is not None:
            raise UsageError(f"give REPO ({value}) or --example, not both")
        return example_fleet()
    if value is None:
        found = find_repository(Path.cwd())
        if found is None:
            raise UsageError(
                f"no fleet.yaml in {Path.cwd()} or any folder above it\n"
                "  = hint: run inside a fleet repository, pass its path (e.g. `edgefleet validate fleet`), "
                "or add --example for the example fleet")
        return found
    path = Path(value)
    if not path.exists():
        raise UsageError(f"{value}: no such directory")
    if not path.is_dir():
        raise UsageError(f"{value}: not a directory (give the fleet repository's folder)")
    return path


def repo_of(args) -> Path:
    return resolve_repo(getattr(args, "repo", None), getattr(args, "example", False))


def summary(diags: list[Diagnostic]) -> str:
    """`3 errors in 2 files`; errors about the run (keys, a flag) are counted as such, not as files."""
    errors = [d for d in diags if d.severity is Severity.ERROR]
    warnings = sum(d.severity is Severity.WARNING for d in diags)
    in_files = [d for d in errors if is_file_diagnostic(d)]
    files = len({d.location.path for d in in_files})
    about_run = len(errors) - len(in_files)
    text = f"{len(errors)} error{'s' * (len(errors) != 1)}"
    if warnings:
        text += f", {warnings} warning{'s' * (warnings != 1)}"
    if files and about_run:
        return text + f": {len(in_files)} in {files} file{'s' * (files != 1)}, {about_run} not about a file"
    return text + (f" in {files} file{'s' * (files != 1)}" if files else "")


def render_run_level(diags: Iterable[Diagnostic], command: str, out) -> None:
    """`edgefleet COMMAND: error[CODE]: message`: the form of every problem not about one file."""
    for d in diags:
        out.write(f"{f'edgefleet {command}'.rstrip()}: {d.severity.value}[{d.code}]: {d.message}\n")
        if d.hint:
            out.write(f"  = hint: {d.hint}\n")


def print_diagnostics(diags: list[Diagnostic], command: str) -> None:
    """Text diagnostics on stderr: file ones in compiler form, the run's own after them."""
    render_text([d for d in diags if is_file_diagnostic(d)], sys.stderr)
    render_run_level([d for d in diags if not is_file_diagnostic(d)], command, sys.stderr)


def emit(diags: list[Diagnostic], fmt: str, out=None, command: str = "", data_on_stdout: bool = False,
         **extra) -> int:
    """Print diagnostics in the chosen format; return the exit code they imply.

    JSON is the whole of stdout (one document); under GitHub Actions the annotations then
    go to stderr, so stdout stays parseable. So they do when stdout carries another
    document (`data_on_stdout`: a CI matrix, a markdown comment).
    """
    out = out or sys.stdout
    if fmt == "json":
        render_json(diags, out, **extra)
    else:
        print_diagnostics(diags, command or "")
        if has_errors(diags):
            print(summary(diags), file=sys.stderr)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        render_github(diags, sys.stderr if fmt == "json" or data_on_stdout else out)
    return 1 if has_errors(diags) else 0
