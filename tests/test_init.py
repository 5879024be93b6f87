"""`edgefleet init`: a fleet repository that validates, builds and stays clean from its first commit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.gitops.scaffold import ScaffoldError, ScaffoldOptions


def edgefleet(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgefleet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgefleet {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("init") / "acme-fleet"
    edgefleet("init", str(root), "--repository", "acme/meter-fleet")
    return root


def test_init_makes_a_committed_repository_that_validates(scaffold):
    assert git(scaffold, "status", "--porcelain") == ""
    assert git(scaffold, "log", "--format=%s").strip() == "edgefleet init: fleet repository acme-fleet"
    tracked = set(git(scaffold, "ls-files").split())
    assert {"fleet.yaml", "hardware/edge-cpu.yaml", "models/digits.yaml", "devices/site-one.yaml",
            "rollouts/digits-1-1.yaml", "README.md", ".gitignore", ".pre-commit-config.yaml",
            ".github/workflows/pull-request.yml", ".github/workflows/release.yml",
            "models/digits/1.0.0/small.onnx", "models/digits/data/evaluation.npz"} <= tracked
    proc = edgefleet("validate", str(scaffold), "--format", "json")
    assert '"ok": true' in proc.stdout


def test_every_yaml_file_points_at_a_schema_inside_the_new_repository(scaffold):
    yaml_files = [p for p in scaffold.rglob("*.yaml") if ".github" not in p.parts and p.name != ".pre-commit-config.yaml"]
    assert len(yaml_files) == 5
    for path in yaml_files:
        first = path.read_text().splitlines()[0]
        match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        assert match, f"{path}: no schema line"
        target = (path.parent / match.group(1)).resolve()
        assert target.is_file() and target.is_relative_to(scaffold.resolve()), f"{path}: {target} does not resolve"


def test_fleet_yaml_carries_the_release_workflow_identity_policy(scaffold):
    text = (scaffold / "fleet.yaml").read_text()
    assert ("identity: https://github.com/acme/edgefleet/.github/workflows/fleet-release.yml@refs/tags/v0.1.0"
            in text)
    assert "repository: acme/meter-fleet" in text
    release = (scaffold / ".github/workflows/release.yml").read_text()
    assert "id-token: write" in release and "uses: acme/edgefleet/.github/workflows/fleet-release.yml@v0.1.0" in release


def test_placeholder_device_keys_are_fresh_each_time(tmp_path, scaffold):
    other = tmp_path / "second"
    edgefleet("init", str(other), "--name", "second")
    keys = lambda root: re.findall(r"ed25519:[0-9a-f]{64}", (root / "devices/site-one.yaml").read_text())
    assert len(keys(scaffold)) == 3 and not set(keys(scaffold)) & set(keys(other))


def test_build_cache_and_artifacts_are_ignored_by_git(tmp_path):
    root = tmp_path / "fleet"
    edgefleet("init", str(root))
    edgefleet("build", str(root))
    assert (root / ".edgefleet" / "artifacts").is_dir()
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    git(root, "add", "-A")
    assert git(root, "diff", "--cached", "--name-only") == ""


@pytest.mark.parametrize("setup", ["file", "dir"], ids=["a-file-inside", "a-folder-inside"])
def test_init_refuses_a_folder_that_is_not_empty_and_writes_nothing(tmp_path, setup):
    root = tmp_path / "busy"
    root.mkdir()
    (root / "notes.txt").write_text("mine") if setup == "file" else (root / "sub").mkdir()
    proc = edgefleet("init", str(root), check=False)
    assert proc.returncode == 2 and "is not empty" in proc.stderr and "--force" in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == (["notes.txt"] if setup == "file" else ["sub"])
    proc = edgefleet("init", str(root), "--force", "--name", "busy")
    assert proc.returncode == 0 and (root / "fleet.yaml").is_file() and (root / ".git").is_dir()


def test_init_refuses_a_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = edgefleet("init", str(tmp_path / "f"), check=False)
    assert proc.returncode == 2 and "not a directory" in proc.stderr


@pytest.mark.parametrize("options, message", [
    (ScaffoldOptions(name="Bad Name"), "fleet name"),
    (ScaffoldOptions(name="ok", repository="no-slash"), "--repository"),
    (ScaffoldOptions(name="ok", workflows="a/b/c"), "--workflows"),
    (ScaffoldOptions(name="ok", workflows_ref="v1;rm -rf /"), "not a git ref"),
], ids=["name", "repository", "workflows", "ref"])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ScaffoldError, match=re.escape(message)):
        options.check()


def test_a_bad_name_on_the_command_line_is_a_usage_error(tmp_path):
    proc = edgefleet("init", str(tmp_path / "x"), "--name", "UPPER case", check=False)
    assert proc.returncode == 2 and "fleet name" in proc.stderr and not (tmp_path / "x").exists()
