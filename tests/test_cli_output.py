"""What the CLI prints, in every environment: one JSON document on stdout with --format json
(annotations on stderr under GitHub Actions), a quiet end on a closed pipe, one form for
problems not about a file, and a summary line that counts them as such."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.cli.output import summary
from edgefleet.core.diagnostics import error, warning
from edgefleet.core.source import Location
from edgefleet.pipeline.common import RUN
from tests.conftest import ROOT


def _break_rollout(fleet: Path) -> None:
    path = fleet / "rollouts/meter-digits-1-1.yaml"
    path.write_text(path.read_text().replace("model: meter-digits", "model: no-such-model", 1))


@pytest.mark.parametrize("actions", ["true", ""], ids=["github-actions", "plain"])
@pytest.mark.parametrize("command", [
    ("validate", "{fleet}"),
    ("build", "{fleet}"),
    ("compile", "{fleet}", "--out", "{out}"),
    ("plan", "{fleet}", "--base", "HEAD"),
], ids=lambda c: c[0])
def test_json_is_the_whole_of_stdout(fleet_copy, tmp_path, run_cli, command, actions):
    if command[0] == "plan":  # a base that validates, a head that does not
        import git

        repo = git.Repo.init(fleet_copy)
        repo.git.add("--all")
        repo.index.commit("fleet", author=git.Actor("a", "a@example.com"), committer=git.Actor("a", "a@example.com"))
    _break_rollout(fleet_copy)
    args = [a.format(fleet=fleet_copy, out=tmp_path / "out") for a in command]
    res = run_cli(*args, "--format", "json", env={"GITHUB_ACTIONS": actions})
    assert res.code == 1, res.err
    document = json.loads(res.out)  # fails on anything after the document
    assert res.out.count("\n{") == 0 and res.out.strip().startswith("{")
    assert "::error" not in res.out
    assert any(d["code"] for d in document["diagnostics"])
    if actions == "true":
        assert "::error file=" in res.err and "no-such-model" in res.err
    else:
        assert "::error" not in res.err


@pytest.mark.parametrize("command", [
    ("build", "{fleet}", "--matrix"),
    ("plan", "{fleet}", "--base", "HEAD", "--format", "markdown"),
], ids=["build-matrix", "plan-markdown"])
def test_a_document_on_stdout_keeps_annotations_off_it(fleet_copy, run_cli, command):
    import git

    repo = git.Repo.init(fleet_copy)
    repo.git.add("--all")
    repo.index.commit("fleet", author=git.Actor("a", "a@example.com"), committer=git.Actor("a", "a@example.com"))
    _break_rollout(fleet_copy)
    res = run_cli(*[a.format(fleet=fleet_copy) for a in command], env={"GITHUB_ACTIONS": "true"})
    assert res.code == 1
    assert "::error" not in res.out and "::error file=" in res.err


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "compiler")}
    return subprocess.Popen([sys.executable, "-m", "edgefleet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT, **kw)


@pytest.mark.parametrize("args", [
    ["validate", "fleet"],
    ["validate", "fleet", "--format", "json"],
    ["--help"],
], ids=["validate-text", "validate-json", "help"])
def test_a_closed_pipe_ends_quietly(args):
    proc = _run(args)
    proc.stdout.close()  # the reader is gone before a byte is written
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    assert code == 0, err
    assert "internal error" not in err and "Traceback" not in err and "BrokenPipe" not in err


def test_head_of_a_pipe_ends_quietly():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "compiler")}
    proc = subprocess.run(["bash", "-o", "pipefail", "-c",
                           f"{sys.executable} -m edgefleet validate fleet --format json | head -1"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "{\n"
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("diags", "expected"), [
    ([error("E1", "x", Location("a.yaml", 1, 1))], "1 error in 1 file"),
    ([error("E1", "x", Location("a.yaml", 1, 1)), error("E2", "y", Location("b.yaml", 2, 1))], "2 errors in 2 files"),
    ([error("E501", "keys", RUN)], "1 error"),
    ([error("E501", "keys", RUN), error("E515", "branch", RUN)], "2 errors"),
    ([error("E1", "x", Location("a.yaml", 1, 1)), error("E501", "keys", RUN)],
     "2 errors: 1 in 1 file, 1 not about a file"),
    ([error("E501", "env", Location("$EDGEFLEET_KEY_ROOT")), warning("W1", "w", Location("a.yaml", 1, 1))],
     "1 error, 1 warning"),
], ids=["one-file", "two-files", "run-only", "two-run", "mixed", "env-and-warning"])
def test_summary_counts_files_and_run_level_errors_apart(diags, expected):
    assert summary(diags) == expected


def test_a_key_problem_is_reported_in_the_run_level_form(fleet_copy, tmp_path, run_cli, monkeypatch):
    from tests.desired_support import synthetic_artifacts
    import edgefleet.build.index as index

    monkeypatch.setattr(index, "built_artifacts", lambda repo, store=None: synthetic_artifacts(repo))
    for role in ("ROOT", "TARGETS", "SNAPSHOT", "TIMESTAMP", "BINS"):
        monkeypatch.delenv(f"EDGEFLEET_KEY_{role}", raising=False)
    res = run_cli("compile", fleet_copy, "--out", tmp_path / "out")
    assert res.code == 1
    lines = res.err.splitlines()
    assert any(ln.startswith("edgefleet compile: error[E501]: signing key missing") for ln in lines), res.err
    assert lines[-1] == "1 error", res.err
    res = run_cli("compile", fleet_copy, "--out", tmp_path / "out", "--keys", tmp_path / "no-keys")
    assert res.code == 1 and "edgefleet compile: error[E501]: key directory" in res.err
    assert res.err.splitlines()[-1] == "1 error"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("branch", ["bad..name", "-x", "a b"])
def test_a_bad_branch_is_a_run_level_error(fleet_copy, tmp_path, run_cli, branch):
    res = run_cli("compile", fleet_copy, "--out", tmp_path / "out", f"--commit={branch}")
    assert res.code == 1
    assert "edgefleet compile: error[E515]: --commit" in res.err and res.err.splitlines()[-1] == "1 error"


def test_cli_commands_hold_no_domain_logic():
    """cli/<command>.py imports the pipeline and renderers, not the stages themselves."""
    import ast

    allowed = ("edgefleet.cli", "edgefleet.pipeline", "edgefleet.core", "edgefleet.desired.plan",
               "edgefleet.build.orchestrate", "edgefleet.signing")
    cli = ROOT / "compiler/edgefleet/cli"
    for name in ("validate", "explain", "build", "compile", "plan", "verify", "keys"):
        tree = ast.parse((cli / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgefleet"):
                assert node.module.startswith(allowed), f"cli/{name}.py imports {node.module}"
                if node.module == "edgefleet.build.orchestrate":
                    assert [a.name for a in node.names] == ["gate_summary"], "only the result wording"
                if node.module == "edgefleet.signing":
                    assert {a.name for a in node.names} <= {"ROLES"}, f"cli/{name}.py: {node.module}"
