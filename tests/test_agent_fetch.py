"""What the agent's fetchers bring onto the device, against real servers on 127.0.0.1.

Git (a real `git daemon`): a `tree:0` partial clone walked down to the device's own files
fetches none of another device's targets or bins, nor the trees of other shards; the
checkout holds exactly the device's files and verifies; an update fetches only what
changed on the device's path; a symlink or a stray name in the published tree is never
written. HTTP (a real static server that gzips on the fly, as nginx or a CDN does): the
tree verifies through gzip, with fewer bytes than plain; a truncated gzip body and a gzip
bomb are refused without a traceback.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgefleet.agent import fetch_http
from edgefleet.agent.fetch_git import fetch_tree
from edgefleet.agent.fetch_http import fetch_mirror
from edgefleet.desired.gitio import commit_tree
from edgefleet.pipeline.compile import published_files
from edgefleet.signing.keys import init_keys, load_keys
from edgefleet.signing.layout import bin_for_target, device_target_path, metadata_file, target_shard
from edgefleet.signing.publish import publish
from edgefleet.signing.verify import VerifyError, verify_device
from edgefleet.spec.fleet import ExpiryWindows
from tests.agent_support import GzipHandler, RangeHandler, git, git_daemon, http_server
from tests.signing_support import targets

DEVICES = 1500  # 8 bins, ~190 devices each: several bins and many target shards
DEVICE = "dev-00007"
# the HTTP fetcher runs python-tuf's client, which reads the clock: publish at today's date
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
NOW = T0 + timedelta(hours=1)


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A desired-state repository of DEVICES devices, published twice (1% changed the second time)."""
    base = tmp_path_factory.mktemp("fetch-origin")
    init_keys(base / "keys")
    keys = load_keys(base / "keys")
    tree = base / "desired"

    def pub(changed: dict[str, int] | None = None, when=T0):
        publish(tree, targets(DEVICES, changed=changed), keys, ExpiryWindows(), when)
        commit_tree(tree, "desired-state", "publish", when, files=published_files(tree))

    pub()
    git("config", "uploadpack.allowFilter", "true", cwd=tree)  # and no allowAnySHA1InWant: protocol v2
    return base, tree, pub


def _objects(repo: Path) -> set[str]:
    return set(git("cat-file", "--batch-all-objects", "--batch-check=%(objectname)", cwd=repo).split())


def _listing(repo: Path, rev: str = "desired-state") -> list[tuple[str, str, str]]:
    """(type, id, path) of every tree and blob of `rev`."""
    out = []
    for line in git("ls-tree", "-r", "-t", rev, cwd=repo).splitlines():
        meta, _, path = line.partition("\t")
        _mode, kind, oid = meta.split()
        out.append((kind, oid, path))
    return out


def _files(checkout: Path) -> list[str]:
    return sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*")
                  if (p.is_file() or p.is_symlink()) and ".git" not in p.relative_to(checkout).parts)


def _own(path: str, device: str = DEVICE, bits: int = 3) -> bool:
    own_bin = bin_for_target(device_target_path(device), bits)
    return (path.startswith("metadata/") and path.count("/") == 1) or path.endswith(f".{own_bin}.json") \
        or path.endswith(f".{device}.json") or path.startswith("targets/fleet/")


def test_git_fetch_brings_only_the_devices_own_files_and_verifies(origin, tmp_path):
    base, tree, pub = origin
    root = (tree / "metadata" / "1.root.json").read_bytes()
    checkout = tmp_path / "checkout"
    with git_daemon(base) as (url, _port):
        first = fetch_tree(f"{url}/desired", "desired-state", checkout, DEVICE)
        assert first.changed
        files = _files(checkout)
        assert files and all(_own(f) for f in files), files
        shard = target_shard(DEVICE)
        assert any(f.startswith(f"targets/devices/{shard}/") for f in files)
        local = _objects(checkout)
        for kind, oid, path in _listing(tree):
            if kind == "blob" and not _own(path):
                assert oid not in local, f"fetched another device's file {path}"
            if kind == "tree" and path.startswith("targets/devices/") and not f"targets/devices/{shard}".startswith(path):
                assert oid not in local, f"fetched the tree of another shard {path}"
        verified = verify_device(checkout, DEVICE, root, NOW)
        assert verified.custom["release_counter"] == 1

        assert fetch_tree(f"{url}/desired", "desired-state", checkout, DEVICE).changed is False  # no-op

        # an update of 1% of devices, this one among them
        changed = {f"dev-{i:05d}": 2 for i in range(0, DEVICES, 100)} | {DEVICE: 2}
        before = _objects(checkout)
        pub(changed, T0 + timedelta(minutes=30))
        update = fetch_tree(f"{url}/desired", "desired-state", checkout, DEVICE)
        assert update.changed and update.revision == git("rev-parse", "desired-state", cwd=tree).strip()
        new = _objects(checkout) - before
        by_id = {oid: (kind, path) for kind, oid, path in _listing(tree)}
        by_id[git("rev-parse", "desired-state^{tree}", cwd=tree).strip()] = ("tree", "")
        commits = [o for o in new if o not in by_id]
        assert commits == [update.revision]  # the new commit; every other object is a tree or file on the device's path
        for oid in set(new) - set(commits):
            kind, path = by_id[oid]
            assert kind == "tree" or _own(path), path
            if kind == "tree":
                assert path.count("/") <= 1 or path in ("metadata/bins", "targets/devices", "targets/fleet") \
                    or f"targets/devices/{shard}".startswith(path) or path.startswith("metadata/bins/"), path
        assert all(_own(f) for f in _files(checkout))
        assert verify_device(checkout, DEVICE, root, NOW + timedelta(hours=1)).custom["release_counter"] == 2


def test_git_fetch_never_writes_a_link_or_a_stray_name(origin, tmp_path):
    base, tree, _pub = origin
    hostile = tmp_path / "hostile"
    git("clone", "-q", "--branch", "desired-state", str(tree), str(hostile), cwd=tmp_path)
    shard = hostile / "targets" / "devices" / target_shard(DEVICE)
    os.symlink("/etc/passwd", shard / f"{'0' * 64}.{DEVICE}.json")
    (shard / f"notes.{DEVICE}.json").write_text("{}")
    (hostile / "metadata" / "7.snapshot.json.bak").write_text("{}")
    git("add", "-A", cwd=hostile)
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "hostile", cwd=hostile)
    git("config", "uploadpack.allowFilter", "true", cwd=hostile)
    root = (tree / "metadata" / "1.root.json").read_bytes()
    checkout = tmp_path / "checkout"
    with git_daemon(tmp_path) as (url, _port):
        fetch_tree(f"{url}/hostile", "desired-state", checkout, DEVICE)
    files = _files(checkout)
    assert not any(Path(checkout, f).is_symlink() for f in files)
    assert not any(f.endswith((f"notes.{DEVICE}.json", ".bak")) for f in files), files
    assert verify_device(checkout, DEVICE, root, NOW).custom["release_counter"] >= 1


def _mirror(tree: Path, tmp_path: Path, handler=GzipHandler, setup=lambda h: None):
    root = (tree / "metadata" / "1.root.json").read_bytes()
    with http_server(tree, handler) as (url, h):
        setup(h)
        got = fetch_mirror(url, tmp_path / "mirror", tmp_path / "cache", DEVICE, root)
    return got, root, h


def test_http_mirror_through_gzip_verifies_with_fewer_bytes(origin, tmp_path):
    _base, tree, _pub = origin
    plain, root, _ = _mirror(tree, tmp_path / "plain", RangeHandler)
    zipped, _, handler = _mirror(tree, tmp_path / "gzip", GzipHandler)
    assert all(enc == "gzip" for _, enc in handler.requests)
    assert zipped.changed and plain.changed
    assert zipped.bytes_fetched < 0.6 * plain.bytes_fetched, (zipped.bytes_fetched, plain.bytes_fetched)
    a = verify_device(zipped.tree, DEVICE, root, NOW)
    b = verify_device(plain.tree, DEVICE, root, NOW)
    assert a.data == b.data


def _bin_file_name(tree: Path) -> str:
    own_bin = bin_for_target(device_target_path(DEVICE), 3)
    return next(p.name for p in (tree / metadata_file(f"1.{own_bin}.json")).parent.glob(f"*.{own_bin}.json"))


def test_http_mirror_refuses_a_truncated_gzip_body(origin, tmp_path):
    _base, tree, _pub = origin
    name = _bin_file_name(tree)
    got, root, handler = _mirror(tree, tmp_path, setup=lambda h: h.truncate.add(name))
    assert any(p.endswith(name) and enc == "gzip" for p, enc in handler.requests)
    with pytest.raises(VerifyError):  # the bin never reached the mirror directory
        verify_device(got.tree, DEVICE, root, NOW)


def test_http_mirror_stops_a_gzip_bomb_at_the_limit(origin, tmp_path, monkeypatch):
    _base, tree, _pub = origin
    monkeypatch.setattr(fetch_http, "MAX_FILE", 1 << 20)
    bomb = gzip.compress(b" " * (64 << 20), compresslevel=9)  # 64 MiB of spaces in ~64 KiB
    name = _bin_file_name(tree)
    got, root, handler = _mirror(tree, tmp_path, setup=lambda h: h.bomb.update({name: bomb}))
    assert any(p.endswith(name) and enc == "gzip" for p, enc in handler.requests)
    assert got.bytes_fetched < 2 * len(bomb) + (1 << 20)
    with pytest.raises(VerifyError):
        verify_device(got.tree, DEVICE, root, NOW)
    assert not any(p.stat().st_size > (1 << 20) for p in Path(got.tree).rglob("*") if p.is_file())


def test_git_fetch_without_filter_support_still_fetches_a_verifiable_tree(origin, tmp_path):
    """A server that ignores filters sends more than asked, never less."""
    base, tree, _pub = origin
    bare = tmp_path / "nofilter"
    subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(bare)], check=True)
    git("config", "uploadpack.allowFilter", "false", cwd=bare)
    checkout = tmp_path / "checkout"
    with git_daemon(tmp_path) as (url, _port):
        fetch_tree(f"{url}/nofilter", "desired-state", checkout, DEVICE)
    root = (tree / "metadata" / "1.root.json").read_bytes()
    assert verify_device(checkout, DEVICE, root, NOW + timedelta(hours=1)).custom["device_id"] == DEVICE


def test_git_fetch_refuses_an_oversized_file_and_keeps_the_old_checkout(origin, tmp_path, monkeypatch):
    base, tree, _pub = origin
    from edgefleet.agent import fetch_git
    from edgefleet.agent.errors import AgentError

    checkout = tmp_path / "checkout"
    with git_daemon(base) as (url, _port):
        monkeypatch.setattr(fetch_git, "MAX_FILE", 1000)  # the snapshot and the bins are larger
        with pytest.raises(AgentError) as err:
            fetch_tree(f"{url}/desired", "desired-state", checkout, DEVICE)
        assert err.value.code == "E601" and "over 1000 bytes" in err.value.message
        assert fetch_git.local_revision(checkout) is None  # HEAD did not move: the next poll fetches again
        monkeypatch.undo()
        assert fetch_tree(f"{url}/desired", "desired-state", checkout, DEVICE).changed
    root = (tree / "metadata" / "1.root.json").read_bytes()
    assert verify_device(checkout, DEVICE, root, NOW + timedelta(hours=1)).custom["device_id"] == DEVICE
