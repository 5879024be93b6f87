"""The simulated devices: each one a real agent (`agent.cycle.Agent`) with its own state
directory, enrolled key, telemetry outbox and clock, run either in this process (the default)
or as a real `edgefleet agent run --once --now T` process per poll.

What differs from a device, and says so:
- accelerators: no GPU or NPU here, so a class's execution provider / OpenVINO device is the CPU
  (EDGEFLEET_AGENT_TEST_PROVIDER, the agent's own test override); an accelerator failure asks for
  a provider that does not exist, which the real runtime then refuses to load;
- latency: every inference waits (factor - 1) times its measured time
  (EDGEFLEET_AGENT_SIM_LATENCY_FACTOR), so a slow class really misses its budget;
- agent killed: processes mode is a real SIGKILL at a journal step (EDGEFLEET_AGENT_TEST_KILL_AT);
  in-process mode abandons the instance right after that step's durable journal save (no kernel
  kill) and starts a new one from the state directory, which replays the journal.
The env variables are process-wide, so in-process agents run one at a time with them set.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edgefleet.agent.cycle import Agent, AgentConfig, CycleResult
from edgefleet.agent.errors import AgentError
from edgefleet.simulate.fleet import BRANCH

PROVIDER_ENV = "EDGEFLEET_AGENT_TEST_PROVIDER"
FACTOR_ENV = "EDGEFLEET_AGENT_SIM_LATENCY_FACTOR"
KILL_ENV = "EDGEFLEET_AGENT_TEST_KILL_AT"
CONFIRM_INFERENCES = 3
SOAK = "0s"


class Abandoned(BaseException):
    """The in-process agent "dies" here: no except clause of the agent catches a BaseException."""


class SimAgent(Agent):
    """The real agent; `kill_at` abandons it right after that step's journal save."""

    kill_at: str | None = None

    def _enter(self, journal, step, path=None, model=None):
        journal = super()._enter(journal, step, path, model)
        if self.kill_at == step:
            self.kill_at = None
            raise Abandoned(step)
        return journal


@dataclass
class SimDevice:
    id: str
    hardware_class: str
    site: str
    runtime: str                      # the class's runtime name (onnxruntime, openvino, tensorrt)
    state_dir: Path
    remote_kind: str                  # "git" or "http" (the tree mirror)
    factor: float = 1.0
    # Set by the engine per tick:
    remote: str = ""
    store: str = ""
    status_remote: str = ""
    offset_s: float = 0.0             # poll spread within the tick
    skew_s: float = 0.0               # clock_skew fault
    accelerator_failed: bool = False
    kill_at: str | None = None        # agent_killed fault armed at this step
    free_margin: int | None = None    # disk_full fallback (free-space check told the disk is full)
    # State:
    agent: SimAgent | None = None
    telemetry: object = None
    identity: object = None
    down: bool = False                # killed at this tick
    last_status: dict = field(default_factory=dict)
    last_result: CycleResult | None = None
    allowed: set[str] = field(default_factory=set)
    desired_run: str | None = None    # the run digest of its newest desired state
    generation: str | None = None
    cycles: int = 0
    peak_rss_kb: int = 0              # processes mode: the largest agent process's peak RSS (wait4)
    queued: int = 0
    offline_cycles: int = 0

    def env(self) -> dict[str, str]:
        provider = "CPU" if self.runtime == "openvino" else "CPUExecutionProvider"
        if self.accelerator_failed:
            provider = "NoSuchDevice" if self.runtime == "openvino" else "NoSuchExecutionProvider"
        env = {PROVIDER_ENV: provider, FACTOR_ENV: repr(float(self.factor))}
        return env

    def clock_at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.offset_s + self.skew_s)


@contextlib.contextmanager
def scoped_env(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pending_on_disk(dev: SimDevice) -> int:
    """Reports queued in the device's telemetry file, read by opening it (no agent holds it open)."""
    from edgefleet.agent.telemetry import TelemetryStore

    store = TelemetryStore(dev.state_dir / "telemetry.db", state_dir=dev.state_dir)
    try:
        return len(store.pending_reports())
    finally:
        store.close()


class InProcess:
    """Agents as instances in this process, cycled one at a time."""

    mode = "in-process"

    def __init__(self, trusted_root: bytes):
        self.trusted_root = trusted_root

    def _open(self, dev: SimDevice, now_ref: list) -> None:
        from edgefleet.agent.identity import load_identity
        from edgefleet.agent.registry import Registry
        from edgefleet.agent.telemetry import TelemetryStore

        dev.telemetry = TelemetryStore(dev.state_dir / "telemetry.db", state_dir=dev.state_dir)
        dev.identity = load_identity(dev.state_dir)
        config = AgentConfig(state_dir=dev.state_dir, device=dev.id, remote=dev.remote, trusted_root=self.trusted_root,
                             branch=BRANCH, store=dev.store, status_remote=None,
                             confirm_inferences=CONFIRM_INFERENCES, soak_s=0.0, clock=lambda: now_ref[0])
        dev.agent = SimAgent(config, Registry(dev.telemetry))
        dev._now_ref = now_ref  # type: ignore[attr-defined]
        dev.agent.start()  # replays the journal of an abandoned predecessor

    def abandon(self, dev: SimDevice) -> None:
        """The instance is dropped as a killed process would be (its outbox stays on disk)."""
        if dev.telemetry is not None:
            dev.telemetry.close()
        dev.agent, dev.telemetry = None, None

    def cycle(self, dev: SimDevice, now: datetime) -> str:
        """One poll of `dev` at its clock; returns "ok", "killed" or "error: …"."""
        from edgefleet.agent.artifacts import FREE_MARGIN
        from edgefleet.agent.reporting import after_cycle

        with scoped_env(dev.env()):
            if dev.agent is None:
                self._open(dev, [dev.clock_at(now)])
            agent = dev.agent
            dev._now_ref[0] = dev.clock_at(now)  # type: ignore[attr-defined]
            agent.config.remote, agent.config.store = dev.remote, dev.store
            agent.config.free_margin = dev.free_margin if dev.free_margin is not None else FREE_MARGIN
            agent.kill_at = dev.kill_at
            try:
                result = agent.cycle()
            except Abandoned:
                dev.kill_at = None
                self.abandon(dev)
                return "killed"
            except AgentError as exc:
                result = CycleResult(False, exc.message, code=exc.code)
            dev.last_result = result
            dev.last_status = after_cycle(agent, result, dev.telemetry, dev.identity)
        return "ok"

    def push(self, dev: SimDevice) -> dict:
        from edgefleet.agent.reporting import push_pending

        if dev.telemetry is None:
            return {}
        return push_pending(dev.status_remote, dev.id, dev.telemetry, work_dir=dev.state_dir / "status.git")

    def serving_digest(self, dev: SimDevice) -> str | None:
        runner = dev.agent.registry.runner if dev.agent is not None else None
        return runner.digest if runner is not None else None

    def pending(self, dev: SimDevice) -> int:
        if dev.telemetry is not None:
            return len(dev.telemetry.pending_reports())
        return _pending_on_disk(dev)

    def restart(self, dev: SimDevice) -> None:
        """A reboot: the next cycle starts a new instance (and loads the model again)."""
        self.abandon(dev)

    def close(self, dev: SimDevice) -> None:
        self.abandon(dev)


def _run_measured(args: list[str], env: dict, timeout: float) -> tuple[int | None, str, int]:
    """Run one agent process; (exit code or None on timeout, stderr, its peak RSS in KiB from wait4)."""
    import tempfile
    import threading

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
        timed_out: list[bool] = []

        def kill() -> None:
            timed_out.append(True)
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()[-4000:].decode("utf-8", "replace")
    return (None if timed_out else code), text, usage.ru_maxrss


class Processes:
    """Agents as real `edgefleet agent run --once --now T` processes, one per poll."""

    mode = "processes"

    def __init__(self, root_file: Path):
        self.root_file = root_file

    def cycle(self, dev: SimDevice, now: datetime) -> str:
        from edgefleet.agent.status import read_status

        clock = dev.clock_at(now).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        args = [sys.executable, "-m", "edgefleet", "agent", "run", "--state-dir", str(dev.state_dir),
                "--device", dev.id, "--remote", dev.remote, "--root", str(self.root_file), "--store", dev.store,
                "--status-remote", dev.status_remote, "--once", "--now", clock, "--soak", SOAK,
                "--confirm-inferences", str(CONFIRM_INFERENCES), "--format", "json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_AGENT_TEST_")}
        env.update(dev.env())
        if dev.kill_at:
            env[KILL_ENV] = dev.kill_at
        if dev.free_margin is not None:
            return "error: the disk-full fallback needs in-process agents"
        returncode, stderr, rss_kb = _run_measured(args, env, timeout=300)
        dev.peak_rss_kb = max(dev.peak_rss_kb, rss_kb)
        if returncode is None:
            return "error: agent process timed out"
        if returncode == -9:
            dev.kill_at = None
            return "killed"
        dev.last_status = read_status(dev.state_dir)
        dev.last_result = CycleResult(bool(dev.last_status.get("in_sync")), dev.last_status.get("reason", ""),
                                      code=dev.last_status.get("code"),
                                      offline=any(c.get("type") == "Offline" and c.get("status") == "True"
                                                  for c in dev.last_status.get("conditions", [])))
        if returncode not in (0, 1):
            return f"error: agent exited {returncode}: {stderr.strip()[-300:]}"
        return "ok"

    def push(self, dev: SimDevice) -> dict:
        return {}  # the agent process pushed its own reports

    def serving_digest(self, dev: SimDevice) -> str | None:
        """Not resident: what the device would serve is its active slot (checked by the caller)."""
        serving = dev.last_status.get("serving") or {}
        digest = serving.get("digest") or ""
        return digest.removeprefix("sha256:") or None

    def pending(self, dev: SimDevice) -> int:
        return _pending_on_disk(dev)

    def restart(self, dev: SimDevice) -> None:
        pass  # every poll is a new process

    def close(self, dev: SimDevice) -> None:
        pass
