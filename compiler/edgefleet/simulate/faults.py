"""The `--faults SPEC` grammar and the schedule it turns into (pure; the engine does the harm).

    SPEC  := "" | "all" | ITEM (";" ITEM)*
    ITEM  := KIND [":" PARAM ("," PARAM)*]
    PARAM := rate=P        chance per tick (per device for device faults, per store/class otherwise), 0 < P <= 1
           | at=DURATION   once, this long after the start (repeatable: at=10m,at=2h)
           | for=DURATION  how long each one lasts (default per kind)
           | site=NAME | class=NAME | device=ID   whom it hits (default: chosen by the seed)
           | scope=device|site                   remote_unreachable: one device or a whole site
           | by=[+|-]DURATION                    clock_skew: the offset (default +2d)

A KIND with neither rate nor at happens once, at a time the seed picks in the first half of
the run. `all` is every kind of `FAULT_KINDS` once (remote_unreachable twice: a device and a
whole site), at times spread over the first half of the run.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from edgefleet.simulate.errors import SimulationError
from edgefleet.simulate.record import FAULT_KINDS

_DURATION = re.compile(r"^([+-]?)(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# How long a fault lasts when `for` is not given (simulated seconds); 0: instantaneous.
DEFAULT_FOR = {
    "remote_unreachable": 3600.0,
    "agent_killed": 0.0,
    "disk_full": 1800.0,
    "slow_download": 1800.0,
    "truncated_download": 0.0,
    "corrupted_artifact": 1800.0,
    "accelerator_failure": 1800.0,
    "clock_skew": 1800.0,
    "forged_report": 0.0,
}
PARAMS = {"rate", "at", "for", "site", "class", "device", "scope", "by"}


def parse_duration(text: str, what: str, signed: bool = False) -> float:
    m = _DURATION.match(text.strip())
    if not m or (m.group(1) and not signed):
        raise SimulationError("E801", f"{what}: {text!r} is not a duration like 90s, 30m, 2h, 1d",
                              "write a number and one unit: s, m, h or d")
    value = float(m.group(2)) * _UNITS[m.group(3)]
    return -value if m.group(1) == "-" else value


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    rate: float | None = None
    at: tuple[float, ...] = ()          # offsets from the start, simulated seconds
    for_s: float | None = None
    site: str | None = None
    hardware_class: str | None = None
    device: str | None = None
    scope: str = "device"
    by_s: float = 2 * 86400.0
    text: str = ""                      # the item as written

    @property
    def duration_s(self) -> float:
        return DEFAULT_FOR[self.kind] if self.for_s is None else self.for_s


def parse_faults(spec: str) -> list[FaultSpec]:
    """Parse `--faults`; SimulationError E801 names the bad item and the kinds there are."""
    text = (spec or "").strip()
    if not text or text == "none":
        return []
    if text == "all":
        return [FaultSpec(kind, text="all") for kind in FAULT_KINDS] + [
            FaultSpec("remote_unreachable", scope="site", text="all")]
    out = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        kind, _, rest = item.partition(":")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise SimulationError("E801", f"--faults: unknown fault kind {kind!r} in {item!r}",
                                  f"the kinds are: {', '.join(FAULT_KINDS)} (or `all`)")
        values: dict = {"at": []}
        for param in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = param.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or key not in PARAMS or not value:
                raise SimulationError("E801", f"--faults: {param!r} in {item!r} is not NAME=VALUE with a known "
                                      "name", f"names: {', '.join(sorted(PARAMS))}")
            if key == "rate":
                try:
                    rate = float(value)
                except ValueError:
                    rate = -1.0
                if not 0 < rate <= 1:
                    raise SimulationError("E801", f"--faults: rate={value} in {item!r} is not a probability",
                                          "give 0 < rate <= 1 (a chance per tick)")
                values["rate"] = rate
            elif key == "at":
                values["at"].append(parse_duration(value, f"--faults {item!r} at"))
            elif key == "for":
                values["for_s"] = parse_duration(value, f"--faults {item!r} for")
            elif key == "by":
                values["by_s"] = parse_duration(value, f"--faults {item!r} by", signed=True)
            elif key == "scope":
                if value not in ("device", "site"):
                    raise SimulationError("E801", f"--faults: scope={value} in {item!r}", "scope=device or scope=site")
                values["scope"] = value
            elif key == "class":
                values["hardware_class"] = value
            else:
                values[key] = value
        if values.get("site") and kind == "remote_unreachable":
            values["scope"] = "site"
        values["at"] = tuple(sorted(values["at"]))
        out.append(FaultSpec(kind, text=item, **values))
    return out


@dataclass
class Occurrence:
    """One fault that will happen: when, to whom (resolved by the engine when it starts)."""

    spec: FaultSpec
    start_s: float
    end_s: float
    index: int
    targets: list[str] = field(default_factory=list)
    started: bool = False
    ended: bool = False
    injected: int = 0
    note: str = ""


def schedule(specs: list[FaultSpec], duration_s: float, tick_s: float, rng: random.Random) -> list[Occurrence]:
    """The scheduled (at / seed-chosen) occurrences; rate faults are drawn tick by tick by the engine."""
    out: list[Occurrence] = []
    unscheduled = [s for s in specs if s.rate is None and not s.at]
    for s in specs:
        for at in s.at:
            out.append(Occurrence(s, at, at + s.duration_s, len(out)))
    # Spread the seed-chosen ones over the first half, after the first installs (2 ticks in).
    first, last = 2 * tick_s, max(2 * tick_s, duration_s / 2)
    for i, s in enumerate(unscheduled):
        slot = first + (last - first) * (i + rng.random()) / max(1, len(unscheduled))
        at = round(slot / tick_s) * tick_s
        out.append(Occurrence(s, at, at + s.duration_s, len(out)))
    return sorted(out, key=lambda o: (o.start_s, o.index))
