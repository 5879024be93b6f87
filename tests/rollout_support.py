"""A real small fleet for rollout tests: enrolled device identities, a real signed desired-state
tree committed to a real git branch, and reports signed by agent-io's own report code.

Builds are stand-in records (tests/desired_support.py): status and promote read the
desired-state tree's TUF metadata and the devices' signed reports, never artifact bytes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import git

from edgefleet.agent.conditions import Condition
from edgefleet.agent.identity import DeviceIdentity, enroll
from edgefleet.agent.report import Generation, Latency, Report, TelemetrySummary, WorkloadStatus, sign_report
from edgefleet.desired.compile import prepare
from edgefleet.desired.gitio import commit_tree
from edgefleet.pipeline.compile import published_files
from edgefleet.desired.release import read_previous_releases
from edgefleet.load.repo import read_repository
from edgefleet.signing.keys import init_keys
from edgefleet.signing.publish import TargetFile, publish
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import synthetic_artifacts

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
CLASSES = ("medical-cart-cpu", "intel-lowpower-detector")

ROLLOUT = """\
# A rollout for tests: a pilot site, then half, then everyone.
apiVersion: edgefleet/v1
kind: Rollout
metadata:
  name: meter-rollout
spec:
  model: meter-digits
  from_version: "1.0.0"
  to_version: "1.1.0"
  selector: {}
  waves:
    - name: pilot
      selector: {sites: [site-a]}
      gates: {min_reporting: 0.9, max_failure_rate: 0.0, max_latency_p95_ms: 30, soak: 1h, timeout: 6h, max_offline: 0.2}
    - name: half
      percent: 50
      gates: {min_reporting: 0.8, max_failure_rate: 0.1, soak: 2h, timeout: 12h, max_offline: 0.2}
    - name: all
      percent: 100
      gates: {min_reporting: 0.8, max_failure_rate: 0.1, soak: 2h, timeout: 12h, max_offline: 0.2}
  rollback: {on_gate_failure: POLICY}
"""


def ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fleet:
    root: Path  # the fleet repository (a git work tree)
    desired: Path  # the desired-state tree (a git work tree, branch desired-state)
    keys: Path
    identities: dict[str, DeviceIdentity]
    classes: dict[str, str]
    sites: dict[str, str]
    counters: dict[str, int] = field(default_factory=dict)
    envelopes: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def rollout_file(self) -> Path:
        return self.root / "rollouts/meter-rollout.yaml"

    def compile(self, when: datetime = T0) -> dict[str, tuple[str, int]]:
        """Compile the fleet as it is into the desired tree and commit it; (sha256, counter) per device."""
        return compile_and_commit(self.root, self.desired, self.keys, when)

    def generation(self) -> dict[str, tuple[str, int]]:
        previous = read_previous_releases(self.desired)
        return {d: (entry.sha256, entry.release_counter) for d in self.identities
                for entry in [previous.entries[_target_path(d)]]}

    def report(self, device: str, at: datetime, *, serving: str | None = "1.1.0", update: str = "Committed",
               ready: bool = True, failed: str | None = None, latency: tuple[float, float, float] | None = (5, 9, 12),
               generation: tuple[str, int] | None = None, counter: int | None = None,
               identity: DeviceIdentity | None = None, as_device: str | None = None) -> bytes:
        """A signed report; appended to `envelopes` under `as_device` (default: the device)."""
        sha, release = generation or self.generation()[device]
        counter = counter if counter is not None else self.counters.get(device, 0) + 1
        self.counters[device] = max(self.counters.get(device, 0), counter)
        conditions = [Condition(type="Ready", status="True" if ready else "False", reason="Serving" if ready else "NotServing",
                                message="", observed_generation=sha, last_transition=ts(at))]
        if failed:
            conditions.append(Condition(type=failed, status="True", reason="ProbeFailed", message="probe output off",
                                        observed_generation=sha, last_transition=ts(at)))
        report = Report(
            device=device, counter=counter, observed_at=ts(at),
            generation=Generation(target_sha256=sha, release_counter=release),
            workloads=[WorkloadStatus(model="meter-digits", rollout="meter-rollout", desired_version="1.1.0",
                                      serving_version=serving, update=update)],
            conditions=conditions,
            telemetry=TelemetrySummary(inferences=100, errors=0,
                                       latency_ms=Latency(p50=latency[0], p95=latency[1], p99=latency[2])
                                       if latency else None))
        envelope = sign_report(report, identity or self.identities[device])
        self.envelopes.append((as_device or device, envelope))
        return envelope


def _target_path(device_id: str) -> str:
    from edgefleet.signing import device_target_path

    return device_target_path(device_id)


def make_fleet(tmp_path: Path, sites: dict[str, int], policy: str = "pause", rollout: str = ROLLOUT) -> Fleet:
    """A fleet of enrolled devices: `sites` maps a site to its number of devices (classes alternate)."""
    root = tmp_path / "fleet"
    root.mkdir()
    shutil.copy(EXAMPLE_FLEET / "fleet.yaml", root / "fleet.yaml")
    shutil.copytree(EXAMPLE_FLEET / "hardware", root / "hardware")
    shutil.copytree(EXAMPLE_FLEET / "models", root / "models", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "rollouts").mkdir()
    (root / "rollouts/meter-rollout.yaml").write_text(rollout.replace("POLICY", policy), encoding="utf-8")
    identities, classes, site_of = {}, {}, {}
    lines = ["id,hardware_class,site,labels,public_key"]
    n = 0
    for site, count in sites.items():
        for _ in range(count):
            device = f"dev-{n:04d}"
            identity = enroll(tmp_path / "devices" / device, device)
            identities[device] = identity
            classes[device] = CLASSES[n % 2]
            site_of[device] = site
            lines.append(f"{device},{classes[device]},{site},,{identity.public_key}")
            n += 1
    (root / "devices").mkdir()
    (root / "devices/inventory.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    repo = git.Repo.init(root)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "test").set_value("user", "email", "test@localhost")
    repo.git.add("--all")
    repo.git.commit("-q", "-m", "fleet")
    keys = tmp_path / "keys"
    init_keys(keys)
    desired = tmp_path / "desired"
    fleet = Fleet(root, desired, keys, identities, classes, site_of)
    fleet.compile()
    return fleet


def compile_and_commit(root: Path, desired: Path, keys_dir: Path, when: datetime) -> None:
    from edgefleet.signing.keys import load_keys

    repo, diags = read_repository(root)
    assert not [d for d in diags if d.is_error], diags
    compiler, problems = prepare(repo, synthetic_artifacts(repo))
    assert compiler is not None, problems
    previous = read_previous_releases(desired)
    targets = (TargetFile(d.path, d.data, d.custom()) for d in compiler.stream(previous, previous.next_release))
    spec = repo.fleet.doc.spec
    publish(desired, targets, load_keys(keys_dir), spec.expiry, when, spec.signing.hash_bins)
    commit_tree(desired, "desired-state", "compile", when, files=published_files(desired))


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
