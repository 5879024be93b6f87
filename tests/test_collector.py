"""The garbage collector is paused only while a use case loads, and always given back.

`core/collector.collector_paused` makes status/promote over a 100k-device fleet about 1.5 s
faster (bench/bench_status.py); the switch is the interpreter's, so these tests hold that it
never stays off after a command, an error or a nested pause, and that the commands of
status and promote leave it as they found it.
"""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from edgefleet.core.collector import collector_paused


@pytest.fixture(autouse=True)
def _collector_on():
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_restored_after():
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_restored_after_an_error():
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()


def test_nested_pauses_leave_it_to_the_outermost():
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block did not switch it back on
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_as_a_decorator_each_call_pauses_and_restores():
    seen = []

    @collector_paused()
    def work(n):
        seen.append(gc.isenabled())
        return n * 2

    assert work(2) == 4 and work(3) == 6
    assert seen == [False, False] and gc.isenabled()


def test_status_and_promote_give_the_collector_back(tmp_path):
    from edgefleet.pipeline.promote import run_promote
    from edgefleet.pipeline.status import run_status
    from tests.rollout_support import T0, hours, make_fleet

    fleet = make_fleet(tmp_path, {"site-a": 2, "site-b": 2})
    fleet.compile(T0)
    for device in sorted(fleet.identities):
        fleet.report(device, T0 + hours(0.2))
    status = run_status(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired)
    assert status.verified.accepted == 4 and gc.isenabled()
    promoted = run_promote(fleet.root, fleet.envelopes, T0 + hours(1), desired=fleet.desired)
    assert promoted.results and gc.isenabled()
    failed = run_status(tmp_path / "no-such-fleet", fleet.envelopes, T0)  # an error path
    assert failed.diagnostics and gc.isenabled()


def test_loading_a_fleet_for_status_imports_no_signer_stack():
    """validate/status/promote start fast: they never import securesystemslib's signers (and
    boto3 behind them), which cost a fifth of a second per run; only keys and compile sign."""
    code = ("import sys; from pathlib import Path; "
            "from edgefleet.core.resources import example_fleet; "
            "from edgefleet.pipeline.validate import validate_repository; "
            "import edgefleet.pipeline.status, edgefleet.pipeline.promote, edgefleet.cli.status; "
            "validate_repository(example_fleet()); "
            "print(sorted(m for m in ('boto3', 'securesystemslib.signer', 'securesystemslib.dsse') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
