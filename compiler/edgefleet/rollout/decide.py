"""What `promote` does with a wave's verdict, and with a person's pause, resume or abort. Pure.

`decide` maps (spec, status, verdict of the current wave, now) to an `Outcome`: the
decision, and the new status, or None when the status stays as it is. Only transitions
are written (start, advance, complete, pause, rollback, and a person's resume/abort):
a "wait" is printed with what is missing but changes nothing, so promote run again on the
same reports changes nothing, and the git history of a rollout file is exactly its list of
decisions.

- pending: the first promote starts wave 0 (unless `spec.paused`).
- progressing: fail -> `rollback.on_gate_failure` (pause, or roll back: every device to
  from_version); pause verdicts (too many silent, stuck) -> paused; pass -> next wave, or
  complete after the last; `spec.paused` holds a passing wave where it is but does not
  stop a pause or roll back (Flagger #1801: no rollback while waiting on a hook).
- paused: stays paused until a person resumes; a failing gate still rolls back when the
  policy says so.
- complete, rolled_back: final.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import rfc8785

from edgefleet.desired.activation import rfc3339
from edgefleet.rollout.gates import GateResult
from edgefleet.spec.rollout import Decision, Evidence, RolloutSpec, RolloutStatus, StatusCondition


def spec_generation(spec: RolloutSpec) -> str:
    """sha256 of the spec's canonical JSON: the `observed_generation` of status conditions."""
    return hashlib.sha256(rfc8785.dumps(spec.model_dump(mode="json"))).hexdigest()


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    status: RolloutStatus | None  # None: nothing changes


def _decision(action, wave, now, reason, message, evidence=None, by="promote") -> Decision:
    return Decision(action=action, wave=wave, at=rfc3339(now), by=by, reason=reason, message=message,
                    evidence=evidence)


def decide(spec: RolloutSpec, status: RolloutStatus, result: GateResult | None, evidence: Evidence | None,
           now: datetime) -> Outcome:
    """The decision for the current wave; `result` is None when no wave is live (pending)."""
    waves = spec.waves
    phase, wave = status.phase, status.current_wave
    if phase == "pending":
        if spec.paused:
            return Outcome(_decision("wait", None, now, "PausedBySpec",
                                     "spec.paused is true: the rollout does not start"), None)
        decision = _decision("start", 0, now, "Started", f"wave {waves[0].name} is live")
        return Outcome(decision, _go_live(spec, status, 0, now, decision, "progressing"))
    if phase in ("complete", "rolled_back"):
        return Outcome(_decision("wait", wave, now, "Complete" if phase == "complete" else "RolledBack",
                                 f"the rollout is {phase.replace('_', ' ')}; nothing to decide"), None)
    if result is None or wave is None:  # a hand-edited status without a live wave or its start time
        return Outcome(_decision("wait", wave, now, "NoLiveTime",
                                 "status names no current wave with a start time (current_wave, since or "
                                 "wave_started), so its gates cannot be timed; fix status, or --abort"), None)
    name = waves[wave].name
    if result.verdict == "fail":
        if spec.rollback.on_gate_failure == "rollback":
            decision = _decision("rollback", wave, now, result.reason,
                                 f"wave {name}: {result.message}; every device goes back to {spec.from_version}",
                                 evidence)
            return Outcome(decision, _with(spec, status, "rolled_back", decision, healthy="False"))
        if phase == "paused":
            return Outcome(_decision("wait", wave, now, "Paused", f"paused; wave {name}: {result.message}",
                                     evidence), None)
        decision = _decision("pause", wave, now, result.reason, f"wave {name}: {result.message}", evidence)
        return Outcome(decision, _with(spec, status, "paused", decision, healthy="False"))
    if phase == "paused":
        return Outcome(_decision("wait", wave, now, "Paused",
                                 "paused: `edgefleet promote --resume` continues", evidence), None)
    if result.verdict == "pause":
        decision = _decision("pause", wave, now, result.reason, f"wave {name}: {result.message}", evidence)
        return Outcome(decision, _with(spec, status, "paused", decision, healthy="Unknown"))
    if result.verdict == "wait":
        return Outcome(_decision("wait", wave, now, result.reason, f"wave {name}: {result.message}", evidence), None)
    if spec.paused:
        return Outcome(_decision("wait", wave, now, "PausedBySpec",
                                 f"wave {name} passed its gates; spec.paused holds the next wave", evidence), None)
    if wave + 1 == len(waves):
        decision = _decision("complete", wave, now, "GatesPassed",
                             f"wave {name} passed its gates; the rollout is complete", evidence)
        return Outcome(decision, _with(spec, status, "complete", decision, healthy="True", since=rfc3339(now)))
    decision = _decision("advance", wave + 1, now, "GatesPassed",
                         f"wave {name} passed its gates; wave {waves[wave + 1].name} is live", evidence)
    return Outcome(decision, _go_live(spec, status, wave + 1, now, decision, "progressing", healthy="True"))


def person(spec: RolloutSpec, status: RolloutStatus, action: str, reason: str, now: datetime) -> Outcome:
    """A person's --pause / --resume / --abort; raises ValueError when the phase does not allow it."""
    phase, wave = status.phase, status.current_wave
    text = reason or "no reason given"
    if action == "pause":
        if phase != "progressing":
            raise ValueError(f"only a progressing rollout can be paused; this one is {phase}")
        decision = _decision("pause", wave, now, "PausedByPerson", text, by="person")
        return Outcome(decision, _with(spec, status, "paused", decision))
    if action == "resume":
        if phase != "paused":
            raise ValueError(f"only a paused rollout can be resumed; this one is {phase}")
        decision = _decision("resume", wave, now, "ResumedByPerson", text, by="person")
        return Outcome(decision, _with(spec, status, "progressing", decision))
    if action == "abort":
        if phase in ("complete", "rolled_back"):
            raise ValueError(f"a {phase.replace('_', ' ')} rollout cannot be aborted")
        decision = _decision("abort", wave, now, "AbortedByPerson",
                             f"{text}; every device goes back to {spec.from_version}", by="person")
        return Outcome(decision, _with(spec, status, "rolled_back", decision))
    raise ValueError(f"unknown action {action!r}")


def _go_live(spec, status, wave: int, now: datetime, decision: Decision, phase: str,
             healthy: str | None = None) -> RolloutStatus:
    started = dict(status.wave_started)
    started.setdefault(spec.waves[wave].name, rfc3339(now))  # a wave goes live once: activations stay put
    return _with(spec, status, phase, decision, healthy=healthy, current_wave=wave,
                 since=started[spec.waves[wave].name], wave_started=started)


def _with(spec, status: RolloutStatus, phase: str, decision: Decision, healthy: str | None = None,
          **changes) -> RolloutStatus:
    fields = {"phase": phase, "last_decision": decision, **changes}
    new = status.model_copy(update=fields)
    return new.model_copy(update={"conditions": _conditions(spec, new, status.conditions, healthy, decision)})


def _conditions(spec, status: RolloutStatus, old: list[StatusCondition], healthy: str | None,
                decision: Decision) -> list[StatusCondition]:
    generation, at = spec_generation(spec), decision.at
    phase = status.phase
    wanted = [
        ("Progressing", "True" if phase == "progressing" else "False", _camel(phase), ""),
        ("Paused", "True" if phase == "paused" else "False", decision.reason if phase == "paused" else _camel(phase),
         decision.message if phase == "paused" else ""),
        ("Complete", "True" if phase == "complete" else "False", _camel(phase), ""),
        ("RolledBack", "True" if phase == "rolled_back" else "False",
         decision.reason if phase == "rolled_back" else _camel(phase), decision.message if phase == "rolled_back" else ""),
    ]
    previous = {c.type: c for c in old}
    if healthy is not None:
        wanted.append(("Healthy", healthy, decision.reason, decision.message))
    elif "Healthy" in previous:
        h = previous["Healthy"]
        wanted.append(("Healthy", h.status, h.reason, h.message))
    out = []
    for type_, value, reason, message in wanted:
        before = previous.get(type_)
        since = before.last_transition if before is not None and before.status == value else at
        out.append(StatusCondition(type=type_, status=value, reason=reason, message=message,
                                   observed_generation=generation, last_transition=since))
    return out


def _camel(phase: str) -> str:
    return "".join(part.capitalize() for part in phase.split("_"))
