"""rollouts/*.yaml: moving a set of devices from one model version to another in waves."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgefleet.spec.common import Document, Duration, Float, Int, Name, SemVer, Share, Strict


class Selector(Strict):
    """All given conditions must hold; an empty selector takes every device."""

    hardware_classes: list[Name] = Field(default_factory=list)
    sites: list[Name] = Field(default_factory=list)
    match_labels: dict[str, str] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list, description="explicit device ids")


class WaveGates(Strict):
    min_reporting: Share = Field(0.9, description="share of the wave's devices that must report")
    max_failure_rate: Share = Field(0.05, description="share of reporting devices allowed to fail")
    max_latency_p50_ms: Float | None = Field(None, gt=0)
    max_latency_p95_ms: Float | None = Field(None, gt=0)
    soak: Duration = Field("1h", description="time the wave must stay healthy before the next")
    timeout: Duration = Field("24h", description="after this, silent devices count as offline, not pending")
    max_offline: Share = Field(0.1, description="share of the wave allowed to be offline at timeout")


class Wave(Strict):
    name: Name
    percent: Float = Field(gt=0, le=100, description="cumulative share of the target set, in percent")
    gates: WaveGates = WaveGates()


class RollbackPolicy(Strict):
    on_gate_failure: Literal["pause", "rollback"] = "pause"


class RolloutState(Strict):
    phase: Literal["pending", "progressing", "paused", "complete", "rolled_back"] = "pending"
    current_wave: Int | None = Field(None, ge=0, description="index of the last live wave")
    since: str | None = Field(None, description="when the current wave went live (RFC 3339)")


class RolloutSpec(Strict):
    model: Name
    from_version: SemVer | None = Field(None, description="the version devices run before their wave")
    to_version: SemVer
    selector: Selector = Selector()
    waves: list[Wave] = Field(min_length=1)
    rollback: RollbackPolicy = RollbackPolicy()
    state: RolloutState = RolloutState()


class Rollout(Document):
    """rollouts/*.yaml: one rollout."""

    kind: Literal["Rollout"]
    spec: RolloutSpec
