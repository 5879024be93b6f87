"""Which wave of a rollout a device is in, and whether that wave is live.

A device's bucket is the first 8 bytes of sha256("<rollout>\\0<device id>") read as an
unsigned 64-bit number, i.e. a point in [0, 1) at 2**-64 resolution. Wave i covers the
buckets below waves[i].percent / 100; the percents are cumulative, so a device belongs
to the first wave whose share covers its bucket. The bucket depends on nothing but the
rollout's name and the device's own id: adding or removing devices, or editing other
documents, never moves a device to another wave. Renaming a rollout reshuffles it.

The rollout's `state` says which waves are live: waves 0..current_wave while the
rollout is progressing or paused, all of them once complete, none while pending or
after a rollback. Pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from edgefleet.spec.rollout import RolloutSpec, RolloutState, Wave

BUCKET_SPACE = 1 << 64  # buckets are 64-bit numbers
BASIS_POINTS = 10_000


def bucket(rollout: str, device_id: str) -> int:
    """The device's bucket in this rollout: a number in [0, 2**64)."""
    digest = hashlib.sha256(f"{rollout}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def bucket_basis_points(rollout: str, device_id: str) -> int:
    """The bucket as basis points in [0, 10000), for people (floor, so 9999 is the top)."""
    return bucket(rollout, device_id) * BASIS_POINTS >> 64


def wave_thresholds(waves: Sequence[Wave]) -> tuple[int, ...]:
    """Per wave, the first bucket it does NOT cover: ceil(percent/100 * 2**64), exact.

    Fractions keep float percents such as 12.5 exact, so a bucket's wave never depends
    on float rounding.
    """
    return tuple(min(BUCKET_SPACE, -(-Fraction(w.percent) * BUCKET_SPACE // 100)) for w in waves)


def wave_index(thresholds: Sequence[int], point: int) -> int | None:
    """Index of the first wave covering `point`, or None when no wave reaches it."""
    for i, limit in enumerate(thresholds):
        if point < limit:
            return i
    return None


def live_waves(state: RolloutState, wave_count: int) -> int:
    """How many waves (a prefix of the list) are live in this state."""
    if state.phase == "complete":
        return wave_count
    if state.phase in ("progressing", "paused") and state.current_wave is not None:
        return min(state.current_wave + 1, wave_count)
    return 0  # pending, rolled_back, or progressing without a current wave yet


@dataclass(frozen=True, slots=True)
class WavePlacement:
    """Where one device stands in one rollout."""

    wave: int | None  # index into the rollout's waves; None when beyond the last wave's share
    live: bool  # True: the device runs to_version; False: from_version (or nothing)


@dataclass(frozen=True, slots=True)
class RolloutWaves:
    """A rollout's waves prepared once, then asked per device (the 1M-device hot path)."""

    name: str
    names: tuple[str, ...]
    thresholds: tuple[int, ...]
    live_count: int
    everyone_live: bool  # complete: devices beyond the last wave move too

    @classmethod
    def of(cls, name: str, spec: RolloutSpec) -> RolloutWaves:
        live = live_waves(spec.state, len(spec.waves))
        return cls(name, tuple(w.name for w in spec.waves), wave_thresholds(spec.waves), live,
                   spec.state.phase == "complete")

    def place(self, device_id: str) -> WavePlacement:
        index = wave_index(self.thresholds, bucket(self.name, device_id))
        live = self.everyone_live or (index is not None and index < self.live_count)
        return WavePlacement(index, live)

    def wave_name(self, index: int | None) -> str | None:
        return None if index is None else self.names[index]
