"""The output tree is untrusted: publish follows no link and writes, truncates or removes nothing outside it.

Each case publishes a first version, then plants what an attacker with push access to the
desired-state branch (or a local user) could, and publishes a changed fleet: a link is
refused with E544 naming it, before anything is written; the tree and a directory outside
it stay byte-for-byte as they were.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet.desired.release import read_previous_releases
from edgefleet.signing import SigningError, device_target_path
from edgefleet.signing.keys import init_keys, load_keys
from edgefleet.signing.layout import metadata_file, target_file
from edgefleet.signing.publish import publish
from edgefleet.signing.tree import read_tree
from edgefleet.signing.verify import verify_device
from edgefleet.spec.fleet import ExpiryWindows
from tests.signing_support import T0, target, targets, tree_files

EXPIRY = ExpiryWindows()
T1 = T0 + timedelta(hours=1)
DEV = "dev-00007"


@pytest.fixture
def world(tmp_path):
    """A published tree, its keys, and a directory outside it holding a secret."""
    init_keys(tmp_path / "keys")
    keys = load_keys(tmp_path / "keys")
    out = tmp_path / "out"
    publish(out, targets(40), keys, EXPIRY, T0)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"do not touch\n")
    (outside / "sub" / "deeper").write_bytes(b"nor this\n")
    return out, keys, outside


def _next_target_name(out: Path) -> Path:
    """Where the next publish writes DEV's new state: a name anyone who knows the fleet can predict."""
    data = target(DEV, 2).data
    return out / target_file(device_target_path(DEV), hashlib.sha256(data).hexdigest())


def _link_dir(path: Path, to: Path) -> None:
    shutil.rmtree(path)
    path.symlink_to(to, target_is_directory=True)


def plant_devices_dir(out, outside):
    _link_dir(out / "targets" / "devices", outside)
    return "targets/devices"


def plant_shard_dir(out, outside):
    shard = _next_target_name(out).parent
    _link_dir(shard, outside)
    return shard.relative_to(out).as_posix()


def plant_predictable_target(out, outside):
    path = _next_target_name(out)
    path.symlink_to(outside / "secret")
    return path.relative_to(out).as_posix()


def plant_dangling_target(out, outside):
    path = _next_target_name(out)
    path.symlink_to(outside / "created-by-publish")  # a write through it would create this
    return path.relative_to(out).as_posix()


def plant_metadata_dir(out, outside):
    shutil.copytree(out / "metadata", outside / "metadata-copy")  # reads would succeed through it
    _link_dir(out / "metadata", outside / "metadata-copy")
    return "metadata"


def plant_bin_shard(out, outside):
    shard = (out / "metadata" / "bins").iterdir().__next__()
    _link_dir(shard, outside)
    return shard.relative_to(out).as_posix()


def plant_timestamp(out, outside):
    (outside / "timestamp.json").write_bytes((out / "metadata" / "timestamp.json").read_bytes())
    (out / "metadata" / "timestamp.json").unlink()
    (out / "metadata" / "timestamp.json").symlink_to(outside / "timestamp.json")
    return "metadata/timestamp.json"


def plant_next_snapshot(out, outside):
    (out / "metadata" / "2.snapshot.json").symlink_to(outside / "secret")
    return "metadata/2.snapshot.json"


def plant_next_bin(out, outside):
    path = out / metadata_file("2.bins-0.json")
    path.symlink_to(outside / "secret")
    return path.relative_to(out).as_posix()


def plant_targets_dir(out, outside):
    _link_dir(out / "targets", outside)
    return "targets"


PLANTED = [
    ("symlink-at-targets", plant_targets_dir),
    ("symlink-at-targets-devices", plant_devices_dir),
    ("symlink-at-a-shard-dir", plant_shard_dir),
    ("symlink-at-a-predictable-target-name", plant_predictable_target),
    ("dangling-symlink-at-a-predictable-target-name", plant_dangling_target),
    ("symlink-at-metadata", plant_metadata_dir),
    ("symlink-at-a-bin-shard", plant_bin_shard),
    ("symlink-at-timestamp", plant_timestamp),
    ("symlink-at-the-next-snapshot-name", plant_next_snapshot),
    ("symlink-at-the-next-bin-name", plant_next_bin),
]


@pytest.mark.parametrize("plant", [p for _, p in PLANTED], ids=[i for i, _ in PLANTED])
def test_a_link_in_the_tree_is_refused_and_nothing_is_written_anywhere(world, plant):
    out, keys, outside = world
    rel = plant(out, outside)
    tree_before = _lstat_tree(out)
    outside_before = tree_files(outside)
    with pytest.raises(SigningError) as exc:
        publish(out, targets(40, changed={DEV: 2}), keys, EXPIRY, T1)
    assert exc.value.code == "E544"
    assert rel in exc.value.message and exc.value.path == f"{out}/{rel}"
    assert "remove" in exc.value.hint
    assert _lstat_tree(out) == tree_before
    assert tree_files(outside) == outside_before
    assert not (outside / "created-by-publish").exists()


@pytest.mark.parametrize("plant", [plant_devices_dir, plant_metadata_dir, plant_timestamp],
                         ids=["targets-devices", "metadata", "timestamp"])
def test_reading_a_tree_refuses_links_too(world, plant):
    out, _, outside = world
    rel = plant(out, outside)
    if rel.startswith("metadata"):
        with pytest.raises(SigningError) as exc:
            read_previous_releases(out)
        assert exc.value.code == "E544" and rel in exc.value.message
    with pytest.raises(SigningError) as exc:
        publish(out, targets(40), load_keys(out.parent / "keys"), EXPIRY, T1)
    assert exc.value.code == "E544"


def test_a_hard_link_at_a_target_name_is_never_written_through(world):
    """Git cannot carry a hard link; a local one is harmless: no existing name is opened for writing."""
    out, keys, outside = world
    victim = outside / "secret"
    path = _next_target_name(out)
    os.link(victim, path)
    kept = out / target_file(device_target_path("dev-00003"),
                             hashlib.sha256(target("dev-00003").data).hexdigest())
    kept.unlink()
    os.link(victim, kept)  # a kept target's name, now sharing the outside file's inode
    publish(out, targets(40, changed={DEV: 2}), keys, EXPIRY, T1)
    assert victim.read_bytes() == b"do not touch\n"
    assert path.read_bytes() == target(DEV, 2).data and kept.read_bytes() == target("dev-00003").data
    assert os.stat(path).st_ino != os.stat(victim).st_ino
    verify_device(out, DEV, (out / "metadata/1.root.json").read_bytes(), T1 + timedelta(minutes=5))


FOREIGN = [
    "README.md",
    "metadata/README",
    "metadata/3.custom.json",
    "metadata/1.bins-0.json",                     # a bin outside its shard folder
    "metadata/bins/0/notes.txt",
    "metadata/bins/0/9.bins-1.json",              # a bin name in another bin's shard
    "targets/notes.txt",
    "targets/devices/notes.txt",
]


def test_foreign_files_inside_the_tree_are_never_pruned(world):
    out, keys, _ = world
    shard = _next_target_name(out).parent
    foreign = FOREIGN + [
        f"{shard.relative_to(out).as_posix()}/notes.txt",
        # hash-named, but for a device whose targets live in another shard: not a name we write here
        f"{shard.relative_to(out).as_posix()}/{'a' * 64}.{_device_of_another_shard(shard.name)}.json",
        f"{shard.relative_to(out).as_posix()}/{'b' * 64}.NOT-AN-ID.json",
    ]
    for i, rel in enumerate(foreign):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(f"foreign {i}\n".encode())
    for generation in (2, 3, 4):  # enough versions that everything of ours is superseded and pruned
        report = publish(out, targets(40, generation=generation), keys, EXPIRY, T0 + timedelta(hours=generation))
        assert not set(report.removed) & set(foreign)
    for i, rel in enumerate(foreign):
        assert (out / rel).read_bytes() == f"foreign {i}\n".encode(), rel
    assert len(read_tree(out).entries) == 40


def test_leftovers_of_a_killed_run_are_cleaned_up_by_the_next_publish(world):
    out, keys, _ = world
    leftovers = [
        "metadata/.timestamp.json.tmp",
        "metadata/.2.root.json.tmp",
        "metadata/7.snapshot.json",
        "metadata/7.targets.json",
        metadata_file("7.bins-0.json"),
        target_file(device_target_path(DEV), "c" * 64),   # a hash-named target nothing references
    ]
    for rel in leftovers:
        (out / rel).write_bytes(b"partial")
    report = publish(out, targets(40), keys, EXPIRY, T0 + timedelta(minutes=30))  # nothing else changes
    assert report.written == []
    assert sorted(report.removed) == sorted(leftovers)
    assert not any((out / rel).exists() for rel in leftovers)


def _device_of_another_shard(shard: str) -> str:
    return next(d for d in (f"elsewhere-{i}" for i in range(10)) if device_target_path(d).split("/")[1] != shard)


def _lstat_tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): kind, bytes or link target."""
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in names + dirnames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_file():
                out[rel] = ("file", path.read_bytes())
            else:
                out[rel] = ("dir",)
    return out


def test_a_planted_root_after_a_gap_is_refused_not_trusted(world):
    out, keys, _ = world
    (out / "metadata" / "9.root.json").write_bytes((out / "metadata" / "1.root.json").read_bytes())
    with pytest.raises(SigningError) as exc:
        publish(out, targets(40), keys, EXPIRY, T1)
    assert exc.value.code == "E542" and "no 2.root.json before 9.root.json" in exc.value.message
