"""`edgefleet compile` end to end: the example fleet, really built, compiled into a signed
TUF tree that every device verifies offline; recompiling touches only what must change;
a failed compile leaves the previous tree as it was; keys never come from the fleet."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import git
import pytest

from edgefleet.desired.state import DesiredState
from edgefleet.load.repo import read_repository
from edgefleet.signing.keys import init_keys
from edgefleet.signing.verify import verify_device
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

NOW = "2026-11-20T09:00:00Z"
WHEN = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    init_keys(path)
    return path


@pytest.fixture
def fleet(tmp_path) -> Path:
    dest = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    return dest


@pytest.fixture
def compile_(run_cli, tmp_path, store, keys):
    def run(fleet: Path, *extra: str, now: str = NOW, out: Path | None = None):
        return run_cli("compile", fleet, "--out", out or tmp_path / "out", "--keys", keys, "--store", store,
                       "--now", now, "--allow-clock-skew", *extra)
    return run


def tree(out: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of the tree: (inode, mtime_ns, sha256)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath, name)
            st = path.stat()
            found[path.relative_to(out).as_posix()] = (st.st_ino, st.st_mtime_ns,
                                                       hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def set_labels(fleet: Path, old: str, new: str) -> None:
    path = fleet / "devices/plant-brno.yaml"
    text = path.read_text()
    assert text.count(old) >= 1
    path.write_text(text.replace(old, new, 1))


def test_compile_then_every_device_verifies_offline(fleet, compile_, tmp_path, store):
    res = compile_(fleet)
    assert res.code == 0, res.err
    assert "compiled 48 devices" in res.out
    out = tmp_path / "out"
    root = (out / "metadata/1.root.json").read_bytes()
    repo, _ = read_repository(fleet)
    for loaded in repo.devices:
        device = loaded.doc
        verified = verify_device(out, device.id, root, WHEN, hardware_class=device.hardware_class)
        state = DesiredState.model_validate_json(verified.data)
        assert state.device.id == device.id and state.device.labels == device.labels
        assert verified.custom["release_counter"] == 1
        [workload] = state.workloads
        assert workload.run.artifact.digest and workload.run.probe is not None
        # The artifact the state names is in the store, with the size it states.
        blob = store / workload.run.artifact.path
        assert blob.stat().st_size == workload.run.artifact.size
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == workload.run.artifact.digest


def test_recompiling_the_same_fleet_writes_nothing(fleet, compile_, tmp_path):
    assert compile_(fleet).code == 0
    before = tree(tmp_path / "out")
    res = compile_(fleet, "--format", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)["compile"]
    assert summary["written"] == 0 and summary["devices_changed"] == 0
    assert tree(tmp_path / "out") == before


def test_changing_one_device_rewrites_only_its_file_and_the_metadata_above_it(fleet, compile_, tmp_path):
    assert compile_(fleet).code == 0
    out = tmp_path / "out"
    before = tree(out)
    set_labels(fleet, 'labels: {line: "2"}', 'labels: {line: "2", camera: "ir"}')  # pb-robot-003
    res = compile_(fleet, now="2026-11-20T09:05:00Z")
    assert res.code == 0, res.err
    after = tree(out)
    changed = sorted(p for p in after if after[p] != before.get(p))
    gone = sorted(set(before) - set(after))
    assert not gone, "the previous version's files stay for devices mid-update"
    targets = [p for p in changed if p.startswith("targets/")]
    metadata = [p for p in changed if p.startswith("metadata/")]
    assert len(targets) == 1 and targets[0].endswith(".pb-robot-003.json")
    # The device's hash bin, the snapshot listing it, the timestamp: nothing else.
    assert len(metadata) == 3, metadata
    assert "metadata/timestamp.json" in metadata
    assert sum(".snapshot.json" in p for p in metadata) == 1 and sum(".bins-" in p for p in metadata) == 1
    root = (out / "metadata/1.root.json").read_bytes()
    now = datetime(2026, 11, 20, 9, 5, tzinfo=timezone.utc)
    changed_device = verify_device(out, "pb-robot-003", root, now, last_counter=1)
    assert changed_device.custom["release_counter"] == 2
    assert json.loads(changed_device.data)["device"]["labels"] == {"line": "2", "camera": "ir"}
    assert verify_device(out, "pb-robot-004", root, now).custom["release_counter"] == 1


@pytest.mark.parametrize("breakage", ["yaml-syntax", "unknown-class", "unbuilt-version"])
def test_a_failed_compile_leaves_the_previous_tree_byte_identical(fleet, compile_, tmp_path, breakage):
    assert compile_(fleet).code == 0
    before = tree(tmp_path / "out")
    if breakage == "yaml-syntax":
        set_labels(fleet, 'labels: {line: "1"}', 'labels: {line: "1"')
        expect = "devices/plant-brno.yaml:"
    elif breakage == "unknown-class":
        set_labels(fleet, "hardware_class: jetson-vision-standard", "hardware_class: jetson-vision-standart")
        expect = "E203"
    else:  # a model change nobody built yet: its key is not in the store
        path = fleet / "models/meter-digits.yaml"
        path.write_text(path.read_text().replace("threshold: 0.98", "threshold: 0.97"))
        expect = "E511"
    res = compile_(fleet, now="2026-11-20T10:00:00Z")
    assert res.code == 1
    assert expect in res.err and "Traceback" not in res.err
    if breakage == "unbuilt-version":
        assert "edgefleet build" in res.err and "meter-digits@1." in res.err
    assert tree(tmp_path / "out") == before


def test_a_private_key_inside_the_fleet_repository_is_refused(fleet, compile_, tmp_path):
    init_keys(fleet / "secrets")
    res = compile_(fleet)
    assert res.code == 1
    assert "E510" in res.err and "secrets/root.key" in res.err and "rotate" in res.err
    assert not (tmp_path / "out").exists()


def test_keys_from_the_environment(fleet, run_cli, store, keys, tmp_path):
    env = {f"EDGEFLEET_KEY_{role.upper()}": (keys / f"{role}.key").read_text()
           for role in ("root", "targets", "snapshot", "timestamp", "bins")}
    res = run_cli("compile", fleet, "--out", tmp_path / "out", "--store", store, "--now", NOW, "--allow-clock-skew", env=env)
    assert res.code == 0, res.err
    assert (tmp_path / "out/metadata/timestamp.json").is_file()


def test_commit_to_the_desired_state_branch(fleet, compile_, tmp_path):
    out = tmp_path / "out"
    res = compile_(fleet, "--commit", "desired-state")
    assert res.code == 0, res.err
    repo = git.Repo(out)
    first = repo.commit("desired-state")
    assert first.author.name == "edgefleet" and first.committed_datetime == WHEN
    files = {b.path for b in first.tree.traverse() if b.type == "blob"}
    assert files == set(tree(out))
    # Deterministic: the same inputs into another directory give the same commit id.
    twin = tmp_path / "twin"
    assert compile_(fleet, "--commit", "desired-state", out=twin).code == 0
    assert git.Repo(twin).commit("desired-state").hexsha == first.hexsha
    # Nothing changed: no new commit.
    res = compile_(fleet, "--commit", "desired-state")
    assert res.code == 0 and "nothing to commit" in res.out
    assert repo.commit("desired-state") == first
    # One device changed: the next commit's diff is that device and the metadata above it.
    set_labels(fleet, 'labels: {line: "2"}', 'labels: {line: "3"}')
    assert compile_(fleet, "--commit", "desired-state", now="2026-11-20T09:05:00Z").code == 0
    second = repo.commit("desired-state")
    assert second.parents == (first,)
    diffed = sorted(d.b_path or d.a_path for d in first.diff(second))
    assert [p for p in diffed if p.startswith("targets/")] == [
        p for p in diffed if p.startswith("targets/") and p.endswith(".pb-robot-003.json")]
    assert len(diffed) == 4, diffed


def test_compile_refuses_an_invalid_branch_name(fleet, compile_):
    res = compile_(fleet, "--commit", "bad..name")
    assert res.code == 1 and "E515" in res.err


def test_bad_now_is_a_usage_error(fleet, compile_):
    res = compile_(fleet, now="yesterday")
    assert res.code == 2 and "RFC 3339" in res.err


def test_a_device_removed_and_added_back_never_sees_its_counter_go_down(fleet, compile_, tmp_path):
    out = tmp_path / "out"
    path = fleet / "devices/st-marys-hospital.csv"
    original = path.read_text()
    row = next(line for line in original.splitlines(keepends=True) if line.startswith("sm-cart-002,"))
    assert compile_(fleet).code == 0
    path.write_text(original.replace(row, row.replace("ward=cardiology", "ward=icu")))
    assert compile_(fleet, now="2026-11-20T09:01:00Z").code == 0  # sm-cart-002 now at 2
    path.write_text(original.replace(row, ""))
    assert compile_(fleet, now="2026-11-20T09:02:00Z").code == 0  # removed
    path.write_text(original)
    assert compile_(fleet, now="2026-11-20T09:03:00Z").code == 0  # back, with its first state's bytes
    root = (out / "metadata/1.root.json").read_bytes()
    now = datetime(2026, 11, 20, 9, 3, tzinfo=timezone.utc)
    assert verify_device(out, "sm-cart-002", root, now, last_counter=2).custom["release_counter"] > 2


def test_an_unreadable_previous_tree_is_refused_and_left_alone(fleet, compile_, tmp_path):
    assert compile_(fleet).code == 0
    (tmp_path / "out/metadata/timestamp.json").write_text("{not json")
    before = tree(tmp_path / "out")
    res = compile_(fleet)
    assert res.code == 1 and "E513" in res.err and "timestamp.json" in res.err
    assert tree(tmp_path / "out") == before


def test_out_must_not_be_the_fleet_repository(fleet, compile_):
    res = compile_(fleet, out=fleet)
    assert res.code == 2 and "would write over the fleet repository" in res.err


# ---- --commit: only the published files, never a key, never the fleet's own branch ---------------

def test_commit_without_a_branch_uses_fleet_yaml_desired_state_branch(fleet, compile_, tmp_path):
    path = fleet / "fleet.yaml"
    text = path.read_text()
    if "desired_state_branch:" in text:
        import re

        text = re.sub(r"desired_state_branch: *\S+", "desired_state_branch: released-state", text)
    else:
        text = text.replace("spec:\n", "spec:\n  desired_state_branch: released-state\n", 1)
    path.write_text(text)
    res = compile_(fleet, "--commit")
    assert res.code == 0, res.err
    assert "on released-state" in res.out
    repo = git.Repo(tmp_path / "out")
    assert [h.name for h in repo.heads] == ["released-state"]


def test_commit_leaves_out_files_the_publisher_did_not_write(fleet, compile_, tmp_path):
    out = tmp_path / "out"
    assert compile_(fleet).code == 0
    (out / "notes.txt").write_text("scratch\n")
    (out / "metadata" / "draft.json").write_text("{}\n")
    (out / "targets" / "extra.json").write_text("{}\n")
    res = compile_(fleet, "--commit", "desired-state")
    assert res.code == 0, res.err
    files = {b.path for b in git.Repo(out).commit("desired-state").tree.traverse() if b.type == "blob"}
    assert "notes.txt" not in files and "metadata/draft.json" not in files and "targets/extra.json" not in files
    assert "metadata/timestamp.json" in files and any(f.startswith("targets/devices/") for f in files)
    assert files == set(tree(out)) - {"notes.txt", "metadata/draft.json", "targets/extra.json"}


@pytest.mark.parametrize("where", ["top", "nested", "hidden-name"])
def test_commit_refuses_a_private_key_inside_out(fleet, compile_, tmp_path, keys, where):
    out = tmp_path / "out"
    assert compile_(fleet).code == 0
    rel = {"top": "root.key", "nested": "metadata/bins/backup", "hidden-name": "targets/.cache"}[where]
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes((keys / "targets.key").read_bytes())
    before = tree(out)
    res = compile_(fleet, "--commit", "desired-state")
    assert res.code == 1 and "E517" in res.err and rel.split("/")[-1] in res.err
    assert tree(out) == before, "refused before anything was written"
    assert not (out / ".git").exists()


def test_commit_refuses_keys_inside_out(fleet, run_cli, store, tmp_path):
    out = tmp_path / "out"
    init_keys(out / "keys")
    res = run_cli("compile", fleet, "--out", out, "--keys", out / "keys", "--store", store, "--commit")
    assert res.code == 1 and "E517" in res.err and "--keys" in res.err
    assert not (out / "metadata").exists()


@pytest.fixture
def fleet_git(tmp_path) -> tuple[git.Repo, Path]:
    """A git repository `mono/` on branch main with the fleet at `mono/fleet`."""
    top = tmp_path / "mono"
    shutil.copytree(EXAMPLE_FLEET, top / "fleet", ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    repo = git.Repo.init(top)
    repo.git.symbolic_ref("HEAD", "refs/heads/main")
    repo.git.add("--all")
    actor = git.Actor("Fleet Operator", "ops@example.com")
    repo.index.commit("fleet", author=actor, committer=actor)
    return repo, top / "fleet"


def test_commit_refuses_the_branch_the_fleet_is_on(fleet_git, compile_, tmp_path):
    repo, fleet = fleet_git
    head = repo.head.commit.hexsha
    out = repo.working_tree_dir + "/out"
    res = compile_(fleet, "--commit", "main", out=Path(out))
    assert res.code == 1 and "E516" in res.err and "main" in res.err
    assert repo.head.commit.hexsha == head and (fleet / "fleet.yaml").is_file()
    assert not Path(out).exists()


def test_commit_refuses_another_branch_that_holds_the_fleet(fleet_git, compile_, tmp_path):
    repo, fleet = fleet_git
    repo.git.branch("release-1")  # holds the fleet too
    res = compile_(fleet, "--commit", "release-1", out=Path(repo.working_tree_dir) / "out")
    assert res.code == 1 and "E516" in res.err and "fleet/fleet.yaml" in res.err
    assert repo.commit("release-1").hexsha == repo.commit("main").hexsha


def test_commit_to_a_branch_of_its_own_in_the_same_repository(fleet_git, compile_, tmp_path):
    repo, fleet = fleet_git
    out = Path(repo.working_tree_dir) / "out"
    res = compile_(fleet, "--commit", "desired-state", out=out)
    assert res.code == 0, res.err
    tip = repo.commit("desired-state")
    files = {b.path for b in tip.tree.traverse() if b.type == "blob"}
    assert "metadata/timestamp.json" in files and not any(f.startswith("fleet/") for f in files)
    assert repo.commit("main").tree / "fleet/fleet.yaml"


# ---- the clock --------------------------------------------------------------------------------

def _iso(when: datetime) -> str:
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(("offset_minutes", "allowed"), [(0, True), (-4, True), (10, False), (60 * 24 * 400, False)])
def test_now_far_from_the_clock_needs_allow_clock_skew(fleet, run_cli, store, keys, tmp_path, offset_minutes,
                                                       allowed):
    from datetime import timedelta

    now = _iso(datetime.now(timezone.utc) + timedelta(minutes=offset_minutes))
    out = tmp_path / "out"
    res = run_cli("compile", fleet, "--out", out, "--keys", keys, "--store", store, "--now", now)
    if allowed:
        assert res.code == 0, res.err
    else:
        assert res.code == 2 and "--allow-clock-skew" in res.err and not out.exists()
        res = run_cli("compile", fleet, "--out", out, "--keys", keys, "--store", store, "--now", now,
                      "--allow-clock-skew")
        assert res.code == 0, res.err
    # verify checks the same way
    root = out / "metadata/1.root.json"
    res = run_cli("verify", out, "--device", "sm-cart-001", "--root", root, "--now", now)
    assert res.code == (0 if allowed else 2), res.err
    if not allowed:
        assert "--allow-clock-skew" in res.err


# ---- what compile prints once -------------------------------------------------------------------

def test_compile_does_not_repeat_validates_notes(fleet, compile_, run_cli):
    validated = run_cli("validate", fleet)
    res = compile_(fleet)
    assert res.code == 0, res.err
    assert "note[" not in res.err and "N30" not in res.err
    # validate itself says each note once per class
    codes = [ln for ln in validated.err.splitlines() if "note[N301]" in ln]
    assert len(codes) == len(set(codes))
