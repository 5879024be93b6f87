"""publish(): a complete TUF tree, deterministic, incremental, monotonic and atomic."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, SuccinctRoles, TargetFile as TufTargetFile, Targets
from tuf.api.serialization.json import CanonicalJSONSerializer

from edgefleet.core.diagnostics import DiagnosticError
from edgefleet.signing import SigningError, device_target_path
from edgefleet.signing import publish as publish_mod
from edgefleet.signing.keys import RoleKeys, init_keys, load_keys, rotate_key
from edgefleet.signing.layout import metadata_file, target_file
from edgefleet.signing.publish import FastCanonicalJSON, TargetFile, bit_length_for, publish
from edgefleet.signing.verify import verify_device
from edgefleet.spec.fleet import ExpiryWindows
from tests.signing_support import T0, device_ids, target, targets, tree_files, tree_stats

EXPIRY = ExpiryWindows()  # root 365d, targets 30d, snapshot 7d, timestamp 1d


@pytest.fixture
def keys(tmp_path: Path) -> RoleKeys:
    init_keys(tmp_path / "keys")
    return load_keys(tmp_path / "keys")


def _meta(out: Path, name: str) -> Metadata:
    return Metadata.from_bytes((out / metadata_file(name)).read_bytes())


def _root1(out: Path) -> bytes:
    return (out / "metadata" / "1.root.json").read_bytes()


def test_first_publish_writes_a_complete_consistent_snapshot_tree(tmp_path, keys):
    out = tmp_path / "out"
    report = publish(out, targets(600), keys, EXPIRY, T0)
    names = {p.relative_to(out).as_posix() for p in (out / "metadata").rglob("*.json")}
    assert names == {metadata_file(n) for n in (
        "1.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json",
        "1.bins-0.json", "1.bins-1.json", "1.bins-2.json", "1.bins-3.json")}
    assert "metadata/bins/0/1.bins-0.json" in names  # bins live in shard folders (signing/layout.py)
    assert report.bins == 4 and report.targets == 600
    assert report.versions == {"root": 1, "timestamp": 1, "snapshot": 1, "targets": 1}
    assert len(report.written) == 600 + 8 and report.written == sorted(report.written)
    assert report.unchanged == 0 and report.removed == []
    root = _meta(out, "1.root.json").signed
    assert root.consistent_snapshot
    assert root.expires == T0 + timedelta(days=365)
    assert _meta(out, "timestamp.json").signed.expires == T0 + timedelta(days=1)
    delegation = _meta(out, "1.targets.json").signed.delegations
    assert delegation.succinct_roles.bit_length == 2 and delegation.succinct_roles.name_prefix == "bins"
    assert delegation.keys == {keys.keyid("bins"): keys.public("bins")}
    # targets are stored under hash-prefixed names, and every one verifies as its device would
    some = target("dev-00042")
    digest = hashlib.sha256(some.data).hexdigest()
    assert (out / target_file(device_target_path("dev-00042"), digest)).read_bytes() == some.data
    got = verify_device(out, "dev-00042", _root1(out), T0 + timedelta(hours=1), "jetson-vision-standard")
    assert got.data == some.data
    assert got.custom == {"device_id": "dev-00042", "hardware_class": "jetson-vision-standard", "release_counter": 1}


def test_each_bin_lists_exactly_the_targets_succinct_roles_assigns_it(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(1500), keys, EXPIRY, T0)
    succinct = _meta(out, "1.targets.json").signed.delegations.succinct_roles
    listed = 0
    for name in succinct.get_roles():
        bin_targets = _meta(out, f"1.{name}.json").signed.targets
        assert all(succinct.get_role_for_target(path) == name for path in bin_targets)
        listed += len(bin_targets)
    assert listed == 1500


def test_same_inputs_same_clock_same_keys_give_byte_identical_trees(tmp_path, keys):
    publish(tmp_path / "a", targets(300), keys, EXPIRY, T0)
    publish(tmp_path / "b", reversed(targets(300)), keys, EXPIRY, T0)  # order does not matter
    assert tree_files(tmp_path / "a") == tree_files(tmp_path / "b")


def test_republishing_unchanged_targets_touches_no_file(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(400), keys, EXPIRY, T0)
    before = tree_stats(out)
    report = publish(out, targets(400), keys, EXPIRY, T0 + timedelta(hours=2))
    assert report.written == [] and report.removed == []
    assert report.unchanged == 400 + 6  # targets + root, timestamp, snapshot, targets, 2 bins
    assert tree_stats(out) == before


def test_one_changed_device_rewrites_its_target_its_bin_snapshot_and_timestamp_only(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(400), keys, EXPIRY, T0)
    before = tree_stats(out)
    report = publish(out, targets(400, changed={"dev-00007": 2}), keys, EXPIRY, T0 + timedelta(hours=1))
    bin_name = SuccinctRoles([], 1, 1, "bins").get_role_for_target(device_target_path("dev-00007"))
    new_target = next(p for p in report.written if p.startswith("targets/"))
    assert new_target.endswith(".dev-00007.json")
    assert report.written == sorted([new_target, metadata_file(f"2.{bin_name}.json"), "metadata/2.snapshot.json",
                                     "metadata/timestamp.json"])
    assert report.versions == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 1}
    after = tree_stats(out)
    untouched = {p for p in before if p != "metadata/timestamp.json"}
    assert {p: after[p] for p in untouched} == {p: before[p] for p in untouched}
    # the previous version's files stay for devices mid-update
    assert report.removed == []
    got = verify_device(out, "dev-00007", _root1(out), T0 + timedelta(hours=2))
    assert got.custom["release_counter"] == 2 and b'"generation":"000002"' in got.data


def test_only_a_role_near_expiry_is_re_signed(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(50), keys, EXPIRY, T0)
    # past half the timestamp window (1d): only the timestamp is renewed
    report = publish(out, targets(50), keys, EXPIRY, T0 + timedelta(hours=13))
    assert report.written == ["metadata/timestamp.json"]
    assert report.versions["timestamp"] == 2 and report.versions["snapshot"] == 1
    assert _meta(out, "timestamp.json").signed.expires == T0 + timedelta(hours=13, days=1)
    # past half the snapshot window (7d): snapshot and timestamp
    report = publish(out, targets(50), keys, EXPIRY, T0 + timedelta(days=4))
    assert report.written == ["metadata/2.snapshot.json", "metadata/timestamp.json"]
    # a device still verifies without a cache, and with the old one
    verify_device(out, "dev-00001", _root1(out), T0 + timedelta(days=4, hours=1))


def test_a_shorter_expiry_window_takes_effect_on_the_next_publish(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(10), keys, EXPIRY, T0)
    report = publish(out, targets(10), keys, ExpiryWindows(timestamp="1h"), T0 + timedelta(minutes=1))
    assert report.written == ["metadata/timestamp.json"]
    assert _meta(out, "timestamp.json").signed.expires == T0 + timedelta(minutes=61)


def test_a_lower_release_counter_is_refused_and_nothing_is_written(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(30, generation=5), keys, EXPIRY, T0)
    before = tree_files(out)
    lowered = targets(30, generation=5, changed={"dev-00003": 6, "dev-00004": 4, "dev-00009": 2})
    with pytest.raises(DiagnosticError) as exc:
        publish(out, lowered, keys, EXPIRY, T0 + timedelta(hours=1))
    assert [(d.code, d.location.path) for d in exc.value.diagnostics] == [
        ("E541", device_target_path("dev-00004")), ("E541", device_target_path("dev-00009"))]
    assert "from 5 to 4" in exc.value.diagnostics[0].message
    assert tree_files(out) == before


@pytest.mark.parametrize("fail_at", ["_bin", "_root", "_write_meta"], ids=["signing-a-bin", "root", "writing-metadata"])
def test_a_failed_publish_leaves_the_previous_tree_byte_for_byte(tmp_path, keys, monkeypatch, fail_at):
    out = tmp_path / "out"
    publish(out, targets(300), keys, EXPIRY, T0)
    before = tree_files(out)
    calls = {"n": 0}
    original = getattr(publish_mod._Publisher, fail_at)

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 or fail_at == "_root":
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(publish_mod._Publisher, fail_at, failing)
    rotate_key(tmp_path / "keys", "timestamp")  # a new root too
    changed = targets(300, generation=2)
    with pytest.raises(OSError):
        publish(out, changed, load_keys(tmp_path / "keys"), EXPIRY, T0 + timedelta(hours=1))
    assert tree_files(out) == before
    verify_device(out, "dev-00001", _root1(out), T0 + timedelta(hours=2))


def _bad(path=device_target_path("dev-00099"), data=b"{}", **custom) -> TargetFile:
    fields = {"device_id": "dev-00099", "hardware_class": "x", "release_counter": 1}
    fields.update(custom)
    return TargetFile(path, data, {k: v for k, v in fields.items() if v is not None})


@pytest.mark.parametrize("bad,message", [
    (_bad(device_id="dev-00002"), "names device 'dev-00002'"),
    (_bad(path="devices/../x.json", device_id="../x"), "must be a device id"),
    (_bad(release_counter=None), "release_counter must be an integer"),
    (_bad(release_counter=-1), "release_counter must be an integer"),
    (_bad(release_counter=True), "release_counter must be an integer"),
    (_bad(hardware_class=None), "hardware_class must be a string"),
    (_bad(tolerance=0.5), "only strings, integers"),
    (_bad(data="{}"), "data must be bytes"),
    (target("dev-00000"), "given twice"),
], ids=["path-of-another-device", "path-traversal", "no-counter", "negative-counter", "bool-counter", "no-class",
        "float-in-custom", "str-data", "duplicate"])
def test_invalid_targets_are_refused_with_E540_and_nothing_is_written(tmp_path, keys, bad, message):
    out = tmp_path / "out"
    with pytest.raises(DiagnosticError) as exc:
        publish(out, [*targets(5), bad], keys, EXPIRY, T0)
    assert exc.value.diagnostics[0].code == "E540"
    assert message in exc.value.diagnostics[0].message
    assert tree_files(out) == {}


@pytest.mark.parametrize("count,requested,previous,bits", [
    (0, None, None, 1), (256, None, None, 1), (600, None, None, 2), (100_000, None, None, 9),
    (1_000_000, None, None, 12), (10_000_000, None, None, 14), (10, 300, None, 9), (10, 1, None, 1),
    (10, 16384, None, 14), (150_000, None, 9, 9), (600_000, None, 9, 12), (20_000, None, 9, 7),
], ids=["empty", "256", "600", "100k", "1M", "10M-capped", "explicit-300", "explicit-1", "explicit-max",
        "keeps-previous", "grows", "shrinks"])
def test_bin_count(count, requested, previous, bits):
    assert bit_length_for(count, requested, previous) == bits


def test_changing_the_bin_count_keeps_devices_with_a_cache_updating(tmp_path, keys):
    out, cache = tmp_path / "out", tmp_path / "device-cache"
    publish(out, targets(300), keys, EXPIRY, T0)
    verify_device(out, "dev-00003", _root1(out), T0 + timedelta(minutes=5), metadata_cache=cache)
    report = publish(out, targets(3000), keys, EXPIRY, T0 + timedelta(hours=1))
    assert report.bins == 16 and report.versions["targets"] == 2
    snapshot = _meta(out, f"{report.versions['snapshot']}.snapshot.json").signed
    assert {"bins-0.json", "bins-1.json"} <= set(snapshot.meta)  # still listed for caches like this one
    got = verify_device(out, "dev-00003", _root1(out), T0 + timedelta(hours=2), metadata_cache=cache)
    assert got.versions["targets"] == 2
    verify_device(out, "dev-02999", _root1(out), T0 + timedelta(hours=2), metadata_cache=cache)


def test_superseded_files_are_pruned_but_the_previous_version_and_every_root_stay(tmp_path, keys):
    out = tmp_path / "out"
    key_dir = tmp_path / "keys"
    reports = []
    for generation in (1, 2, 3):
        if generation == 3:
            rotate_key(key_dir, "targets")
        reports.append(publish(out, targets(20, changed={"dev-00001": generation}), load_keys(key_dir), EXPIRY,
                               T0 + timedelta(hours=generation)))
    first_target = next(p for p in reports[0].written if p.endswith(".dev-00001.json"))
    second_target = next(p for p in reports[1].written if p.endswith(".dev-00001.json"))
    assert first_target in reports[2].removed and not (out / first_target).exists()
    assert (out / second_target).exists()
    assert "metadata/1.snapshot.json" in reports[2].removed
    assert (out / "metadata" / "2.snapshot.json").exists()
    assert {p.name for p in (out / "metadata").glob("*.root.json")} == {"1.root.json", "2.root.json"}
    assert verify_device(out, "dev-00001", _root1(out), T0 + timedelta(hours=4)).versions["root"] == 2


def test_rotating_keys_publishes_a_new_root_signed_by_old_and_new_root_keys(tmp_path, keys):
    out, key_dir = tmp_path / "out", tmp_path / "keys"
    publish(out, targets(20), keys, EXPIRY, T0)
    old_root = keys.keyid("root")
    rotate_key(key_dir, "root")
    rotate_key(key_dir, "snapshot")
    new_keys = load_keys(key_dir)
    report = publish(out, targets(20), new_keys, EXPIRY, T0 + timedelta(hours=1))
    assert report.versions["root"] == 2
    assert "metadata/2.root.json" in report.written and "metadata/2.snapshot.json" in report.written
    root2 = _meta(out, "2.root.json")
    assert set(root2.signatures) == {old_root, new_keys.keyid("root")}
    assert root2.signed.roles["root"].keyids == [new_keys.keyid("root")]
    assert root2.signed.roles["snapshot"].keyids == [new_keys.keyid("snapshot")]
    # the next publish needs no old key any more, and changes nothing
    report = publish(out, targets(20), replace(new_keys, previous_root=()), EXPIRY, T0 + timedelta(hours=2))
    assert report.written == []


def test_a_root_rotation_without_the_old_root_key_is_refused_and_leaves_the_tree(tmp_path, keys):
    out, key_dir = tmp_path / "out", tmp_path / "keys"
    publish(out, targets(20), keys, EXPIRY, T0)
    before = tree_files(out)
    rotate_key(key_dir, "root")
    with pytest.raises(SigningError) as exc:
        publish(out, targets(20, generation=2), replace(load_keys(key_dir), previous_root=()), EXPIRY,
                T0 + timedelta(hours=1))
    assert exc.value.code == "E507"
    assert "previous/root-" in exc.value.hint
    assert tree_files(out) == before


def test_an_unreadable_previous_tree_is_refused_with_E542(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(20), keys, EXPIRY, T0)
    (out / metadata_file("1.bins-0.json")).write_text("{not json")
    with pytest.raises(SigningError) as exc:
        publish(out, targets(20), keys, EXPIRY, T0 + timedelta(hours=1))
    assert exc.value.code == "E542" and "1.bins-0.json" in exc.value.message


def test_a_target_file_left_by_a_killed_run_is_rewritten_not_trusted(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(20), keys, EXPIRY, T0)
    new = target("dev-00002", generation=2)
    digest = hashlib.sha256(new.data).hexdigest()
    partial = out / "targets" / device_target_path("dev-00002").replace("dev-00002.json", f"{digest}.dev-00002.json")
    partial.write_bytes(new.data[:10])  # a write cut short
    publish(out, targets(20, changed={"dev-00002": 2}), keys, EXPIRY, T0 + timedelta(hours=1))
    assert partial.read_bytes() == new.data
    assert verify_device(out, "dev-00002", _root1(out), T0 + timedelta(hours=2)).data == new.data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(custom=st.dictionaries(st.text(max_size=8), json_values, max_size=4), path=st.text(min_size=1, max_size=20))
def test_fast_canonical_json_is_byte_identical_to_securesystemslib(custom, path):
    signed = Targets(targets={path: TufTargetFile(3, {"sha256": "ab" * 32}, path, {"custom": custom})})
    assert FastCanonicalJSON().serialize(signed) == CanonicalJSONSerializer().serialize(signed)


def test_metadata_is_json_tuf_can_read_back(tmp_path, keys):
    out = tmp_path / "out"
    report = publish(out, targets(5), keys, EXPIRY, T0)
    paths = sorted((out / "metadata").rglob("*.json"))
    assert len(paths) == 4 + report.bins  # root, timestamp, snapshot, targets and every bin
    for path in paths:
        doc = json.loads(path.read_bytes())
        assert set(doc) == {"signed", "signatures"}
        Metadata.from_bytes(path.read_bytes())
    assert device_ids(1) == ["dev-00000"]
