"""Every TUF-spec attack that applies to a desired-state tree, on real signed metadata, rejected by verify.

A history is published once per module: v1 (40 devices), then v2 where device A got a
new desired state and release counter 2. Each case copies the live tree, tampers with
it the way an attacker holding a checkout (or a stolen, revoked key) could, and checks
that `verify_device` refuses it with the code that names the attack.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import JSONSerializer

from edgefleet.signing import device_target_path
from edgefleet.signing import publish as publish_mod
from edgefleet.signing.keys import init_keys, load_keys, rotate_key
from edgefleet.signing.layout import metadata_file, target_file
from edgefleet.signing.publish import TargetFile, publish
from edgefleet.signing.verify import VerifyError, verify_device
from edgefleet.spec.fleet import ExpiryWindows
from tests.signing_support import T0, target, targets

EXPIRY = ExpiryWindows()
A, B = "dev-00001", "dev-00002"     # A changes in v2; ids of equal length
T1 = T0 + timedelta(hours=1)         # v2 published
CHECK = T1 + timedelta(minutes=30)   # when devices verify: everything valid
COMPACT = JSONSerializer(compact=True)


@dataclass(frozen=True)
class History:
    base: Path
    keys_dir: Path
    v1: Path
    live: Path

    @property
    def root1(self) -> bytes:
        return (self.live / "metadata" / "1.root.json").read_bytes()


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    base = tmp_path_factory.mktemp("history")
    init_keys(base / "keys")
    keys = load_keys(base / "keys")
    live = base / "live"
    publish(live, targets(40), keys, EXPIRY, T0)
    shutil.copytree(live, base / "v1")
    publish(live, targets(40, changed={A: 2}), keys, EXPIRY, T1)
    return History(base, base / "keys", base / "v1", live)


@dataclass
class Case:
    """One attack's working copy: the tree to verify, and what the device passes."""

    history: History
    tree: Path
    tmp: Path
    device: str = A
    now: object = CHECK
    hardware_class: str | None = None
    last_counter: int | None = None
    cache: Path | None = None

    def meta(self, name: str) -> Path:
        return self.tree / metadata_file(name)

    def bin_name(self, device: str) -> str:
        targets_md = _load(self.meta(f"{_snapshot(self)['targets.json'].version}.targets.json"))
        return targets_md.signed.delegations.succinct_roles.get_role_for_target(device_target_path(device))

    def bin_file(self, device: str) -> Path:
        name = self.bin_name(device)
        return self.meta(f"{_snapshot(self)[name + '.json'].version}.{name}.json")

    def target_file(self, device: str) -> Path:
        info = _load(self.bin_file(device)).signed.targets[device_target_path(device)]
        return self.tree / target_file(device_target_path(device), info.hashes["sha256"])

    def keys(self):
        return load_keys(self.tmp / "keys")


def _load(path: Path) -> Metadata:
    return Metadata.from_bytes(path.read_bytes())


def _snapshot(case: Case):
    version = _load(case.meta("timestamp.json")).signed.snapshot_meta.version
    return _load(case.meta(f"{version}.snapshot.json")).signed.meta


def _resign(path: Path, signer, mutate=lambda signed: None) -> None:
    md = _load(path)
    mutate(md.signed)
    md.sign(signer)
    path.write_bytes(md.to_bytes(COMPACT))


def _pad(path: Path, extra: int) -> None:
    path.write_bytes(path.read_bytes() + b" " * extra)  # still valid JSON, same signature


def _verify(case: Case):
    return verify_device(case.tree, case.device, case.history.root1, case.now, case.hardware_class,
                         case.last_counter, case.cache)


# --- the attacks ----------------------------------------------------------------------

def target_bytes_modified(c: Case):
    path = c.target_file(A)
    path.write_bytes(path.read_bytes().replace(b"medical", b"MEDICAL"))


def bin_signed_by_unknown_key(c: Case):
    evil = c.tree / target_file(device_target_path(A), "e" * 64)
    evil.write_bytes(target(A, 9).data)

    def point_at_evil(signed):
        signed.targets[device_target_path(A)].hashes["sha256"] = "e" * 64
    before = c.bin_file(A).stat().st_size
    _resign(c.bin_file(A), CryptoSigner.generate_ed25519(), point_at_evil)
    assert c.bin_file(A).stat().st_size == before  # so only the signature can give it away


def timestamp_signed_by_unknown_key(c: Case):
    def bump(signed):
        signed.version += 1
    _resign(c.meta("timestamp.json"), CryptoSigner.generate_ed25519(), bump)


def root_signed_by_unknown_key(c: Case):
    attacker = CryptoSigner.generate_ed25519()
    root = _load(c.meta("1.root.json")).signed
    root.version = 2
    for role in ("root", "targets", "snapshot", "timestamp"):
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        root.add_key(attacker.public_key, role)
    md = Metadata(root)
    md.sign(attacker)
    c.meta("2.root.json").write_bytes(md.to_bytes())


def replay_old_tree_to_a_device_that_saw_the_new_one(c: Case):
    c.cache = c.tmp / "device-cache"
    verify_device(c.tree, A, c.history.root1, CHECK, metadata_cache=c.cache)  # the device saw v2
    shutil.rmtree(c.tree)
    shutil.copytree(c.history.v1, c.tree)


def replay_old_bin_under_the_new_name(c: Case):
    old = c.history.v1 / metadata_file(f"1.{c.bin_name(A)}.json")
    assert old.stat().st_size == c.bin_file(A).stat().st_size
    shutil.copyfile(old, c.bin_file(A))


def lower_release_counter(c: Case):
    c.last_counter = 3  # the device installed counter 3; the tree offers 2


def expired_timestamp(c: Case):
    c.now = T1 + timedelta(days=1, seconds=1)


def old_tree_replayed_after_expiry(c: Case):
    shutil.rmtree(c.tree)
    shutil.copytree(c.history.v1, c.tree)
    c.now = T0 + timedelta(days=1, minutes=1)


def snapshot_v1_with_bin_v2(c: Case):
    newer = c.bin_file(A)
    shutil.rmtree(c.tree / "targets")
    shutil.copytree(c.history.v1 / "targets", c.tree / "targets")
    for path in (c.tree / "metadata").rglob("*.json"):
        if not path.name.endswith(".root.json"):
            path.unlink()
    for path in (c.history.v1 / "metadata").rglob("*.json"):
        shutil.copyfile(path, c.meta(path.name))
    older = c.meta(f"1.{c.bin_name(A)}.json")
    data = (c.history.live / metadata_file(newer.name)).read_bytes()
    assert len(data) == older.stat().st_size
    older.write_bytes(data)  # v2's bin where v1's snapshot expects v1's


def target_of_v1_under_the_v2_name(c: Case):
    v1_target = next((c.history.v1 / "targets" / "devices").rglob(f"*.{A}.json"))
    shutil.copyfile(v1_target, c.target_file(A))


def padded_timestamp(c: Case):
    _pad(c.meta("timestamp.json"), 20_000)  # beyond the client's 16 KiB limit


def padded_snapshot(c: Case):
    _pad(c.meta(f"{_load(c.meta('timestamp.json')).signed.snapshot_meta.version}.snapshot.json"), 1)


def padded_bin(c: Case):
    _pad(c.bin_file(A), 1)


def padded_target(c: Case):
    _pad(c.target_file(A), 1)


def a_target_bytes_at_b_name(c: Case):
    c.device = B
    shutil.copyfile(c.target_file(A), c.target_file(B))


def b_target_signed_for_a(c: Case, monkeypatch):
    # A compromised or buggy compiler signs B's entry with A's identity (publish itself refuses this).
    monkeypatch.setattr(publish_mod, "_check_target", lambda t: None)
    forged = [t if t.path != device_target_path(B) else TargetFile(t.path, target(A, 2).data, target(A, 2).custom)
              for t in targets(40, changed={A: 2})]
    publish(c.tree, forged, c.keys(), EXPIRY, T1 + timedelta(minutes=1))
    c.device = B


def wrong_hardware_class(c: Case):
    c.hardware_class = "jetson-vision-standard"  # A is a medical-cart-cpu


def _rotate_and_publish(c: Case, *roles: str):
    old = c.keys()
    for role in roles:
        rotate_key(c.tmp / "keys", role)
    publish(c.tree, targets(40, changed={A: 2}), c.keys(), EXPIRY, T1 + timedelta(minutes=1))
    return old


def timestamp_signed_by_revoked_key(c: Case):
    old = _rotate_and_publish(c, "timestamp")

    def bump(signed):
        signed.version += 1
    _resign(c.meta("timestamp.json"), old.signer("timestamp"), bump)


def targets_signed_by_revoked_key(c: Case):
    old = _rotate_and_publish(c, "targets")
    path = c.meta(f"{_snapshot(c)['targets.json'].version}.targets.json")
    size = path.stat().st_size
    _resign(path, old.signer("targets"))
    assert path.stat().st_size == size


def new_root_without_the_old_root_signature(c: Case):
    old = c.keys()
    rotate_key(c.tmp / "keys", "root")
    new = c.keys()
    root: Root = _load(c.meta("1.root.json")).signed
    root.version = 2
    root.revoke_key(old.keyid("root"), "root")
    root.add_key(new.public("root"), "root")
    md = Metadata(root)
    md.sign(new.signer("root"))  # the threshold of the root the device trusts is not met
    c.meta("2.root.json").write_bytes(md.to_bytes())


ATTACKS = [
    ("arbitrary-install/target-bytes-modified", target_bytes_modified, "E555"),
    ("arbitrary-install/bin-signed-by-unknown-key", bin_signed_by_unknown_key, "E554"),
    ("arbitrary-install/timestamp-signed-by-unknown-key", timestamp_signed_by_unknown_key, "E554"),
    ("arbitrary-install/root-signed-by-unknown-key", root_signed_by_unknown_key, "E554"),
    ("rollback/old-tree-to-a-device-that-saw-the-new-one", replay_old_tree_to_a_device_that_saw_the_new_one, "E553"),
    ("rollback/old-bin-under-the-new-name", replay_old_bin_under_the_new_name, "E553"),
    ("rollback/lower-release-counter", lower_release_counter, "E560"),
    ("freeze/expired-timestamp", expired_timestamp, "E552"),
    ("freeze/old-tree-replayed-after-expiry", old_tree_replayed_after_expiry, "E552"),
    ("mix-and-match/snapshot-v1-with-bin-v2", snapshot_v1_with_bin_v2, "E553"),
    ("mix-and-match/target-of-v1-under-the-v2-name", target_of_v1_under_the_v2_name, "E555"),
    ("endless-data/padded-timestamp", padded_timestamp, "E556"),
    ("endless-data/padded-snapshot", padded_snapshot, "E556"),
    ("endless-data/padded-bin", padded_bin, "E556"),
    ("endless-data/padded-target", padded_target, "E556"),
    ("wrong-device/a-target-bytes-at-b-name", a_target_bytes_at_b_name, "E555"),
    ("wrong-device/b-target-signed-for-a", b_target_signed_for_a, "E558"),
    ("wrong-class/cart-target-to-a-jetson", wrong_hardware_class, "E559"),
    ("key-rotation/timestamp-signed-by-revoked-key", timestamp_signed_by_revoked_key, "E554"),
    ("key-rotation/targets-signed-by-revoked-key", targets_signed_by_revoked_key, "E554"),
    ("key-rotation/new-root-without-the-old-root-signature", new_root_without_the_old_root_signature, "E554"),
]


@pytest.fixture
def case(history, tmp_path) -> Case:
    shutil.copytree(history.live, tmp_path / "tree")
    shutil.copytree(history.keys_dir, tmp_path / "keys")
    return Case(history, tmp_path / "tree", tmp_path)


def test_the_untampered_tree_verifies_for_every_case_device(case):
    """The baseline every attack starts from: without the tampering, all of this passes."""
    got = verify_device(case.tree, A, case.history.root1, CHECK, "medical-cart-cpu", 2)
    assert got.custom == {"device_id": A, "hardware_class": "medical-cart-cpu", "release_counter": 2}
    assert got.data == target(A, 2).data
    assert verify_device(case.tree, B, case.history.root1, CHECK, "jetson-vision-standard").data == target(B).data
    assert got.versions == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 1, "bins": 2}


@pytest.mark.parametrize("attack,expected", [(fn, code) for _, fn, code in ATTACKS], ids=[i for i, _, _ in ATTACKS])
def test_verify_rejects(case, monkeypatch, attack, expected):
    if "monkeypatch" in attack.__code__.co_varnames[:attack.__code__.co_argcount]:
        attack(case, monkeypatch)
    else:
        attack(case)
    with pytest.raises(VerifyError) as exc:
        _verify(case)
    assert exc.value.code == expected, exc.value.reason
    assert exc.value.hint


def test_a_device_holding_only_the_first_root_walks_the_chain_after_every_key_rotated(case):
    for step, roles in enumerate([("root", "targets", "timestamp"), ("root", "snapshot", "bins")], start=1):
        for role in roles:
            rotate_key(case.tmp / "keys", role)
        publish(case.tree, targets(40, changed={A: 2}), case.keys(), EXPIRY, T1 + timedelta(minutes=step))
    got = verify_device(case.tree, A, case.history.root1, CHECK + timedelta(minutes=5), "medical-cart-cpu")
    assert got.versions["root"] == 3
    assert got.data == target(A, 2).data
    # and a device that already walked keeps its cache consistent on the next poll
    cache = case.tmp / "cache"
    verify_device(case.tree, B, case.history.root1, CHECK + timedelta(minutes=5), metadata_cache=cache)
    assert (cache / "root_history" / "3.root.json").exists()


def test_a_device_with_a_cache_accepts_a_newer_tree(case):
    cache = case.tmp / "cache"
    verify_device(case.history.v1, A, case.history.root1, T0 + timedelta(minutes=5), metadata_cache=cache)
    got = verify_device(case.tree, A, case.history.root1, CHECK, metadata_cache=cache, last_counter=1)
    assert got.custom["release_counter"] == 2


def test_a_device_missing_from_the_tree_is_reported(case):
    with pytest.raises(VerifyError) as exc:
        verify_device(case.tree, "dev-99999", case.history.root1, CHECK)
    assert exc.value.code == "E557"


@pytest.mark.parametrize("root", [b"", b"{}", b"not json"], ids=["empty", "empty-object", "garbage"])
def test_an_invalid_trusted_root_is_reported(case, root):
    with pytest.raises(VerifyError) as exc:
        verify_device(case.tree, A, root, CHECK)
    assert exc.value.code == "E561"


def test_cli_verify_prints_the_desired_state(run_cli, case):
    root = case.meta("1.root.json")
    res = run_cli("verify", case.tree, "--device", A, "--root", root, "--class", "medical-cart-cpu",
                  "--now", "2025-06-01T01:30:00Z", "--format", "json")
    assert res.code == 0, res.err
    payload = json.loads(res.out)
    assert payload["custom"]["release_counter"] == 2
    assert payload["desired_state"] == json.loads(target(A, 2).data)
    res = run_cli("verify", case.tree, "--device", A, "--root", root, "--now", "2025-06-01T01:30:00Z")
    assert res.code == 0 and res.out.encode() == target(A, 2).data
    assert "release counter 2" in res.err


def test_cli_verify_names_the_attack_and_the_fix(run_cli, case):
    res = run_cli("verify", case.tree, "--device", A, "--root", case.meta("1.root.json"),
                  "--now", "2025-06-03T00:00:00Z")
    assert res.code == 1
    assert "error[E552]: freeze" in res.err and "= hint:" in res.err and "edgefleet compile" in res.err


@pytest.mark.parametrize("args", [
    ("verify", "no-such-dir", "--device", A, "--root", "x.json"),
    ("verify", "{tree}", "--device", A, "--root", "missing-root.json"),
    ("verify", "{tree}", "--device", A, "--root", "{root}", "--now", "yesterday"),
    ("verify", "{tree}", "--device", A, "--root", "{root}", "--now", "2025-06-01T00:00:00"),
    ("verify", "{tree}", "--root", "{root}"),
], ids=["missing-tree", "missing-root", "bad-now", "now-without-zone", "no-device"])
def test_cli_verify_usage_errors_exit_2(run_cli, case, args):
    filled = [a.format(tree=case.tree, root=case.meta("1.root.json")) for a in args]
    res = run_cli(*filled, cwd=case.tmp)
    assert res.code == 2
