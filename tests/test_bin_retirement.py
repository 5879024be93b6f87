"""Shrinking `hash_bins` end to end: compile, a device with a cache, the snapshot-key rotation.

python-tuf's client refuses a new snapshot that drops a role its trusted snapshot lists (TUF
spec 5.5.5; `TrustedMetadataSet.update_snapshot`: "New snapshot is missing info"), and it
re-verifies its cached snapshot under the newest root it walked to (`Updater._load_snapshot`
→ `update_snapshot(data, trusted=True)` → `_load_data(Snapshot, data, self.root)`). So after a
shrink compile keeps the old bins listed (and says so, N510) until `edgefleet keys rotate
snapshot`: the next compile's root lists the new snapshot key, no cached snapshot verifies
under it, and the snapshot lists only the bins in use. Every step is the real CLI on the
example fleet's real builds, and every device check is `edgefleet verify --cache`, the
agent's own verification with a metadata cache kept across the change as a device keeps it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgefleet.signing.tree import read_tree
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

pytestmark = pytest.mark.slow

TIMES = ["2026-11-20T09:00:00Z", "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z", "2026-11-20T12:00:00Z"]
DEVICES = ("sm-cart-001", "pb-robot-002")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


def _set_bins(fleet: Path, bins: int) -> None:
    path = fleet / "fleet.yaml"
    text = path.read_text()
    if "hash_bins:" in text:
        head, _, rest = text.partition("hash_bins: ")
        text = head + f"hash_bins: {bins}" + rest[rest.index("\n"):]
    else:
        assert text.count("  signing:\n") == 1
        text = text.replace("  signing:\n", f"  signing:\n    hash_bins: {bins}\n")
    path.write_text(text)


def _snapshot(out: Path) -> tuple[set[str], int]:
    tree = read_tree(out)
    version = tree.snapshot.signed.version
    return set(tree.snapshot.signed.meta), (out / "metadata" / f"{version}.snapshot.json").stat().st_size


def test_shrinking_hash_bins_keeps_cached_devices_updating_and_the_rotation_drops_the_old_bins(
        run_cli, store, tmp_path):
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, fleet, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    keys, out = tmp_path / "keys", tmp_path / "out"
    assert run_cli("keys", "init", keys).code == 0
    devices = [d for d in DEVICES if d in (fleet / "devices/plant-brno.yaml").read_text()
               or d in (fleet / "devices/st-marys-hospital.csv").read_text()]
    assert devices == list(DEVICES), "the example fleet no longer has these devices"

    def compile_(now: str):
        res = run_cli("compile", fleet, "--out", out, "--keys", keys, "--store", store, "--now", now,
                      "--allow-clock-skew", "--format", "json")
        assert res.code == 0, res.out + res.err
        return json.loads(res.out)

    def verify(device: str, now: str, cache: Path | None) -> dict:
        extra = ["--cache", cache] if cache is not None else []
        res = run_cli("verify", out, "--device", device, "--root", out / "metadata/1.root.json", "--now", now,
                      "--allow-clock-skew", "--format", "json", *extra)
        assert res.code == 0, res.out + res.err
        return json.loads(res.out)

    # 256 bins, and devices that cache what they trusted (the agent's tuf/ folder)
    _set_bins(fleet, 256)
    first = compile_(TIMES[0])
    assert first["compile"]["bins"] == 256 and first["compile"]["retired_bins"] == 0
    assert not [d for d in first["diagnostics"] if d["code"] == "N510"]
    roles_256, size_256 = _snapshot(out)
    assert len(roles_256) == 256 + 1
    caches = {device: tmp_path / f"cache-{device}" for device in DEVICES}
    for device, cache in caches.items():
        verify(device, TIMES[0], cache)

    # shrink to 16: the old 256 stay listed, and compile says why and what to do
    _set_bins(fleet, 16)
    shrunk = compile_(TIMES[1])
    assert shrunk["compile"]["bins"] == 16 and shrunk["compile"]["retired_bins"] == 256
    (n510,) = [d for d in shrunk["diagnostics"] if d["code"] == "N510"]
    assert n510["severity"] == "note" and n510["file"].endswith("fleet.yaml") and "256 bin role(s)" in n510["message"]
    assert f"edgefleet keys rotate snapshot --keys {keys}" in n510["hint"]
    roles_shrunk, _ = _snapshot(out)
    assert len(roles_shrunk) == 16 + 256 + 1 and roles_256 <= roles_shrunk
    text = run_cli("compile", fleet, "--out", out, "--keys", keys, "--store", store, "--now", TIMES[1],
                   "--allow-clock-skew")
    assert text.code == 0 and "note[N510]" in text.out + text.err
    assert "16 bins, 256 retired bins still listed" in text.out
    for device, cache in caches.items():  # a cached snapshot listing the 256 is not contradicted
        assert verify(device, TIMES[1], cache)["versions"]["bins"] >= 1

    # the operator's step: rotate the snapshot key, compile again
    assert run_cli("keys", "rotate", "snapshot", "--keys", keys).code == 0
    rotated = compile_(TIMES[2])
    assert rotated["compile"]["retired_bins"] == 0 and rotated["compile"]["versions"]["root"] == 2
    assert not [d for d in rotated["diagnostics"] if d["code"] == "N510"]
    roles, size = _snapshot(out)
    assert roles == {f"bins-{i:x}.json" for i in range(16)} | {"targets.json"}
    assert size * 5 < size_256, (size, size_256)  # proportional to the 16 bins in use, not the 256 before
    for device, cache in caches.items():
        # the cache holds root v1 and the snapshot that lists 256 + 16 roles: the device walks to
        # root v2, its old snapshot no longer verifies, and the 17-role snapshot is accepted
        got = verify(device, TIMES[2], cache)
        assert got["versions"]["root"] == 2 and got["device"] == device
        assert verify(device, TIMES[2], None)["versions"]["root"] == 2  # and a device new to the fleet
    # a later compile keeps it that way, and prunes the dropped bins' files (no version lists them now)
    later = compile_(TIMES[3])
    assert later["compile"]["retired_bins"] == 0 and len(_snapshot(out)[0]) == 17
    assert {p.name.split(".")[1] for p in (out / "metadata/bins").rglob("*.json")} == {f"bins-{i:x}" for i in range(16)}
