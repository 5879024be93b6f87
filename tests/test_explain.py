"""`edgefleet explain MODEL@VERSION --class CLASS`: the measured properties against the class's limits."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest


def _drop_student(fleet: Path) -> None:
    path = fleet / "models/meter-digits.yaml"
    path.write_text(re.sub(r"\n        - name: student\n(          .*\n)+", "\n", path.read_text()))


def test_explain_shows_the_table_and_why_student_is_chosen(fleet_copy, run_cli):
    res = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--class", "intel-lowpower-detector")
    assert res.code == 0, res.err
    out = res.out
    assert "meter-digits@1.1.0 on hardware class intel-lowpower-detector (openvino 2024.6, NPU)" in out
    assert "variant full (models/meter-digits/1.1.0/full.onnx): does not fit" in out
    assert "variant student (models/meter-digits/1.1.0/student.onnx): fits" in out
    for check in ("sha256", "precision", "artifact size", "storage (A/B)", "memory", "operators", "opset", "input",
                  "accuracy gate"):
        assert re.search(rf"│ {re.escape(check)}\s+│", out), check
    assert re.search(r"│ artifact size\s+│ 0\.524 MB est\. \(549,952 bytes.*│ max_artifact_mb: 0\.5\s+│ FAIL E303", out)
    assert "548,746 parameters" in out
    assert "selected: student" in out
    assert "- full: does not fit: the estimated int8 artifact is 0.524 MB" in out
    assert "- student: selected (the first variant in preference order that fits; int8)" in out


def test_explain_json_is_complete_and_deterministic(fleet_copy, run_cli):
    args = ("explain", "meter-digits@1.1.0", fleet_copy, "--class", "intel-lowpower-detector", "--format", "json")
    first = run_cli(*args)
    second = run_cli(*args)
    assert first.code == 0 and first.out == second.out
    report = json.loads(first.out)
    assert report["variant"] == "student" and report["fits"] is True
    full, student = report["variants"]
    assert full["name"] == "full" and not full["fits"] and student["fits"]
    failing = [c for c in full["checks"] if c["status"] == "fail"]
    assert [(c["check"], c["code"]) for c in failing] == [("artifact size", "E303")]
    assert full["facts"]["parameters"] == 548746
    assert full["facts"]["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["N", 1, 8, 8]}]
    assert full["facts"]["dynamic_dims"] == [{"input": "image", "axis": 0, "name": "N"}]
    assert full["precision"] == "int8"
    assert str(fleet_copy) not in first.out  # no absolute paths in the report


def test_explain_a_class_where_the_full_variant_fits(fleet_copy, run_cli):
    res = run_cli("explain", "meter-digits@1.0.0", fleet_copy, "--class", "jetson-vision-standard", "--format", "json")
    assert res.code == 0
    report = json.loads(res.out)
    assert report["variant"] == "full"
    assert report["reasons"][0] == "full: selected (first variant in preference order; int8)"
    notes = report["variants"][0]["notes"]
    assert any("TensorRT 10.3 checked against the 10.1 table" in n for n in notes)


def test_explain_exits_1_when_no_variant_fits(fleet_copy, run_cli):
    _drop_student(fleet_copy)
    res = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--class", "intel-lowpower-detector")
    assert res.code == 1
    assert "no variant of meter-digits@1.1.0 fits intel-lowpower-detector" in res.out
    assert "FAIL E303" in res.out


def test_explain_ppocr_on_an_ocr_class_states_its_assumptions(fleet_copy, run_cli):
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    det = Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    from test_constraints import add_model

    (fleet_copy / "hardware/ocr-cart.yaml").write_text(
        (fleet_copy / "hardware/medical-cart-cpu.yaml").read_text()
        .replace("name: medical-cart-cpu", "name: ocr-cart").replace("  input:\n    shape: [1, 1, 8, 8]\n", ""))
    add_model(fleet_copy, "label-det", [("ppocr", det)], ["medical-cart-cpu"])
    res = run_cli("explain", "label-det@1.0.0", fleet_copy, "--class", "ocr-cart", "--format", "json")
    assert res.code == 0, res.out + res.err
    (variant,) = json.loads(res.out)["variants"]
    memory = next(c for c in variant["checks"] if c["check"] == "memory")
    assert "x [1, 3, 512, 512]" in memory["model"] and "assumes 2 dynamic dims = 512" in memory["model"]
    assert sum("taken as 512" in n for n in variant["notes"]) == 2
    # On the digit class, its 3-channel input does not match what the class feeds.
    res = run_cli("explain", "label-det@1.0.0", fleet_copy, "--class", "medical-cart-cpu")
    assert res.code == 1 and "FAIL E309" in res.out


@pytest.mark.parametrize("target,cls,message", [
    ("nosuch@1.0.0", "medical-cart-cpu", "unknown model 'nosuch'"),
    ("meter-digit@1.1.0", "medical-cart-cpu", "did you mean 'meter-digits'?"),
    ("meter-digits@9.9.9", "medical-cart-cpu", "model 'meter-digits' has no version '9.9.9'"),
    ("meter-digits@1.1.0", "medical-cart", "unknown hardware class 'medical-cart'; did you mean 'medical-cart-cpu'?"),
    ("meter-digits", "medical-cart-cpu", "give MODEL@VERSION"),
], ids=["unknown-model", "misspelt-model", "unknown-version", "misspelt-class", "no-version"])
def test_explain_usage_errors_exit_2(run_cli, fleet_copy, target, cls, message):
    res = run_cli("explain", target, fleet_copy, "--class", cls)
    assert res.code == 2
    assert message in res.err and "Traceback" not in res.err


def test_explain_reports_a_broken_repository_instead_of_guessing(fleet_copy, run_cli):
    (fleet_copy / "models/meter-digits.yaml").write_text("apiVersion: edgefleet/v1\nkind: Model\nspec: [\n")
    res = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--class", "medical-cart-cpu")
    assert res.code == 1 and "meter-digits.yaml" in res.err


def test_explain_does_not_write_outside_the_cache(fleet_copy, run_cli):
    before = sorted(p.relative_to(fleet_copy) for p in fleet_copy.rglob("*") if ".edgefleet" not in p.parts)
    res = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--class", "medical-cart-cpu")
    assert res.code == 0 and "selected:" in res.out, res.err  # it did run, and wrote nothing else
    after = sorted(p.relative_to(fleet_copy) for p in fleet_copy.rglob("*") if ".edgefleet" not in p.parts)
    assert before == after
    assert list((fleet_copy / ".edgefleet/cache/analysis").glob("*.json"))
    shutil.rmtree(fleet_copy / ".edgefleet")


@pytest.mark.parametrize("order", ["repo-first", "repo-last", "repo-middle"])
def test_explain_takes_repo_in_any_position(fleet_copy, run_cli, order):
    target, cls = "meter-digits@1.1.0", ["--class", "intel-lowpower-detector"]
    args = {"repo-first": [fleet_copy, target, *cls], "repo-last": [target, *cls, fleet_copy],
            "repo-middle": [target, fleet_copy, *cls]}[order]
    res = run_cli("explain", *args, "--format", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["variant"] == "student"


def test_explain_from_inside_the_fleet_needs_no_repo(fleet_copy, run_cli):
    res = run_cli("explain", "meter-digits@1.1.0", "--class", "intel-lowpower-detector", cwd=fleet_copy / "models")
    assert res.code == 0 and "selected: student" in res.out


def test_explain_all_classes_shows_every_class(fleet_copy, run_cli):
    res = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--all-classes", "--format", "json")
    report = json.loads(res.out)
    classes = sorted(p.stem for p in (fleet_copy / "hardware").glob("*.yaml"))
    assert [r["hardware_class"] for r in report["classes"]] == classes and len(classes) == 4
    assert report["fits"] == all(r["fits"] for r in report["classes"])
    assert res.code == (0 if report["fits"] else 1)
    text = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--all-classes")
    for cls in classes:
        assert f"on hardware class {cls} (" in text.out


def test_explain_without_class_shows_the_classes_the_version_is_built_for(fleet_copy, run_cli):
    from edgefleet.load.repo import read_repository
    from edgefleet.rules.needs import needed_builds

    repo, _ = read_repository(fleet_copy)
    expected = sorted({n.hardware_class for n in needed_builds(repo) if n.version == "1.1.0"})
    res = run_cli("explain", "meter-digits@1.1.0", fleet_copy, "--format", "json")
    assert [r["hardware_class"] for r in json.loads(res.out)["classes"]] == expected and expected
    assert all(r["build"]["status"] in ("built", "not built") for r in json.loads(res.out)["classes"])


@pytest.mark.parametrize(("args", "message"), [
    (["meter-digits@1.1.0", "--all-classes", "--class", "medical-cart-cpu"], "not both"),
    (["meter-digits@1.1.0", "nodir@x", "--class", "medical-cart-cpu"], "cannot tell"),
    (["meter-digits@1.1.0", "--class", "medical-cart-cpu", "--class", "nope"], "unknown hardware class 'nope'"),
], ids=["class-and-all", "two-targets", "second-class-unknown"])
def test_explain_class_usage_errors(fleet_copy, run_cli, args, message):
    res = run_cli("explain", *args, cwd=fleet_copy)
    assert res.code == 2 and message in res.err, res.err
