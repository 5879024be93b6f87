"""Hostile fleet files: every one is a reported input error (exit 1, a code, a place),
never an internal error (exit 70), a traceback or a signal.

Each case edits a private copy of the example fleet and names the input it tries.
Cases that crashed before this guard: deep nesting (SIGSEGV in libyaml's composer),
long integer literals (ValueError from int()), numbers above 2**53 and infinities
(validate passed them, build and compile overflowed), overlong durations (datetime
overflow), fields over the csv module's limit (csv.Error).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.load import repo as repo_mod
from edgefleet.load import yamlsource
from edgefleet.load.yamlsource import parse_yaml

HW = "hardware/jetson-vision-standard.yaml"
MODEL = "models/meter-digits.yaml"
FLEET = "fleet.yaml"
ROLLOUT = "rollouts/meter-digits-1-1.yaml"
CSV = "devices/st-marys-hospital.csv"


def replace_in(fleet: Path, rel: str, old: str, new: str) -> None:
    path = fleet / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(fleet: Path, rel: str, needle: str) -> int:
    text = (fleet / rel).read_text(encoding="utf-8")
    return text[: text.index(needle)].count("\n") + 1


# (id, file, old text, new text, code, text that marks the line of the error)
EDITS = [
    ("ram-mb-true", HW, "ram_mb: 16384", "ram_mb: true", "E105", "ram_mb: true"),
    ("ram-mb-quoted-number", HW, "ram_mb: 16384", 'ram_mb: "16384"', "E105", "ram_mb:"),
    ("ram-mb-above-2**53", HW, "ram_mb: 16384", f"ram_mb: {2**53 + 1}", "E105", "ram_mb:"),
    ("ram-mb-2**64", HW, "ram_mb: 16384", f"ram_mb: {2**64}", "E105", "ram_mb:"),
    ("ram-mb-5000-digits", HW, "ram_mb: 16384", "ram_mb: " + "9" * 5000, "E010", "ram_mb:"),
    ("ram-mb-negative-5000-digits", HW, "ram_mb: 16384", "ram_mb: -" + "9" * 5000, "E010", "ram_mb:"),
    ("latency-inf", HW, "latency_budget_ms:", "latency_budget_ms: .inf\n  x_old_latency:", "E105",
     "latency_budget_ms: .inf"),
    ("power-nan", HW, "power_w:", "power_w: .nan\n  x_old_power:", "E105", "power_w: .nan"),
    ("max-artifact-1e300", HW, "max_artifact_mb:", "max_artifact_mb: 1.0e+300\n  x_old_max:", "E105",
     "max_artifact_mb: 1.0e+300"),
    ("input-shape-huge", HW, "shape: [", f"shape: [{2**62}, ", "E105", "shape:"),
    ("batch-size-float", HW, "batch_size: 1", "batch_size: 1.5", "E105", "batch_size:"),
    ("threshold-minus-inf", MODEL, "threshold: 0.98", "threshold: -.inf", "E105", "threshold:"),
    ("wave-percent-nan", ROLLOUT, "percent: 50", "percent: .nan", "E105", "percent: .nan"),
    ("current-wave-bool", ROLLOUT, "current_wave: 0", "current_wave: false", "E105", "current_wave:"),
    ("expiry-root-overflow", FLEET, "root: 365d", "root: 999999999999d", "E105", "root:"),
    ("expiry-root-digits", FLEET, "root: 365d", "root: " + "9" * 40 + "d", "E105", "root:"),
    ("expiry-timestamp-zero", FLEET, "timestamp: 1d", "timestamp: 0s", "E105", "timestamp:"),
    ("expiry-targets-zero-days", FLEET, "targets: 30d", "targets: 0d", "E105", "targets:"),
    ("expiry-negative", FLEET, "snapshot: 7d", "snapshot: -7d", "E105", "snapshot:"),
    ("offline-overflow", HW, "max_offline:", "max_offline: 99999999999d\n    x_old:", "E105", "max_offline: 9"),
    ("telemetry-rows-float", FLEET, "telemetry_buffer_rows: 10000", "telemetry_buffer_rows: 1e400", "E105",
     "telemetry_buffer_rows"),
    ("hash-bins-true", FLEET, "signing:", "signing:\n    hash_bins: true", "E105", "hash_bins"),
    ("source-nul-byte", MODEL, "source: models/meter-digits/1.0.0/full.onnx",
     'source: "models/meter-digits/1.0.0/full\\0.onnx"', "E012", "full\\0"),
    ("source-url", MODEL, "source: models/meter-digits/1.0.0/full.onnx",
     "source: https://example.com/full.onnx", "E012", "https://"),
    ("data-absolute", MODEL, "calibration: models/meter-digits/data/calibration.npz",
     "calibration: /etc/passwd", "E011", "/etc/passwd"),
    ("data-dotdot", MODEL, "evaluation: models/meter-digits/data/evaluation.npz",
     "evaluation: ../../outside.npz", "E011", "../../outside"),
    ("store-path-url", FLEET, "path: .edgefleet/artifacts", "path: s3://bucket/prefix", "E012", "s3://"),
    ("store-path-outside", FLEET, "path: .edgefleet/artifacts", "path: ../elsewhere", "E011", "../elsewhere"),
]


@pytest.mark.parametrize("rel,old,new,code,marker", [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_hostile_value_is_reported_at_its_line(rel, old, new, code, marker, fleet_copy, run_cli, tmp_path):
    replace_in(fleet_copy, rel, old, new)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1, res.err
    assert f"fleet/{rel}:{line_of(fleet_copy, rel, marker)}:" in res.err and f"[{code}]" in res.err, res.err
    assert "internal error" not in res.err


@pytest.mark.parametrize("command", ["build", "compile"])
def test_build_and_compile_refuse_what_validate_refuses(command, fleet_copy, run_cli, tmp_path):
    """These used to crash after validation passed (int overflow in sizes, inf in budgets)."""
    replace_in(fleet_copy, HW, "ram_mb: 16384", f"ram_mb: {2**63}")
    replace_in(fleet_copy, HW, "latency_budget_ms:", "latency_budget_ms: .inf\n  x_old_latency:")
    args = [command, "fleet", "--store", tmp_path / "store"]
    if command == "compile":
        args += ["--keys", tmp_path / "keys", "--out", tmp_path / "out"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.code == 1, res.err
    assert "[E105]" in res.err and "internal error" not in res.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_numeric_hint_quotes_the_source_text(fleet_copy, run_cli, tmp_path):
    replace_in(fleet_copy, MODEL, 'version: "1.0.0"', "version: 1.10")
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1
    assert 'put the value in quotes: "1.10"' in res.err, res.err
    assert "'1.1'" not in res.err and "got 1.1)" not in res.err


def test_numeric_hint_keeps_exponent_and_hex_as_written(fleet_copy, run_cli, tmp_path):
    replace_in(fleet_copy, HW, 'version: "', "version: 0x1F\n    x_old: \"")
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert 'put the value in quotes: "0x1F"' in res.err, res.err


# -- nesting: guarded before libyaml's recursive composer sees the text ---------------

NESTING = {
    "flow-sequences-200": "a: " + "[" * 200 + "]" * 200 + "\n",
    "flow-sequences-100k": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "flow-mappings-50k": "a: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
    "unclosed-flow-1m": "a: " + "[" * 1_000_000 + "\n",
    "block-sequences-compact": "a:\n" + "- " * 5_000 + "x\n",
    "block-mappings-indented": "".join(" " * i + f"k{i}:\n" for i in range(3_000)) + " " * 3_000 + "v: 1\n",
    "mixed-block-and-flow": "".join("  " * i + "- \n" for i in range(120)) + "  " * 120 + "[" * 60 + "]" * 60 + "\n",
}


@pytest.mark.parametrize("text", list(NESTING.values()), ids=list(NESTING))
def test_deep_nesting_is_e004_not_a_crash(text):
    docs, diags = parse_yaml(text.encode(), "deep.yaml")
    assert not docs and [d.code for d in diags] == ["E004"]
    assert "nested too deeply" in diags[0].message


def test_deep_nesting_in_a_fresh_interpreter_exits_1_not_sigsegv(fleet_copy, tmp_path):
    """The crash was a segmentation fault: only a real process shows that it is gone."""
    (fleet_copy / "hardware/deep.yaml").write_text("a: " + "[" * 200_000 + "]" * 200_000 + "\n")
    proc = subprocess.run([sys.executable, "-m", "edgefleet", "validate", str(fleet_copy)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "hardware/deep.yaml:1:" in proc.stderr and "[E004]" in proc.stderr


@pytest.mark.parametrize("text", [
    "a: " + "[" * 60 + "]" * 60 + "\n",  # deep but within the limit
    "description: '" + "[" * 500 + "'\n",  # brackets inside a quoted string are not nesting
    "l: [" + ", ".join(f"[{i}, {{k: v}}]" for i in range(5_000)) + "]\n",  # wide, not deep
], ids=["depth-60", "brackets-in-a-string", "wide-flow"])
def test_honest_documents_are_not_refused_for_nesting(text):
    docs, diags = parse_yaml(text.encode(), "ok.yaml")
    assert not diags and docs


def test_nesting_limit_is_reported_where_it_is_crossed():
    text = "a:\n  b: " + "[" * (yamlsource.MAX_DEPTH + 5) + "]" * (yamlsource.MAX_DEPTH + 5) + "\n"
    [diag] = parse_yaml(text.encode(), "f.yaml")[1]
    assert (diag.location.line, diag.location.col) == (2, 6 + yamlsource.MAX_DEPTH - 2)


# -- files --------------------------------------------------------------------------


def test_csv_field_over_the_csv_limit_is_e106(fleet_copy, run_cli, tmp_path):
    with (fleet_copy / CSV).open("a", encoding="utf-8") as fh:
        fh.write("sm-cart-999,medical-cart-cpu,st-marys-hospital,ward=" + "x" * 300_000 + ",ed25519:" + "0" * 64 + "\n")
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1 and "internal error" not in res.err
    assert f"fleet/{CSV}:{line_of(fleet_copy, CSV, 'sm-cart-999')}:1: error[E106]" in res.err, res.err


def test_csv_runaway_quote_is_e106(fleet_copy, run_cli, tmp_path):
    with (fleet_copy / CSV).open("a", encoding="utf-8") as fh:
        fh.write('sm-cart-998,medical-cart-cpu,st-marys-hospital,"' + "y" * 200_000 + "\n")
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1 and "[E106]" in res.err and "internal error" not in res.err


def test_total_size_of_the_repository_is_capped(fleet_copy, run_cli, tmp_path, monkeypatch):
    sizes = sorted((p.stat().st_size, p) for p in (fleet_copy / "devices").iterdir())
    # Every file is under the per-file limit; together they cross the (lowered) total cap.
    cap = sum((p.stat().st_size for p in fleet_copy.rglob("*.yaml")), 0) // 2
    monkeypatch.setattr(repo_mod, "MAX_REPO_BYTES", cap)
    assert all(size < yamlsource.MAX_FILE_BYTES for size, _ in sizes)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1 and "[E013]" in res.err, res.err
    assert f"more than {cap} bytes" in res.err


def test_a_real_repository_stays_under_the_total_cap(fleet_copy):
    files, diags = repo_mod.read_fleet_files(fleet_copy)
    assert not diags and sum(map(len, files.values())) < repo_mod.MAX_REPO_BYTES


@pytest.mark.parametrize("old,new,shown", [
    ("ram_mb: 16384", "ram_mb: true", "(got true)"),
    ("ram_mb: 16384", "ram_mb: 0x20000000000001", "(got 0x20000000000001)"),
    ("power_w:", "power_w: .NaN\n  x_old_power:", "(got .NaN)"),
], ids=["bool", "hex", "nan"])
def test_messages_quote_numbers_as_written(old, new, shown, fleet_copy, run_cli, tmp_path):
    replace_in(fleet_copy, HW, old, new)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1 and shown in res.err, res.err
