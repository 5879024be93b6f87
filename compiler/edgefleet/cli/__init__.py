"""The `edgefleet` command line: a thin driver over the pure stages.

Each subcommand lives in its own module `edgefleet.cli.<name>` with
`register(subparsers)` and a `run(args) -> int`. Modules import heavy libraries
(onnxruntime, openvino, tuf) inside `run`, so `edgefleet validate` starts fast.

Exit codes: 0 success, 1 the input has errors (reported), 2 usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from edgefleet import __version__
from edgefleet.core.diagnostics import DiagnosticError

COMMANDS = ["validate", "explain", "build", "keys", "compile", "verify", "plan", "schema", "agent", "status", "promote"]


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet", description="A declarative GitOps compiler for edge-AI fleets.")
    parser.add_argument("--version", action="version", version=f"edgefleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"edgefleet.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgefleet.cli.{name}":
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"edgefleet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DiagnosticError as exc:
        from edgefleet.cli.output import emit

        return emit(exc.diagnostics, getattr(args, "format", "text"))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in edgefleet, never a bad input: keep it short
        if os.environ.get("EDGEFLEET_DEBUG"):
            raise
        print(f"edgefleet {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "  = hint: this is a bug in edgefleet; rerun with EDGEFLEET_DEBUG=1 for a traceback "
              "and report it", file=sys.stderr)
        return 70
