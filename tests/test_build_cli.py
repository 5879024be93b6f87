"""`edgefleet build` end to end on the example fleet, with the real engine and runtimes.

One store is built once per module (8 needs) and shared: the cache, matrix, index and
bad-input tests run against copies of it, so a bad input is checked against a store
full of real artifacts and must leave every byte of it as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from conftest import EXAMPLE_FLEET
from edgefleet.cli import main

pytestmark = pytest.mark.slow
MODEL_YAML = "models/meter-digits.yaml"


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def build_json(*args) -> tuple[int, dict, str]:
    code, out, err = cli("build", *args, "--format", "json")
    return code, json.loads(out), err


def copy_fleet(dest: Path) -> Path:
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    return dest


def listing(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def digests_of(report: dict) -> dict[str, str]:
    return {f"{b['model']}@{b['version']}:{b['hardware_class']}": b["digest"] for b in report["builds"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The example fleet built once into a fresh store: (fleet, store, JSON report)."""
    base = tmp_path_factory.mktemp("built")
    fleet = copy_fleet(base / "fleet")
    store = base / "store"
    code, report, err = build_json(fleet, "--store", store)
    assert code == 0, err
    return fleet, store, report


@pytest.fixture
def store_copy(built, tmp_path) -> Path:
    dest = tmp_path / "store"
    shutil.copytree(built[1], dest)
    return dest


def test_first_build_makes_a_gated_artifact_for_every_class(built):
    fleet, store, report = built
    assert report["summary"] == {"total": 8, "built": 8, "cache_hits": 0, "failed": 0}
    classes = {b["hardware_class"] for b in report["builds"]}
    assert classes == {p.stem for p in (fleet / "hardware").glob("*.yaml")}
    for build in report["builds"]:
        assert build["status"] == "built"
        key_dir = store / "keys" / build["key"]
        record = json.loads((key_dir / "record.json").read_bytes())
        blob = (store / "blobs" / "sha256" / build["digest"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == build["digest"] == record["artifact"]["sha256"]
        chosen = [a for a in record["attempts"] if a["recipe"] == record["recipe"]["name"]]
        assert chosen and chosen[-1]["passed"] and all(g["passed"] for g in chosen[-1]["gates"])
        statement = json.loads((key_dir / "provenance.intoto.json").read_bytes())
        assert statement["subject"][0]["digest"]["sha256"] == build["digest"]
        probe = record["probe"]
        assert probe and (store / "blobs" / "sha256" / probe["input"]["sha256"]).is_file()


def test_second_run_does_no_optimization_work(built, store_copy, monkeypatch):
    from edgefleet.build import engine

    def refuse(*args, **kwargs):
        raise AssertionError("build_artifact called on a cache hit")

    monkeypatch.setattr(engine, "build_artifact", refuse)
    before = listing(store_copy)
    code, out, err = cli("build", built[0], "--store", store_copy)
    assert code == 0, err
    assert out.count("cache hit ") == 8
    assert "0 built, 8 cache hit(s), 0 failed" in out
    assert listing(store_copy) == before
    code, report, _ = build_json(built[0], "--store", store_copy)
    assert report["summary"]["cache_hits"] == 8
    assert digests_of(report) == digests_of(built[2])


@pytest.mark.slow
def test_outputs_are_byte_identical_across_runs_and_jobs(built, tmp_path):
    """A second empty store, built in a process pool: the same digests, key for key."""
    code, report, err = build_json(built[0], "--store", tmp_path / "again", "--jobs", "2")
    assert code == 0, err
    assert report["summary"]["built"] == 8
    assert digests_of(report) == digests_of(built[2])
    assert [b["key"] for b in report["builds"]] == [b["key"] for b in built[2]["builds"]]
    for build in report["builds"]:  # provenance is deterministic too
        name = f"keys/{build['key']}/provenance.intoto.json"
        assert (tmp_path / "again" / name).read_bytes() == (built[1] / name).read_bytes()


def test_matrix_lists_only_builds_not_in_the_store(built, store_copy, tmp_path):
    code, out, _ = cli("build", built[0], "--store", store_copy, "--matrix")
    assert code == 0 and json.loads(out) == {"include": []}
    code, out, _ = cli("build", built[0], "--store", tmp_path / "empty", "--matrix")
    matrix = json.loads(out)["include"]
    assert code == 0 and len(matrix) == 8
    assert not (tmp_path / "empty").exists(), "--matrix builds nothing"
    assert {m["key"] for m in matrix} == {b["key"] for b in built[2]["builds"]}
    assert set(matrix[0]) == {"model", "version", "hardware_class", "key"}
    # One matrix job: `--only` its entry, into the shared store.
    one = matrix[0]
    code, out, _ = cli("build", built[0], "--store", store_copy, "--matrix",
                       "--only", f"{one['model']}@{one['version']}:{one['hardware_class']}")
    assert json.loads(out) == {"include": []}


def test_index_finds_every_built_artifact(built):
    from edgefleet.build.index import built_artifacts
    from edgefleet.build.store import LocalStore
    from edgefleet.load.repo import read_repository

    repo, _ = read_repository(built[0])
    found = built_artifacts(repo, LocalStore(built[1]))
    assert len(found) == 8
    for build in built[2]["builds"]:
        art = next(a for n, a in found.items() if (n.version, n.hardware_class) ==
                   (build["version"], build["hardware_class"]))
        assert (art.digest, art.key, art.recipe, art.size) == (build["digest"], build["key"], build["recipe"],
                                                               build["size"])
        assert art.path == f"blobs/sha256/{art.digest}"
        assert art.probe is not None and art.probe.latency_budget_ms > 0


def test_index_ignores_a_stale_artifact_after_an_edit(built, tmp_path):
    """An edited recipe means another key: compile must not pick up the old artifact."""
    from edgefleet.build.index import lookup_artifact
    from edgefleet.build.store import LocalStore
    from edgefleet.rules.needs import BuildNeed
    from edgefleet.load.repo import read_repository

    fleet = copy_fleet(tmp_path / "fleet")
    path = fleet / "hardware/medical-cart-cpu.yaml"
    path.write_text(path.read_text().replace("percentile: 99.99", "percentile: 99.9"))
    repo, _ = read_repository(fleet)
    need = BuildNeed("meter-digits", "1.1.0", "medical-cart-cpu")
    assert lookup_artifact(repo, need, LocalStore(built[1])) is None
    other = BuildNeed("meter-digits", "1.1.0", "factory-gateway-gpu")
    assert lookup_artifact(repo, other, LocalStore(built[1])) is not None


# -- bad input: a clear diagnostic at the YAML line, exit 1, and the store untouched ------


def _variant_index(fleet: Path, version: str, hardware_class: str) -> tuple[int, int]:
    from edgefleet.analysis.selection import choose_variant
    from edgefleet.load.repo import read_repository

    repo, _ = read_repository(fleet)
    spec = repo.models["meter-digits"].doc.spec
    vi = next(i for i, v in enumerate(spec.versions) if v.version == version)
    chosen = choose_variant(repo, "meter-digits", version, hardware_class).variant
    return vi, next(i for i, w in enumerate(spec.versions[vi].variants) if w.name == chosen.name)


def _yaml_location(fleet: Path, rel: str, *path) -> str:
    from edgefleet.load.repo import read_repository

    repo, _ = read_repository(fleet)
    loaded = repo.models["meter-digits"] if rel == MODEL_YAML else repo.hardware[Path(rel).stem]
    loc = loaded.source.at(*path)
    return f"{rel}:{loc.line}:"


def _set_yaml(fleet: Path, rel: str, old: str, new: str) -> None:
    path = fleet / rel
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def corrupt_onnx(fleet: Path) -> str:
    vi, wi = _variant_index(fleet, "1.1.0", "medical-cart-cpu")
    from edgefleet.load.repo import read_repository

    variant = read_repository(fleet)[0].models["meter-digits"].doc.spec.versions[vi].variants[wi]
    garbage = b"this is not a protobuf \x00\xff" * 64
    (fleet / variant.source).write_bytes(garbage)
    _set_yaml(fleet, MODEL_YAML, variant.sha256, hashlib.sha256(garbage).hexdigest())  # past the sha check
    return _yaml_location(fleet, MODEL_YAML, "spec", "versions", vi, "variants", wi, "source")


def missing_calibration(fleet: Path) -> str:
    (fleet / "models/meter-digits/data/calibration.npz").unlink()
    return _yaml_location(fleet, MODEL_YAML, "spec", "data", "calibration")


def sha_mismatch(fleet: Path) -> str:
    vi, wi = _variant_index(fleet, "1.1.0", "medical-cart-cpu")
    from edgefleet.load.repo import read_repository

    variant = read_repository(fleet)[0].models["meter-digits"].doc.spec.versions[vi].variants[wi]
    where = _yaml_location(fleet, MODEL_YAML, "spec", "versions", vi, "variants", wi, "sha256")
    _set_yaml(fleet, MODEL_YAML, variant.sha256, "ab" * 32)
    return where


def int8_recipe_without_int8(fleet: Path) -> str:
    # The gateway runs fp32/fp16 only now, but its first recipe asks for int8.
    rel = "hardware/factory-gateway-gpu.yaml"
    _set_yaml(fleet, rel, "precisions: [fp32, fp16, int8]", "precisions: [fp32, fp16]")
    _set_yaml(fleet, rel, "    - name: ort-fp16\n", "    - name: ort-int8-dynamic\n      precision: int8\n"
                                                 "      quantization: dynamic\n    - name: ort-fp16\n")
    return _yaml_location(fleet, rel, "spec", "recipes", 0)


def static_without_calibration(fleet: Path) -> str:
    _set_yaml(fleet, MODEL_YAML, "    calibration: models/meter-digits/data/calibration.npz\n", "")
    return _yaml_location(fleet, "hardware/medical-cart-cpu.yaml", "spec", "recipes", 0)


def calibration_without_input_array(fleet: Path) -> str:
    import numpy as np

    np.savez(fleet / "models/meter-digits/data/calibration.npz", images=np.zeros((4, 1, 8, 8), np.float32))
    return _yaml_location(fleet, MODEL_YAML, "spec", "data", "calibration")


@pytest.mark.parametrize("breaks, words", [
    pytest.param(corrupt_onnx, ["onnx"], id="corrupt-onnx"),
    pytest.param(missing_calibration, ["calibration", "does not exist"], id="missing-calibration-file"),
    pytest.param(sha_mismatch, ["sha256", "ab" * 32], id="declared-sha256-mismatch"),
    pytest.param(int8_recipe_without_int8, ["int8"], id="int8-recipe-on-class-without-int8"),
    pytest.param(static_without_calibration, ["calibration"], id="static-quantization-without-calibration"),
    pytest.param(calibration_without_input_array, ["input"], id="calibration-npz-without-input"),
])
def test_bad_input_is_reported_at_its_yaml_line_and_leaves_the_store_untouched(
        built, store_copy, tmp_path, breaks, words):
    fleet = copy_fleet(tmp_path / "fleet")
    where = breaks(fleet)
    before = listing(store_copy)
    code, out, err = cli("build", fleet, "--store", store_copy)
    assert code == 1
    assert f"fleet/{where}" in err or where in err, err
    for word in words:
        assert word in err.lower() or word in err, err
    assert "Traceback" not in err + out
    assert listing(store_copy) == before


def test_invalid_fleet_is_refused_before_anything_is_built(tmp_path):
    fleet = copy_fleet(tmp_path / "fleet")
    _set_yaml(fleet, "rollouts/meter-digits-1-1.yaml", 'to_version: "1.1.0"', 'to_version: "9.9.9"')
    code, out, err = cli("build", fleet, "--store", tmp_path / "store")
    assert code == 1 and "E205" in err and "rollouts/meter-digits-1-1.yaml" in err
    assert not (tmp_path / "store").exists()


def test_failing_gates_ship_nothing_and_show_the_numbers(built, store_copy, tmp_path):
    # No artifact can run at 1% of FP32's latency: every recipe is built, gated and rejected.
    fleet = copy_fleet(tmp_path / "fleet")
    path = fleet / "hardware/medical-cart-cpu.yaml"
    text = path.read_text()
    for name in ("ort-int8-static", "ort-int8-percentile", "ort-fp32"):
        text = text.replace(f"    - name: {name}\n", f"    - name: {name}\n      max_latency_ratio: 0.01\n")
    path.write_text(text)
    before = listing(store_copy)
    code, out, err = cli("build", fleet, "--store", store_copy, "--only", "meter-digits@1.1.0:medical-cart-cpu")
    assert code == 1, err
    assert "FAILED     meter-digits@1.1.0 for medical-cart-cpu" in out
    for recipe in ("ort-int8-static", "ort-int8-percentile", "ort-fp32"):
        assert re.search(rf"{recipe}: latency_ratio [0-9.]+ \(limit 0\.01\)", out), out  # every attempt, numbers
    assert "E409" in err and "hardware/medical-cart-cpu.yaml:" in err
    assert listing(store_copy) == before


def test_only_builds_just_that_need(built, tmp_path):
    code, report, err = build_json(built[0], "--store", tmp_path / "one", "--only",
                                   "meter-digits@1.0.0:factory-gateway-gpu")
    assert code == 0, err
    assert [(b["version"], b["hardware_class"], b["status"]) for b in report["builds"]] == \
        [("1.0.0", "factory-gateway-gpu", "built")]
    assert len(list((tmp_path / "one" / "keys").iterdir())) == 1


@pytest.mark.parametrize("args, message", [
    pytest.param(["--only", "meter-digits:1.1.0"], "MODEL@VERSION:CLASS", id="only-malformed"),
    pytest.param(["--only", "meter-digits@3.0.0:medical-cart-cpu"], "not a needed build", id="only-unknown"),
    pytest.param(["--jobs", "0"], "at least 1", id="jobs-zero"),
    pytest.param(["--store", "ftp://x/y"], "unsupported object store URL", id="bad-store-url"),
])
def test_usage_errors(built, tmp_path, args, message):
    code, out, err = cli("build", built[0], *args)
    assert code == 2 and message in err


def test_object_store_url_runs_the_same_path(built, tmp_path):
    url = (tmp_path / "objects").as_uri()
    code, report, err = build_json(built[0], "--store", url, "--only", "meter-digits@1.0.0:medical-cart-cpu")
    assert code == 0 and report["store"] == url, err
    code, report, _ = build_json(built[0], "--store", url, "--only", "meter-digits@1.0.0:medical-cart-cpu")
    assert report["summary"]["cache_hits"] == 1


def _all_variants(fleet: Path, version: str):
    from edgefleet.load.repo import read_repository

    spec = read_repository(fleet)[0].models["meter-digits"].doc.spec
    return next(v for v in spec.versions if v.version == version).variants


def every_sha_wrong(fleet: Path) -> None:
    for variant in _all_variants(fleet, "1.1.0"):
        _set_yaml(fleet, MODEL_YAML, variant.sha256, "ab" * 32)


def every_onnx_corrupt(fleet: Path) -> None:
    for variant in _all_variants(fleet, "1.1.0"):
        garbage = variant.name.encode() + b" is not a protobuf \x00\xff" * 64
        (fleet / variant.source).write_bytes(garbage)
        _set_yaml(fleet, MODEL_YAML, variant.sha256, hashlib.sha256(garbage).hexdigest())


@pytest.mark.parametrize("breaks, code, words", [
    pytest.param(every_sha_wrong, "E406", "sha256", id="every-variant-sha256-mismatch"),
    pytest.param(every_onnx_corrupt, "E406", "ONNX", id="every-variant-corrupt-onnx"),
    pytest.param(calibration_without_input_array, "E413", "no array 'input'", id="calibration-npz-without-input"),
])
def test_plan_checks_inputs_itself(tmp_path, breaks, code, words):
    """Build never trusts that validation ran: its own pre-flight refuses bad inputs too."""
    from edgefleet.build.orchestrate import plan_builds
    from edgefleet.build.store import LocalStore
    from edgefleet.rules.needs import BuildNeed
    from edgefleet.load.repo import read_repository

    fleet = copy_fleet(tmp_path / "fleet")
    breaks(fleet)
    repo, _ = read_repository(fleet)
    planned, diags = plan_builds(repo, [BuildNeed("meter-digits", "1.1.0", "medical-cart-cpu")],
                                 LocalStore(tmp_path / "store"))
    assert planned == []
    assert [d.code for d in diags] == [code]
    assert words in diags[0].message
    assert diags[0].location.path.endswith(MODEL_YAML) and diags[0].location.line > 0
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("breaks, code", [
    pytest.param(sha_mismatch, "E401", id="declared-sha256-mismatch"),
    pytest.param(corrupt_onnx, "E410", id="corrupt-onnx"),
])
def test_plan_rechecks_the_variant_it_is_given(tmp_path, monkeypatch, breaks, code):
    """Even if variant selection let a bad file through, the build refuses it at its YAML line."""
    import edgefleet.build.resolve as resolve
    from edgefleet.analysis.selection import VariantChoice
    from edgefleet.build.orchestrate import plan_builds
    from edgefleet.build.store import LocalStore
    from edgefleet.rules.needs import BuildNeed
    from edgefleet.load.repo import read_repository

    fleet = copy_fleet(tmp_path / "fleet")
    where = breaks(fleet)
    chosen = _variant_index(copy_fleet(tmp_path / "pristine"), "1.1.0", "medical-cart-cpu")

    def unchecked(repo, model, version, hardware_class, *rest):  # a selector that checks nothing
        entry = next(v for v in repo.models[model].doc.spec.versions if v.version == version)
        return VariantChoice(model, version, hardware_class, entry.variants[chosen[1]], ("unchecked",))

    monkeypatch.setattr(resolve, "choose_variant", unchecked)
    repo, _ = read_repository(fleet)
    planned, diags = plan_builds(repo, [BuildNeed("meter-digits", "1.1.0", "medical-cart-cpu")],
                                 LocalStore(tmp_path / "store"))
    assert planned == [] and [d.code for d in diags] == [code]
    assert f"{diags[0].location.path.split('/fleet/', 1)[-1]}:{diags[0].location.line}:" == where


def test_signing_failure_in_ci_ships_nothing(built, tmp_path, monkeypatch):
    """Public Sigstore cannot be reached here, so its failure is simulated at the signing call."""
    import edgefleet.build.orchestrate as orchestrate
    from edgefleet.build.signing import SigningError

    def unreachable(statement, mode, env):
        raise SigningError("keyless signing of the provenance failed: ConnectionError: fulcio unreachable",
                           "rerun the job")

    monkeypatch.setattr(orchestrate, "sign_statement", unreachable)
    code, out, err = cli("build", built[0], "--store", tmp_path / "store", "--only",
                         "meter-digits@1.0.0:factory-gateway-gpu")
    assert code == 1
    assert "E405" in err and "fleet.yaml:" in err and "fulcio unreachable" in err
    assert not (tmp_path / "store" / "keys").exists()


def test_store_write_failure_is_a_diagnostic(built, tmp_path, monkeypatch):
    from edgefleet.build.store import LocalStore

    def full_disk(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalStore, "put", full_disk)
    code, out, err = cli("build", built[0], "--store", tmp_path / "store", "--only",
                         "meter-digits@1.0.0:factory-gateway-gpu")
    assert code == 1 and "E408" in err and "No space left on device" in err
    assert "Traceback" not in err


def test_a_key_is_built_once_per_run(built, tmp_path, monkeypatch):
    from edgefleet.build import engine
    from edgefleet.build.orchestrate import plan_builds, run_builds
    from edgefleet.build.store import LocalStore
    from edgefleet.rules.needs import BuildNeed
    from edgefleet.load.repo import read_repository

    calls = []
    real = engine.build_artifact
    monkeypatch.setattr(engine, "build_artifact", lambda request, workdir: calls.append(request) or real(request, workdir))
    repo, _ = read_repository(built[0])
    store = LocalStore(tmp_path / "store")
    need = BuildNeed("meter-digits", "1.0.0", "factory-gateway-gpu")
    planned, diags = plan_builds(repo, [need, need], store)
    assert not diags and planned[0].key == planned[1].key
    results = run_builds(planned, repo.root, store)
    assert len(calls) == 1
    assert [r.status for r in results] == ["built", "cache_hit"]
    assert results[0].digest == results[1].digest


def test_rejected_recipes_show_their_reason_in_text_and_explain_agrees(built, store_copy, tmp_path):
    # The first recipe cannot meet 1% of FP32's latency; the second (no such limit) ships.
    fleet = copy_fleet(tmp_path / "fleet")
    _set_yaml(fleet, "hardware/medical-cart-cpu.yaml", "    - name: ort-int8-static\n",
              "    - name: ort-int8-static\n      max_latency_ratio: 0.01\n")
    code, out, err = cli("build", fleet, "--store", store_copy, "--only", "meter-digits@1.1.0:medical-cart-cpu")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("built      meter-digits@1.1.0 for medical-cart-cpu"))
    assert "ort-int8-percentile" in line and "after ort-int8-static failed its gates" in line
    assert re.search(r"^\s+rejected ort-int8-static: latency_ratio [0-9.]+ \(limit 0\.01\)$", out, re.M), out
    # A second run is a cache hit and still says why the first recipe was rejected.
    code, again, err = cli("build", fleet, "--store", store_copy, "--only", "meter-digits@1.1.0:medical-cart-cpu")
    assert code == 0 and again.startswith("cache hit") or "cache hit  meter-digits@1.1.0" in again
    assert re.search(r"^\s+rejected ort-int8-static: latency_ratio", again, re.M), again
    # explain reads the build record: the same recipe shipped, the same rejection.
    code, text, err = cli("explain", fleet, "meter-digits@1.1.0", "--class", "medical-cart-cpu", "--store", store_copy)
    assert "built: full, ort-int8-percentile (int8)" in text, text + err
    assert re.search(r"rejected ort-int8-static: latency_ratio [0-9.]+ \(limit 0\.01\)", text), text
    code, raw, err = cli("explain", "meter-digits@1.1.0", fleet, "--class", "medical-cart-cpu", "--store", store_copy,
                         "--format", "json")
    shipped = json.loads(raw)["build"]
    assert shipped["status"] == "built" and shipped["recipe"] == "ort-int8-percentile" and shipped["agrees"]
    assert [(a["recipe"], a["passed"]) for a in shipped["attempts"]] == [
        ("ort-int8-static", False), ("ort-int8-percentile", True)]
    # Against a store without that build, explain says it is not built (and does not invent one).
    code, raw, err = cli("explain", "meter-digits@1.1.0", fleet, "--class", "medical-cart-cpu",
                         "--store", tmp_path / "empty-store", "--format", "json")
    assert json.loads(raw)["build"]["status"] == "not built"
