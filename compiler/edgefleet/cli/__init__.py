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
from edgefleet.cli.output import UsageError  # re-exported: commands raise it (defined there: no import cycle)
from edgefleet.core.diagnostics import DiagnosticError
from edgefleet.pipeline.common import RequestError

COMMANDS = ["validate", "explain", "build", "keys", "compile", "verify", "plan", "schema", "init",
            "verify-artifact", "agent", "status", "promote", "simulate"]
COMMANDS += ["demo"]  # the one-command tour (issue 12); its own line, so other commands merge beside it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet", description="A declarative GitOps compiler for edge-AI fleets.")
    parser.add_argument("--version", action="version", version=f"edgefleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"edgefleet.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgefleet.cli.{name.replace('-', '_')}":
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A command that takes its words in any order (explain) also takes them after options.
    words = getattr(args, "intermixed_words", None)
    if extra and words is not None and not any(e.startswith("-") for e in extra):
        setattr(args, words, getattr(args, words) + extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is noticed here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`edgefleet validate | head -1`): what it wanted it has.
        _silence_stdout()
        return 0
    except RequestError as exc:
        print(f"edgefleet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DiagnosticError as exc:
        from edgefleet.cli.output import emit

        try:
            return emit(exc.diagnostics, getattr(args, "format", "text"), command=args.command)
        except BrokenPipeError:
            _silence_stdout()
            return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in edgefleet, never a bad input: keep it short
        if os.environ.get("EDGEFLEET_DEBUG"):
            raise
        missing = _missing_extra(exc)
        if missing:
            print(f"edgefleet {args.command}: error: {missing}", file=sys.stderr)
            return 2
        print(f"edgefleet {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "  = hint: this is a bug in edgefleet; rerun with EDGEFLEET_DEBUG=1 for a traceback "
              "and report it", file=sys.stderr)
        return 70


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (tests capture stdout): nothing will be flushed to a pipe


# Top-level modules of the optional extras (pyproject.toml) -> the extra that installs them.
EXTRAS = {"onnx": "compiler", "jinja2": "compiler", "rich": "compiler", "openvino": "openvino",
          "nncf": "openvino", "boto3": "s3", "tensorrt": "tensorrt"}


def _missing_extra(exc: Exception) -> str:
    """A device install running a compile-side command: say which extra to install."""
    if not isinstance(exc, ModuleNotFoundError):
        return ""
    extra = EXTRAS.get((exc.name or "").split(".")[0])
    if extra is None:
        return ""
    return (f"this command needs {exc.name}, which this install does not have\n"
            f"  = hint: pip install 'edgefleet[{extra}]' (the base package is the device side)")
