"""Which wave of a rollout a device is in, and whether that wave is live.

A device's bucket is the first 8 bytes of sha256("<rollout>\\0<device id>") read as an
unsigned 64-bit number, i.e. a point in [0, 1) at 2**-64 resolution. A percent wave i
covers the buckets below waves[i].percent / 100; an explicit wave (`selector`, e.g. one
pilot site) covers the devices it matches. A device belongs to the first wave that
covers it, so the percents stay cumulative. The wave depends on nothing but the
rollout's name, the waves, and the device itself: adding or removing devices, or
editing other documents, never moves a device to another wave. Renaming a rollout
reshuffles it.

The rollout's `status` (written by `promote`) says which waves are live: waves
0..current_wave while the rollout is progressing or paused, all of them once complete,
none while pending or after a rollback. Pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from edgefleet.rules.selectors import matches
from edgefleet.spec.device import Device
from edgefleet.spec.rollout import RolloutSpec, RolloutStatus, Selector, Wave

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
    return tuple(0 if w.percent is None else min(BUCKET_SPACE, -(-Fraction(w.percent) * BUCKET_SPACE // 100))
                 for w in waves)


def wave_index(thresholds: Sequence[int], point: int) -> int | None:
    """Index of the first wave covering `point`, or None when no wave reaches it."""
    for i, limit in enumerate(thresholds):
        if point < limit:
            return i
    return None


def live_waves(state: RolloutStatus, wave_count: int) -> int:
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
    thresholds: tuple[int, ...]  # 0 for explicit waves: no bucket falls below it
    live_count: int
    everyone_live: bool  # complete: devices beyond the last wave move too
    explicit: tuple[tuple[int, Selector], ...] = ()  # (index, selector) of the explicit waves

    @classmethod
    def of(cls, name: str, spec: RolloutSpec, status: RolloutStatus | None = None) -> RolloutWaves:
        status = status or RolloutStatus()
        live = live_waves(status, len(spec.waves))
        explicit = tuple((i, w.selector) for i, w in enumerate(spec.waves) if w.selector is not None)
        return cls(name, tuple(w.name for w in spec.waves), wave_thresholds(spec.waves), live,
                   status.phase == "complete", explicit)

    def index_of(self, device: Device | str) -> int | None:
        """The device's wave. Explicit waves need the device itself, not only its id."""
        device_id = device if isinstance(device, str) else device.id
        point = bucket(self.name, device_id)
        if not self.explicit:
            return wave_index(self.thresholds, point)
        if isinstance(device, str):
            raise TypeError("a rollout with explicit (selector) waves places a Device, not an id")
        for i, limit in enumerate(self.thresholds):
            if point < limit:
                return i
            if any(j == i and matches(selector, device) for j, selector in self.explicit):
                return i
        return None

    def place(self, device: Device | str) -> WavePlacement:
        index = self.index_of(device)
        live = self.everyone_live or (index is not None and index < self.live_count)
        return WavePlacement(index, live)

    def wave_name(self, index: int | None) -> str | None:
        return None if index is None else self.names[index]
