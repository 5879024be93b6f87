"""When a device may switch to its new version: the spread window and maintenance windows.

Compile writes `Workload.activation` into a device's desired state when the device has a
switch to make (its wave is live and it has a from_version to move off):

    {"not_before": "2026-11-20T08:13:27Z" | null,
     "windows": [{"start": "02:00", "end": "04:00", "timezone": "Europe/Berlin", "days": []}]}

`not_before` is the time the device's wave went live (the rollout's `status.wave_started`)
plus a deterministic share of `spec.spread`: the first 8 bytes of
sha256("activation\\0<rollout>\\0<device id>") as a fraction of 2**64. So the switches of a
wave are spread evenly across the window (a site's link and the artifact store are not
hit at once), and the same device always gets the same time. `windows` are the rollout's
maintenance windows that apply to the device (by site and labels); with any, the device
switches only inside one of them, in the window's own time zone (days are local days;
an end before the start crosses midnight). No activation (null) means "switch at once".

The agent calls `activation_allowed` and `next_activation`; both are pure functions of the
activation and a clock reading passed in.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, time, timedelta, timezone
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from pydantic import Field

from edgefleet.spec.common import Strict
from edgefleet.spec.device import Device
from edgefleet.spec.rollout import WEEKDAYS, MaintenanceWindow, Weekday

SPREAD_SPACE = 1 << 64


class ActivationWindow(Strict):
    start: str = Field(description="local HH:MM")
    end: str = Field(description="local HH:MM; before start: the window crosses midnight")
    timezone: str = Field(description="IANA time zone name")
    days: list[Weekday] = Field(default_factory=list, description="local days the window opens on; empty: daily")


class Activation(Strict):
    """When the agent may switch a workload to its `run` version."""

    not_before: str | None = Field(None, description="RFC 3339 UTC; the agent waits until then")
    windows: list[ActivationWindow] = Field(
        default_factory=list, description="switch only inside one of these; empty: at any time")


def spread_fraction(rollout: str, device_id: str) -> int:
    """The device's point in the spread window, a number in [0, 2**64)."""
    digest = hashlib.sha256(f"activation\0{rollout}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def spread_offset(rollout: str, device_id: str, spread_seconds: int) -> int:
    """Whole seconds after the wave went live at which this device may switch: [0, spread)."""
    return spread_fraction(rollout, device_id) * spread_seconds >> 64


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return when.astimezone(timezone.utc)


def windows_for(device: Device, windows: Sequence[MaintenanceWindow]) -> list[ActivationWindow]:
    """The maintenance windows that apply to a device, in the rollout's order."""
    return [ActivationWindow(start=w.start, end=w.end, timezone=w.timezone, days=list(w.days))
            for w in windows
            if (not w.sites or device.site in w.sites)
            and all(device.labels.get(k) == v for k, v in w.match_labels.items())]


def activation_for(rollout: str, device_id: str, wave_live_since: str | None, spread_seconds: int,
                   windows: list[ActivationWindow]) -> Activation | None:
    """The activation compile writes for a device with a switch to make; None: switch at once."""
    not_before = None
    if wave_live_since is not None and spread_seconds > 0:
        start = parse_time(wave_live_since)
        not_before = rfc3339(start + timedelta(seconds=spread_offset(rollout, device_id, spread_seconds)))
    if not_before is None and not windows:
        return None
    return Activation(not_before=not_before, windows=windows)


def _as_activation(activation: Activation | dict | None) -> Activation | None:
    if activation is None or isinstance(activation, Activation):
        return activation
    return Activation.model_validate(activation)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _in_window(window: ActivationWindow, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timezone))
    start, end, minute = _minutes(window.start), _minutes(window.end), local.hour * 60 + local.minute
    if start < end:
        return start <= minute < end and _day_ok(window, local.weekday())
    # Crosses midnight: the part after midnight belongs to the window opened the day before.
    if minute >= start:
        return _day_ok(window, local.weekday())
    return minute < end and _day_ok(window, (local.weekday() - 1) % 7)


def _day_ok(window: ActivationWindow, weekday: int) -> bool:
    return not window.days or WEEKDAYS[weekday] in window.days


def activation_allowed(activation: Activation | dict | None, now: datetime) -> bool:
    """May the device switch now? `now` must be timezone-aware."""
    activation = _as_activation(activation)
    if activation is None:
        return True
    if activation.not_before is not None and now < parse_time(activation.not_before):
        return False
    return not activation.windows or any(_in_window(w, now) for w in activation.windows)


def _window_openings(window: ActivationWindow, after: datetime) -> Iterable[datetime]:
    """Local openings of a window from the day before `after` on, for 9 days, in UTC."""
    zone = ZoneInfo(window.timezone)
    day = after.astimezone(zone).date() - timedelta(days=1)
    hours, minutes = (int(x) for x in window.start.split(":"))
    for _ in range(9):
        if _day_ok(window, day.weekday()):
            yield datetime.combine(day, time(hours, minutes), tzinfo=zone).astimezone(timezone.utc)
        day += timedelta(days=1)


def next_activation(activation: Activation | dict | None, now: datetime) -> datetime | None:
    """The earliest time at or after `now` when `activation_allowed` holds.

    `now` itself when allowed now; None only when no window can ever open (a window whose
    local start never exists, such as a DST gap on its only day). Minute resolution, as
    windows are.
    """
    activation = _as_activation(activation)
    if activation_allowed(activation, now):
        return now
    earliest = now
    if activation.not_before is not None:
        earliest = max(now, parse_time(activation.not_before))
    if activation_allowed(activation, earliest):
        return earliest
    candidates = [opening for w in activation.windows for opening in _window_openings(w, earliest)
                  if opening >= earliest and activation_allowed(activation, opening)]
    return min(candidates) if candidates else None
