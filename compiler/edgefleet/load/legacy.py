"""Rollout files written before `status` existed: `spec.state` is refused with the new form.

A rollout's progress is the controller's record, not a person's edit, so it moved out of
`spec` into a top-level `status` that `edgefleet promote` writes. An old file is not read
silently the new way (its state would be lost): it gets E701 at `spec.state`, with the
`status:` block to put in its place, built from the values it has.
"""

from __future__ import annotations

from typing import Any

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.source import Source

_KEYS = ("phase", "current_wave", "since")


def legacy_state(data: dict[str, Any], source: Source) -> Diagnostic | None:
    spec = data.get("spec")
    if not isinstance(spec, dict) or "state" not in spec:
        return None
    state = spec["state"] if isinstance(spec["state"], dict) else {}
    lines = ["status:"] + [f"  {key}: {_yaml_scalar(state[key])}" for key in _KEYS if key in state]
    if len(lines) == 1:
        lines.append("  phase: pending")
    return error("E701", "`spec.state` is no longer part of a rollout: its progress lives in a top-level "
                         "`status`, written by `edgefleet promote`",
                 source.key_at("spec", "state"),
                 "delete `spec.state` and add at the top level of the document (beside `spec`):\n"
                 + "\n".join("      " + line for line in lines))


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return f'"{value}"'
