"""The files of a new fleet repository (`edgefleet init`), rendered from templates/init/.

Pure: every input is an argument (the example model's bytes, the schemas' text, the
placeholder device keys), and the result is `{repository-relative path: bytes}`, so the
scaffold is testable without a disk and the same inputs give the same bytes.

Signer identity. The release workflow of a fleet repository calls edgefleet's reusable
`fleet-release.yml`; for a reusable workflow, Fulcio's certificate names the *called*
workflow (the `job_workflow_ref` claim), so the identity devices accept is that workflow
at the pinned ref, and `signing.repository` narrows it to runs from this fleet's own
repository (the certificate's GitHub Workflow Repository extension).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import jinja2

from edgefleet.signing import ROLES

WORKFLOWS_HOME = "acme/edgefleet"   # where edgefleet's reusable workflows live; --workflows overrides
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# Where the scaffold takes its model from in the example fleet, and where it puts it.
MODEL_FILES = {
    "models/digits/1.0.0/small.onnx": "models/meter-digits/1.0.0/student.onnx",
    "models/digits/1.1.0/small.onnx": "models/meter-digits/1.1.0/student.onnx",
    "models/digits/data/calibration.npz": "models/meter-digits/data/calibration.npz",
    "models/digits/data/evaluation.npz": "models/meter-digits/data/evaluation.npz",
}
DEVICE_IDS = ("edge-001", "edge-002", "edge-003")

# template -> output path (relative to the new repository)
TEMPLATES = {
    "init/fleet.yaml.j2": "fleet.yaml",
    "init/hardware.yaml.j2": "hardware/edge-cpu.yaml",
    "init/model.yaml.j2": "models/digits.yaml",
    "init/devices.yaml.j2": "devices/site-one.yaml",
    "init/rollout.yaml.j2": "rollouts/digits-1-1.yaml",
    "init/README.md.j2": "README.md",
    "init/gitignore.j2": ".gitignore",
    "init/pre-commit-config.yaml.j2": ".pre-commit-config.yaml",
    "init/workflows/pull-request.yml.j2": ".github/workflows/pull-request.yml",
    "init/workflows/release.yml.j2": ".github/workflows/release.yml",
    "init/actionlint.yaml.j2": ".github/actionlint.yaml",
}


class ScaffoldError(ValueError):
    """A bad option of `edgefleet init` (usage error)."""


@dataclass(frozen=True)
class ScaffoldOptions:
    name: str
    repository: str | None = None          # the fleet's GitHub repository, OWNER/NAME
    workflows: str = WORKFLOWS_HOME        # OWNER/NAME of edgefleet's reusable workflows
    workflows_ref: str = "v0.1.0"          # tag (or branch) of those workflows to pin

    def check(self) -> None:
        if not _NAME.match(self.name):
            raise ScaffoldError(f"fleet name {self.name!r}: use lower-case letters, digits and '-' "
                                "(at most 63, starting and ending with a letter or digit)")
        for label, value in (("--repository", self.repository), ("--workflows", self.workflows)):
            if value is not None and not _REPO.match(value):
                raise ScaffoldError(f"{label} {value!r}: give OWNER/NAME of a GitHub repository")
        if not re.match(r"^[A-Za-z0-9_.\-/]+$", self.workflows_ref):
            raise ScaffoldError(f"workflows ref {self.workflows_ref!r} is not a git ref name")

    @property
    def identity(self) -> str:
        """The certificate SAN of the reusable release workflow at the pinned ref."""
        ref = self.workflows_ref if self.workflows_ref.startswith("refs/") else (
            f"refs/tags/{self.workflows_ref}" if re.match(r"^v?\d", self.workflows_ref)
            else f"refs/heads/{self.workflows_ref}")
        return f"https://github.com/{self.workflows}/.github/workflows/fleet-release.yml@{ref}"


def environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def scaffold_files(options: ScaffoldOptions, *, templates: jinja2.Environment, model_files: Mapping[str, bytes],
                   schemas: Mapping[str, str], device_keys: Mapping[str, str]) -> dict[str, bytes]:
    """Every file of the new repository. `model_files` is keyed like MODEL_FILES' values,
    `schemas` by schema file name, `device_keys` by device id (`ed25519:<hex>`)."""
    import hashlib

    options.check()
    files: dict[str, bytes] = {}
    for out, source in MODEL_FILES.items():
        files[out] = model_files[source]
    versions = [{"version": v, "source": f"models/digits/{v}/small.onnx",
                 "sha256": hashlib.sha256(files[f"models/digits/{v}/small.onnx"]).hexdigest()}
                for v in ("1.0.0", "1.1.0")]
    context = {
        "name": options.name, "identity": options.identity, "repository": options.repository,
        "workflows_repo": options.workflows, "workflows_ref": options.workflows_ref,
        "versions": versions, "roles": ROLES,
        "devices": [{"id": d, "line": str(i + 1), "public_key": device_keys[d]} for i, d in enumerate(DEVICE_IDS)],
    }
    for template, out in TEMPLATES.items():
        files[out] = templates.get_template(template).render(**context).encode()
    for name, text in schemas.items():
        files[f"schemas/{name}"] = text.encode()
    return dict(sorted(files.items()))
