"""compile repairs a damaged tree, and keeps the snapshot proportional to the bins in use.

Damage is what a push to the desired-state branch (or a bad disk) can do to files the next
publish would keep because "nothing changed": each case damages one file, republishes the
same targets, and checks that the damage is gone and a device (python-tuf's ngclient)
verifies again. The bin-count cases run real clients that keep a metadata cache across
the change, as devices do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from edgefleet.signing import device_target_path
from edgefleet.signing.keys import init_keys, load_keys, rotate_key
from edgefleet.signing.layout import metadata_file, target_file
from edgefleet.signing.publication import Planner
from edgefleet.signing.publish import publish
from edgefleet.signing.tree import read_tree
from edgefleet.signing.verify import VerifyError, verify_device
from edgefleet.spec.fleet import ExpiryWindows
from tests.signing_support import T0, target, targets

EXPIRY = ExpiryWindows()
DEV = "dev-00005"
T1 = T0 + timedelta(hours=1)
CHECK = T1 + timedelta(minutes=10)


@pytest.fixture
def tree(tmp_path):
    init_keys(tmp_path / "keys")
    out = tmp_path / "out"
    publish(out, targets(40), load_keys(tmp_path / "keys"), EXPIRY, T0)
    return out


def _keys(out: Path):
    return load_keys(out.parent / "keys")


def _root1(out: Path) -> bytes:
    return (out / "metadata" / "1.root.json").read_bytes()


def _target(out: Path, device: str = DEV) -> Path:
    return out / target_file(device_target_path(device), hashlib.sha256(target(device).data).hexdigest())


def _live(out: Path, role: str) -> Path:
    tree = read_tree(out)
    if role == "timestamp":
        return out / "metadata" / "timestamp.json"
    if role == "snapshot":
        return out / "metadata" / f"{tree.snapshot_version}.snapshot.json"
    if role == "targets":
        return out / "metadata" / f"{tree.snapshot.signed.meta['targets.json'].version}.targets.json"
    name = tree.targets.signed.delegations.succinct_roles.get_role_for_target(device_target_path(DEV))
    return out / metadata_file(f"{tree.bins[name].version}.{name}.json")


def _resign_with_an_unknown_key(path: Path) -> None:
    md = Metadata.from_bytes(path.read_bytes())
    keyid = next(iter(md.signatures))
    md.sign(CryptoSigner.generate_ed25519())
    sig = next(iter(md.signatures.values()))
    md.signatures.clear()
    md.signatures[keyid] = type(sig)(keyid, sig.signature)  # the right keyid, a wrong signature
    path.write_bytes(md.to_bytes(JSONSerializer(compact=True)))


def modify_target(out):
    p = _target(out)
    p.write_bytes(p.read_bytes().replace(b"generation", b"GENERATION"))  # same length
    return p


def truncate_target(out):
    p = _target(out)
    p.write_bytes(p.read_bytes()[:5])
    return p


def delete_target(out):
    p = _target(out)
    p.unlink()
    return p


def swap_target(out):
    p = _target(out)
    shutil.copyfile(_target(out, "dev-00006"), p)  # another device's state at this name
    return p


TARGET_DAMAGE = [("modified", modify_target), ("truncated", truncate_target), ("deleted", delete_target),
                 ("another-devices-bytes", swap_target)]


@pytest.mark.parametrize("damage", [d for _, d in TARGET_DAMAGE], ids=[i for i, _ in TARGET_DAMAGE])
def test_a_damaged_target_is_rewritten_by_a_no_change_publish(tree, damage):
    path = damage(tree)
    with pytest.raises(VerifyError):
        verify_device(tree, DEV, _root1(tree), T0 + timedelta(minutes=5))
    report = publish(tree, targets(40), _keys(tree), EXPIRY, T0 + timedelta(minutes=10))
    rel = path.relative_to(tree).as_posix()
    assert report.written == [rel] and report.repaired == [rel]
    assert report.versions["snapshot"] == 1  # the metadata was intact: nothing re-signed
    assert path.read_bytes() == target(DEV).data
    assert verify_device(tree, DEV, _root1(tree), T0 + timedelta(minutes=15)).data == target(DEV).data


def resign_role(role):
    def damage(out):
        path = _live(out, role)
        _resign_with_an_unknown_key(path)
        return path
    return damage


def pad_role(role):
    def damage(out):
        path = _live(out, role)
        path.write_bytes(path.read_bytes() + b"  ")  # still JSON, signature still valid: only the length is off
        return path
    return damage


META_DAMAGE = [
    ("bin-bad-signature", resign_role("bin"), "bin"),
    ("bin-padded", pad_role("bin"), "bin"),
    ("targets-bad-signature", resign_role("targets"), "targets"),
    ("snapshot-bad-signature", resign_role("snapshot"), "snapshot"),
    ("snapshot-padded", pad_role("snapshot"), "snapshot"),
    ("timestamp-bad-signature", resign_role("timestamp"), "timestamp"),
]


@pytest.mark.parametrize("damage,role", [d[1:] for d in META_DAMAGE], ids=[d[0] for d in META_DAMAGE])
def test_damaged_metadata_is_re_signed_as_a_new_version(tree, damage, role):
    cache = tree.parent / "cache"
    verify_device(tree, DEV, _root1(tree), T0 + timedelta(minutes=1), metadata_cache=cache)  # a device saw v1
    path = damage(tree)
    with pytest.raises(VerifyError):
        verify_device(tree, DEV, _root1(tree), T0 + timedelta(minutes=5))
    report = publish(tree, targets(40), _keys(tree), EXPIRY, T0 + timedelta(minutes=10))
    rel = path.relative_to(tree).as_posix()
    assert rel in report.repaired
    assert report.versions["timestamp"] == 2  # a new version, committed as usual
    if role in ("snapshot", "targets", "bin"):
        assert report.versions["snapshot"] == 2
    for device_cache in (None, cache):  # a new device, and one holding the old version
        got = verify_device(tree, DEV, _root1(tree), T0 + timedelta(minutes=15), metadata_cache=device_cache)
        assert got.data == target(DEV).data
    assert publish(tree, targets(40), _keys(tree), EXPIRY, T0 + timedelta(minutes=20)).written == []


def test_a_damaged_newest_root_is_re_signed_as_the_same_version(tree):
    rotate_key(tree.parent / "keys", "timestamp")
    publish(tree, targets(40), _keys(tree), EXPIRY, T1)  # root v2
    original = (tree / "metadata" / "2.root.json").read_bytes()
    doc = json.loads(original)
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    (tree / "metadata" / "2.root.json").write_text(json.dumps(doc, indent=1))
    with pytest.raises(VerifyError) as exc:
        verify_device(tree, DEV, _root1(tree), CHECK)  # a device holding root v1 cannot walk past v2
    assert exc.value.code == "E554"
    report = publish(tree, targets(40), _keys(tree), EXPIRY, CHECK)
    assert report.repaired == ["metadata/2.root.json"] and report.versions["root"] == 2
    assert (tree / "metadata" / "2.root.json").read_bytes() == original  # ed25519 is deterministic
    assert verify_device(tree, DEV, _root1(tree), CHECK + timedelta(minutes=1)).versions["root"] == 2


def test_kept_targets_are_compared_with_their_bytes_not_trusted(tree):
    report = publish(tree, targets(40), _keys(tree), EXPIRY, T0 + timedelta(minutes=10))
    assert report.written == [] and report.repaired == [] and report.unchanged == 40 + 6


# --- shrinking the bin count --------------------------------------------------------


def _snapshot_roles(out: Path) -> set[str]:
    return set(read_tree(out).snapshot.signed.meta)


@pytest.fixture
def shrunk(tmp_path):
    """300 devices published in 64 bins, seen by a device with a cache, then republished in 2 bins."""
    init_keys(tmp_path / "keys")
    out = tmp_path / "out"
    publish(out, targets(300), load_keys(tmp_path / "keys"), EXPIRY, T0, bins=64)
    cache = tmp_path / "device-cache"
    verify_device(out, DEV, _root1(out), T0 + timedelta(minutes=5), metadata_cache=cache)
    report = publish(out, targets(300), load_keys(tmp_path / "keys"), EXPIRY, T1, bins=2)
    return out, cache, report


def test_a_shrunk_bin_count_keeps_the_old_roles_listed_until_the_snapshot_key_rotates(shrunk):
    out, cache, report = shrunk
    assert report.bins == 2 and report.retired_bins == 64
    assert len(_snapshot_roles(out)) == 2 + 64 + 1
    got = verify_device(out, DEV, _root1(out), T1 + timedelta(minutes=5), metadata_cache=cache)
    assert got.versions["targets"] == 2

    rotate_key(out.parent / "keys", "snapshot")
    report = publish(out, targets(300), _keys(out), EXPIRY, T1 + timedelta(hours=1), bins=2)
    assert report.versions["root"] == 2 and report.retired_bins == 0
    assert _snapshot_roles(out) == {"bins-0.json", "bins-1.json", "targets.json"}
    # a device whose cached snapshot lists the 64 old roles accepts it: under root v2 that
    # snapshot no longer verifies, so python-tuf does not hold the new one against it
    for device, device_cache in ((DEV, cache), ("dev-00123", None)):
        got = verify_device(out, device, _root1(out), T1 + timedelta(hours=1, minutes=5), metadata_cache=device_cache)
        assert got.versions["root"] == 2 and got.data == target(device).data
    # and the dropped bins' files are pruned once no version references them
    publish(out, targets(300, generation=2), _keys(out), EXPIRY, T1 + timedelta(hours=2), bins=2)
    assert {p.name.split(".")[1] for p in (out / "metadata" / "bins").rglob("*.json")} == {"bins-0", "bins-1"}


def test_a_device_that_missed_the_shrink_accepts_the_rotated_tree_directly(tmp_path):
    init_keys(tmp_path / "keys")
    out = tmp_path / "out"
    publish(out, targets(300), load_keys(tmp_path / "keys"), EXPIRY, T0, bins=64)
    cache = tmp_path / "device-cache"
    verify_device(out, DEV, _root1(out), T0 + timedelta(minutes=5), metadata_cache=cache)
    rotate_key(tmp_path / "keys", "snapshot")
    report = publish(out, targets(300), load_keys(tmp_path / "keys"), EXPIRY, T1, bins=2)
    assert report.retired_bins == 0 and len(_snapshot_roles(out)) == 3
    assert verify_device(out, DEV, _root1(out), T1 + timedelta(minutes=5), metadata_cache=cache).versions["root"] == 2


def test_dropping_old_roles_without_a_snapshot_key_rotation_strands_cached_devices(shrunk, monkeypatch):
    """Why the old roles stay listed: python-tuf refuses a snapshot that drops a role its cached one lists."""
    out, cache, _ = shrunk
    monkeypatch.setattr(Planner, "_snapshot_key_rotates", lambda self, root: True)
    report = publish(out, targets(300, generation=2), _keys(out), EXPIRY, T1 + timedelta(hours=1), bins=2)
    assert report.retired_bins == 0 and len(_snapshot_roles(out)) == 3
    later = T1 + timedelta(hours=1, minutes=5)
    verify_device(out, DEV, _root1(out), later)  # a device without a cache is fine
    with pytest.raises(VerifyError) as exc:
        verify_device(out, DEV, _root1(out), later, metadata_cache=cache)
    assert "missing info" in exc.value.reason


def test_waiting_out_the_cached_snapshots_expiry_does_not_release_the_old_roles(tmp_path, monkeypatch):
    """python-tuf still holds a new snapshot against an expired cached one (an intermediate
    snapshot), so only the snapshot-key rotation, not time, lets the old roles go."""
    init_keys(tmp_path / "keys")
    out = tmp_path / "out"
    publish(out, targets(300), load_keys(tmp_path / "keys"), EXPIRY, T0, bins=64)
    cache = tmp_path / "device-cache"
    verify_device(out, DEV, _root1(out), T0 + timedelta(minutes=5), metadata_cache=cache)
    monkeypatch.setattr(Planner, "_snapshot_key_rotates", lambda self, root: True)
    later = T0 + timedelta(days=30)  # the cached snapshot (7d) and timestamp (1d) long expired
    publish(out, targets(300), load_keys(tmp_path / "keys"), EXPIRY, later, bins=2)
    with pytest.raises(VerifyError) as exc:
        verify_device(out, DEV, _root1(out), later + timedelta(minutes=5), metadata_cache=cache)
    assert "missing info" in exc.value.reason


def test_a_root_left_by_a_run_killed_before_its_commit_is_taken_as_the_newest(tree, tmp_path):
    """A killed run may leave N+1.root.json (written just before the timestamp): it is whole (temp + rename) and signed."""
    ahead = tmp_path / "ahead"
    shutil.copytree(tree, ahead)
    shutil.copytree(tree.parent / "keys", ahead.parent / "keys-ahead")
    rotate_key(ahead.parent / "keys-ahead", "timestamp")
    publish(ahead, targets(40), load_keys(ahead.parent / "keys-ahead"), EXPIRY, T1)
    shutil.copyfile(ahead / "metadata" / "2.root.json", tree / "metadata" / "2.root.json")  # only the root got out
    report = publish(tree, targets(40), load_keys(ahead.parent / "keys-ahead"), EXPIRY, T1 + timedelta(minutes=1))
    assert report.versions["root"] == 2 and "metadata/2.root.json" not in report.written
    got = verify_device(tree, DEV, _root1(tree), T1 + timedelta(minutes=5))
    assert got.versions["root"] == 2
