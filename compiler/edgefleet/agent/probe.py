"""The health probe a staged model must pass before the switch, and the confirm after it.

Probe (on the staged slot, with the real runtime): the model loads (load time measured),
the golden input's first output is within `tolerance` (max absolute difference) of
`expected_output`, and over `runs` timed inferences after a warm-up the median latency
is within `latency_budget_ms`. The median, not the maximum, is judged: one scheduler
hiccup on a busy device must not fail a healthy model; p95 and max are reported.
It calls `Runner.infer`, the method the KServe handler calls.

Confirm (after the switch, before commit): the first `inferences` through the serving
path succeed (application traffic counts; when there is none the agent sends the golden
input), and no inference fails during the `soak`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefleet.agent.errors import AgentError
from edgefleet.agent.runner import Runner

MAX_GOLDEN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ProbeResult:
    load_ms: float
    max_abs_error: float
    median_ms: float
    p95_ms: float
    max_ms: float
    runs: int

    def to_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def load_golden(path: Path) -> np.ndarray:
    raw = Path(path).read_bytes()[:MAX_GOLDEN_BYTES]
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        raise AgentError("E609", f"the golden input is not a .npy array: {exc}", reason="ProbeFailed") from None


def golden_feed(runner: Runner, golden: np.ndarray) -> dict[str, np.ndarray]:
    name = runner.inputs[0]["name"] if runner.inputs else "input"
    return {name: golden}


def first_output(outputs: dict[str, np.ndarray], runner: Runner) -> np.ndarray:
    name = runner.outputs[0]["name"] if runner.outputs else next(iter(outputs))
    return np.asarray(outputs[name], dtype=np.float64).reshape(-1)


def run_probe(runner: Runner, golden: np.ndarray, probe: dict, runs: int = 10) -> ProbeResult:
    """Raise AgentError (E608/E609/E610) unless `runner` passes `probe` (the desired state's)."""
    feed = golden_feed(runner, golden)
    try:
        out = first_output(runner.infer(feed), runner)
    except Exception as exc:
        raise AgentError("E608", f"the staged model fails on its golden input: {type(exc).__name__}: {exc}",
                         reason="ProbeFailed") from None
    expected = np.asarray(probe["expected_output"], dtype=np.float64).reshape(-1)
    if expected.shape != out.shape:
        raise AgentError("E609", f"probe output has {out.size} values, expected_output {expected.size}",
                         "the artifact and the probe of the desired state do not belong together",
                         reason="ProbeFailed")
    error = float(np.max(np.abs(out - expected))) if out.size else 0.0
    tolerance = float(probe["tolerance"])
    if not error <= tolerance:
        raise AgentError("E609", f"probe output differs from expected_output by {error:.6g} "
                         f"(tolerance {tolerance:g})", "the staged model does not compute what was built; "
                         "it is not switched to", reason="ProbeFailed")
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        runner.infer(feed)
        if i:  # the first run warms up
            times.append((time.perf_counter() - start) * 1000)
    median = float(np.median(times))
    budget = float(probe["latency_budget_ms"])
    result = ProbeResult(runner.load_ms, error, median, float(np.percentile(times, 95)), max(times), runs)
    if median > budget:
        raise AgentError("E610", f"probe latency median {median:.3g} ms over the class budget of {budget:g} ms",
                         "the model is too slow on this device; it is not switched to", reason="ProbeTooSlow")
    return result


def confirm(infer, runner: Runner, golden: np.ndarray, inferences: int, soak_s: float,
            served=lambda: 0, failures=lambda: 0) -> None:
    """Raise AgentError E611 unless the serving model proves itself after the switch.

    `infer` is the serving path (the registry's); `served()` / `failures()` count every
    inference through it since the switch, application requests and the agent's own alike.
    The agent sends the golden input only while fewer than `inferences` have been served.
    """
    feed = golden_feed(runner, golden)
    deadline = time.monotonic() + soak_s
    while True:
        if failures():
            raise AgentError("E611", f"{failures()} inference(s) failed after the switch",
                             "the previous model was restored", reason="FailedAfterSwitch")
        if served() >= inferences:
            if time.monotonic() >= deadline:
                return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            continue
        try:
            infer(feed)
        except Exception as exc:
            raise AgentError("E611", f"inference failed after the switch: {type(exc).__name__}: {exc}",
                             "the previous model was restored", reason="FailedAfterSwitch") from None
