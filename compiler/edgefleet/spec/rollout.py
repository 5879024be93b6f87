"""rollouts/*.yaml: moving a set of devices from one model version to another in waves.

Two parts, as in Kubernetes: `spec` is what people edit (which model, from and to which
version, for which devices, in which waves, behind which gates); the top-level `status`
is written by `edgefleet promote` (which waves are live since when, the last decision and
its evidence, conditions naming the spec they describe). The old `spec.state` is refused
with a hint (E701), so a rollout's progress never hides inside the part people edit.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from edgefleet.spec.common import Document, Duration, Float, Int, Name, SemVer, Share, Strict

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Selector(Strict):
    """All given conditions must hold; an empty selector takes every device."""

    hardware_classes: list[Name] = Field(default_factory=list)
    sites: list[Name] = Field(default_factory=list)
    match_labels: dict[str, str] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list, description="explicit device ids")


class WaveGates(Strict):
    """What a live wave must show before the next wave goes live. Missing data never passes."""

    min_reporting: Share = Field(
        0.9, description="share of the wave's devices that must report running to_version "
                         "(silent devices past `timeout` leave the count, into the offline budget)")
    max_failure_rate: Share = Field(
        0.05, description="share of reporting devices allowed to fail (probe failure, rollback, crash loop, "
                          "UpdateFailed)")
    max_latency_p50_ms: Float | None = Field(None, gt=0, description="bound on the wave's p50 latency")
    max_latency_p95_ms: Float | None = Field(None, gt=0, description="bound on the wave's p95 latency")
    max_latency_p99_ms: Float | None = Field(None, gt=0, description="bound on the wave's p99 latency")
    soak: Duration = Field("1h", description="time the wave must be live and healthy before the next")
    timeout: Duration = Field(
        "24h", description="after this, devices that have not reported are silent: they leave the "
                           "reporting count and use the offline budget")
    max_offline: Share = Field(0.1, description="share of the wave allowed to be silent after the timeout; "
                                                "more pauses the rollout")


class Wave(Strict):
    """A cumulative share of the target set (`percent`), or an explicit set (`selector`)."""

    name: Name
    percent: Float | None = Field(
        None, gt=0, le=100, description="cumulative share of the target set, in percent")
    selector: Selector | None = Field(
        None, description="an explicit wave (e.g. one pilot site): the target devices it matches")
    gates: WaveGates = WaveGates()

    @model_validator(mode="after")
    def _one_way_of_choosing(self) -> Wave:
        if (self.percent is None) == (self.selector is None):
            raise ValueError("a wave has either `percent` (a cumulative share) or `selector` "
                             "(an explicit set), exactly one of them")
        return self


class RollbackPolicy(Strict):
    on_gate_failure: Literal["pause", "rollback"] = Field(
        "pause", description="pause: stop and wait for a person; rollback: every device back to from_version")


class MaintenanceWindow(Strict):
    """A daily window, in a time zone, inside which matching devices may switch versions."""

    start: str = Field(description="local start time, HH:MM (24 h)")
    end: str = Field(description="local end time, HH:MM; before start means the window crosses midnight")
    timezone: str = Field(description="IANA time zone name, e.g. Europe/Berlin")
    days: list[Weekday] = Field(default_factory=list, description="days the window opens on; empty: every day")
    sites: list[Name] = Field(default_factory=list, description="sites it applies to; empty: every site")
    match_labels: dict[str, str] = Field(default_factory=dict, description="labels a device must have")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day as HH:MM, e.g. 02:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name, e.g. Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("a window from a time to the same time is empty; give different start and end")
        return self


class RolloutSpec(Strict):
    model: Name
    from_version: SemVer | None = Field(None, description="the version devices run before their wave")
    to_version: SemVer
    selector: Selector = Selector()
    waves: list[Wave] = Field(min_length=1)
    rollback: RollbackPolicy = RollbackPolicy()
    paused: bool = Field(False, description="a person's stop: promote advances no wave while true "
                                            "(it still pauses or rolls back on failing gates)")
    spread: Duration = Field(
        "0s", description="each device of a wave switches at a deterministic time spread across this "
                          "window after the wave went live")
    maintenance: list[MaintenanceWindow] = Field(
        default_factory=list, description="daily windows; a device that some window applies to switches only "
                                          "inside one of its windows")


Phase = Literal["pending", "progressing", "paused", "complete", "rolled_back"]
Action = Literal["start", "advance", "wait", "pause", "rollback", "complete", "resume", "abort"]


class GateCheck(Strict):
    """One gate of a wave: what was observed against what was required."""

    gate: str = Field(description="e.g. min_reporting, max_failure_rate, max_latency_p95_ms, soak, max_offline")
    result: Literal["pass", "fail", "inconclusive"]
    observed: Float | None = Field(None, description="null (or absent: promote writes no null) when there is no data")
    threshold: Float
    detail: str = ""


class Evidence(Strict):
    """The counts a decision rests on (a digest names the exact set of reports used)."""

    wave: Name
    devices: Int = Field(ge=0, description="devices in the wave")
    reported: Int = Field(ge=0, description="devices with a verified report since the wave went live")
    on_new_version: Int = Field(ge=0)
    healthy: Int = Field(ge=0)
    failed: Int = Field(ge=0)
    rolled_back: Int = Field(ge=0)
    degraded: Int = Field(ge=0)
    frozen: Int = Field(ge=0)
    silent: Int = Field(ge=0, description="devices with no report since the wave went live")
    rejected_reports: Int = Field(0, ge=0, description="reports refused by verification (never used)")
    latency_ms: dict[str, Float | None] = Field(default_factory=dict, description="p50/p95/p99 of the wave")
    checks: list[GateCheck] = Field(default_factory=list)
    reports_sha256: str = Field("", description="sha256 over the sorted (device, counter) of the reports used")
    failed_devices: list[str] = Field(default_factory=list, description="failing devices (the first 20)")


class Decision(Strict):
    action: Action
    wave: Int | None = Field(description="index of the wave the decision is about")
    at: str = Field(description="RFC 3339 UTC")
    by: Literal["promote", "person"] = "promote"
    reason: str = Field(description="CamelCase, e.g. GatesPassed, Inconclusive, GateFailed")
    message: str
    evidence: Evidence | None = None


class StatusCondition(Strict):
    type: Literal["Progressing", "Paused", "Healthy", "Complete", "RolledBack"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: str = Field(description="sha256 of the spec this condition describes")
    last_transition: str = Field(description="RFC 3339 UTC")


class RolloutStatus(Strict):
    """Written by `edgefleet promote`; people edit `spec`, not this."""

    phase: Phase = "pending"
    current_wave: Int | None = Field(None, ge=0, description="index of the last live wave")
    since: str | None = Field(None, description="when the current wave went live (RFC 3339)")
    wave_started: dict[str, str] = Field(
        default_factory=dict, description="per wave name, when it went live; devices' activation times count from it")
    last_decision: Decision | None = None
    conditions: list[StatusCondition] = Field(default_factory=list)


class Rollout(Document):
    """rollouts/*.yaml: one rollout."""

    kind: Literal["Rollout"]
    spec: RolloutSpec
    status: RolloutStatus = RolloutStatus()
