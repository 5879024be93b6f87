"""What serves right now: the registry agent-io's KServe server reads (`models()`, `ready()`).

One runner per model (a device can run several workloads: a digit reader and an OCR
model), keyed by the model's name, which is the name `/v2/models/{name}` answers to.
`primary` names the first workload of the desired state: `runner`, `served`, `failures`,
`infer()` and `set(runner)` without a model speak about it, so a caller written for one
model keeps working unchanged.

The server's handler and the agent's confirm step both go through `ServingRunner.infer`,
which counts inferences and failures per model since that model's last switch and
records each one in the telemetry store, so "confirmed on real use" counts what
applications really asked of that model, and one model's traffic never confirms another.
"""

from __future__ import annotations

import threading
import time

from edgefleet.agent.runner import Runner


class ServingRunner:
    def __init__(self, registry: "Registry", runner: Runner):
        self._registry, self.runner = registry, runner

    def metadata(self) -> dict:
        return self.runner.metadata()

    def infer(self, inputs):
        start = time.perf_counter()
        ok = False
        try:
            out = self.runner.infer(inputs)
            ok = True
            return out
        finally:
            self._registry._count(self.runner, (time.perf_counter() - start) * 1000, ok)


class Registry:
    def __init__(self, telemetry=None):
        self._lock = threading.Lock()
        self._runners: dict[str, Runner] = {}
        self._counts: dict[str, list[int]] = {}   # model -> [served, failures] since its last switch
        self.telemetry = telemetry
        self.primary: str | None = None           # the first workload's model (set by the agent)

    def set(self, runner: Runner | None, model: str | None = None) -> None:
        """`runner` serves `model` (default: the runner's own name; None with no model: the primary)."""
        key = model or (runner.name if runner is not None else self._primary_key())
        if key is None:
            return
        with self._lock:
            old = self._runners.pop(key, None)
            if old is not None:
                old.serving = False
            if runner is not None:
                runner.serving = True
                self._runners[key] = runner
            self._counts[key] = [0, 0]

    def _primary_key(self) -> str | None:
        if self.primary is not None:
            return self.primary
        return min(self._runners) if self._runners else None

    # -- the primary model (the one-model API) ---------------------------------------------
    @property
    def runner(self) -> Runner | None:
        key = self._primary_key()
        return self._runners.get(key) if key is not None else None

    @property
    def served(self) -> int:
        return self.served_of(self._primary_key())

    @property
    def failures(self) -> int:
        return self.failures_of(self._primary_key())

    # -- per model ---------------------------------------------------------------------------
    def runner_of(self, model: str) -> Runner | None:
        return self._runners.get(model)

    def served_of(self, model: str | None) -> int:
        return self._counts.get(model, [0, 0])[0] if model is not None else 0

    def failures_of(self, model: str | None) -> int:
        return self._counts.get(model, [0, 0])[1] if model is not None else 0

    def models(self) -> dict[str, ServingRunner]:
        runners = dict(self._runners)
        return {name: ServingRunner(self, runner) for name, runner in sorted(runners.items())}

    def ready(self) -> bool:
        """The device can answer inferences: at least one model serves (each one by its name)."""
        return bool(self._runners)

    def infer(self, inputs, model: str | None = None):
        key = model or self._primary_key()
        runner = self._runners.get(key) if key is not None else None
        if runner is None:
            raise RuntimeError(f"no model {key!r} is serving" if key else "no model is serving")
        return ServingRunner(self, runner).infer(inputs)

    def _count(self, runner: Runner, latency_ms: float, ok: bool) -> None:
        with self._lock:
            if self._runners.get(runner.name) is runner:
                counts = self._counts.setdefault(runner.name, [0, 0])
                counts[0] += 1
                counts[1] += 0 if ok else 1
        if self.telemetry is not None:
            try:
                self.telemetry.record_inference(latency_ms, ok, model=runner.name)
            except Exception:  # telemetry never stops serving
                pass
