"""The update journal: the one file that says where an update is, persisted at every step.

`journal.json` in the state directory, written with `durable.write_json` (temp, fsync,
rename, fsync dir), read back strictly: a journal that does not parse is E613, never
guessed at. The transitions between journals are pure functions in `machine.py`; this
module only defines the data and reads/writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.agent.durable import write_json
from edgefleet.agent.errors import AgentError

FORMAT = "edgefleet/agent-journal/v1"
Step = Literal["idle", "fetch", "verify", "download", "stage", "probe", "switch", "confirm", "commit"]
STEPS: tuple[str, ...] = ("idle", "fetch", "verify", "download", "stage", "probe", "switch", "confirm", "commit")
SlotName = Literal["a", "b"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generation(_Model):
    """The verified desired state a decision was made from (the report's `generation`)."""

    target_sha256: str
    release_counter: int


class Install(_Model):
    """One model build being installed into a slot."""

    model: str
    version: str
    variant: str
    digest: str                     # sha256 hex of the artifact
    size: int
    slot: SlotName                  # the slot it goes into (the idle one)
    previous_slot: SlotName | None  # what served before (None on a first install)
    generation: Generation
    role: Literal["run", "fallback"] = "run"


class Journal(_Model):
    format: Literal["edgefleet/agent-journal/v1"] = FORMAT
    step: Step = "idle"
    saves: int = 0                        # state saves of the current update (loop guard)
    install: Install | None = None        # the update in progress
    committed: SlotName | None = None     # the last-known-good slot
    last_counter: int | None = None       # release counter of the last installed desired state
    generation: Generation | None = None  # last verified desired state
    attempts: dict[str, int] = Field(default_factory=dict)  # digest -> interrupted attempts
    failed: dict[str, str] = Field(default_factory=dict)    # digest -> why it is not tried again
    failed_in: dict[str, str] = Field(default_factory=dict) # digest -> generation (target sha) it failed in


def load(path: Path) -> Journal:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return Journal()
    except OSError as exc:
        raise AgentError("E613", f"{path}: cannot read the journal: {exc.strerror}",
                         "check the state directory's permissions") from None
    try:
        return Journal.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise AgentError("E613", f"{path}: the journal is damaged: {str(exc).splitlines()[0]}",
                         "it is only ever replaced atomically, so this is disk corruption or a manual "
                         "edit; move it aside and the agent re-installs from the desired state") from None


def save(path: Path, journal: Journal) -> None:
    write_json(Path(path), journal.model_dump(mode="json"))
