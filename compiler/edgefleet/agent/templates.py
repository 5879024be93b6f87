"""The agent's templates (systemd unit, status hook): one lookup, and the unit's renderer.

`template_text` is the only place that knows where templates live; it uses the
checkout's `templates/` as desired/runtime_config.py does today, so moving template
lookup to importlib.resources (edgefleet/core/resources.py) changes this one function.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2

from edgefleet.core.ids import is_device_id

UNIT_TEMPLATE = "agent/edgefleet-agent.service.j2"


class TemplateError(Exception):
    """A template is missing or does not render (E690)."""

    def __init__(self, name: str, message: str):
        self.code, self.name, self.message = "E690", name, message
        super().__init__(f"{name}: error[E690]: {message}")


def template_text(name: str) -> str:
    """The text of `templates/<name>` (the single template lookup of the agent)."""
    from edgefleet.desired.runtime_config import templates_dir

    path = templates_dir() / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(name, f"cannot read the template: {exc.strerror}") from exc


def render_template(name: str, **values) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["shell"] = shlex.quote
    env.filters["systemd_quote"] = systemd_quote
    try:
        return env.from_string(template_text(name)).render(**values)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise TemplateError(name, f"{'line ' + str(line) + ': ' if line else ''}{exc}") from exc


def systemd_quote(value: str) -> str:
    """One argument of a systemd ExecStart= line: double-quoted, with \\, " and % escaped."""
    text = str(value)
    if any(c in text for c in "\n\r\0"):
        raise ValueError("a unit argument cannot hold a newline or NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def render_systemd_unit(*, state_dir: Path, device: str, remote: str, root: Path, executable: str = "/usr/bin/edgefleet",
                        store: str | None = None, status_remote: str | None = None, interval: str | None = None,
                        listen: str = "127.0.0.1:8000", user: str = "edgefleet", memory_max: str = "1G",
                        extra_read_write: list[Path] | None = None, branch: str | None = None) -> str:
    """The `edgefleet-agent.service` unit running `edgefleet agent run` with these flags."""
    for label, value in (("state_dir", state_dir), ("root", root)):
        if not Path(value).is_absolute():
            raise TemplateError(UNIT_TEMPLATE, f"{label} must be an absolute path, not {value}")
    args = ["agent", "run", "--state-dir", str(state_dir), "--device", device, "--remote", remote,
            "--root", str(root), "--listen", listen]
    if interval:  # default: the desired state's poll_interval
        args += ["--interval", interval]
    if branch:
        args += ["--branch", branch]
    if store:
        args += ["--store", store]
    if status_remote:
        args += ["--status-remote", status_remote]
    rw = [str(state_dir)] + [str(p) for p in extra_read_write or []]
    runtime_dir = ""
    if listen.startswith("unix:"):
        sock_dir = str(Path(listen[5:]).parent)
        if sock_dir.startswith("/run/") and sock_dir != "/run/":
            runtime_dir = sock_dir[len("/run/"):]  # systemd makes it, owned by the agent's user
        if not any(sock_dir == p or sock_dir.startswith(p.rstrip("/") + "/") for p in rw):
            rw.append(sock_dir)
    for path in rw:
        if any(c.isspace() for c in path) or not path.startswith("/"):
            raise TemplateError(UNIT_TEMPLATE, f"ReadWritePaths needs absolute paths without spaces: {path!r}")
    if not is_device_id(device) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise TemplateError(UNIT_TEMPLATE, "invalid device id or user name")
    if not re.fullmatch(r"\d+[KMGT]?|infinity", memory_max):
        raise TemplateError(UNIT_TEMPLATE, f"MemoryMax takes bytes with K, M, G or T, not {memory_max!r}")
    return render_template(UNIT_TEMPLATE, executable=executable, args=args, state_dir=str(state_dir),
                           read_write=rw, user=user, memory_max=memory_max, device=device, runtime_dir=runtime_dir)
