"""The one place that locates edgefleet's packaged data: templates, JSON Schemas, the example fleet.

They are package data of `edgefleet` (`edgefleet/templates/`, `edgefleet/schemas/`,
`edgefleet/example_fleet/`) and are read with `importlib.resources`, so a wheel install, an
editable install and a checkout on PYTHONPATH behave the same. In a source checkout those three
names are symlinks to the top-level `templates/`, `schemas/` and `fleet/` (where the design card
keeps them); a wheel build copies the files they point at into the wheel.

Writable places. The example fleet is also a working repository: `edgefleet build` writes its
artifacts and caches into `<repo>/.edgefleet/`. In a checkout that is `fleet/.edgefleet/`
(git-ignored), as before. An installed package is never written to: `example_fleet()` then
returns a private copy under the user's cache folder (`$EDGEFLEET_CACHE_DIR`, else
`$XDG_CACHE_HOME/edgefleet`, else `~/.cache/edgefleet`), one per content digest of the packaged
fleet, so `build --example` and a later `compile --example` see the same artifacts and an
upgrade that changes the example starts a fresh copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "edgefleet"
TEMPLATES, SCHEMAS, EXAMPLE_FLEET = "templates", "schemas", "example_fleet"
# Never part of the example fleet's content: what a build or Python leaves in a checkout.
_SKIP = frozenset({".edgefleet", "__pycache__"})


class ResourceNotFound(LookupError):
    """A packaged data file that does not exist (a bug in edgefleet or a broken install)."""


def _package() -> Traversable:
    return resources.files(PACKAGE)


def _node(folder: str, name: str = "") -> Traversable:
    node = _package() / folder
    for part in name.split("/") if name else ():
        if part in ("", ".", "..") or "\\" in part:
            raise ResourceNotFound(f"{folder}/{name}: not a packaged file name")
        node = node / part
    return node


def template_text(name: str) -> str:
    """The text of `templates/<name>` (e.g. `runtime/onnxruntime.json.j2`)."""
    node = _node(TEMPLATES, name)
    if not node.is_file():
        raise ResourceNotFound(f"templates/{name}: no such packaged template")
    return node.read_text(encoding="utf-8")


def schema_text(name: str) -> str | None:
    """The packaged text of `schemas/<name>`, None where there is no such file."""
    node = _node(SCHEMAS, name)
    return node.read_text(encoding="utf-8") if node.is_file() else None


def is_source_checkout() -> bool:
    """True when the packaged data are the checkout's own folders (symlinks), so they may be edited."""
    node = _node(SCHEMAS)
    return isinstance(node, Path) and node.is_symlink()


def schema_dir() -> Path:
    """The real folder of the packaged schemas (a private copy if the package is not on disk)."""
    return _real_dir(SCHEMAS)


def template_dir() -> Path:
    """The real folder of the packaged templates (for tools that want files; code uses template_text)."""
    return _real_dir(TEMPLATES)


def _real_dir(folder: str) -> Path:
    node = _node(folder)
    if isinstance(node, Path):
        return node.resolve()
    return _materialize(node, _cache_root() / folder)


def example_fleet() -> Path:
    """A fleet repository folder holding the example fleet, safe to build in (see the module doc)."""
    node = _node(EXAMPLE_FLEET)
    if isinstance(node, Path) and node.is_symlink():
        return node.resolve()  # a checkout: build into fleet/.edgefleet as before
    return _materialize(node, _cache_root() / "example-fleet")


def copy_example_fleet(dest: Path) -> Path:
    """Copy the packaged example fleet (without build outputs) into `dest`, which must not exist."""
    _copy_tree(_node(EXAMPLE_FLEET), dest)
    return dest


def cache_dir(name: str) -> Path:
    """A folder of edgefleet's user cache (`$EDGEFLEET_CACHE_DIR`, else XDG, else ~/.cache), not created."""
    return _cache_root() / name


def _cache_root() -> Path:
    if os.environ.get("EDGEFLEET_CACHE_DIR"):
        return Path(os.environ["EDGEFLEET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgefleet"


def _files(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """(relative path, file) of every packaged file under `node`, sorted, build outputs left out."""
    out: list[tuple[str, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name in _SKIP or child.name.endswith(".pyc"):
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            out += _files(child, rel + "/")
        elif child.is_file():
            out.append((rel, child))
    return out


def _copy_tree(node: Traversable, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=False)
    for rel, child in _files(node):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(child.read_bytes())


def _materialize(node: Traversable, parent: Path) -> Path:
    """A private, content-addressed copy of `node` under `parent` (made once, atomically)."""
    digest = hashlib.sha256()
    for rel, child in _files(node):
        data = child.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    final = parent / digest.hexdigest()[:16]
    if final.is_dir():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=".staging-"))
    try:
        _copy_tree(node, staging / "tree")
        try:
            os.rename(staging / "tree", final)
        except OSError:
            if not final.is_dir():  # another process made it first: use theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
