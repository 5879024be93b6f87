"""One diagnostics type for every stage: code, message, place, hint.

Stages return diagnostics as data and never print; only the CLI renders them
(text in the form compilers use, JSON, or GitHub Actions annotations).

Code ranges: E0xx reading files, E1xx schema, E2xx cross-references,
E3xx model-vs-hardware constraints, E4xx building artifacts,
E5xx keys, compiling and verifying desired state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

from edgefleet.core.source import Location


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    message: str
    location: Location
    hint: str = ""
    severity: Severity = Severity.ERROR
    # Other places that take part in the problem (e.g. the hardware class limit
    # that a model version breaks), each with a short label.
    related: tuple[tuple[Location, str], ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple:
        return (self.location.path, self.location.line, self.location.col, self.code, self.message)

    def to_json(self) -> dict:
        loc = self.location
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
            "file": loc.path,
            "line": loc.line,
            "col": loc.col,
            "related": [
                {"file": r.path, "line": r.line, "col": r.col, "label": label}
                for r, label in self.related
            ],
        }


def sorted_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Stable, de-duplicated order so that two runs print the same report."""
    seen: set[tuple] = set()
    out: list[Diagnostic] = []
    for d in sorted(diags, key=Diagnostic.sort_key):
        key = (d.sort_key(), d.related)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diags)


class DiagnosticError(Exception):
    """Raised at an I/O edge to abort a command with diagnostics already collected."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted_diagnostics(diagnostics)
        super().__init__("; ".join(d.message for d in self.diagnostics[:3]))


def error(code: str, message: str, location: Location, hint: str = "", related=()) -> Diagnostic:
    return Diagnostic(code, message, location, hint, Severity.ERROR, tuple(related))


def note(code: str, message: str, location: Location, hint: str = "", related=()) -> Diagnostic:
    return Diagnostic(code, message, location, hint, Severity.NOTE, tuple(related))


def warning(code: str, message: str, location: Location, hint: str = "", related=()) -> Diagnostic:
    return Diagnostic(code, message, location, hint, Severity.WARNING, tuple(related))
