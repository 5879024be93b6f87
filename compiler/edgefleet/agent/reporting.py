"""After every cycle: conditions, `status.json`, and a signed report into the outbox, then push.

Composes agent-io's parts: `conditions.set_condition` (Flux-style, last_transition kept
while a status holds), `report.Report` / `sign_report`, the `telemetry.TelemetryStore`
outbox (durable, counter never reused) and `status_remote.push_reports`. A report is
enqueued before any push is tried, and marked delivered only after the push says so, so
reports survive restarts and outages (at least once; the reader drops duplicates by counter).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path


from edgefleet.agent.errors import AgentError
from edgefleet.agent.status import read_status, write_status


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def serving_of(state_dir: Path, registry, model: str | None = None) -> dict | None:
    """What serves `model` (default: the primary, first workload's model), or None."""
    runner = registry.runner_of(model) if model is not None else registry.runner
    if runner is None:
        return None
    return {"model": runner.name, "version": runner.version, "variant": runner.variant,
            "digest": f"sha256:{runner.digest}", "slot": runner.slot}


def workloads_of(agent, obs, previous: dict) -> list[dict]:
    """One entry per workload: what it asks, what serves it, how its update went.

    After a cycle that reached the workloads, from what it observed of each. Otherwise
    (offline, frozen, refused) the last cycle's entries, no longer ready, with what serves
    now; a refused desired state counts as a failed update of every workload, as the
    device-wide UpdateFailed condition says.
    """
    registry = agent.registry
    if obs.workloads:
        return [{"model": w.model, "rollout": w.rollout, "wave": w.wave, "desired_version": w.want_version,
                 "serving": serving_of(agent.state_dir, registry, w.model), "ready": w.in_sync,
                 "degraded": bool(w.degraded), "update": w.update_status,
                 "update_failed": w.update_error is not None,
                 "rolled_back": w.rolled_back is not None or w.update_status == "RolledBack",
                 "code": w.code, "reason": w.reason[:1000]} for w in obs.workloads]
    entries = previous.get("workloads")
    if entries is None and previous.get("model"):  # a status.json of a one-workload agent before the upgrade
        rollout = previous.get("rollout") or {}
        entries = [{"model": previous["model"], "rollout": rollout.get("name"), "wave": rollout.get("wave"),
                    "desired_version": previous.get("desired_version"), "update": previous.get("update") or "Idle"}]
    out = []
    for entry in entries or []:
        entry = {**entry, "serving": serving_of(agent.state_dir, registry, entry["model"]), "ready": False}
        if obs.refused is not None:
            entry["update_failed"] = True
        out.append(entry)
    return out


def conditions_for(previous: list, obs, result, now: datetime, beyond: bool, serving: bool) -> list:
    from edgefleet.agent.conditions import Condition, set_condition

    gen = obs.generation.target_sha256 if obs.generation else None
    at = _rfc3339(now)

    def cond(type_, true, reason, message=""):
        return Condition(type=type_, status="True" if true else "False", reason=reason,
                         message=message[:1000], observed_generation=gen, last_transition=at)

    conds = [c if isinstance(c, Condition) else Condition.model_validate(c) for c in previous]
    ready_reason = "Serving" if result.in_sync else ("NothingServing" if not serving else "NotInSync")
    updates = [
        cond("Ready", result.in_sync, ready_reason, result.reason),
        cond("Degraded", bool(obs.degraded), "AcceleratorUnavailable" if obs.degraded else "AsDeclared",
             obs.degraded or ""),
        cond("Frozen", obs.frozen is not None, "MetadataExpired" if obs.frozen else "MetadataFresh",
             obs.frozen.message if obs.frozen else ""),
    ]
    err = obs.update_error or obs.refused
    if obs.offline_error is None and obs.frozen is None:
        updates.append(cond("UpdateFailed", err is not None, err.reason if err else "NoFailure",
                            f"error[{err.code}]: {err.message}" if err else ""))
        rolled = (obs.rolled_back is not None or obs.update_status == "RolledBack"
                  or any(w.update_status == "RolledBack" for w in getattr(obs, "workloads", [])))
        updates.append(cond("RolledBack", rolled, obs.rolled_back.reason if obs.rolled_back else
                            ("FailedAfterSwitch" if rolled else "NoRollback"),
                            obs.rolled_back.message if obs.rolled_back else ""))
    offline = obs.offline_error is not None or beyond
    updates.append(cond("Offline", offline, "BeyondMaxOffline" if beyond else
                        ("RemoteUnreachable" if obs.offline_error else "InContact"),
                        obs.offline_error.message if obs.offline_error else ""))
    for c in updates:
        conds = set_condition(conds, c)
    return conds


def _max_offline_s(obs, previous: dict) -> int | None:
    from edgefleet.spec.common import duration_seconds

    value = obs.desired.offline.max_offline if obs.desired is not None else previous.get("max_offline")
    return duration_seconds(value) if value else None


def after_cycle(agent, result, telemetry=None, identity=None) -> dict:
    """Write status.json and queue (and push) a signed report; return the status."""
    state_dir, obs = agent.state_dir, agent.observed
    now = agent.config.clock()
    previous = read_status(state_dir)
    last_contact = previous.get("last_contact")
    if not result.offline:
        last_contact = _rfc3339(now)
    max_offline = _max_offline_s(obs, previous)
    contact_at = datetime.fromisoformat(last_contact.replace("Z", "+00:00")) if last_contact else None
    beyond = bool(max_offline and contact_at and now - contact_at > timedelta(seconds=max_offline))
    serving = serving_of(state_dir, agent.registry)
    conds = conditions_for(previous.get("conditions", []), obs, result, now, beyond, serving is not None)
    status = {
        "device": agent.config.device,
        "serving": serving,
        "degraded": bool(obs.degraded),
        "conditions": [c.model_dump(mode="json") for c in conds],
        "generation": obs.generation.model_dump(mode="json") if obs.generation else previous.get("generation"),
        "in_sync": result.in_sync,
        "reason": result.reason,
        "code": result.code,
        "update": obs.update_status,
        "last_contact": last_contact,
        "max_offline": obs.desired.offline.max_offline if obs.desired is not None else previous.get("max_offline"),
        "beyond_max_offline": beyond,
        "observed_at": _rfc3339(now),
        "desired_version": obs.want_version or previous.get("desired_version"),
        "rollout": ({"name": obs.desired.workloads[0].rollout.name, "wave": obs.desired.workloads[0].rollout.wave}
                    if obs.desired is not None else previous.get("rollout")),
        "model": obs.desired.workloads[0].model if obs.desired is not None else previous.get("model"),
        "workloads": workloads_of(agent, obs, previous),
    }
    write_status(state_dir, status)
    if telemetry is not None:
        telemetry.record_event("update", f"{obs.update_status}: {result.reason}"[:500])
        if identity is not None:
            _queue_report(status, conds, telemetry, identity, previous.get("reported_at"))
            status["reported_at"] = status["observed_at"]
            write_status(state_dir, status)
        if agent.config.status_remote:
            status["push"] = push_pending(agent.config.status_remote, agent.config.device, telemetry,
                                          work_dir=state_dir / "status.git")
            write_status(state_dir, status)
    return status


def _queue_report(status: dict, conds: list, telemetry, identity, since: str | None) -> None:
    from edgefleet.agent.report import Report, sign_report

    from edgefleet.agent.report import MAX_WORKLOADS

    by_model = telemetry.latency_by_model(since=since, until=status["observed_at"])
    workloads = []
    for w in status.get("workloads", [])[:MAX_WORKLOADS]:
        serving = w.get("serving")
        workloads.append({"model": w["model"], "rollout": w.get("rollout"), "wave": w.get("wave"),
                          "desired_version": w.get("desired_version"),
                          "serving_version": serving["version"] if serving else None,
                          "update": w.get("update") or "Idle",
                          "digest": serving["digest"] if serving else None,
                          "ready": w.get("ready"), "degraded": w.get("degraded"),
                          "update_failed": w.get("update_failed"), "rolled_back": w.get("rolled_back"),
                          "code": w.get("code"),
                          "latency_ms": by_model[w["model"]].model_dump() if w["model"] in by_model else None})
    summary = telemetry.summary(since=since, until=status["observed_at"])
    report = Report.model_validate({
        "device": status["device"], "counter": telemetry.next_counter(), "generation": status["generation"],
        "observed_at": status["observed_at"], "serving": status["serving"], "workloads": workloads,
        "conditions": [c.model_dump(mode="json") for c in conds],
        "telemetry": summary.model_dump(mode="json"),
        "offline": {"last_contact": status["last_contact"], "beyond_max_offline": status["beyond_max_offline"]},
    })
    telemetry.enqueue_report(report.counter, sign_report(report, identity))


def push_pending(remote: str, device: str, telemetry, work_dir: Path | None = None) -> dict:
    """Push queued reports oldest first; what was not delivered stays queued (E616)."""
    pending = telemetry.pending_reports()
    if not pending:
        return {"pushed": 0, "pending": 0}
    try:
        from edgefleet.agent.status_remote import push_reports

        pushed = int(push_reports(remote, device, [e for _, e in pending], work_dir=work_dir))
    except ImportError:
        return {"pushed": 0, "pending": len(pending), "error": "status_remote is not available in this build"}
    except Exception as exc:  # unreachable remote: keep the reports
        err = AgentError("E616", f"status remote push failed: {type(exc).__name__}: {str(exc)[:200]}")
        return {"pushed": 0, "pending": len(pending), "error": err.message}
    telemetry.mark_delivered([c for c, _ in pending[:pushed]])
    return {"pushed": pushed, "pending": len(pending) - pushed}



