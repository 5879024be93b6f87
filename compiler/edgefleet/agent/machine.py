"""The update state machine: pure transitions between journals. No I/O.

    idle -> fetch -> verify -> download -> stage -> probe -> switch -> confirm -> commit -> idle
    any failure goes back to idle; after the switch, the previous slot is restored first

Invariants (the crash tests check them after every SIGKILL):
- the active slot changes only in `switch` (and back in a rollback); before `switch` an
  interrupted update leaves the old model serving, and the next run starts it again;
- a model is committed as last-known-good only in `commit`, after `confirm` proved it;
- an update interrupted after `switch` but before `commit` is rolled back on restart
  (Mender: killed in ArtifactCommit -> rollback); one interrupted in `commit` is
  finished (the proof was already given);
- every state save of one update counts; past MAX_SAVES the update is abandoned (loop
  guard, Mender's 28 saves), and a build interrupted MAX_ATTEMPTS times is not tried again
  for the same desired state (`given_up`).
This style follows python-tuf's trusted_metadata_set: the driver (`cycle.py`) does the
I/O and asks this module what the next journal is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgefleet.agent.errors import AgentError
from edgefleet.agent.journal import Generation, Install, Journal, SlotName

MAX_SAVES = 28
MAX_ATTEMPTS = 3

NEXT = {
    "idle": "fetch", "fetch": "verify", "verify": "download", "download": "stage", "stage": "probe",
    "probe": "switch", "switch": "confirm", "confirm": "commit", "commit": "idle",
}


def other(slot: SlotName | None) -> SlotName:
    return "b" if slot == "a" else "a"


def enter(journal: Journal, step: str) -> Journal:
    """The journal on entering `step`; only the next step in order, or idle, is allowed."""
    if step != "idle" and NEXT.get(journal.step) != step and not (journal.step == "idle" and step == "fetch"):
        raise ValueError(f"illegal transition {journal.step} -> {step}")
    saves = 0 if step in ("idle", "fetch") else journal.saves + 1
    if saves > MAX_SAVES:
        raise AgentError("E614", f"update of {journal.install.digest if journal.install else '?'} saved its "
                         f"state {saves} times", "the update is abandoned; the old model keeps serving")
    return journal.model_copy(update={"step": step, "saves": saves})


def begin_install(journal: Journal, *, model: str, version: str, variant: str, digest: str, size: int,
                  generation: Generation, active: SlotName | None, role: str = "run") -> Journal:
    """verify -> download: the install goes into the slot that is not active."""
    install = Install(model=model, version=version, variant=variant, digest=digest, size=size,
                      slot=other(active), previous_slot=active, generation=generation, role=role)
    return enter(journal.model_copy(update={"install": install}), "download")


def verified(journal: Journal, generation: Generation) -> Journal:
    return journal.model_copy(update={"generation": generation})


def in_sync(journal: Journal, generation: Generation) -> Journal:
    """The device serves what `generation` asks: it is installed (rollback floor moves up)."""
    floor = max(journal.last_counter or 0, generation.release_counter)
    return journal.model_copy(update={"last_counter": floor, "generation": generation})


def commit(journal: Journal) -> Journal:
    """confirm passed: the install's slot is last-known-good."""
    install = journal.install
    assert install is not None and journal.step == "commit"
    attempts = {k: v for k, v in journal.attempts.items() if k != install.digest}
    done = journal.model_copy(update={"committed": install.slot, "attempts": attempts})
    if install.role == "run":
        done = in_sync(done, install.generation)
    return finish(done)


def finish(journal: Journal) -> Journal:
    return journal.model_copy(update={"step": "idle", "saves": 0, "install": None})


def fail(journal: Journal, reason: str, permanent: bool = True) -> Journal:
    """The install failed (before or after the switch): forget it; remember why."""
    install = journal.install
    failed, failed_in = dict(journal.failed), dict(journal.failed_in)
    if install is not None and permanent:
        failed[install.digest] = reason
        failed_in[install.digest] = install.generation.target_sha256
    return finish(journal.model_copy(update={"failed": failed, "failed_in": failed_in}))


def given_up(journal: Journal, digest: str, generation: Generation) -> str | None:
    """Why `digest` is not tried again for this desired state (None: try it).

    A build that failed (probe, after the switch, or interrupted MAX_ATTEMPTS times) is
    not retried while the desired state stays the same; a new generation naming it gets
    one more try, with fresh attempts.
    """
    if journal.failed_in.get(digest) == generation.target_sha256:
        return journal.failed.get(digest)
    return None


def retry(journal: Journal, digest: str) -> Journal:
    """Forget an old failure of `digest` (a new generation asks for it again)."""
    if digest not in journal.failed and digest not in journal.attempts:
        return journal
    return journal.model_copy(update={
        "failed": {k: v for k, v in journal.failed.items() if k != digest},
        "failed_in": {k: v for k, v in journal.failed_in.items() if k != digest},
        "attempts": {k: v for k, v in journal.attempts.items() if k != digest}})


@dataclass(frozen=True)
class Recovery:
    journal: Journal
    action: Literal["none", "restart", "rollback", "finish_commit"]
    restore_slot: SlotName | None = None  # the slot to point the active link at


def recover(journal: Journal) -> Recovery:
    """What to do after a restart, from the journal alone (the driver checks the link)."""
    step, install = journal.step, journal.install
    if step == "idle" or install is None:
        return Recovery(finish(journal), "none")
    attempts = dict(journal.attempts)
    attempts[install.digest] = attempts.get(install.digest, 0) + 1
    journal = journal.model_copy(update={"attempts": attempts})
    give_up = attempts[install.digest] >= MAX_ATTEMPTS
    if step == "commit":
        return Recovery(journal, "finish_commit")
    if step in ("switch", "confirm"):
        why = f"interrupted {attempts[install.digest]} time(s) after the switch"
        return Recovery(fail(journal, why, permanent=give_up), "rollback", restore_slot=journal.committed)
    why = f"interrupted {attempts[install.digest]} time(s) before the switch"
    return Recovery(fail(journal, why, permanent=give_up), "restart")
