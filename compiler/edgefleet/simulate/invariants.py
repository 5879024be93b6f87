"""The five invariants of a simulation, as pure checks over what the engine observed.

Each check returns the violation (a sentence naming device and time) or None; `Book` counts
checks and violations per invariant and keeps the first examples. The engine feeds it every
tick for every device; tests feed it violating histories to show each check can fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from edgefleet.simulate.record import InvariantResult

INVARIANTS = {
    "always_serving_verified": "no device is ever without a verified serving model once it first installed one",
    "only_allowed_versions": "no device ever serves an artifact its signed desired states did not allow",
    "reports_delivered": "every report a device buffered (offline or not) is delivered by the end",
    "gates_respected": "no rollout advanced or completed past a failing or inconclusive gate",
    "forged_never_used": "no forged or replayed report was ever accepted or used in a decision",
}
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class DeviceSnapshot:
    """One device at one tick, read from its state directory (and its agent, when resident)."""

    device: str
    at: datetime
    running: bool                     # the agent runs at this tick (not killed/down)
    installed_once: bool              # it has committed a model before
    active_digest: str | None         # the active slot's artifact, its files checked against their digests
    serving_digest: str | None        # what answers inferences (None: nothing); degraded fallback counts
    allowed: frozenset[str]           # every run/fallback digest of the desired states it was given


def check_serving(s: DeviceSnapshot) -> str | None:
    if not s.running or not s.installed_once:
        return None
    if s.active_digest is None:
        return f"{s.device} at {_t(s.at)}: no active slot that passes its digest check"
    if s.serving_digest is None:
        return f"{s.device} at {_t(s.at)}: nothing serves (active slot sha256:{s.active_digest[:12]})"
    return None


def check_allowed(s: DeviceSnapshot) -> str | None:
    for digest in {s.active_digest, s.serving_digest} - {None}:
        if digest not in s.allowed:
            return f"{s.device} at {_t(s.at)}: serves sha256:{digest[:12]}, never in its desired state"
    return None


def check_delivered(device: str, pending: int) -> str | None:
    return f"{device}: {pending} report(s) still undelivered at the end" if pending else None


def check_gate_decision(rollout: str, action: str, wave: int | None, checks: list[tuple[str, str]] | None,
                        at: str) -> str | None:
    """`checks`: (gate, result) of the evidence the decision rests on (None: no evidence)."""
    if action not in ("advance", "complete"):
        return None
    if checks is None:
        return f"{rollout} at {at}: {action} (wave {wave}) without evidence"
    bad = [f"{g}={r}" for g, r in checks if r != "pass"]
    if bad:
        return f"{rollout} at {at}: {action} (wave {wave}) past gates {', '.join(bad)}"
    return None


@dataclass(frozen=True)
class Forged:
    device: str
    counter: int
    sha256: str                        # of the forged envelope
    how: str                           # "wrong-key" | "replayed"


def check_forged(f: Forged, rejected: dict[str, int], used: set[tuple[str, int]],
                 latest: dict[str, int]) -> str | None:
    """A forged envelope handed to `status` must be refused there (`rejected`: refusals per
    device), and a wrong-key one, whose counter no genuine report has, must be neither the
    device's latest accepted report nor among the reports a decision used. (A replay carries
    its genuine report's counter, so only its refusal tells it apart.)"""
    if f.how == "wrong-key" and latest.get(f.device) == f.counter:
        return f"forged report ({f.how}) of {f.device} counter {f.counter} was accepted"
    if f.how == "wrong-key" and (f.device, f.counter) in used:
        return f"forged report ({f.how}) of {f.device} counter {f.counter} was used in a decision"
    if not rejected.get(f.device):
        return f"forged report ({f.how}) of {f.device} counter {f.counter} was not refused by status"
    return None


@dataclass
class Book:
    counts: dict[str, list[int]] = field(default_factory=lambda: {k: [0, 0] for k in INVARIANTS})
    examples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in INVARIANTS})

    def check(self, name: str, violation: str | None) -> None:
        self.counts[name][0] += 1
        if violation is not None:
            self.counts[name][1] += 1
            if len(self.examples[name]) < MAX_EXAMPLES:
                self.examples[name].append(violation)

    def results(self) -> list[InvariantResult]:
        return [InvariantResult(name=k, description=INVARIANTS[k], checks=c, violations=v,
                                examples=list(self.examples[k])) for k, (c, v) in self.counts.items()]


def _t(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
