"""Flux-style conditions: what the agent observed, tied to the generation it describes.

A condition is one fact about the device (`Ready`, `Degraded`, ...) with a status
(`True`, `False`, `Unknown`), a CamelCase reason a machine can match on, a message for
people, and `observed_generation`: the sha256 of the desired-state target it describes
(null before the device verified any state). `last_transition` changes only when the
status changes, so a reader can tell how long a device has been degraded.

Conditions travel inside signed device reports, so the model is strict and bounded.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

ConditionType = Literal["Ready", "Degraded", "UpdateFailed", "RolledBack", "Frozen", "Offline"]
ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPES: tuple[str, ...] = ("Ready", "Degraded", "UpdateFailed", "RolledBack", "Frozen", "Offline")

MAX_MESSAGE = 1024  # characters; with the other bounds, every valid report fits MAX_ENVELOPE


def _rfc3339_utc(value: str) -> str:
    """RFC 3339 with an explicit UTC offset (`Z` or `+00:00`); device clocks must say UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None or parsed.utcoffset() != timezone.utc.utcoffset(None):
        raise ValueError(f"not a UTC time (end it with Z): {value!r}")
    return value


Rfc3339Utc = Annotated[str, Field(max_length=40, pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)$"),
                       AfterValidator(_rfc3339_utc)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _printable(value):
    """Control characters (but newline and tab) become U+FFFD: a message is for people, and JSON
    would escape each one to six bytes, which the report's size bound does not allow for."""
    if isinstance(value, str):
        return "".join(c if c >= " " or c in "\n\t" else "\ufffd" for c in value)
    return value


Message = Annotated[str, BeforeValidator(_printable), Field(max_length=MAX_MESSAGE)]


def utc_now() -> str:
    """The current time as the agent writes it: RFC 3339, UTC, whole seconds."""
    return rfc3339(datetime.now(timezone.utc))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: ConditionType
    status: ConditionStatus
    reason: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]{0,63}$")]
    message: Message = ""
    observed_generation: Sha256Hex | None = None
    last_transition: Rfc3339Utc


def set_condition(conds: list[Condition], new: Condition) -> list[Condition]:
    """`conds` with `new` in place of the condition of its type (pure; input untouched).

    When the status did not change, the old `last_transition` is kept: reason, message
    and generation may change without resetting the clock. The result is ordered by
    CONDITION_TYPES so that two agents in the same state write the same bytes.
    """
    old = next((c for c in conds if c.type == new.type), None)
    if old is not None and old.status == new.status:
        new = new.model_copy(update={"last_transition": old.last_transition})
    rest = [c for c in conds if c.type != new.type]
    return sorted([*rest, new], key=lambda c: CONDITION_TYPES.index(c.type))


def get_condition(conds: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conds if c.type == type_), None)


def is_true(conds: list[Condition], type_: str) -> bool:
    cond = get_condition(conds, type_)
    return cond is not None and cond.status == "True"
