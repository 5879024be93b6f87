"""The pipeline's shared parts: the step runner, time parsing and the clock check."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from edgefleet.core.diagnostics import DiagnosticError, error, note
from edgefleet.core.source import Location
from edgefleet.pipeline.common import (CLOCK_SKEW, RequestError, check_clock, is_file_diagnostic, parse_time,
                                       run_error, run_steps, without_notes)

HERE = Location("a.yaml", 1, 1)


def test_steps_run_in_order_and_stop_after_the_first_error():
    seen = []

    def ok(state):
        seen.append("ok")
        return [note("N1", "fine", HERE)]

    def bad(state):
        seen.append("bad")
        return [error("E1", "broken", HERE)]

    def never(state):
        seen.append("never")
        return []

    diags = run_steps({}, [ok, bad, never])
    assert seen == ["ok", "bad"] and [d.code for d in diags] == ["N1", "E1"]


def test_a_step_that_raises_diagnostics_reports_them_and_stops():
    def raises(state):
        raise DiagnosticError([error("E2", "from below", HERE)])

    def never(state):
        raise AssertionError("not reached")

    assert [d.code for d in run_steps(None, [raises, never])] == ["E2"]


def test_a_step_that_raises_a_request_error_is_not_swallowed():
    def refuse(state):
        raise RequestError("bad flag")

    with pytest.raises(RequestError):
        run_steps(None, [refuse])


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-20T09:00:00Z", datetime(2026, 11, 20, 9, tzinfo=timezone.utc)),
    ("2026-11-20T10:00:00+01:00", datetime(2026, 11, 20, 9, tzinfo=timezone.utc)),
    ("2026-11-20T09:00:00.5z", datetime(2026, 11, 20, 9, 0, 0, 500000, tzinfo=timezone.utc)),
])
def test_parse_time_gives_utc(text, expected):
    assert parse_time(text) == expected and parse_time(text).tzinfo == timezone.utc


@pytest.mark.parametrize("text", ["yesterday", "2026-11-20T09:00:00", "", "2026-13-01T00:00:00Z"])
def test_parse_time_refuses_what_is_not_rfc3339_with_a_zone(text):
    with pytest.raises(RequestError):
        parse_time(text)


CLOCK = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("offset", [timedelta(0), CLOCK_SKEW, -CLOCK_SKEW, timedelta(seconds=-30)])
def test_a_time_near_the_clock_passes(offset):
    check_clock(CLOCK + offset, CLOCK, allow_skew=False)


@pytest.mark.parametrize("offset", [CLOCK_SKEW + timedelta(seconds=1), -CLOCK_SKEW - timedelta(seconds=1),
                                    timedelta(days=365), timedelta(days=-3650)])
def test_a_time_far_from_the_clock_needs_the_flag(offset):
    with pytest.raises(RequestError, match="--allow-clock-skew"):
        check_clock(CLOCK + offset, CLOCK, allow_skew=False)
    check_clock(CLOCK + offset, CLOCK, allow_skew=True)


@pytest.mark.parametrize(("where", "is_file"), [
    ("fleet/hardware/x.yaml", True), ("", False), ("<signing>", False), ("$EDGEFLEET_KEY_ROOT", False),
    ("--commit", False), ("environment", False), ("/tmp/keys/root.key", True)])
def test_which_diagnostics_are_about_a_file(where, is_file):
    assert is_file_diagnostic(error("E1", "m", Location(where))) is is_file
    assert not is_file_diagnostic(run_error("E1", "m"))


def test_without_notes_keeps_errors_and_warnings():
    from edgefleet.core.diagnostics import warning

    diags = [note("N301", "n", HERE), error("E1", "e", HERE), warning("W1", "w", HERE)]
    assert [d.code for d in without_notes(diags)] == ["E1", "W1"]
