"""Generating large fleets for benchmarks: the example fleet's classes, models and
rollouts with N synthetic devices (CSV inventory, or YAML with --format yaml)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "fleet"
CLASSES = ["jetson-vision-standard", "intel-lowpower-detector", "factory-gateway-gpu", "medical-cart-cpu"]
SITES = [f"site-{i:03d}" for i in range(50)]


def device_rows(count: int, seed: int = 7):
    rng = random.Random(seed)
    for i in range(count):
        yield (f"dev-{i:07d}", CLASSES[i % len(CLASSES)], SITES[i % len(SITES)],
               f"line={i % 12};zone={rng.choice('nsew')}", "ed25519:" + rng.randbytes(32).hex())


def generate_fleet(dest: Path, devices: int, fmt: str = "csv") -> Path:
    """Write a fleet repository with `devices` devices into `dest` (replaced)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("devices", ".edgefleet", "__pycache__"))
    (dest / "devices").mkdir()
    if fmt == "csv":
        with open(dest / "devices" / "inventory.csv", "w", encoding="utf-8") as out:
            out.write("id,hardware_class,site,labels,public_key\n")
            for row in device_rows(devices):
                out.write(",".join(row) + "\n")
    else:
        with open(dest / "devices" / "inventory.yaml", "w", encoding="utf-8") as out:
            out.write("apiVersion: edgefleet/v1\nkind: DeviceList\nmetadata:\n  name: inventory\nspec:\n  devices:\n")
            for dev_id, cls, site, labels, key in device_rows(devices):
                pairs = ", ".join(f'{k}: "{v}"' for k, v in (p.split("=") for p in labels.split(";")))
                out.write(f"    - id: {dev_id}\n      hardware_class: {cls}\n      site: {site}\n"
                          f"      labels: {{{pairs}}}\n      public_key: {key}\n")
    return dest
