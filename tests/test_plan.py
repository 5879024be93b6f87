"""`edgefleet plan`: on a real git repository of the fleet, a pull request's change is
reported as exactly the devices it moves, with the bytes each will download."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import git
import pytest

from edgefleet.desired.waves import RolloutWaves
from edgefleet.load.repo import read_repository
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

pytestmark = pytest.mark.slow
ACTOR = git.Actor("Fleet Operator", "ops@example.com")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


def commit(repo: git.Repo, message: str) -> None:
    repo.git.add("--all")
    when = f"{int(datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc).timestamp())} +0000"
    repo.index.commit(message, author=ACTOR, committer=ACTOR, author_date=when, commit_date=when)


@pytest.fixture
def fleet(tmp_path) -> Path:
    """A git repository holding the example fleet at its root, one commit."""
    dest = tmp_path / "fleet-repo"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    commit(git.Repo.init(dest), "fleet")
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def plan_json(run_cli, fleet: Path, *args: str) -> dict:
    res = run_cli("plan", fleet, *args, "--format", "json")
    assert res.code == 0, res.err
    return json.loads(res.out)


def test_label_change_names_exactly_that_device(fleet, run_cli, store):
    edit(fleet / "devices/plant-brno.yaml", 'labels: {line: "2"}', 'labels: {line: "2", camera: "ir"}')
    commit(git.Repo(fleet), "pb-robot-003 gets an IR camera")
    plan = plan_json(run_cli, fleet, "--base", "HEAD~1", "--head", "HEAD", "--store", store)
    [change] = plan["changes"]
    assert change["device_id"] == "pb-robot-003" and change["change"] == "changed"
    assert change["moves_model"] is False and "device.labels" in " ".join(change["what"])
    assert plan["devices"] == {"before": 48, "after": 48, "unchanged": 47, "added": 0, "removed": 0,
                               "changed": 1, "moving": 0}
    # It downloads its new state file only: no artifact changes.
    assert change["download_bytes"] == change["state_bytes"] > 500
    [group] = plan["groups"]
    assert (group["hardware_class"], group["site"], group["devices"]) == (
        "jetson-vision-standard", "plant-brno", ["pb-robot-003"])


def test_default_head_is_the_work_tree_with_uncommitted_edits(fleet, run_cli, store):
    edit(fleet / "devices/plant-brno.yaml", 'labels: {line: "2"}', 'labels: {line: "9"}')
    plan = plan_json(run_cli, fleet, "--base", "HEAD", "--store", store)
    assert [c["device_id"] for c in plan["changes"]] == ["pb-robot-003"]
    assert plan["head"] == "work tree"


def test_an_added_device_shows_as_added_with_its_artifact_to_download(fleet, run_cli, store):
    edit(fleet / "devices/plant-brno.yaml", "  devices:\n", (
        "  devices:\n    - id: pb-robot-099\n      hardware_class: jetson-vision-standard\n"
        "      site: plant-brno\n      public_key: ed25519:" + "ab" * 32 + "\n"))
    plan = plan_json(run_cli, fleet, "--base", "HEAD", "--store", store)
    [change] = plan["changes"]
    assert change["device_id"] == "pb-robot-099" and change["change"] == "added"
    [after] = change["after"]
    # fallback_size is 0 when it runs from_version
    assert change["download_bytes"] == change["state_bytes"] + after["size"] + after["fallback_size"]
    assert after["artifact"] and not after["artifact"].startswith("key:"), "built artifacts have digests"


def test_removed_device_shows_as_removed(fleet, run_cli, store):
    path = fleet / "devices/st-marys-hospital.csv"
    lines = path.read_text().splitlines(keepends=True)
    removed = lines[3].split(",")[0]
    path.write_text("".join(lines[:3] + lines[4:]))
    plan = plan_json(run_cli, fleet, "--base", "HEAD", "--store", store)
    assert [(c["device_id"], c["change"], c["download_bytes"]) for c in plan["changes"]] == [(removed, "removed", 0)]


def test_advancing_a_wave_lists_exactly_the_devices_that_go_live(fleet, run_cli, store):
    edit(fleet / "rollouts/meter-digits-1-1.yaml", "current_wave: 0", "current_wave: 1")
    commit(git.Repo(fleet), "meter-digits 1.1: go to half")
    plan = plan_json(run_cli, fleet, "--base", "HEAD~1", "--head", "HEAD", "--store", store)
    repo, _ = read_repository(fleet)
    waves = RolloutWaves.of("meter-digits-1-1", repo.rollouts["meter-digits-1-1"].doc.spec)
    expected = sorted(d.doc.id for d in repo.devices if waves.place(d.doc.id).wave == 1)
    assert expected, "the example fleet has devices in the second wave"
    assert sorted(c["device_id"] for c in plan["changes"]) == expected
    for change in plan["changes"]:
        [before], [after] = change["before"], change["after"]
        assert (before["version"], after["version"]) == ("1.0.0", "1.1.0") and change["moves_model"]
        assert after["fallback"] == before["artifact"], "the old version stays as last-known-good"
        # It fetches the new artifact and its new state, not the fallback it already runs.
        assert change["download_bytes"] == change["state_bytes"] + after["size"]
    assert {g["wave"] for g in plan["groups"]} == {"half"}
    assert plan["devices"]["moving"] == len(expected)


def test_text_and_markdown_reports(fleet, run_cli, store):
    edit(fleet / "rollouts/meter-digits-1-1.yaml", "current_wave: 0", "current_wave: 1")
    text = run_cli("plan", fleet, "--base", "HEAD", "--store", store)
    assert text.code == 0
    assert re.search(r"changing model or version", text.out)
    assert re.search(r"~ \S+: meter-digits 1\.0\.0 → 1\.1\.0", text.out)
    markdown = run_cli("plan", fleet, "--base", "HEAD", "--store", store, "--format", "markdown")
    assert markdown.code == 0
    assert markdown.out.startswith("<!-- edgefleet-plan -->")
    assert "| `meter-digits-1-1` | half |" in markdown.out and "<details>" in markdown.out


def test_no_change_says_so(fleet, run_cli, store):
    res = run_cli("plan", fleet, "--base", "HEAD", "--store", store)
    assert res.code == 0 and "no device changes" in res.out


def test_unbuilt_artifacts_are_previewed_with_estimated_sizes(fleet, run_cli):
    edit(fleet / "rollouts/meter-digits-1-1.yaml", "current_wave: 0", "current_wave: 1")
    plan = plan_json(run_cli, fleet, "--base", "HEAD")  # the fleet's own store is empty
    assert plan["changes"] and all(c["after"][0]["artifact"].startswith("key:") for c in plan["changes"])
    assert all(c["download_bytes"] > c["after"][0]["size"] > 0 for c in plan["changes"])
    assert any("estimated" in n for n in plan["notes"])


def test_fleet_in_a_subdirectory_and_absent_at_base(tmp_path, run_cli, store):
    top = tmp_path / "mono"
    top.mkdir()
    (top / "README.md").write_text("infra\n")
    repo = git.Repo.init(top)
    commit(repo, "before the fleet")
    shutil.copytree(EXAMPLE_FLEET, top / "fleet", ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    commit(repo, "add the fleet")
    plan = plan_json(run_cli, top / "fleet", "--base", "HEAD~1", "--head", "HEAD", "--store", store)
    assert plan["devices"]["added"] == 48 and plan["devices"]["before"] == 0
    assert any("does not exist" in n for n in plan["notes"])
    again = plan_json(run_cli, top / "fleet", "--base", "HEAD", "--store", store)
    assert again["changes"] == []


@pytest.mark.parametrize(("setup", "code", "needle"), [
    ("unknown-revision", "E521", "unknown revision"),
    ("not-a-git-repository", "E520", "not inside a git repository"),
    ("invalid-head", "E203", "devices/plant-brno.yaml:"),
], ids=lambda v: v if isinstance(v, str) and "-" in v else "")
def test_plan_errors(fleet, tmp_path, run_cli, setup, code, needle):
    target, base = fleet, "HEAD"
    if setup == "unknown-revision":
        base = "no-such-branch"
    elif setup == "not-a-git-repository":
        target = tmp_path / "plain"
        shutil.copytree(EXAMPLE_FLEET, target, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    else:
        edit(fleet / "devices/plant-brno.yaml", "hardware_class: jetson-vision-standard",
             "hardware_class: jetson-vision-standart")
    res = run_cli("plan", target, "--base", base)
    assert res.code == 1, res.out
    assert code in res.err and needle in res.err and "Traceback" not in res.err


def test_markdown_of_a_large_change_fits_a_pull_request_comment(tmp_path):
    from edgefleet.desired.compile import compile_all
    from edgefleet.desired.plan import COMMENT_LIMIT, diff_fleets, render_markdown
    from tests.desired_support import synthetic_artifacts

    dest = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    classes = ["jetson-vision-standard", "intel-lowpower-detector", "factory-gateway-gpu", "medical-cart-cpu"]
    rows = [f"gen-{i:05d},{classes[i // 60 % 4]},site-{i % 60:02d},line={i % 7},ed25519:{'0' * 64}"
            for i in range(4000)]
    (dest / "devices/generated.csv").write_text("id,hardware_class,site,labels,public_key\n" + "\n".join(rows) + "\n")
    edit(dest / "rollouts/meter-digits-1-1.yaml", "selector: {}", "selector: {sites: [" + ", ".join(
        f"site-{i:02d}" for i in range(60)) + "]}")
    base = read_repository(dest)[0]
    edit(dest / "rollouts/meter-digits-1-1.yaml", "phase: progressing", "phase: complete")
    head = read_repository(dest)[0]
    plan = diff_fleets(compile_all(base, synthetic_artifacts(base)), compile_all(head, synthetic_artifacts(head)))
    assert len(plan.changes) > 3000 and len(plan.groups) > 200
    text = render_markdown(plan)
    assert len(text) <= COMMENT_LIMIT
    assert "more groups" in text and text.count("<details>") <= 50
    assert str(len(plan.changes)) in text  # the headline still counts every device


def test_markdown_caps_the_devices_listed_per_group(tmp_path):
    from edgefleet.desired.compile import compile_all
    from edgefleet.desired.plan import diff_fleets, render_markdown
    from tests.desired_support import synthetic_artifacts

    dest = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    base = read_repository(dest)[0]
    edit(dest / "rollouts/meter-digits-1-1.yaml", "phase: progressing", "phase: complete")
    head = read_repository(dest)[0]
    plan = diff_fleets(compile_all(base, synthetic_artifacts(base)), compile_all(head, synthetic_artifacts(head)))
    biggest = max(plan.groups, key=lambda g: len(g.devices))
    assert len(biggest.devices) > 2
    text = render_markdown(plan, max_devices_per_group=2)
    assert f"… and {len(biggest.devices) - 2} more" in text
    assert sum(line.startswith("| ~ |") for line in text.splitlines()) == 2 * len(plan.groups) - sum(
        len(g.devices) < 2 for g in plan.groups)


def test_changes_show_old_and_new_values(fleet, run_cli, store):
    edit(fleet / "rollouts/meter-digits-1-1.yaml", "current_wave: 0", "current_wave: 1")
    plan = plan_json(run_cli, fleet, "--base", "HEAD", "--store", store)
    change = plan["changes"][0]
    [before], [after] = change["before"], change["after"]
    values = {v["field"]: (v["old"], v["new"]) for v in change["values"]}
    assert values["version"] == ("1.0.0", "1.1.0")
    assert values["artifact"] == (before["artifact"], after["artifact"]) and before["artifact"] != after["artifact"]
    if before["size"] != after["size"]:
        assert values["size"] == (before["size"], after["size"])
    else:
        assert "size" not in values, "only what changed is listed"
    assert before["wave"] == after["wave"] == "half" and "wave" not in values  # same wave, now live
    assert values["live"] == ("no", "yes")
    assert all(v["model"] == "meter-digits" for v in change["values"])
    text = run_cli("plan", fleet, "--base", "HEAD", "--store", store).out
    device = change["device_id"]
    block = text[text.index(f"~ {device}:"):]
    detail = block.splitlines()[1]
    assert detail.strip().startswith("meter-digits: version 1.0.0 → 1.1.0")
    assert f"artifact {before['artifact'][:16]} → {after['artifact'][:16]}" in detail
    assert "live no → yes" in detail


def test_added_and_removed_devices_show_values_from_and_to_nothing(fleet, run_cli, store):
    path = fleet / "devices/st-marys-hospital.csv"
    lines = path.read_text().splitlines(keepends=True)
    removed = lines[3].split(",")[0]
    path.write_text("".join(lines[:3] + lines[4:]))
    [change] = plan_json(run_cli, fleet, "--base", "HEAD", "--store", store)["changes"]
    assert change["device_id"] == removed
    values = {v["field"]: (v["old"], v["new"]) for v in change["values"]}
    assert values["version"][1] is None and values["version"][0]


@pytest.mark.parametrize("breakage", ["unknown-class", "bad-yaml", "bad-wave"])
def test_a_pull_request_that_fixes_a_broken_base_is_still_planned(fleet, run_cli, store, breakage):
    repo = git.Repo(fleet)
    rel, old, new = {
        "unknown-class": ("devices/plant-brno.yaml", "hardware_class: jetson-vision-standard",
                          "hardware_class: jetson-vision-standart"),
        "bad-yaml": ("models/meter-digits.yaml", "apiVersion: edgefleet/v1", "apiVersion: [edgefleet/v1"),
        "bad-wave": ("rollouts/meter-digits-1-1.yaml", "current_wave: 0", "current_wave: 99"),
    }[breakage]
    good = (fleet / rel).read_text()
    edit(fleet / rel, old, new)
    commit(repo, "break the fleet")
    (fleet / rel).write_text(good)  # the pull request fixes it
    res = run_cli("plan", fleet, "--base", "HEAD", "--store", store)
    assert res.code == 0, res.err
    assert "the base HEAD has errors" in res.err and f"HEAD:{fleet}" not in res.out
    assert "error[" in res.err and rel.split("/")[-1] in res.err
    assert "does not validate" in res.out
    data = plan_json(run_cli, fleet, "--base", "HEAD", "--store", store)
    assert data["base_diagnostics"] and all(d["file"].startswith("HEAD:") for d in data["base_diagnostics"])
    assert data["devices"]["after"] == 48 and data["devices"]["added"] == 48
    # The other way round (a change that breaks the head) is still an error.
    edit(fleet / rel, old, new)
    res = run_cli("plan", fleet, "--base", "HEAD", "--store", store)
    assert res.code == 1


def test_plan_does_not_repeat_validates_notes(fleet, run_cli, store):
    edit(fleet / "devices/plant-brno.yaml", 'labels: {line: "2"}', 'labels: {line: "9"}')
    res = run_cli("plan", fleet, "--base", "HEAD", "--store", store)
    assert res.code == 0 and "N301" not in res.err + res.out and "note[" not in res.err
