"""The wheel carries templates, schemas and the example fleet; an installed edgefleet finds them with
importlib.resources and never writes into its install; the device side imports no compiler toolchain;
`pytest` and `python -m pytest` both run from the repository root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import ROOT

COMPILER_ONLY = ("onnx", "nncf", "openvino", "jinja2", "sklearn", "skimage", "hypothesis")
PACKAGED = {"templates": ROOT / "templates", "schemas": ROOT / "schemas", "example_fleet": ROOT / "fleet"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _files(root: Path) -> set[str]:
    skip = {".edgefleet", "__pycache__"}
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(root).parts)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
                          capture_output=True, text=True, env=_clean_env(PIP_NO_INPUT="1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("edgefleet-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked as an install (site-packages layout) outside the checkout."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _run_installed(site: Path, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    # -I would drop the machine's dependencies too; -P keeps the cwd off sys.path.
    return subprocess.run([sys.executable, "-P", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=_clean_env(PYTHONPATH=str(site), **env))


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"edgefleet/{p.relative_to(ROOT / 'compiler' / 'edgefleet').as_posix()}"
               for p in (ROOT / "compiler" / "edgefleet").rglob("*.py") if "__pycache__" not in p.parts
               and not any(part in PACKAGED for part in p.relative_to(ROOT / "compiler" / "edgefleet").parts)}
    assert modules - names == set(), "modules missing from the wheel (a package without __init__.py?)"
    for folder, source in PACKAGED.items():
        wanted = {f"edgefleet/{folder}/{rel}" for rel in _files(source)}
        assert wanted and wanted - names == set(), f"{folder}: {sorted(wanted - names)[:5]}"
    assert not [n for n in names if "/.edgefleet/" in n or "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.slow
def test_device_install_requires_no_compiler_toolchain(wheel):
    """The base requirements (no extra) are the device side; the toolchains are extras."""
    with zipfile.ZipFile(wheel) as zf:
        meta = Parser().parsestr(zf.read("edgefleet-0.1.0.dist-info/METADATA").decode())
    base, extras = set(), {}
    for req in meta.get_all("Requires-Dist"):
        name = req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        if "extra ==" in req:
            extras.setdefault(req.split("extra ==")[1].strip(" \"'"), set()).add(name)
        else:
            base.add(name)
    assert {"onnxruntime", "tuf", "pydantic", "ruamel.yaml", "sigstore", "psutil"} <= base
    assert not base & {"onnx", "nncf", "openvino", "scikit-learn", "scikit-image", "hypothesis", "jinja2", "rich"}
    assert {"onnx", "jinja2"} <= extras["compiler"]
    assert {"openvino", "nncf"} <= extras["openvino"]
    assert extras["openvino-runtime"] == {"openvino"}
    assert {"pytest", "hypothesis"} <= extras["test"]


@pytest.mark.slow
def test_installed_package_finds_its_data_and_never_writes_into_itself(installed, tmp_path):
    cache = tmp_path / "user-cache"
    code = """
import json
from edgefleet.core import resources
from edgefleet.cli import main
fleet = resources.example_fleet()
again = resources.example_fleet()
code = main(["validate", str(fleet), "--format", "json"])
print(json.dumps({"checkout": resources.is_source_checkout(), "fleet": str(fleet), "again": str(again),
                  "schemas": sorted(p.name for p in resources.schema_dir().iterdir()),
                  "template": resources.template_text("runtime/onnxruntime.json.j2")[:40],
                  "validate": code, "package": resources.__file__}))
"""
    before = _files(installed)
    proc = _run_installed(installed, code, tmp_path, EDGEFLEET_CACHE_DIR=str(cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(installed))  # the install, not the checkout
    assert out["checkout"] is False and out["validate"] == 0
    fleet = Path(out["fleet"])
    assert fleet.parent.parent == cache and out["again"] == out["fleet"]  # one copy, reused
    assert (fleet / ".edgefleet" / "cache" / "analysis").is_dir()  # validate wrote into the copy ...
    assert _files(installed) == before  # ... and nothing into the install
    assert "desiredstate.schema.json" in out["schemas"] and "CODES.md" in out["schemas"]
    assert out["template"] == (ROOT / "templates/runtime/onnxruntime.json.j2").read_text()[:40]
    # `schema` refuses to rewrite an installed package, and checks it
    proc = _run_installed(installed, "from edgefleet.cli import main; raise SystemExit(main(['schema']))", tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr
    proc = _run_installed(installed, "from edgefleet.cli import main; raise SystemExit(main(['schema', '--check']))",
                          tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_package_imported_from_a_zip_copies_its_data_out(installed, tmp_path):
    archive = tmp_path / "edgefleet.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((installed / "edgefleet").rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(installed).as_posix())
    code = """
import json
from edgefleet.core import resources
print(json.dumps({"fleet": str(resources.example_fleet()), "schemas": str(resources.schema_dir()),
                  "text": resources.template_text("plan-comment.md.j2")[:20]}))
"""
    proc = _run_installed(archive, code, tmp_path, EDGEFLEET_CACHE_DIR=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert _files(Path(out["fleet"])) == _files(ROOT / "fleet")
    assert (Path(out["schemas"]) / "fleet.schema.json").is_file()
    assert out["text"] == (ROOT / "templates/plan-comment.md.j2").read_text()[:20]


def test_checkout_data_are_the_top_level_folders():
    from edgefleet.core import resources

    assert resources.is_source_checkout()
    assert resources.example_fleet() == (ROOT / "fleet").resolve()
    assert resources.schema_dir() == (ROOT / "schemas").resolve()
    with pytest.raises(resources.ResourceNotFound):
        resources.template_text("../pyproject.toml")
    with pytest.raises(resources.ResourceNotFound):
        resources.template_text("runtime/no-such-runtime.json.j2")


def test_copy_example_fleet_leaves_build_outputs_behind(tmp_path):
    from edgefleet.core import resources

    copy = resources.copy_example_fleet(tmp_path / "fleet")
    assert _files(copy) == _files(ROOT / "fleet") and not (copy / ".edgefleet").exists()


# ------------------------------------------------------------------ lazy imports

_PROBE = """
import json, os, sys
from edgefleet.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
with open(os.environ["MODULES_OUT"], "w") as fh:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, fh)
"""


def _imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MODULES_OUT": str(out)})
    assert out.is_file(), proc.stderr[-2000:]
    result = json.loads(out.read_text())
    return result["code"], set(result["modules"])


def test_help_imports_no_compiler_toolchain(tmp_path):
    code, modules = _imported(tmp_path, "--help")
    assert code == 0 and "edgefleet" in modules
    assert not modules & set(COMPILER_ONLY), sorted(modules & set(COMPILER_ONLY))


def test_verify_imports_no_compiler_toolchain(tmp_path):
    """A real signed tree, verified in a fresh process, as a device install runs it."""
    from edgefleet.signing.keys import init_keys, load_keys
    from edgefleet.signing.publish import publish
    from edgefleet.spec.fleet import ExpiryWindows
    from tests.signing_support import targets

    init_keys(tmp_path / "keys")
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    publish(tmp_path / "tree", targets(4), load_keys(tmp_path / "keys"), ExpiryWindows(), now)
    code, modules = _imported(tmp_path, "verify", str(tmp_path / "tree"), "--device", "dev-00001",
                              "--root", str(tmp_path / "tree" / "metadata" / "1.root.json"))
    assert code == 0
    assert {"tuf", "securesystemslib"} <= modules  # it really verified
    assert not modules & set(COMPILER_ONLY), sorted(modules & set(COMPILER_ONLY))


# ------------------------------------------------------------------ test runner configuration


_ARGS = "['-q', '-p', 'no:cacheprovider', 'tests/test_codes.py']"


@pytest.mark.parametrize("command", [
    ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_codes.py"],  # puts the root on sys.path
    ["-P", "-c", f"import sys, pytest; sys.exit(pytest.main({_ARGS}))"],  # as the `pytest` script: no root on sys.path
], ids=["python-m-pytest", "pytest"])
def test_pytest_runs_from_the_root_without_pythonpath(command):
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_compile_side_command_on_a_device_install_names_the_extra(tmp_path):
    """Without onnx (a device install), a cold `validate` exits 2 with the extra to install."""
    from edgefleet.core.resources import copy_example_fleet

    fleet = copy_example_fleet(tmp_path / "fleet")  # no analysis cache: validate must parse models
    code = ("import sys; sys.modules['onnx'] = None  # as if not installed\n"
            "from edgefleet.cli import main; sys.exit(main(['validate', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(fleet)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'edgefleet[compiler]'" in proc.stderr and "internal error" not in proc.stderr
