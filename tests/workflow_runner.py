"""Run the `run:` steps of a GitHub workflow job locally, in order, with real bash and git.

Not an Actions emulator: `uses:` steps (checkout, setup-python, caches, artifacts) are
what the local scratch repository already provides, so they are skipped and listed;
`pip install` steps are skipped because the test runs the installed edgefleet; steps
that talk to GitHub's API (`gh ...`) are skipped and their inputs kept for the test to
read. Everything else runs as written, after substituting the `${{ ... }}` expressions
the edgefleet workflows use (inputs, matrix, secrets, github.*). `$GITHUB_OUTPUT` works
as on a runner, so one job's outputs feed the next.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ruamel.yaml import YAML

_EXPR = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")
SKIPPED_RUNS = (re.compile(r"^\s*python -m pip install"), re.compile(r"^\s*gh "))


@dataclass
class JobRun:
    outputs: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)        # step names (or first lines) that ran
    skipped: list[str] = field(default_factory=list)


def load_workflow(path: Path) -> dict[str, Any]:
    return YAML(typ="safe").load(path.read_text())


def _lookup(expr: str, context: Mapping[str, Any]) -> str:
    expr = expr.strip()
    if expr.startswith("fromJSON(") or "||" in expr or "&&" in expr:
        raise ValueError(f"expression not supported by the local runner: {expr}")
    value: Any = context
    for part in expr.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"${{{{ {expr} }}}} has no value in the local run")
        value = value[part]
    return str(value)


def substitute(text: str, context: Mapping[str, Any]) -> str:
    return _EXPR.sub(lambda m: _lookup(m.group(1), context), text)


def run_job(workflow: dict[str, Any], job: str, *, cwd: Path, inputs: Mapping[str, str] | None = None,
            matrix: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None,
            github: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> JobRun:
    """Run one job's steps in `cwd`; raise CalledProcessError naming the step that failed."""
    declared = (workflow.get(True) or workflow.get("on") or {}).get("workflow_call", {}).get("inputs", {}) or {}
    all_inputs = {name: str(spec.get("default", "")) for name, spec in declared.items()}
    all_inputs.update(inputs or {})
    gh = {"workspace": str(cwd), "sha": _git(cwd, "rev-parse", "HEAD"), **(github or {})}
    context = {"inputs": all_inputs, "matrix": dict(matrix or {}), "secrets": dict(secrets or {}), "github": gh,
               "env": {}}
    base_env = {k: substitute(str(v), context) for k, v in (workflow.get("env") or {}).items()}
    context["env"] = base_env
    result = JobRun()
    output_file = cwd.parent / f".github-output-{job}"
    for step in workflow["jobs"][job]["steps"]:
        label = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
        if "uses" in step or any(p.match(step["run"]) for p in SKIPPED_RUNS):
            result.skipped.append(label)
            continue
        step_env = {k: substitute(str(v), context) for k, v in (step.get("env") or {}).items()}
        output_file.write_text("")
        proc_env = {**os.environ, **(env or {}), **base_env, **step_env, "GITHUB_OUTPUT": str(output_file)}
        proc_env.pop("GITHUB_ACTIONS", None)  # no OIDC identity here: signing is skipped, as off CI
        script = substitute(step["run"], context)
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=proc_env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, f"step {label!r}", proc.stdout, proc.stderr)
        for line in output_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if step.get("id"):
                result.outputs[key] = value
        result.ran.append(label)
    output_file.unlink(missing_ok=True)
    return result


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()
