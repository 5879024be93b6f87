"""`edgefleet validate`: the example fleet passes; each bad input a new user might write
fails with exit 1, a message naming the right file and line, and no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import EXAMPLE_FLEET

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing `needle` in the edited file."""
    hits = [i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def replace_in(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


# Each case edits the fleet copy and returns (relative file, expected line, code).
Case = Callable[[Path], tuple[str, int, str]]


def broken_syntax(fleet: Path):
    f = fleet / "hardware/medical-cart-cpu.yaml"
    replace_in(f, "  ram_mb: 16384", "  ram_mb: [16384")
    return "hardware/medical-cart-cpu.yaml", None, "E004"


def duplicate_key(fleet: Path):
    f = fleet / "hardware/medical-cart-cpu.yaml"
    replace_in(f, "  power_w: 28\n", "  power_w: 28\n  power_w: 35\n")
    return "hardware/medical-cart-cpu.yaml", line_of(f, "power_w: 35"), "E005"


def misspelt_field(fleet: Path):
    f = fleet / "hardware/jetson-vision-standard.yaml"
    replace_in(f, "  storage_mb: 8192", "  storage_mb: 8192\n  ram_mbb: 4096")
    return "hardware/jetson-vision-standard.yaml", line_of(f, "ram_mbb"), "E103"


def wrong_type(fleet: Path):
    f = fleet / "hardware/jetson-vision-standard.yaml"
    replace_in(f, "ram_mb: 16384", "ram_mb: lots")
    return "hardware/jetson-vision-standard.yaml", line_of(f, "ram_mb: lots"), "E105"


def unknown_hardware_class(fleet: Path):
    f = fleet / "devices/plant-brno.yaml"
    replace_in(f, "hardware_class: factory-gateway-gpu", "hardware_class: factory-gateway-tpu")
    return "devices/plant-brno.yaml", line_of(f, "factory-gateway-tpu"), "E203"


def unknown_model_version(fleet: Path):
    f = fleet / "rollouts/meter-digits-1-1.yaml"
    replace_in(f, 'to_version: "1.1.0"', 'to_version: "1.2.0"')
    return "rollouts/meter-digits-1-1.yaml", line_of(f, "to_version"), "E205"


def device_in_two_files(fleet: Path):
    f = fleet / "devices/plant-brno.yaml"
    replace_in(f, "id: pb-robot-001", "id: pa-robot-001")
    return "devices/plant-brno.yaml", line_of(f, "id: pa-robot-001"), "E202"


def waves_decrease(fleet: Path):
    f = fleet / "rollouts/meter-digits-1-1.yaml"
    replace_in(f, "percent: 50", "percent: 5")
    return "rollouts/meter-digits-1-1.yaml", line_of(f, "percent: 5"), "E208"


def empty_file(fleet: Path):
    (fleet / "hardware/spare.yaml").write_bytes(b"")
    return "hardware/spare.yaml", 1, "E008"


def binary_file(fleet: Path):
    f = fleet / "models/weights.yaml"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return "models/weights.yaml", line_of_bytes(f, b"\x00"), "E003"


def billion_laughs(fleet: Path):
    (fleet / "rollouts/lol.yaml").write_text(BILLION_LAUGHS, encoding="utf-8")
    return "rollouts/lol.yaml", 1, "E006"


def not_utf8(fleet: Path):
    f = fleet / "hardware/medical-cart-cpu.yaml"
    f.write_bytes(f.read_bytes().replace(b"Hospital cart PC", b"Hospital cart PC \xe9"))
    return "hardware/medical-cart-cpu.yaml", line_of_bytes(f, b"\xe9"), "E002"


def line_of_bytes(path: Path, needle: bytes) -> int:
    return path.read_bytes()[: path.read_bytes().index(needle)].count(b"\n") + 1


def csv_bad_labels(fleet: Path):
    f = fleet / "devices/st-marys-hospital.csv"
    replace_in(f, "ward=icu;floor=1", "ward icu")
    return "devices/st-marys-hospital.csv", line_of(f, "ward icu"), "E105"


def rollout_selects_nothing(fleet: Path):
    f = fleet / "rollouts/meter-digits-1-1.yaml"
    replace_in(f, "selector: {}", "selector: {match_labels: {line: \"99\"}}")
    return "rollouts/meter-digits-1-1.yaml", line_of(f, "selector:"), "E207"


def wave_over_100(fleet: Path):
    f = fleet / "rollouts/meter-digits-1-1.yaml"
    replace_in(f, "percent: 100", "percent: 120")
    return "rollouts/meter-digits-1-1.yaml", line_of(f, "percent: 120"), "E105"


def device_in_two_rollouts(fleet: Path):
    second = fleet / "rollouts/hotfix.yaml"
    second.write_text((fleet / "rollouts/meter-digits-1-1.yaml").read_text(encoding="utf-8")
                      .replace("name: meter-digits-1-1", "name: hotfix")
                      .replace("selector: {}", "selector: {sites: [plant-brno]}"), encoding="utf-8")
    return "rollouts/meter-digits-1-1.yaml", None, "E209"


def unknown_kind(fleet: Path):
    f = fleet / "hardware/medical-cart-cpu.yaml"
    replace_in(f, "kind: HardwareClass", "kind: Rollout")
    return "hardware/medical-cart-cpu.yaml", line_of(f, "kind: Rollout"), "E102"


def kind_not_a_string(fleet: Path):
    f = fleet / "devices/plant-brno.yaml"
    replace_in(f, "kind: DeviceList", "kind: [DeviceList]")
    return "devices/plant-brno.yaml", line_of(f, "kind: [DeviceList]"), "E101"


CASES: list[Case] = [
    broken_syntax, duplicate_key, misspelt_field, wrong_type, unknown_hardware_class,
    unknown_model_version, device_in_two_files, waves_decrease, empty_file, binary_file,
    billion_laughs, not_utf8, csv_bad_labels, rollout_selects_nothing, wave_over_100,
    device_in_two_rollouts, unknown_kind, kind_not_a_string,
]


def test_example_fleet_is_valid(run_cli):
    res = run_cli("validate", EXAMPLE_FLEET)
    assert res.code == 0, res.err
    assert "valid (4 hardware classes, 1 models, 48 devices, 1 rollouts)" in res.out


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_reported_at_its_place(case, fleet_copy, run_cli, tmp_path):
    rel, line, code = case(fleet_copy)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1
    assert "Traceback" not in res.err + res.out
    prefix = f"fleet/{rel}:{line}:" if line else f"fleet/{rel}:"
    matching = [ln for ln in res.err.splitlines() if ln.startswith(prefix) and f"error[{code}]" in ln]
    assert matching, f"expected {prefix}...error[{code}] in:\n{res.err}"
    assert "= hint: " in res.err


def test_misspelt_field_suggests_the_right_one(fleet_copy, run_cli, tmp_path):
    misspelt_field(fleet_copy)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert "unknown field 'spec.ram_mbb'" in res.err
    assert "did you mean 'ram_mb'?" in res.err


def test_all_errors_of_a_run_are_reported_together_and_sorted(fleet_copy, run_cli, tmp_path):
    cases = [wrong_type, unknown_model_version, empty_file]
    expected = [case(fleet_copy) for case in cases]
    res = run_cli("validate", "fleet", "--format", "json", cwd=tmp_path)
    assert res.code == 1
    report = json.loads(res.out)
    found = [(d["file"], d["code"]) for d in report["diagnostics"]]
    for rel, _, code in expected:
        assert (f"fleet/{rel}", code) in found
    order = [(d["file"], d["line"], d["col"], d["code"], d["message"]) for d in report["diagnostics"]]
    assert order == sorted(order)
    assert report["ok"] is False
    assert report["errors"] == sum(d["severity"] == "error" for d in report["diagnostics"]) >= len(expected)


def test_github_annotations_under_actions(fleet_copy, run_cli, tmp_path):
    rel, line, _ = wrong_type(fleet_copy)
    res = run_cli("validate", "fleet", cwd=tmp_path, env={"GITHUB_ACTIONS": "true"})
    assert res.code == 1
    assert f"::error file=fleet/{rel},line={line},col=" in res.out


def test_usage_errors_exit_2(run_cli, tmp_path):
    assert run_cli("validate", tmp_path / "nope").code == 2
    (tmp_path / "file.txt").write_text("x")
    assert run_cli("validate", tmp_path / "file.txt").code == 2
    assert run_cli("validate", "--format", "xml", EXAMPLE_FLEET).code == 2


def test_directory_without_fleet_yaml(run_cli, tmp_path):
    res = run_cli("validate", tmp_path)
    assert res.code == 1
    assert "error[E210]" in res.err and "fleet.yaml" in res.err


def test_validate_writes_nothing(fleet_copy, run_cli, tmp_path):
    waves_decrease(fleet_copy)
    before = sorted(p.relative_to(fleet_copy) for p in fleet_copy.rglob("*") if ".edgefleet" not in p.parts)
    res = run_cli("validate", fleet_copy)
    assert res.code == 1 and "error[E208]" in res.err  # it did run, and wrote nothing
    after = sorted(p.relative_to(fleet_copy) for p in fleet_copy.rglob("*") if ".edgefleet" not in p.parts)
    assert before == after


def test_default_repository_is_the_current_directory(fleet_copy, run_cli):
    waves_decrease(fleet_copy)
    res = run_cli("validate", cwd=fleet_copy)
    assert res.code == 1 and "rollouts/meter-digits-1-1.yaml:" in res.err


def test_no_fleet_here_is_a_usage_error_and_the_example_only_by_name(run_cli, tmp_path):
    # Issue 8: the example fleet is never used silently (it was before).
    res = run_cli("validate", cwd=tmp_path)
    assert res.code == 2 and "no fleet.yaml" in res.err and "--example" in res.err
    assert "using the example fleet" not in res.err
    res = run_cli("validate", "--example", cwd=tmp_path)
    assert res.code == 0, res.err
    assert "valid (4 hardware classes, 1 models, 48 devices, 1 rollouts)" in res.out
