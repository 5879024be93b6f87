"""Rendering diagnostics for people (compiler-style text), machines (JSON) and GitHub.

Everything here may end up in a CI log, where a line starting with `::` is a workflow
command (`::error::`, `::add-mask::`, `::stop-commands::`...). File names, YAML values
and messages quoting them are user-controlled, so no rendered text may start a line of
its own: text mode shows line breaks and other control characters as visible escapes
(`\\n`, `\\x1b`), GitHub mode percent-encodes them as the runner expects (`%0A`).
Other commands print user-controlled text through `visible` for the same reason.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, TextIO

from edgefleet.core.diagnostics import Diagnostic, Severity


# Line breaks of every kind a terminal or log reader may honour, and other C0/C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: object) -> str:
    """`text` on one line: control characters become visible escapes (a newline is `\\n`)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"
                                             if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"), str(text))


def render_text(diags: Iterable[Diagnostic], out: TextIO) -> None:
    for d in diags:
        out.write(f"{visible(d.location)}: {d.severity.value}[{visible(d.code)}]: {visible(d.message)}\n")
        for where, label in d.related:
            out.write(f"  --> {visible(where)}: {visible(label)}\n")
        if d.hint:
            out.write(f"  = hint: {visible(d.hint)}\n")


def render_github(diags: Iterable[Diagnostic], out: TextIO) -> None:
    """GitHub Actions workflow commands, so errors show on the pull request's diff."""
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}
    for d in diags:
        loc = d.location
        message = f"[{d.code}] {d.message}" + (f" (hint: {d.hint})" if d.hint else "")
        out.write(f"::{level[d.severity]} file={_escape_property(loc.path)},line={loc.line or 1},"
                  f"col={loc.col or 1},title={_escape_property(d.code)}::{_escape_data(message)}\n")


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
    # The runner decodes %25, %0D and %0A; other controls are shown, so nothing breaks the line.
    escaped = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return visible(escaped)


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
