"""Rendering diagnostics for people (compiler-style text), machines (JSON) and GitHub."""

from __future__ import annotations

import json
from typing import Iterable, TextIO

from edgefleet.core.diagnostics import Diagnostic, Severity


def render_text(diags: Iterable[Diagnostic], out: TextIO) -> None:
    for d in diags:
        out.write(f"{d.location}: {d.severity.value}[{d.code}]: {d.message}\n")
        for where, label in d.related:
            out.write(f"  --> {where}: {label}\n")
        if d.hint:
            out.write(f"  = hint: {d.hint}\n")


def render_github(diags: Iterable[Diagnostic], out: TextIO) -> None:
    """GitHub Actions workflow commands, so errors show on the pull request's diff."""
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}
    for d in diags:
        loc = d.location
        message = f"[{d.code}] {d.message}" + (f" (hint: {d.hint})" if d.hint else "")
        out.write(f"::{level[d.severity]} file={_escape_property(loc.path)},line={loc.line or 1},"
                  f"col={loc.col or 1},title={d.code}::{_escape_data(message)}\n")


def render_json(diags: Iterable[Diagnostic], out: TextIO, **extra) -> None:
    diags = list(diags)
    payload = {
        "ok": not any(d.is_error for d in diags),
        "errors": sum(d.is_error for d in diags),
        "diagnostics": [d.to_json() for d in diags],
        **extra,
    }
    json.dump(payload, out, indent=2, sort_keys=True)
    out.write("\n")


def summary(diags: list[Diagnostic]) -> str:
    errors = sum(d.severity is Severity.ERROR for d in diags)
    warnings = sum(d.severity is Severity.WARNING for d in diags)
    files = len({d.location.path for d in diags if d.is_error})
    parts = [f"{errors} error{'s' * (errors != 1)}"]
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return ", ".join(parts) + (f" in {files} file{'s' * (files != 1)}" if files else "")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
