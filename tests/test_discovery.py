"""Which fleet repository a command works on: REPO, else the nearest folder up holding
fleet.yaml (as git finds `.git`); the example fleet only when asked for by name."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import git
import pytest

from edgefleet.cli import output
from tests.conftest import EXAMPLE_FLEET

ACTOR = git.Actor("Fleet Operator", "ops@example.com")


def _copy(dest: Path) -> Path:
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    return dest


def _commit(repo: git.Repo, message: str) -> None:
    repo.git.add("--all")
    when = f"{int(datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc).timestamp())} +0000"
    repo.index.commit(message, author=ACTOR, committer=ACTOR, author_date=when, commit_date=when)


@pytest.mark.parametrize("sub", ["", "models", "devices", "models/meter-digits/1.1.0"])
def test_find_repository_walks_up_to_the_folder_holding_fleet_yaml(fleet_copy, sub):
    assert output.find_repository(fleet_copy / sub) == fleet_copy


def test_find_repository_finds_nothing_above_an_unrelated_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert output.find_repository(tmp_path / "a" / "b") is None


@pytest.mark.parametrize("sub", ["models", "devices", "hardware"])
def test_validate_inside_a_sub_folder_checks_the_enclosing_fleet(fleet_copy, run_cli, sub):
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    path.write_text(path.read_text().replace("model: meter-digits", "model: no-such-model", 1))
    res = run_cli("validate", "--format", "json", cwd=fleet_copy / sub)
    assert res.code == 1
    files = {d["file"] for d in json.loads(res.out)["diagnostics"] if d["severity"] == "error"}
    assert files and all(f.endswith("rollouts/meter-digits-1-1.yaml") for f in files), files


@pytest.mark.parametrize("command", [
    ("validate",),
    ("explain", "meter-digits@1.1.0", "--class", "medical-cart-cpu"),
    ("build", "--matrix"),
    ("compile", "--out", "OUT"),
    ("plan", "--base", "HEAD"),
], ids=lambda c: c[0])
def test_no_fleet_anywhere_up_is_a_usage_error_with_a_hint(tmp_path, run_cli, command):
    work = tmp_path / "empty"
    work.mkdir()
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    res = run_cli(*args, cwd=work)
    assert res.code == 2, (res.out, res.err)
    assert "no fleet.yaml" in res.err and "--example" in res.err
    assert "example fleet at" not in res.err and "Traceback" not in res.err
    assert not (tmp_path / "out").exists(), "nothing is compiled or signed"


def test_compile_in_an_empty_folder_signs_nothing_even_with_keys(tmp_path, run_cli):
    from edgefleet.signing.keys import init_keys

    init_keys(tmp_path / "keys")
    work = tmp_path / "empty"
    work.mkdir()
    res = run_cli("compile", "--out", tmp_path / "out", "--keys", tmp_path / "keys", cwd=work)
    assert res.code == 2 and not (tmp_path / "out").exists()


def test_example_only_by_name_and_not_together_with_repo(fleet_copy, run_cli, tmp_path):
    res = run_cli("validate", "--example", "--format", "json", cwd=tmp_path)
    assert res.code == 0 and json.loads(res.out)["summary"]["devices"] == 48
    res = run_cli("validate", fleet_copy, "--example", cwd=tmp_path)
    assert res.code == 2 and "not both" in res.err
    res = run_cli("explain", "meter-digits@1.1.0", "--example", "--class", "intel-lowpower-detector",
                  "--format", "json", cwd=tmp_path)
    assert res.code == 0 and json.loads(res.out)["variant"] == "student"


def test_the_example_is_located_by_one_function(fleet_copy, run_cli, tmp_path, monkeypatch):
    """Swapping `example_fleet()` (e.g. for importlib.resources) moves every --example."""
    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    path.write_text(path.read_text().replace("model: meter-digits", "model: swapped-model", 1))
    monkeypatch.setattr(output, "example_fleet", lambda: fleet_copy)
    res = run_cli("validate", "--example", cwd=tmp_path)
    assert res.code == 1 and "swapped-model" in res.err


def test_readme_first_command_names_the_example_by_path(run_cli, monkeypatch):
    """README's first command runs `edgefleet validate fleet` from the checkout: an explicit path."""
    res = run_cli("validate", "fleet", cwd=EXAMPLE_FLEET.parent)
    assert res.code == 0 and res.out.startswith("fleet: valid")


@pytest.fixture
def git_fleet(tmp_path) -> Path:
    """A git repository `mono/` holding a fleet at `mono/fleet`, one commit."""
    top = tmp_path / "mono"
    top.mkdir()
    (top / "README.md").write_text("infra\n")
    _copy(top / "fleet")
    _commit(git.Repo.init(top), "fleet")
    return top / "fleet"


@pytest.mark.slow
@pytest.mark.parametrize("sub", ["devices", "models/meter-digits"])
def test_plan_from_a_sub_folder_compares_this_fleets_history(git_fleet, run_cli, sub):
    path = git_fleet / "devices/plant-brno.yaml"
    path.write_text(path.read_text().replace('labels: {line: "2"}', 'labels: {line: "7"}', 1))
    res = run_cli("plan", "--base", "HEAD", "--format", "json", cwd=git_fleet / sub)
    assert res.code == 0, res.err
    plan = json.loads(res.out)
    assert [c["device_id"] for c in plan["changes"]] == ["pb-robot-003"]
    assert plan["devices"]["before"] == plan["devices"]["after"] == 48
    # An unknown revision of *this* repository is reported as such (not the checkout's history).
    res = run_cli("plan", "--base", "no-such-rev", cwd=git_fleet / sub)
    assert res.code == 1 and "unknown revision 'no-such-rev'" in res.err
