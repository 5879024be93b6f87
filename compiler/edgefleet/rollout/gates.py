"""A live wave's gates against what its devices reported. Pure.

Every gate answers pass, fail or inconclusive, and missing data is never a pass
(Argo Rollouts #4479 counted all-error measurements as success; Flagger #1011 advanced
after traffic stopped). The wave's verdict:

- `fail`: a health gate failed: more devices failed than the budget allows (already more
  than `max_failure_rate` of the whole wave, or of the reporting devices once enough have
  reported), or a latency percentile is over its bound. Policy decides: pause or roll back.
- `pause`: not a verdict on the version but on the fleet: after `timeout`, more devices are
  silent than `max_offline` allows, or too few of those that did report run the new
  version (stuck updates, hawkBit #693). A person looks.
- `wait`: something is inconclusive (not enough devices on the new version yet, no
  latency data, soak not over). The message says exactly what is missing.
- `pass`: every gate passed and the soak is over.

Waves already passed keep their failure budget (`with_earlier_waves`): a pilot device that
starts failing after the next wave went live fails the current evaluation too.

Before `timeout` silent devices count as "not yet"; after it they leave the reporting
count and use their own budget (`max_offline`): they neither block the wave forever nor
count as success.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from edgefleet.rollout.aggregate import Tally
from edgefleet.spec.common import duration_seconds
from edgefleet.spec.rollout import GateCheck, WaveGates

Verdict = Literal["pass", "wait", "pause", "fail"]


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    reason: str  # CamelCase
    message: str
    checks: tuple[GateCheck, ...]
    soak_left: timedelta
    timed_out: bool


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def evaluate(gates: WaveGates, tally: Tally, live_since: datetime, now: datetime, to_version: str) -> GateResult:
    elapsed = (now - live_since).total_seconds()
    timeout, soak = duration_seconds(gates.timeout), duration_seconds(gates.soak)
    timed_out = elapsed >= timeout
    n, silent, failures, reported = tally.devices, tally.counts["silent"], tally.failures, tally.reported
    checks: list[GateCheck] = []

    # Failure budget: certain once failures exceed the budget of the whole wave.
    if n == 0:
        checks.append(GateCheck(gate="max_failure_rate", result="inconclusive", observed=None,
                                threshold=gates.max_failure_rate, detail="the wave has no devices"))
    else:
        rate = failures / reported if reported else None
        enough = reported >= gates.min_reporting * n or timed_out
        if failures > gates.max_failure_rate * n or (rate is not None and enough and rate > gates.max_failure_rate):
            result, detail = "fail", f"{failures} of {reported} reporting devices failed"
        elif rate is None:
            result, detail = "inconclusive", "no device has reported yet"
        elif rate > gates.max_failure_rate:
            result, detail = "inconclusive", f"{failures} of {reported} failed so far; waiting for more reports"
        else:
            result, detail = ("pass" if enough else "inconclusive",
                              f"{failures} of {reported} reporting devices failed")
        checks.append(GateCheck(gate="max_failure_rate", result=result, observed=rate,
                                threshold=gates.max_failure_rate, detail=detail))

    # Reporting on the new version; after the timeout, silent devices leave the denominator.
    counted = n - silent if timed_out else n
    share = tally.on_new_version / counted if counted else None
    if share is not None and share >= gates.min_reporting:
        result = "pass"
    elif timed_out and counted:
        result = "fail"
    else:
        result = "inconclusive"
    need = int(-(-gates.min_reporting * counted // 1)) if counted else 0
    checks.append(GateCheck(gate="min_reporting", result=result, observed=share, threshold=gates.min_reporting,
                            detail=f"{tally.on_new_version} of {counted} devices run {to_version}, need {need}"
                                   + (f" ({silent} silent past the {gates.timeout} timeout left the count)"
                                      if timed_out and silent else "")))
    reporting_ok = result == "pass"

    # Offline budget: silent devices past the timeout.
    silent_share = silent / n if n else 0.0
    if silent_share <= gates.max_offline:
        result = "pass"
    elif timed_out:
        result = "fail"
    else:
        result = "inconclusive"
    checks.append(GateCheck(gate="max_offline", result=result, observed=silent_share, threshold=gates.max_offline,
                            detail=f"{silent} of {n} devices silent"
                                   + ("" if timed_out else f", timeout in {_fmt(timeout - elapsed)}")))

    # Latency percentiles of the devices on the new version.
    latency = tally.latency()
    for name in ("p50", "p95", "p99"):
        bound = getattr(gates, f"max_latency_{name}_ms")
        if bound is None:
            continue
        observed = latency[name]
        if observed is None:
            result, detail = "inconclusive", "no device on the new version reported latency"
        elif not reporting_ok:
            result, detail = "inconclusive", f"{name} {observed:g} ms so far; judged once enough devices report"
        else:
            result = "pass" if observed <= bound else "fail"
            detail = f"{name} {observed:g} ms over {len(tally.latencies)} devices"
        checks.append(GateCheck(gate=f"max_latency_{name}_ms", result=result, observed=observed,
                                threshold=bound, detail=detail))

    soak_left = timedelta(seconds=max(0.0, soak - elapsed))
    checks.append(GateCheck(gate="soak", result="pass" if elapsed >= soak else "inconclusive",
                            observed=round(elapsed), threshold=soak,
                            detail=f"live {_fmt(elapsed)} of {gates.soak}"))
    return _verdict(tuple(checks), soak_left, timed_out)


def with_earlier_waves(result: GateResult, earlier: list[tuple[str, WaveGates, Tally]]) -> GateResult:
    """Add the failure budgets of waves already passed: a canary that starts failing after the
    next wave went live still stops the rollout (each wave's own budget, over its own devices)."""
    extra = []
    for name, gates, tally in earlier:
        if not tally.devices:
            continue
        rate = tally.failures / tally.devices
        extra.append(GateCheck(gate=f"max_failure_rate[{name}]",
                               result="fail" if tally.failures > gates.max_failure_rate * tally.devices else "pass",
                               observed=rate, threshold=gates.max_failure_rate,
                               detail=f"{tally.failures} of {tally.devices} devices of wave {name} failed"))
    if not extra:
        return result
    return _verdict(result.checks + tuple(extra), result.soak_left, result.timed_out)


def _verdict(checks: tuple[GateCheck, ...], soak_left: timedelta, timed_out: bool) -> GateResult:
    by_gate = {c.gate: c for c in checks}
    health = [c for c in checks if c.gate.startswith(("max_failure_rate", "max_latency"))]
    failed = [c for c in health if c.result == "fail"]
    if failed:
        return GateResult("fail", "GateFailed", "; ".join(f"{c.gate}: {c.detail} (limit {c.threshold:g})"
                                                           for c in failed), checks, soak_left, timed_out)
    if by_gate["max_offline"].result == "fail":
        c = by_gate["max_offline"]
        return GateResult("pause", "TooManySilent", f"{c.detail}, more than the budget of {c.threshold:g}",
                          checks, soak_left, timed_out)
    if by_gate["min_reporting"].result == "fail":
        c = by_gate["min_reporting"]
        return GateResult("pause", "NotEnoughReporting", f"{c.detail} after the timeout", checks, soak_left,
                          timed_out)
    missing = [c for c in checks if c.result == "inconclusive"]
    if missing:
        only_soak = all(c.gate == "soak" for c in missing)
        return GateResult("wait", "Soaking" if only_soak else "Inconclusive",
                          "waiting: " + "; ".join(f"{c.gate}: {c.detail}" for c in missing),
                          checks, soak_left, timed_out)
    return GateResult("pass", "GatesPassed", "every gate passed", checks, soak_left, timed_out)
