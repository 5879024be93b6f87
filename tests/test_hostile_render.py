"""Workflow-command injection: no user-controlled text can start a `::` line in a CI log.

Values with line breaks are fed into every place they surface (file names, mapping keys,
values quoted in messages, CSV cells) and both outputs of the CLI (stdout and stderr) are
read as the GitHub runner reads them: line by line, leading blanks trimmed.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from edgefleet.cli.render import render_github, render_text, visible
from edgefleet.core.diagnostics import error
from edgefleet.core.source import Location

PAYLOADS = {
    "lf-error": "x\n::error::owned",
    "crlf-set-output": "x\r\n::set-output name=ok::true",
    "cr-add-mask": "x\r::add-mask::secret",
    "stop-commands": "x\n::stop-commands::tok\n",
    "unicode-line-separator": "x\u2028::error::owned",
    "nel": "x\x85::warning::owned",
    "indented-after-newline": "x\n   ::error::owned",
}
ANNOTATION = re.compile(r"::(error|warning|notice) file=[^\n:,]*,line=\d+,col=\d+,title=[EWN]\d{3}::")


def assert_no_injected_command(*outputs: str) -> None:
    for output in outputs:
        # The runner splits on CR and LF; terminals and some log viewers also on U+2028/NEL.
        for line in re.split(r"\r\n|\r|\n|\u2028|\u2029|\x85", output):
            stripped = line.lstrip()
            if stripped.startswith("::"):
                # Only edgefleet's own annotations; their file property holds no raw ':' or ','.
                assert ANNOTATION.match(stripped), f"injected workflow command: {line!r}"


def one_diagnostic(payload: str):
    return [error("E105", f"spec.{payload}: bad", Location(f"fleet/hardware/{payload}.yaml", 2, 3),
                  f"hint {payload}", related=[(Location(f"fleet/{payload}", 1, 1), f"label {payload}")])]


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_renderers_never_let_a_payload_start_a_line(payload):
    for render in (render_text, render_github):
        out = io.StringIO()
        render(one_diagnostic(payload), out)
        assert_no_injected_command(out.getvalue())
        assert out.getvalue().count("\n") == (3 if render is render_text else 1)


def test_text_mode_shows_control_characters_visibly():
    assert visible("a\nb\rc\td\x1b[31m\u2028") == "a\\nb\\rc\\td\\x1b[31m\\u2028"
    assert visible("plain text: ok") == "plain text: ok"


def _github(run_cli, tmp_path, *args):
    return run_cli(*args, cwd=tmp_path, env={"GITHUB_ACTIONS": "true"})


@pytest.mark.parametrize("payload", ["x\n::error::owned", "x\r::set-output name=a::b"], ids=["lf", "cr"])
def test_file_name_with_a_payload(payload, fleet_copy, run_cli, tmp_path):
    (fleet_copy / "hardware" / f"{payload}.yaml").write_text("kind: HardwareClass\n")
    res = _github(run_cli, tmp_path, "validate", "fleet")
    assert res.code == 1
    assert_no_injected_command(res.out, res.err)
    assert "::error file=fleet/hardware/x%0A" in res.out or "::error file=fleet/hardware/x%0D" in res.out


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_yaml_key_with_a_payload_quoted_in_a_message(payload, fleet_copy, run_cli, tmp_path):
    path = fleet_copy / "hardware/medical-cart-cpu.yaml"
    escaped = payload.encode("unicode_escape").decode().replace('"', '\\"')
    path.write_text(path.read_text() + f'  "{escaped}": 1\n')  # unknown field: E103 quotes the key
    res = _github(run_cli, tmp_path, "validate", "fleet")
    assert res.code == 1 and "[E103]" in res.err
    assert_no_injected_command(res.out, res.err)


@pytest.mark.parametrize("payload", ["x\n::error::owned", "x\r\n::set-output name=a::b"], ids=["lf", "crlf"])
def test_duplicate_key_and_value_payloads(payload, fleet_copy, run_cli, tmp_path):
    escaped = payload.encode("unicode_escape").decode()
    (fleet_copy / "rollouts/extra.yaml").write_text(
        f'apiVersion: edgefleet/v1\nkind: Rollout\nmetadata: {{name: "{escaped}", description: "{escaped}"}}\n'
        f'"{escaped}": 1\n"{escaped}": 2\n')
    res = _github(run_cli, tmp_path, "validate", "fleet")
    assert res.code == 1 and "[E005]" in res.err
    assert_no_injected_command(res.out, res.err)


def test_csv_cells_with_payloads(fleet_copy, run_cli, tmp_path):
    with (fleet_copy / "devices/st-marys-hospital.csv").open("a", encoding="utf-8", newline="") as fh:
        fh.write('"sm\n::error::owned","cls\r::add-mask::x",site,"a=1;b\n::error::x",ed25519:00\n')
    res = _github(run_cli, tmp_path, "validate", "fleet")
    assert res.code == 1
    assert_no_injected_command(res.out, res.err)


def test_json_output_carries_payloads_as_data(fleet_copy, run_cli, tmp_path):
    import json

    (fleet_copy / "hardware" / "x\n::error::owned.yaml").write_text("kind: HardwareClass\n")
    res = run_cli("validate", "fleet", "--format", "json", cwd=tmp_path)
    assert res.code == 1
    assert_no_injected_command(res.out, res.err)
    start = res.out.index("{")
    report = json.JSONDecoder().raw_decode(res.out[start:])[0]
    assert any(d["file"] == "fleet/hardware/x\n::error::owned.yaml" for d in report["diagnostics"])


def test_every_line_of_a_clean_run_is_safe(fleet_copy, run_cli, tmp_path):
    res = _github(run_cli, tmp_path, "validate", "fleet")
    assert res.code == 0
    assert_no_injected_command(res.out, res.err)
    assert Path(fleet_copy).is_dir()
