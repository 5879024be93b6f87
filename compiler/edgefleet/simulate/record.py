"""What a simulation run produced: the typed contract between the engine and its renderers.

The engine (`simulate/engine.py`) fills a `SimulationRecord` as it runs and hands each `Tick`
to an observer (the CLI's live view); the CLI renders the finished record as text, JSON and one
self-contained HTML file. Nothing here does I/O.

Latencies in a simulation are *simulated*: measured CPU latency scaled by a declared per-class
factor (`ClassEnvelope`). Every renderer must label them so (`SIMULATED_LABEL`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

SIMULATED_LABEL = "simulated (measured CPU latency x declared class factor)"

# The state of one device as the live view and the report count it, at one tick.
DeviceView = Literal[
    "unenrolled",   # no agent started yet / nothing served yet
    "serving",      # serving a verified model, in sync with its desired state
    "updating",     # reconciling toward a new desired state (download..confirm)
    "rolled_back",  # serving the previous model after a failed probe or a failed confirm
    "degraded",     # serving through the class's on_accelerator_failure path
    "frozen",       # metadata expired: serving, accepting nothing new
    "offline",      # remote unreachable: serving, buffering reports
    "down",         # agent process killed / not running at this tick
]
DEVICE_VIEWS: tuple[str, ...] = DeviceView.__args__  # type: ignore[attr-defined]

FaultKind = Literal[
    "remote_unreachable",    # one device's remote (or a whole site's) unreachable for a while
    "agent_killed",          # SIGKILL (process mode) or abandoned mid-update (in-process), then restart
    "disk_full",             # the device's state dir runs out of space during a download
    "slow_download",         # the artifact store answers slowly
    "truncated_download",    # the store closes the connection before the declared size
    "corrupted_artifact",    # a blob on the store no longer matches its digest
    "accelerator_failure",   # one hardware class's runtime/accelerator fails
    "clock_skew",            # a device's clock runs ahead or behind
    "forged_report",         # a report signed by the wrong key / replayed lands on the status remote
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WaveView(_Model):
    rollout: str
    wave: int                       # 0-based index into the rollout's waves
    name: str                       # the wave's name as written in the rollout (or "wave N")
    devices: int                    # devices the wave selects (cumulative)
    on_new_version: int             # of those, serving the rollout's `to` version
    gate: str                       # last gate verdict for this wave: pending|pass|fail|inconclusive|waiting


class RolloutView(_Model):
    rollout: str
    model: str
    from_version: str
    to_version: str
    phase: str                      # the rollout status phase as promote wrote it
    current_wave: int
    waves: list[WaveView]


class Tick(_Model):
    sim_time: datetime              # the simulated clock
    wall_s: float                   # seconds since the run started (real time)
    devices: dict[str, int]         # DeviceView -> count (all keys of DEVICE_VIEWS present)
    versions: dict[str, int]        # "model@version" -> devices serving it
    rollouts: list[RolloutView]
    faults_active: dict[str, int]   # FaultKind -> faults in effect at this tick


class Decision(_Model):
    sim_time: datetime
    rollout: str
    wave: int
    action: str                     # advance | wait | pause | rollback | complete (promote's words)
    reason: str
    evidence: dict[str, object] = Field(default_factory=dict)   # counts, percentiles, thresholds


class InvariantResult(_Model):
    name: str                       # e.g. "always_serving_verified"
    description: str                # one sentence a person reads
    checks: int                     # how many times it was checked
    violations: int
    examples: list[str] = Field(default_factory=list)   # first few violations, device and time

    @property
    def holds(self) -> bool:
        return self.violations == 0


class FaultResult(_Model):
    kind: str                       # FaultKind
    injected: int
    description: str                # what was done, in the words of the fault spec
    outcome: str = ""               # what the system did about it (e.g. "old model kept serving: 3/3")


class ClassEnvelope(_Model):
    hardware_class: str
    devices: int
    factor: float                   # declared latency factor against this machine's CPU
    measured_cpu_p50_ms: float      # measured here, real onnxruntime
    measured_cpu_p95_ms: float
    simulated_p50_ms: float         # measured x factor: SIMULATED_LABEL
    simulated_p95_ms: float
    label: str = SIMULATED_LABEL


class SimulationRecord(_Model):
    fleet: str                      # the fleet repository simulated (path as given)
    seed: int
    devices: int
    duration_s: float               # simulated duration asked for
    faults_spec: str                # --faults as given
    mode: str                       # "in-process" or "processes": how the agents ran
    started: datetime               # simulated start time
    wall_s: float                   # real seconds the run took
    ticks: list[Tick]
    decisions: list[Decision]
    invariants: list[InvariantResult]
    faults: list[FaultResult]
    envelopes: list[ClassEnvelope]
    git_bytes_per_update: float     # bytes the git server sent per device update (mean)
    agent_rss_mb: float             # peak resident memory of an agent (process) or per agent (in-process)
    outcome: str                    # one line: e.g. "meter-digits 1.2 rolled back in wave 1 (probe failed on jetson-vision-standard)"

    @property
    def ok(self) -> bool:
        return all(i.holds for i in self.invariants)


Observer = Callable[[Tick], None]
