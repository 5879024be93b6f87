"""Benchmark: the whole loop with many real agents on this machine; prints JSON.

    python bench/bench_simulate.py [--devices 200] [--mode in-process|processes] [--faults SPEC]
                                   [--tick 10m] [--duration 3h] [--compare 8] [--tmpdir /dev/shm]

Runs `run_simulation` on the example fleet (its rollout made quick: no spread, no maintenance
window, 10-minute soaks) until the rollout is terminal, and reports:
- per wave: from the wave going live to every device of it serving the new version
  (`converge`): simulated seconds it took at most (`within_sim_seconds`, whole ticks: devices poll
  after the tick's promote and compile) and the wall seconds of those ticks;
- bytes the git server sent per device update (counting proxy in front of `git daemon`);
- agent memory (in-process: resident growth of this process per agent; processes: the largest
  agent process's peak RSS);
- the invariant counts, the run's wall time and seconds per device poll.
`--compare N` also runs N devices for 3 ticks in each mode and reports seconds per device poll
and memory per agent for both, to say which scales better here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def quick_rollout(fleet: Path) -> str:
    path = fleet / "rollouts" / "meter-digits-1-1.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^  spread: .*\n", "", text)
    text = re.sub(r"(?m)^  maintenance:.*\n(?:    .*\n)+", "", text)
    text = re.sub(r"soak: \d+h", "soak: 10m", text)
    path.write_text(text)
    return "bench: no spread, no maintenance window, 10m soaks"


def converge(record) -> list[dict]:
    """Per (rollout, wave): from the decision that made it live to the first tick it is all on the new version."""
    out = []
    live = [d for d in record.decisions if d.action in ("start", "advance")]
    for d in live:
        tick0 = next((t for t in record.ticks if t.sim_time >= d.sim_time), None)
        done = None
        for t in record.ticks:
            if t.sim_time < d.sim_time:
                continue
            view = next((r for r in t.rollouts if r.rollout == d.rollout), None)
            wave = view.waves[d.wave] if view is not None and d.wave < len(view.waves) else None
            if wave is not None and wave.devices and wave.on_new_version == wave.devices:
                done = t
                break
        name = next((w.name for r in record.ticks[-1].rollouts if r.rollout == d.rollout for w in r.waves
                     if w.wave == d.wave), str(d.wave))
        out.append({"rollout": d.rollout, "wave": name,
                    "devices": next((w.devices for r in record.ticks[-1].rollouts if r.rollout == d.rollout
                                     for w in r.waves if w.wave == d.wave), None),
                    "converged": done is not None,
                    # Devices poll after the tick's promote and compile: "within" counts the live tick.
                    "within_sim_seconds": (done.sim_time - d.sim_time).total_seconds() + record.ticks[1:2][0].sim_time
                    .timestamp() - record.ticks[0].sim_time.timestamp() if done and len(record.ticks) > 1 else None,
                    "wall_seconds": round(done.wall_s - _wall_before(record, tick0), 1) if done and tick0 else None})
    return out


def _wall_before(record, tick) -> float:
    """Wall seconds when `tick` began: the end of the tick before it (0 for the first)."""
    i = record.ticks.index(tick)
    return record.ticks[i - 1].wall_s if i else 0.0


def run(devices: int, mode: str, duration: float, tick: float, faults: str, store: Path | None,
        tmpdir: str | None, settle: bool = True):
    from edgefleet.simulate.engine import ScenarioStep, SimulationConfig, run_simulation

    config = SimulationConfig(repo=ROOT / "fleet", devices=devices, duration_s=duration, faults=faults, seed=1,
                              mode=mode, tick_s=tick, promote_every=1, stop_when_settled=settle,
                              store=store, tmpdir=Path(tmpdir) if tmpdir else None,
                              scenario=[ScenarioStep("quick", None, quick_rollout)])
    t0 = time.perf_counter()
    record = run_simulation(config)
    wall = time.perf_counter() - t0
    polls = devices * (len(record.ticks) + 2)  # ticks + the two drain rounds
    return record, wall, polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--mode", default="in-process", choices=("in-process", "processes"))
    parser.add_argument("--faults", default="")
    parser.add_argument("--duration", default="3h")
    parser.add_argument("--tick", default="10m")
    parser.add_argument("--store", type=Path, help="a built store of the example fleet (else built now)")
    parser.add_argument("--compare", type=int, default=0, metavar="N", help="also compare both modes at N devices")
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()

    from edgefleet.simulate.faults import parse_duration

    duration, tick = parse_duration(args.duration, "--duration"), parse_duration(args.tick, "--tick")
    store = args.store
    with tempfile.TemporaryDirectory(prefix="bench-sim-", dir=args.tmpdir) as tmp:
        if store is None:
            import shutil

            from edgefleet.cli import main as cli

            store = Path(tmp) / "store"
            fleet = Path(tmp) / "fleet"
            shutil.copytree(ROOT / "fleet", fleet, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
            assert cli(["build", str(fleet), "--store", str(store)]) == 0
        result: dict = {"benchmark": "simulate", "devices": args.devices, "mode": args.mode, "faults": args.faults}
        if args.devices:
            record, wall, polls = run(args.devices, args.mode, duration, tick, args.faults, store, args.tmpdir)
            result.update({
                "ticks": len(record.ticks), "tick_simulated_seconds": tick, "wall_seconds": round(wall, 1),
                "wall_seconds_per_device_poll": round(wall / polls, 3),
                "converge": converge(record),
                "git_bytes_per_device_update": record.git_bytes_per_update,
                "agent_memory_mb": record.agent_rss_mb,
                "invariants": {i.name: {"checks": i.checks, "violations": i.violations} for i in record.invariants},
                "faults": {f.kind: f.injected for f in record.faults},
                "outcome": record.outcome, "all_invariants_hold": record.ok,
            })
        if args.devices:
            print(json.dumps(result, sort_keys=True), file=sys.stderr, flush=True)  # kept if the comparison fails
        if args.compare:
            compare = {}
            for mode in ("in-process", "processes"):
                try:
                    record, wall, polls = run(args.compare, mode, 3 * tick, tick, "", store, args.tmpdir, settle=False)
                except Exception as exc:  # noqa: BLE001 - report it beside the other numbers
                    compare[mode] = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                compare[mode] = {"devices": args.compare, "polls": polls, "wall_seconds": round(wall, 1),
                                 "wall_seconds_per_device_poll": round(wall / polls, 3),
                                 "agent_memory_mb": record.agent_rss_mb,
                                 "git_bytes_per_device_update": record.git_bytes_per_update,
                                 "all_invariants_hold": record.ok}
            result["compare_modes"] = compare
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
