"""What a change to the fleet repository does to devices: the diff of two compiled fleets.

Pure: two {device id: CompiledDevice} in, a typed `Plan` out, then rendered as text
(terminal), markdown (a pull-request comment, from `templates/plan-comment.md.j2`) or
JSON. A device is listed when its desired-state bytes change, or when it is added or
removed; devices whose bytes stay the same are counted, not listed. Changes are grouped
by (rollout, wave, hardware class, site), the unit an operator reasons about.

Bytes to download per device: its new state file plus every artifact it is told to run
or keep as fallback that it did not already hold (run or fallback) before. TUF metadata
(timestamp, snapshot, the device's hash bin) is a few kilobytes more and not counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Mapping

from edgefleet.desired.compile import Assignment, CompiledDevice

ChangeKind = Literal["added", "removed", "changed"]
NONE = "-"  # shown for a device in no rollout, or beyond the last wave


@dataclass(frozen=True, slots=True)
class ValueChange:
    """One value of one workload that differs: old → new (None: the device had, or has, none)."""

    model: str
    field: str  # version | variant | artifact | size | wave | live | fallback
    old: str | int | None
    new: str | int | None


@dataclass(frozen=True, slots=True)
class DeviceChange:
    device_id: str
    change: ChangeKind
    hardware_class: str
    site: str
    rollout: str
    wave: str
    what: tuple[str, ...]  # human summary of each difference, e.g. "meter-digits 1.0.0 → 1.1.0"
    moves_model: bool  # runs another model, version or variant than before
    download_bytes: int  # state_bytes + artifacts it did not hold before
    state_bytes: int  # size of its new desired-state file (0 when removed)
    before: tuple[Assignment, ...] = ()
    after: tuple[Assignment, ...] = ()
    values: tuple[ValueChange, ...] = ()  # old → new of what changed, per model


@dataclass(frozen=True, slots=True)
class Group:
    rollout: str
    wave: str
    hardware_class: str
    site: str
    devices: tuple[str, ...]
    added: int
    removed: int
    changed: int
    moving: int  # devices changing model, version or variant
    download_bytes: int


@dataclass(frozen=True, slots=True)
class Plan:
    base: str
    head: str
    devices_before: int
    devices_after: int
    unchanged: int
    changes: tuple[DeviceChange, ...]
    groups: tuple[Group, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def download_bytes(self) -> int:
        return sum(c.download_bytes for c in self.changes)

    def count(self, kind: ChangeKind) -> int:
        return sum(c.change == kind for c in self.changes)

    @property
    def moving(self) -> int:
        return sum(c.moves_model for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "devices": {"before": self.devices_before, "after": self.devices_after, "unchanged": self.unchanged,
                        "added": self.count("added"), "removed": self.count("removed"),
                        "changed": self.count("changed"), "moving": self.moving},
            "download_bytes": self.download_bytes,
            "groups": [asdict(g) for g in self.groups],
            "changes": [_change_json(c) for c in self.changes],
            "notes": list(self.notes),
        }


def _change_json(change: DeviceChange) -> dict[str, Any]:
    out = asdict(change)
    out["before"] = [asdict(a) for a in change.before]
    out["after"] = [asdict(a) for a in change.after]
    out["what"] = list(change.what)
    out["values"] = [asdict(v) for v in change.values]
    return out


def diff_fleets(before: Mapping[str, CompiledDevice], after: Mapping[str, CompiledDevice], *,
                base: str = "base", head: str = "head", notes: Iterable[str] = ()) -> Plan:
    changes: list[DeviceChange] = []
    unchanged = 0
    for device_id in sorted(before.keys() | after.keys()):
        old, new = before.get(device_id), after.get(device_id)
        if old is not None and new is not None and old.sha256 == new.sha256:
            unchanged += 1
            continue
        changes.append(_change(old, new))
    order = _wave_order(list(before.values()) + list(after.values()))
    changes.sort(key=lambda c: (_group_key(c, order), c.device_id))
    return Plan(base, head, len(before), len(after), unchanged, tuple(changes), _groups(changes, order),
                tuple(notes))


def _change(old: CompiledDevice | None, new: CompiledDevice | None) -> DeviceChange:
    shown = new or old
    assert shown is not None
    assignments = shown.assignments
    rollout = "+".join(a.rollout for a in assignments) or NONE
    wave = "+".join(a.wave or NONE for a in assignments) or NONE
    if old is None:
        what = tuple(f"{a.model} {a.version} ({a.variant})" for a in new.assignments) or ("no model",)
        return DeviceChange(new.device_id, "added", new.hardware_class, new.site, rollout, wave, what,
                            bool(new.assignments), _download(None, new), len(new.data), (), new.assignments,
                            value_changes((), new.assignments))
    if new is None:
        return DeviceChange(old.device_id, "removed", old.hardware_class, old.site, rollout, wave,
                            ("removed from the fleet",), False, 0, 0, old.assignments, (),
                            value_changes(old.assignments, ()))
    what, moves = _differences(old, new)
    return DeviceChange(new.device_id, "changed", new.hardware_class, new.site, rollout, wave, what, moves,
                        _download(old, new), len(new.data), old.assignments, new.assignments,
                        value_changes(old.assignments, new.assignments))


_VALUE_FIELDS = ("version", "variant", "artifact", "size", "wave", "live", "fallback")


def _values(a: Assignment | None) -> dict[str, str | int | None]:
    if a is None:
        return dict.fromkeys(_VALUE_FIELDS)
    return {"version": a.version, "variant": a.variant, "artifact": a.artifact, "size": a.size,
            "wave": f"{a.rollout}/{a.wave or NONE}", "live": "yes" if a.live else "no", "fallback": a.fallback}


def value_changes(before: tuple[Assignment, ...], after: tuple[Assignment, ...]) -> tuple[ValueChange, ...]:
    """Every value that differs between the two sides, per model, in a fixed field order."""
    old = {a.model: a for a in before}
    new = {a.model: a for a in after}
    out: list[ValueChange] = []
    for model in sorted(old.keys() | new.keys()):
        a, b = _values(old.get(model)), _values(new.get(model))
        out += [ValueChange(model, f, a[f], b[f]) for f in _VALUE_FIELDS if a[f] != b[f]]
    return tuple(out)


def _differences(old: CompiledDevice, new: CompiledDevice) -> tuple[tuple[str, ...], bool]:
    what: list[str] = []
    moves = False
    before = {a.model: a for a in old.assignments}
    after = {a.model: a for a in new.assignments}
    for model in sorted(before.keys() | after.keys()):
        b, a = before.get(model), after.get(model)
        if b is None:
            what.append(f"{model}: now runs {a.version} ({a.variant})")
            moves = True
        elif a is None:
            what.append(f"{model}: no longer runs {b.version}")
            moves = True
        else:
            if (b.version, b.variant) != (a.version, a.variant):
                variant = f" ({b.variant} → {a.variant})" if b.variant != a.variant else f" ({a.variant})"
                kept = f", {b.version} kept as fallback" if a.fallback is not None and a.fallback == b.artifact else ""
                what.append(f"{model} {b.version} → {a.version}{variant}{kept}")
                moves = True
            elif b.artifact != a.artifact:
                what.append(f"{model} {a.version}: rebuilt artifact")
                moves = True
            if b.fallback != a.fallback and not (a.fallback is not None and a.fallback == b.artifact):
                what.append(f"{model}: fallback {_short(b.fallback)} → {_short(a.fallback)}")
            if b.rollout != a.rollout or b.wave != a.wave:
                what.append(f"{model}: {b.rollout}/{b.wave or NONE} → {a.rollout}/{a.wave or NONE}")
    if old.hardware_class != new.hardware_class:
        what.append(f"hardware class {old.hardware_class} → {new.hardware_class}")
    if old.site != new.site:
        what.append(f"site {old.site} → {new.site}")
    sections = _changed_sections(old.data, new.data)
    covered = {"workloads"} if what else set()
    rest = [s for s in sections if s not in covered and s not in ("device.hardware_class", "device.site")]
    if rest:
        what.append("changed: " + ", ".join(rest))
    return tuple(what) or ("desired state changed",), moves


def _short(artifact: str | None) -> str:
    if artifact is None:
        return "none"
    return artifact[:16] if not artifact.startswith("key:") else "unbuilt " + artifact[4:16]



def _changed_sections(old: bytes, new: bytes) -> list[str]:
    """Top-level members (and members of `device`) whose values differ."""
    a, b = json.loads(old), json.loads(new)
    out = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) == b.get(key):
            continue
        if key == "device" and isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += [f"device.{k}" for k in sorted(a[key].keys() | b[key].keys()) if a[key].get(k) != b[key].get(k)]
        else:
            out.append(key)
    return out


def _held(device: CompiledDevice | None) -> set[str]:
    if device is None:
        return set()
    return {x for a in device.assignments for x in (a.artifact, a.fallback) if x is not None}


def _download(old: CompiledDevice | None, new: CompiledDevice) -> int:
    held = _held(old)
    sizes: dict[str, int] = {}
    for a in new.assignments:
        sizes[a.artifact] = a.size
        if a.fallback is not None:
            sizes[a.fallback] = a.fallback_size
    return len(new.data) + sum(size for art, size in sizes.items() if art not in held)


def _wave_order(devices: list[CompiledDevice]) -> dict[tuple[str, str], int]:
    """(rollout, wave) -> position of the wave in its rollout, so canary sorts before all."""
    order: dict[tuple[str, str], int] = {}
    for device in devices:
        for a in device.assignments:
            if a.wave is not None:
                order.setdefault((a.rollout, a.wave), a.wave_index if a.wave_index is not None else 0)
    return order


def _group_key(change: DeviceChange, order: Mapping[tuple[str, str], int]) -> tuple:
    wave_pos = order.get((change.rollout, change.wave), 1 << 30)
    return (change.rollout, wave_pos, change.wave, change.hardware_class, change.site)


def _groups(changes: list[DeviceChange], order: Mapping[tuple[str, str], int]) -> tuple[Group, ...]:
    groups: list[Group] = []
    current: list[DeviceChange] = []

    def close() -> None:
        if current:
            first = current[0]
            groups.append(Group(
                first.rollout, first.wave, first.hardware_class, first.site,
                tuple(c.device_id for c in current),
                sum(c.change == "added" for c in current), sum(c.change == "removed" for c in current),
                sum(c.change == "changed" for c in current), sum(c.moves_model for c in current),
                sum(c.download_bytes for c in current)))

    for change in changes:  # already sorted by group
        if current and _group_key(current[0], order) != _group_key(change, order):
            close()
            current = []
        current.append(change)
    close()
    return tuple(groups)


# ---- rendering ---------------------------------------------------------------------------

def human_bytes(n: int) -> str:
    """Binary units, as `edgefleet build` prints sizes."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


_MARK = {"added": "+", "removed": "-", "changed": "~"}


def headline(plan: Plan) -> str:
    if not plan.changes:
        return f"no device changes ({plan.devices_after} devices, all unchanged)"
    parts = [f"{plan.count('changed')} changed", f"{plan.count('added')} added", f"{plan.count('removed')} removed"]
    return (f"{plan.devices_before} → {plan.devices_after} devices: {', '.join(parts)}; "
            f"{plan.moving} changing model or version; {human_bytes(plan.download_bytes)} to download")


def render_text(plan: Plan) -> str:
    lines = [f"plan {plan.base} → {plan.head}: {headline(plan)}"]
    by_id = {c.device_id: c for c in plan.changes}
    for group in plan.groups:
        lines.append("")
        lines.append(f"rollout {group.rollout}, wave {group.wave}, class {group.hardware_class}, "
                     f"site {group.site}: {len(group.devices)} device(s), {human_bytes(group.download_bytes)}")
        for device_id in group.devices:
            change = by_id[device_id]
            tail = f"  [{human_bytes(change.download_bytes)}]" if change.download_bytes else ""
            lines.append(f"  {_MARK[change.change]} {device_id}: {'; '.join(change.what)}{tail}")
            lines += [f"      {line}" for line in value_lines(change.values)]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


def _shown_value(field: str, value: str | int | None) -> str:
    if value is None:
        return NONE
    if field == "size":
        return human_bytes(int(value))
    if field in ("artifact", "fallback"):
        return _short(str(value))
    return str(value)


def value_lines(values: Iterable[ValueChange]) -> list[str]:
    """`meter-digits: version 1.0.0 → 1.1.0, size 1.0 MiB → 17.5 KiB, ...`, one line per model."""
    per_model: dict[str, list[str]] = {}
    for v in values:
        per_model.setdefault(v.model, []).append(
            f"{v.field} {_shown_value(v.field, v.old)} → {_shown_value(v.field, v.new)}")
    return [f"{model}: {', '.join(parts)}" for model, parts in per_model.items()]


# GitHub refuses comments over 65536 characters; stay below with room for a workflow's header.
COMMENT_LIMIT = 60_000
_MARKDOWN_STEPS = ((50, 200), (10, 100), (3, 50), (0, 30))  # (devices per group, groups) to try


def render_markdown(plan: Plan, max_devices_per_group: int | None = None) -> str:
    """The pull-request comment; lists get shorter until it fits COMMENT_LIMIT."""
    steps = ((max_devices_per_group, 200),) if max_devices_per_group is not None else _MARKDOWN_STEPS
    for devices, groups in steps:
        text = _markdown(plan, devices, groups)
        if len(text) <= COMMENT_LIMIT:
            break
    return text


def _markdown(plan: Plan, max_devices: int, max_groups: int) -> str:
    from edgefleet.desired.runtime_config import environment

    template = environment().get_template("plan-comment.md.j2")
    by_id = {c.device_id: c for c in plan.changes}
    groups = [{
        "group": g,
        "shown": [by_id[d] for d in g.devices[:max_devices]],
        "hidden": max(0, len(g.devices) - max_devices),
    } for g in plan.groups[:max_groups]]
    return template.render(plan=plan, groups=groups, hidden_groups=max(0, len(plan.groups) - max_groups),
                           headline=headline(plan), human_bytes=human_bytes, mark=_MARK).rstrip() + "\n"


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
