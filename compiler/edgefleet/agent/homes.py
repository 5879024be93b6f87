"""Where each workload (model) of the device keeps its two slots, its `current` link and its journal.

    STATE/journal.json, STATE/slots/{a,b}, STATE/current     the root home: one model
    STATE/workload.json                                        {"model": ...}: which one
    STATE/workloads/<model>/{journal.json,slots/,current}      every further model

The root home is the layout of a one-workload device, unchanged: an agent upgraded on a
device that ran one model finds its journal, slots and link where they were and recovers
them as before; nothing is moved (moving a live slot tree would be the one operation that
could lose the serving model on power loss). The only step of the upgrade is writing
`workload.json` (one atomic write; until it lands, the owner is read from the root's own
records again: the install in progress, else the committed slot's `slot.json`).

A model's home never changes once chosen: `workloads/<model>` if it exists, else the root
when the root is that model's, or free (the first workload of a fresh device takes it),
else a new `workloads/<model>`. Model names come from a verified desired state and are
`Name`s (lowercase letters, digits, dashes); they are checked again here before they
become a path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edgefleet.agent import journal as journal_io
from edgefleet.agent import slots
from edgefleet.agent.durable import write_json
from edgefleet.agent.errors import AgentError
from edgefleet.core.fsutil import fsync_dir

MARKER = "workload.json"
MARKER_FORMAT = "edgefleet/agent-workload/v1"
WORKLOADS = "workloads"
JOURNAL = "journal.json"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Home:
    """One model's part of the state directory (the `state_dir` its slots and journal live in)."""

    model: str
    path: Path
    root: bool

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL


def _check(model: str) -> str:
    if not isinstance(model, str) or not _NAME.fullmatch(model):
        raise AgentError("E603", f"model name {str(model)[:80]!r} is not a valid name",
                         "the desired state names models by their fleet names (lowercase, digits, dashes)",
                         reason="Unparseable")
    return model


def root_model(state_dir: Path) -> str | None:
    """The model of the root home: its marker, else its own records (a pre-upgrade state dir), else None."""
    state_dir = Path(state_dir)
    try:
        marked = json.loads((state_dir / MARKER).read_bytes()).get("model")
        if isinstance(marked, str) and _NAME.fullmatch(marked):
            return marked
    except (OSError, ValueError, AttributeError):
        pass
    return _recorded_model(state_dir)


def _recorded_model(state_dir: Path) -> str | None:
    try:
        journal = journal_io.load(state_dir / JOURNAL)
    except AgentError:
        journal = None
    if journal is not None and journal.install is not None:
        return journal.install.model
    order = [journal.committed] if journal is not None and journal.committed else []
    active = slots.active_slot(state_dir)
    for slot in [*order, active, *slots.SLOTS]:
        if slot is None:
            continue
        info = slots.read_slot(state_dir, slot, check_digests=False)
        model = info.meta.get("model") if info is not None else None
        if isinstance(model, str) and _NAME.fullmatch(model):
            return model
    return None


def mark_root(state_dir: Path, model: str) -> None:
    """Record the root's model (the upgrade step, and a fresh device's first workload)."""
    write_json(Path(state_dir) / MARKER, {"format": MARKER_FORMAT, "model": _check(model)})


def adopt_root(state_dir: Path) -> str | None:
    """On start: write the marker of a root that has a model but no marker yet (crash-safe, idempotent)."""
    state_dir = Path(state_dir)
    if (state_dir / MARKER).exists():
        return root_model(state_dir)
    model = _recorded_model(state_dir)
    if model is not None:
        mark_root(state_dir, model)
    return model


def home_of(state_dir: Path, model: str, claim: bool = True) -> Home:
    """The home of `model`; with `claim`, a free root is taken (durably) and a new directory made."""
    state_dir = Path(state_dir)
    _check(model)
    own = state_dir / WORKLOADS / model
    if own.is_dir() and not own.is_symlink():
        return Home(model, own, False)
    owner = root_model(state_dir)
    if owner == model:
        return Home(model, state_dir, True)
    if owner is None and claim:
        mark_root(state_dir, model)
        return Home(model, state_dir, True)
    if claim:
        parent = state_dir / WORKLOADS
        if parent.is_symlink():
            raise AgentError("E613", f"{parent} is a symlink", "the state directory was tampered with; "
                             "remove it and the agent re-installs from the desired state")
        parent.mkdir(exist_ok=True)
        own.mkdir(exist_ok=True)
        fsync_dir(parent)
        fsync_dir(state_dir)
    return Home(model, own, False)


def homes(state_dir: Path) -> list[Home]:
    """Every home on disk: the root first (when it has a model), then `workloads/*` by name."""
    state_dir = Path(state_dir)
    out: list[Home] = []
    owner = root_model(state_dir)
    if owner is not None:
        out.append(Home(owner, state_dir, True))
    parent = state_dir / WORKLOADS
    if parent.is_dir() and not parent.is_symlink():
        for child in sorted(parent.iterdir()):
            if (child.is_dir() and not child.is_symlink() and _NAME.fullmatch(child.name)
                    and child.name != owner):
                out.append(Home(child.name, child, False))
    return out
