"""Waves: a device's wave depends only on (rollout, device id); shares come out right;
the rollout's state decides which waves are live."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.desired.compile import UnbuiltArtifact, prepare
from edgefleet.desired.waves import (BUCKET_SPACE, RolloutWaves, bucket, bucket_basis_points, live_waves,
                                     wave_index, wave_thresholds)
from edgefleet.rules.needs import needed_builds
from edgefleet.load.repo import Loaded, read_repository
from edgefleet.spec import Device
from edgefleet.spec.rollout import RolloutSpec, RolloutStatus, Wave
from tests.conftest import EXAMPLE_FLEET


def spec(percents, phase="progressing", current=0) -> tuple[RolloutSpec, RolloutStatus]:
    return (RolloutSpec(model="m", to_version="1.0.0",
                        waves=[Wave(name=f"w{i}", percent=p) for i, p in enumerate(percents)]),
            RolloutStatus(phase=phase, current_wave=current))


def test_bucket_is_the_first_8_bytes_of_sha256_of_rollout_nul_device():
    expected = int.from_bytes(hashlib.sha256(b"meter-digits-1-1\0pa-robot-001").digest()[:8], "big")
    assert bucket("meter-digits-1-1", "pa-robot-001") == expected
    assert 0 <= bucket_basis_points("meter-digits-1-1", "pa-robot-001") < 10_000
    # The separator matters: ("ab", "c") and ("a", "bc") are different devices.
    assert bucket("ab", "c") != bucket("a", "bc")


def test_thresholds_are_exact_and_cumulative():
    assert wave_thresholds(spec([100])[0].waves) == (BUCKET_SPACE,)
    assert wave_thresholds(spec([50])[0].waves) == (BUCKET_SPACE // 2,)
    t = wave_thresholds(spec([12.5, 50, 100])[0].waves)
    assert t == (BUCKET_SPACE // 8, BUCKET_SPACE // 2, BUCKET_SPACE)
    assert wave_index(t, 0) == 0
    assert wave_index(t, BUCKET_SPACE // 8 - 1) == 0
    assert wave_index(t, BUCKET_SPACE // 8) == 1
    assert wave_index(t, BUCKET_SPACE - 1) == 2
    assert wave_index(wave_thresholds(spec([1, 10])[0].waves), BUCKET_SPACE - 1) is None


def test_shares_are_roughly_the_declared_percents_on_10k_devices():
    waves = RolloutWaves.of("fleet-wide", *spec([1, 10, 50, 100]))
    counts = Counter(waves.place(f"dev-{i:05d}").wave for i in range(10_000))
    # Cumulative shares 1%, 10%, 50%, 100%: each within 3 binomial standard deviations.
    cumulative = 0
    for index, share in enumerate([0.01, 0.10, 0.50, 1.0]):
        cumulative += counts[index]
        sd = (10_000 * share * (1 - share)) ** 0.5
        assert abs(cumulative - 10_000 * share) <= 3 * sd + 1, (index, cumulative)
    assert None not in counts


@pytest.mark.parametrize(("phase", "current", "live"), [
    ("pending", None, 0),
    ("pending", 1, 0),
    ("progressing", None, 0),
    ("progressing", 0, 1),
    ("progressing", 2, 3),
    ("paused", 1, 2),
    ("complete", 0, 3),
    ("rolled_back", 2, 0),
], ids=lambda v: str(v))
def test_live_waves_follow_the_rollout_state(phase, current, live):
    assert live_waves(RolloutStatus(phase=phase, current_wave=current), 3) == live


def test_devices_beyond_the_last_wave_move_only_when_complete():
    progressing = RolloutWaves.of("r", *spec([5], current=0))
    complete = RolloutWaves.of("r", *spec([5], phase="complete", current=0))
    beyond = [d for d in (f"d{i}" for i in range(500)) if progressing.place(d).wave is None]
    assert beyond, "some devices fall beyond a 5% wave"
    assert not any(progressing.place(d).live for d in beyond)
    assert all(complete.place(d).live for d in beyond)
    assert all(complete.place(d).wave is None for d in beyond)


# ---- stability through the real compile path ------------------------------------------

@pytest.fixture(scope="module")
def example():
    repo, diags = read_repository(EXAMPLE_FLEET)
    assert not [d for d in diags if d.is_error]
    artifacts = {n: UnbuiltArtifact(n.model, n.version, "full", n.hardware_class, f"{n}", 1000, "fp32")
                 for n in needed_builds(repo)}
    return repo, artifacts, [d.doc for d in repo.devices]


def _device(device_id: str, template: Device) -> Device:
    return template.model_copy(update={"id": device_id})


def _waves(repo, artifacts, devices: list[Device]) -> dict[str, tuple]:
    """Each device's (rollout, wave, live) per assignment, compiled with exactly `devices`."""
    repo.devices = [Loaded(d, None) for d in devices]
    compiler, diags = prepare(repo, artifacts)
    assert compiler is not None, diags
    return {d.id: tuple((a.rollout, a.wave, a.live) for a in compiler.device(d).assignments) for d in devices}


ids = st.from_regex(r"[a-z][a-z0-9-]{2,20}", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(added=st.lists(ids, max_size=30, unique=True), removed=st.sets(st.integers(0, 47), max_size=20))
def test_adding_or_removing_devices_never_moves_another_device(example, added, removed):
    repo, artifacts, original = example
    before = _waves(repo, artifacts, original)
    known = {d.id for d in original}
    kept = [d for i, d in enumerate(original) if i not in removed]
    extra = [_device(f"new-{x}", original[len(added) % len(original)]) for x in added if f"new-{x}" not in known]
    after = _waves(repo, artifacts, kept + extra)
    for device in kept:
        assert after[device.id] == before[device.id], device.id
