"""Counts and latency percentiles per rollout, wave, hardware class and site. Pure.

Latency of a group: each device reports its own p50/p95/p99 over its telemetry window;
the group's pXX is the nearest-rank XXth percentile of its devices' pXX values (devices
on the new version that reported latency). It bounds "how slow are the slow devices",
which is what a gate wants to catch, without pretending to merge raw samples it never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgefleet.rollout.observe import STANDINGS, Observation, Standing

PERCENTILES = (("p50", 50, 0), ("p95", 95, 1), ("p99", 99, 2))


def nearest_rank(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Tally:
    """Devices of one group by standing, and the latencies of those on the new version."""

    devices: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STANDINGS, 0))
    latencies: list[tuple[float, float, float]] = field(default_factory=list)
    failed_devices: list[str] = field(default_factory=list)
    _latency: dict[str, float | None] | None = field(default=None, init=False, repr=False, compare=False)

    def add(self, device_id: str, where: Standing, obs: Observation | None) -> None:
        self._latency = None
        self.devices += 1
        self.counts[where] += 1
        if where in ("healthy", "degraded") and obs is not None and obs.latency is not None:
            self.latencies.append(obs.latency)
        if where in ("failed", "rolled_back"):
            self.failed_devices.append(device_id)

    @property
    def on_new_version(self) -> int:
        return self.counts["healthy"] + self.counts["degraded"]

    @property
    def failures(self) -> int:
        return self.counts["failed"] + self.counts["rolled_back"]

    @property
    def reported(self) -> int:
        return self.devices - self.counts["silent"]

    def latency(self) -> dict[str, float | None]:
        """Asked by the gates, the evidence and each renderer: sorted once until the next `add`."""
        if self._latency is None:
            self._latency = {name: nearest_rank(sorted(v[index] for v in self.latencies), pct)
                             for name, pct, index in PERCENTILES}
        return dict(self._latency)

    def to_json(self) -> dict:
        return {"devices": self.devices, **self.counts, "on_new_version": self.on_new_version,
                "reported": self.reported, "latency_ms": self.latency()}
