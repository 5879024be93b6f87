"""The simulation's own fleet: a git copy of the given repository whose inventory is N generated
devices (over the fleet's hardware classes and sites), each enrolled with the real agent identity
code, then keys, build and the first `compile --commit`, all by the real pipeline functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edgefleet.simulate.errors import SimulationError

BRANCH = "desired-state"
IDENTITY_ENV = {"GIT_AUTHOR_NAME": "edgefleet simulate", "GIT_AUTHOR_EMAIL": "simulate@localhost",
                "GIT_COMMITTER_NAME": "edgefleet simulate", "GIT_COMMITTER_EMAIL": "simulate@localhost"}


@dataclass(frozen=True)
class SimDeviceSpec:
    id: str
    hardware_class: str
    site: str
    labels: dict[str, str]


def git(cwd: Path, *args: str, when: datetime | None = None) -> str:
    import os

    env = {**os.environ, **IDENTITY_ENV}
    if when is not None:
        stamp = f"{int(when.timestamp())} +0000"
        env.update(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimulationError("E804", f"git {' '.join(args[:2])} failed in {cwd}: {proc.stderr.strip()[:300]}",
                              "the simulation's work directory must be writable")
    return proc.stdout


def read_fleet(root: Path):
    """The fleet as the validator reads it; E802 when `root` is not a valid fleet repository."""
    from edgefleet.pipeline.validate import validate_repository

    if not (Path(root) / "fleet.yaml").is_file():
        raise SimulationError("E802", f"{root} is not a fleet repository (no fleet.yaml)",
                              "give the folder holding fleet.yaml (e.g. the example fleet: fleet/)", str(root))
    repo, diags = validate_repository(Path(root))
    errors = [d for d in diags if d.is_error]
    if errors:
        d = errors[0]
        where = f"{d.location.path}:{d.location.line}" if d.location.line else d.location.path
        raise SimulationError("E802", f"{where}: error[{d.code}]: {d.message} ({len(errors)} error(s) in the fleet)",
                              "run `edgefleet validate` on it and fix what it reports", str(root))
    return repo


def plan_devices(repo, count: int) -> list[SimDeviceSpec]:
    """`count` devices over the (class, site) pairs the fleet's inventory has, round robin."""
    pairs: dict[tuple[str, str], dict[str, str]] = {}
    for loaded in repo.devices:
        d = loaded.doc
        pairs.setdefault((d.hardware_class, d.site), dict(d.labels))
    if not pairs:
        classes = sorted(repo.hardware) if hasattr(repo, "hardware") else []
        pairs = {(c, "sim-site"): {} for c in classes}
    if not pairs:
        raise SimulationError("E802", "the fleet has no devices and no hardware classes to simulate",
                              "add a hardware class and at least one device to the inventory")
    keys = sorted(pairs)
    return [SimDeviceSpec(f"sim-{i + 1:04d}", keys[i % len(keys)][0], keys[i % len(keys)][1],
                          pairs[keys[i % len(keys)]]) for i in range(count)]


def copy_fleet(src: Path, dest: Path, devices: list[SimDeviceSpec], public_keys: dict[str, str],
               when: datetime) -> None:
    """The fleet files (no build outputs) with the generated inventory; unfinished rollouts start over."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "artifacts", "desired",
                                                              "*.pyc"), symlinks=False)
    for old in (dest / "devices").glob("*") if (dest / "devices").is_dir() else []:
        if old.is_file():
            old.unlink()
    (dest / "devices").mkdir(exist_ok=True)
    lines = ["id,hardware_class,site,labels,public_key"]
    for d in devices:
        labels = ";".join(f"{k}={v}" for k, v in sorted(d.labels.items()))
        lines.append(f"{d.id},{d.hardware_class},{d.site},{labels},{public_keys[d.id]}")
    (dest / "devices" / "simulated.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    restart_rollouts(dest, when)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "--all")
    git(dest, "commit", "-q", "-m", f"simulated fleet: {len(devices)} devices", when=when)


def restart_rollouts(root: Path, when: datetime) -> None:
    """A rollout left progressing or paused starts again (phase pending) at the simulated start."""
    from edgefleet.rollout.document import replace_status
    from edgefleet.spec.rollout import RolloutStatus

    for path in sorted((root / "rollouts").glob("*.y*ml")) if (root / "rollouts").is_dir() else []:
        text = path.read_text(encoding="utf-8")
        phase = re.search(r"(?m)^status:\s*\n(?:[ \t].*\n)*?[ \t]+phase:\s*(\w+)", text)
        if phase and phase.group(1) in ("progressing", "paused"):
            path.write_text(replace_status(text, RolloutStatus()), encoding="utf-8")


def commit_all(root: Path, message: str, when: datetime) -> bool:
    git(root, "add", "--all")
    if not git(root, "status", "--porcelain").strip():
        return False
    git(root, "commit", "-q", "-m", message, when=when)
    return True


def build_store(root: Path, store: Path) -> None:
    from edgefleet.pipeline.build import BuildRequest, build

    outcome = build(BuildRequest(root=root, store=str(store)))
    if not outcome.ok:
        first = next((d for d in outcome.diagnostics if d.is_error), None)
        why = f"error[{first.code}]: {first.message}" if first else "a build failed"
        raise SimulationError("E803", f"building the fleet's artifacts failed: {why}",
                              "run `edgefleet build` on the fleet and fix what it reports", str(root))


def compile_commit(root: Path, desired_tree: Path, keys: Path, store: Path, now: datetime) -> str | None:
    from edgefleet.pipeline.compile import CompileRequest, compile_desired_state

    result = compile_desired_state(CompileRequest(root=root, out=desired_tree, now=now, keys_dir=keys,
                                                  store=str(store), commit=BRANCH, commit_date=now))
    if result.summary is None:
        first = next((d for d in result.diagnostics if d.is_error), None)
        why = f"error[{first.code}]: {first.message}" if first else "compile failed"
        raise SimulationError("E803", f"compile failed: {why}", "run `edgefleet compile` on the simulated fleet",
                              str(root))
    return result.summary.commit
