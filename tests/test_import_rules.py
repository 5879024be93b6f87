"""Import rules of the code map (README "Code map"), checked over the source with `ast`.

1. Only `cli/` renders. "Renders" means writing text for a person to the terminal: calling
   `print`, touching `sys.stdout`/`sys.stderr` (writing to them or handing them on as a file), or
   importing a terminal UI library (rich, tqdm, colorama) or `pprint`. Everything else returns
   typed results and diagnostics; `logging` is not rendering (the application configures it).
2. The pure stages import no I/O module, at module level or inside a function: no process,
   network, thread, temporary-file or file-tree helper, database, git or runtime library (IO_MODULES),
   and none of edgefleet's own I/O edges (IO_EDGES). Reading a file through `pathlib` is not
   caught by an import rule; `load/` reads files only in `read_repository`, beside the pure `load_fleet`.
3. Each package imports only the packages the code map allows (ALLOWED).
4. No import cycles among edgefleet's modules, counting imports inside functions as well as at
   module level: a lazy import is for a heavy third-party library (onnx, openvino, tuf, ...) or for
   start-up time, never to hide a cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCE = ROOT / "compiler"
DATA = {"templates", "schemas", "example_fleet", "demo_assets"}  # package data folders, not code

RENDER_MODULES = ("rich", "tqdm", "colorama", "pprint")
# Renders, but not for a person: the build worker's machine-readable result on its own stdout,
# read by the parent process (build/engine.py), never shown.
RENDER_ALLOWED = {"edgefleet.build.runner": "build worker's JSON result on stdout (IPC with its parent)"}

IO_MODULES = (
    "subprocess", "multiprocessing", "concurrent", "threading", "signal", "socket", "socketserver", "ssl",
    "select", "selectors", "asyncio", "http", "urllib.request", "urllib3", "requests", "httpx", "ftplib",
    "smtplib", "shutil", "tempfile", "glob", "fcntl", "sqlite3", "dbm", "git", "boto3", "botocore",
    "onnxruntime", "openvino", "tensorrt", "sigstore",
)
IO_EDGES = (
    "edgefleet.core.fsutil", "edgefleet.core.resources", "edgefleet.analysis.cache", "edgefleet.build.store",
    "edgefleet.desired.gitio", "edgefleet.signing.keys", "edgefleet.signing.publish", "edgefleet.signing.verify",
)
PURE = (
    "edgefleet.load", "edgefleet.rules", "edgefleet.spec", "edgefleet.core.diagnostics", "edgefleet.core.source",
    "edgefleet.core.codes", "edgefleet.analysis.constraints", "edgefleet.analysis.tensorrt_table",
    "edgefleet.desired.state", "edgefleet.desired.waves", "edgefleet.desired.canonical", "edgefleet.signing.layout",
    "edgefleet.gitops.scaffold",
)

# package -> the edgefleet packages it may import (besides itself and `edgefleet` for __version__).
ALLOWED = {
    "core": set(),
    "spec": {"core"},
    "load": {"core", "spec"},
    "rules": {"core", "spec", "load"},
    "analysis": {"core", "spec", "load", "rules"},
    "build": {"core", "spec", "load", "rules", "analysis"},
    "signing": {"core", "spec"},
    "desired": {"core", "spec", "load", "rules", "analysis", "build", "signing"},
    "gitops": {"core", "spec", "signing"},
    "rollout": {"core", "spec", "load", "rules", "signing", "desired", "agent"},
    "pipeline": {"core", "spec", "load", "rules", "analysis", "build", "signing", "desired", "gitops", "rollout",
                 "agent"},
    "agent": {"core", "spec", "load", "rules", "analysis", "build", "signing", "desired", "pipeline"},
    "simulate": {"core", "spec", "load", "rules", "analysis", "build", "signing", "desired", "gitops", "rollout",
                 "pipeline", "agent"},
    "cli": {"core", "spec", "load", "rules", "analysis", "build", "signing", "desired", "pipeline", "agent", "gitops",
            "rollout", "simulate"},
    "__main__": {"cli"},
}


@dataclass(frozen=True)
class Import:
    module: str  # the full dotted name imported
    line: int
    lazy: bool  # inside a function


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SOURCE / "edgefleet").rglob("*.py")):
        rel = path.relative_to(SOURCE / "edgefleet").parts
        if "__pycache__" in rel or rel[0] in DATA:
            continue
        out[module_name(path)] = path
    return out


def imports(tree: ast.AST, known: set[str] | frozenset[str] = frozenset()) -> list[Import]:
    """Every import in a module; `from a import b` names a.b when that is a module, else a."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, child.lineno, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    found.append(Import(sub if sub in known or not known else child.module, child.lineno, lazy))
            visit(child, inner)

    visit(tree, False)
    return found


def renders(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            out.append(f"print() at line {node.lineno}")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys"
                and node.attr in {"stdout", "stderr", "__stdout__", "__stderr__"}):
            out.append(f"sys.{node.attr} at line {node.lineno}")
    for imp in imports(tree):
        if _matches(imp.module, RENDER_MODULES):
            out.append(f"import {imp.module} at line {imp.line}")
    return out


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgefleet"


@pytest.fixture(scope="module")
def parsed() -> dict[str, ast.AST]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in modules().items()}


def test_only_cli_renders(parsed):
    found = {name: r for name, tree in parsed.items()
             if _package(name) != "cli" and name not in RENDER_ALLOWED and (r := renders(tree))}
    assert not found, f"only cli/ renders; return results and diagnostics instead: {found}"


def test_pure_stages_import_no_io_module(parsed):
    known = set(parsed)
    found = {}
    for name, tree in parsed.items():
        if not _matches(name, PURE):
            continue
        bad = [f"{i.module} (line {i.line})" for i in imports(tree, known)
               if _matches(i.module, IO_MODULES) or _matches(i.module, IO_EDGES)]
        if bad:
            found[name] = bad
    assert not found, f"pure stages must not import I/O modules; pass the data in: {found}"


def test_packages_import_only_what_the_code_map_allows(parsed):
    known = set(parsed)
    found = {}
    for name, tree in parsed.items():
        pkg = _package(name)
        if pkg == "edgefleet":
            continue
        assert pkg in ALLOWED, f"{name}: package '{pkg}' is not in the code map; add it to README and ALLOWED"
        bad = sorted({f"{i.module} (line {i.line})" for i in imports(tree, known)
                      if i.module.startswith("edgefleet.") and _package(i.module) not in ALLOWED[pkg] | {pkg}})
        if bad:
            found[name] = bad
    assert not found, f"imports the code map does not allow: {found}"


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycles_even_behind_function_level_imports(parsed):
    known = set(parsed)
    graph = {name: {i.module for i in imports(tree, known) if i.module in known and i.module != name}
             for name, tree in parsed.items()}
    assert import_cycles(graph) == [], "import cycles (function-level imports count)"


# ------------------------------------------------------------------ the checks themselves


def test_the_checks_see_what_they_forbid():
    tree = ast.parse("import sys\nimport subprocess\nfrom rich.console import Console\n"
                     "def f():\n    from edgefleet.core import fsutil\n    print('x')\n    sys.stderr.write('y')\n")
    found = " ".join(renders(tree))
    assert "print()" in found and "sys.stderr" in found and "rich.console" in found
    names = {i.module: i.lazy for i in imports(tree, {"edgefleet.core.fsutil"})}
    assert names["subprocess"] is False and names["edgefleet.core.fsutil"] is True
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
