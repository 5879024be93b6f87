"""Runtime configuration per (hardware class, artifact), rendered from jinja2 templates.

One template per runtime, `templates/runtime/<runtime>.json.j2` (package data, read through
`core.resources`; `environment(root)` reads a folder instead, for tests and fleet overrides). A
template sees the hardware class spec (`hardware`, as plain JSON data), the artifact
(`artifact`: precision, recipe, path, ...) and `model`, `version`, `variant`; never the
device, so each result is rendered once per class and artifact and shared by every
device of the class. `StrictUndefined` makes a misspelt name an error instead of an
empty string; the text is then parsed as JSON, so the embedded value is canonical
whatever the template's whitespace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from edgefleet.core import resources
from edgefleet.spec.hardware import HardwareClassSpec


class RuntimeConfigError(Exception):
    """A runtime template failed to render or did not produce a JSON object."""

    def __init__(self, template: str, message: str):
        self.template = template
        super().__init__(f"{template}: {message}")


def templates_dir() -> Path:
    """The folder of the packaged templates (the environment reads them through `resources`)."""
    return resources.template_dir()


def _packaged(name: str) -> tuple[str, str, Any] | None:
    try:
        return resources.template_text(name), f"templates/{name}", lambda: True
    except resources.ResourceNotFound:
        return None  # jinja2 turns this into TemplateNotFound


def environment(root: Path | None = None) -> jinja2.Environment:
    """A jinja2 environment over the packaged templates (or over `root`). Cheap: one per run,
    owned by the caller, so no process keeps templates of earlier runs."""
    loader = jinja2.FileSystemLoader(str(root)) if root is not None else jinja2.FunctionLoader(_packaged)
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # JSON, not HTML: values go through |tojson
    )


def template_name(runtime: str) -> str:
    return f"runtime/{runtime}.json.j2"


def render_runtime_config(hardware: HardwareClassSpec, artifact: dict[str, Any], *, model: str, version: str,
                          variant: str, env: jinja2.Environment | None = None) -> dict[str, Any]:
    """The runtime config for one artifact on one class, as a JSON object."""
    name = template_name(hardware.runtime.name)
    env = env or environment()
    try:
        text = env.get_template(name).render(
            hardware=hardware.model_dump(mode="json"), artifact=artifact,
            model=model, version=version, variant=variant)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise RuntimeConfigError(name, f"{'line ' + str(line) + ': ' if line else ''}{exc}") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise RuntimeConfigError(name, f"rendered text is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RuntimeConfigError(name, f"rendered a JSON {type(value).__name__}, not an object")
    return value


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")
