"""What serves right now: the registry agent-io's KServe server reads (`models()`, `ready()`).

The server's handler and the agent's confirm step both go through `ServingRunner.infer`,
which counts inferences and failures since the last switch and records each one in the
telemetry store, so "confirmed on real use" counts what applications really asked.
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
        self._runner: Runner | None = None
        self.telemetry = telemetry
        self.served = 0
        self.failures = 0

    def set(self, runner: Runner | None) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.serving = False
            if runner is not None:
                runner.serving = True
            self._runner = runner
            self.served = self.failures = 0

    @property
    def runner(self) -> Runner | None:
        return self._runner

    def models(self) -> dict[str, ServingRunner]:
        runner = self._runner
        return {runner.name: ServingRunner(self, runner)} if runner is not None else {}

    def ready(self) -> bool:
        return self._runner is not None

    def infer(self, inputs):
        runner = self._runner
        if runner is None:
            raise RuntimeError("no model is serving")
        return ServingRunner(self, runner).infer(inputs)

    def _count(self, runner: Runner, latency_ms: float, ok: bool) -> None:
        with self._lock:
            if runner is self._runner:
                self.served += 1
                self.failures += 0 if ok else 1
        if self.telemetry is not None:
            try:
                self.telemetry.record_inference(latency_ms, ok)
            except Exception:  # telemetry never stops serving
                pass
