"""What every use case shares: the step runner, request errors, run-level diagnostics, time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Sequence, TypeVar

from edgefleet.core.diagnostics import Diagnostic, DiagnosticError, Severity, error, has_errors
from edgefleet.core.source import Location

S = TypeVar("S")

# A step of a use case: reads and fills the use case's state, returns what it found.
Step = Callable[[S], "list[Diagnostic]"]

# How far `--now` may be from the host clock without an explicit allowance.
CLOCK_SKEW = timedelta(minutes=5)


class RequestError(Exception):
    """The request cannot be served as asked (an unknown name, a bad option value).

    Not a problem of the fleet's files: the CLI reports it as a usage error (exit 2).
    """


def run_steps(state: S, steps: Sequence[Step]) -> list[Diagnostic]:
    """Run `steps` in order over `state`; stop after the first one that reports an error.

    A step may also raise DiagnosticError from a stage below it: that is its report.
    """
    diags: list[Diagnostic] = []
    for step in steps:
        try:
            diags += step(state)
        except DiagnosticError as exc:
            diags += exc.diagnostics
        if has_errors(diags):
            break
    return diags


# A diagnostic about the run rather than one file (keys, the environment, a flag) has
# no file: it is located at "" and names its subject in the message.
RUN = Location("")


def run_error(code: str, message: str, hint: str = "") -> Diagnostic:
    return error(code, message, RUN, hint)


def is_file_diagnostic(diag: Diagnostic) -> bool:
    """True when the diagnostic names a file (a path in the repository or on disk)."""
    path = diag.location.path
    return bool(path) and not path.startswith(("<", "$", "-")) and path != "environment"


def without_notes(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Validation's notes belong to `validate`/`explain`; other commands show each once, not again."""
    return [d for d in diags if d.severity is not Severity.NOTE]


def parse_time(value: str, flag: str = "--now") -> datetime:
    """An RFC 3339 time with a zone, in UTC."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RequestError(f"{flag} {value!r} is not an RFC 3339 time, e.g. 2026-11-20T08:00:00Z") from None
    if when.tzinfo is None:
        raise RequestError(f"{flag} {value!r} has no time zone; add Z or +00:00")
    return when.astimezone(timezone.utc)


def check_clock(now: datetime, clock: datetime, allow_skew: bool, flag: str = "--now") -> None:
    """A signing or checking time far from the host's clock must be asked for explicitly.

    Signing in the past makes metadata that expires early; in the future, metadata that a
    device with a right clock rejects, or a freeze window that never closes.
    """
    skew = abs(now - clock)
    if skew > CLOCK_SKEW and not allow_skew:
        minutes = int(skew.total_seconds() // 60)
        raise RequestError(
            f"{flag} {now.isoformat().replace('+00:00', 'Z')} is {minutes} minutes from this host's clock "
            f"({clock.replace(microsecond=0).isoformat().replace('+00:00', 'Z')}); more than "
            f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes needs --allow-clock-skew")
