"""The publisher's decision is data: Planner is a pure function of the previous tree, the targets, keys and clock."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from tuf.api.metadata import Metadata

from edgefleet.core.diagnostics import DiagnosticError
from edgefleet.signing.keys import init_keys, load_keys
from edgefleet.signing.publication import Planner, Publication, TargetWrite
from edgefleet.signing.publish import publish
from edgefleet.signing.tree import BinInfo, PublishedTree, TargetEntry, read_tree
from edgefleet.signing.treefs import Tree, scan
from edgefleet.spec.fleet import ExpiryWindows
from tests.signing_support import T0, target, targets

WINDOWS = {"root": timedelta(days=365), "targets": timedelta(days=30), "bins": timedelta(days=30),
           "snapshot": timedelta(days=7), "timestamp": timedelta(days=1)}


@pytest.fixture
def keys(tmp_path):
    init_keys(tmp_path / "keys")
    return load_keys(tmp_path / "keys")


def _plan(previous, listing, keys, items, now=T0) -> tuple[list[TargetWrite], Publication]:
    planner = Planner(previous, listing, keys, WINDOWS, now)
    writes = [planner.add(t) for t in items]
    return writes, planner.finish()


def test_a_first_version_is_decided_without_touching_a_disk(tmp_path, keys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    writes, pub = _plan(PublishedTree(), {}, keys, targets(20))
    assert set(os.listdir(tmp_path)) == before
    assert all(isinstance(w, TargetWrite) and not w.exists and not w.referenced for w in writes)
    assert {w.dir for w in writes} <= {f"targets/{t.path.rpartition('/')[0]}" for t in targets(20)}
    assert [w.path for w in pub.metadata] == [  # in commit order: bins, targets, snapshot
        "metadata/bins/0/1.bins-0.json", "metadata/bins/1/1.bins-1.json", "metadata/1.targets.json",
        "metadata/1.snapshot.json"]
    assert pub.root.path == "metadata/1.root.json" and pub.timestamp is not None
    assert Metadata.from_bytes(pub.timestamp).signed.snapshot_meta.version == 1
    assert pub.prune == () and pub.report.bins == 2 and pub.report.targets == 20


def test_the_same_inputs_give_the_same_publication(keys):
    one = _plan(PublishedTree(), {}, keys, targets(30))
    two = _plan(PublishedTree(), {}, keys, list(reversed(targets(30))))
    assert sorted(one[0]) == sorted(two[0])
    assert one[1].metadata == two[1].metadata and one[1].timestamp == two[1].timestamp


def test_the_previous_tree_decides_what_is_kept_and_what_is_new(tmp_path, keys):
    out = tmp_path / "out"
    publish(out, targets(20), keys, ExpiryWindows(), T0)
    with Tree(out) as tree:
        listing = scan(tree)
    previous = read_tree(out, {r: keys.public(r) for r in ("root", "targets", "snapshot", "timestamp", "bins")})
    assert isinstance(next(iter(previous.entries.values())), TargetEntry)
    assert isinstance(next(iter(previous.bins.values())), BinInfo) and all(b.intact for b in previous.bins.values())
    changed = targets(20, changed={"dev-00003": 2})
    writes, pub = _plan(previous, listing, keys, changed, T0 + timedelta(hours=1))
    new = [w for w in writes if not w.exists]
    assert [w.name.rpartition(".")[0].split(".", 1)[1] for w in new] == ["dev-00003"]
    assert all(w.exists and w.referenced for w in writes if w not in new)
    assert pub.report.versions == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 1}
    assert len(pub.metadata) == 2 and pub.root is None  # one bin and the snapshot
    # the planner decided: nothing was written
    assert read_tree(out).snapshot_version == 1


def test_a_lower_counter_is_a_decision_too(keys):
    t = target("dev-00001", counter=1)
    previous = PublishedTree(entries={t.path: TargetEntry("0" * 64, 5, t.custom["hardware_class"], None)})
    planner = Planner(previous, {}, keys, WINDOWS, T0)
    assert planner.add(t) is None
    with pytest.raises(DiagnosticError) as exc:
        planner.finish()
    assert exc.value.diagnostics[0].code == "E541"
