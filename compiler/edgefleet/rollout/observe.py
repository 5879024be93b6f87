"""One device's standing in one rollout, from its latest verified report. Pure.

A report says what the device serves for each model (`workloads`), how updates went
(`update`), and its conditions. For a wave that went live at T and a rollout to V:

- silent: no verified report observed at or after T (whatever it said before T is old news);
- failed: the update failed (ProbeFailed, UpdateFailed, or the UpdateFailed condition) or
  the new version crash-loops (Degraded with a CrashLoop reason);
- rolled_back: the device rolled itself back (update RolledBack or the RolledBack condition);
- frozen: the device's desired state expired (Frozen): it accepts nothing new;
- healthy / degraded: serving V, Ready (degraded: on a fallback or CPU path);
- pending: it reported since T but does not serve V yet (downloading, waiting for its
  activation window, ...).

Failed and rolled back count against the failure budget. Only healthy and degraded count
as "on the new version". Nothing else is read as success.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from edgefleet.desired.activation import parse_time

Standing = Literal["healthy", "degraded", "failed", "rolled_back", "frozen", "pending", "silent"]
STANDINGS: tuple[Standing, ...] = ("healthy", "degraded", "failed", "rolled_back", "frozen", "pending", "silent")
FAILED_UPDATES = {"ProbeFailed", "UpdateFailed"}


class Observation(NamedTuple):
    """What one verified report says about one rollout's model on one device.

    A named tuple: immutable, and cheap to build and to send between processes (status
    verifies 100k reports in worker processes).
    """

    device_id: str
    counter: int
    observed_at: datetime
    serving_version: str | None
    update: str
    ready: bool
    degraded: bool
    crash_loop: bool
    update_failed: bool
    rolled_back: bool
    frozen: bool
    latency: tuple[float, float, float] | None  # p50, p95, p99 in ms


def observe(report, model: str) -> Observation:
    """The part of a verified `edgefleet.agent.report.Report` that concerns `model`.

    A device running several models says per workload whether that model is ready,
    degraded, failed or rolled back (`ready` is set): those are read, so one model's
    failed update does not count against another model's rollout. A report without them
    (an older agent's) is judged by the device-wide conditions.

    Latency: the workload's own when the report gives it; else the device's, but only when the
    device serves this one model — a device-wide figure of several models is no one model's,
    so it counts as no latency (a gate waits for data rather than judge a mix).
    """
    workload = next((w for w in report.workloads if w.model == model), None)
    serving = workload.serving_version if workload is not None else None
    if serving is None and report.serving is not None and report.serving.model == model:
        serving = report.serving.version
    true = {}  # type -> the condition, of those whose status is True (one per type: the model says so)
    for c in report.conditions:
        if c.status == "True":
            true.setdefault(c.type, c)
    degraded = true.get("Degraded")
    latency = getattr(workload, "latency_ms", None)
    if latency is None and len(report.workloads) <= 1:
        latency = report.telemetry.latency_ms
    ready = "Ready" in true
    update_failed = "UpdateFailed" in true
    rolled_back = "RolledBack" in true
    is_degraded = degraded is not None
    if workload is not None and getattr(workload, "ready", None) is not None:
        ready = bool(workload.ready)
        update_failed = bool(workload.update_failed)
        rolled_back = bool(workload.rolled_back)
        is_degraded = bool(workload.degraded)
    return Observation(
        device_id=report.device, counter=report.counter, observed_at=parse_time(report.observed_at),
        serving_version=serving, update=workload.update if workload is not None else "Idle",
        ready=ready, degraded=is_degraded,
        crash_loop=degraded is not None and "CrashLoop" in degraded.reason,
        update_failed=update_failed, rolled_back=rolled_back, frozen="Frozen" in true,
        latency=(latency.p50, latency.p95, latency.p99) if latency is not None else None)


def standing(obs: Observation | None, to_version: str, live_since: datetime | None) -> Standing:
    """Where a device of a live wave stands (see the module docstring for the order)."""
    if obs is None or (live_since is not None and obs.observed_at < live_since):
        return "silent"
    if obs.update in FAILED_UPDATES or obs.update_failed or obs.crash_loop:
        return "failed"
    if obs.update == "RolledBack" or obs.rolled_back:
        return "rolled_back"
    if obs.frozen:
        return "frozen"
    if obs.serving_version == to_version and obs.ready:
        return "degraded" if obs.degraded else "healthy"
    return "pending"
