"""JSON Schemas in schemas/ are generated from the models and must be current; every
example YAML file points editors at its schema."""

from __future__ import annotations

import json
import re

from edgefleet.load.repo import fleet_files
from edgefleet.pipeline.schema import schema_files
from tests.conftest import EXAMPLE_FLEET, ROOT


def test_committed_schemas_are_current():
    stale = [name for name, text in schema_files().items()
             if not (ROOT / "schemas" / name).is_file() or (ROOT / "schemas" / name).read_text() != text]
    assert not stale, f"run `edgefleet schema` and commit: {stale}"


def test_schema_check_command_detects_staleness(run_cli, tmp_path):
    assert run_cli("schema", "--out", tmp_path).code == 0
    assert run_cli("schema", "--out", tmp_path, "--check").code == 0
    victim = tmp_path / "hardwareclass.schema.json"
    victim.write_text(victim.read_text().replace("ram_mb", "ram_megabytes"))
    res = run_cli("schema", "--out", tmp_path, "--check")
    assert res.code == 1 and "hardwareclass.schema.json: stale" in res.err


def test_schemas_reject_unknown_fields():
    schema = json.loads(schema_files()["hardwareclass.schema.json"])
    spec = schema["$defs"]["HardwareClassSpec"]
    assert spec["additionalProperties"] is False
    assert "ram_mb" in spec["required"]


def test_every_example_yaml_names_its_schema():
    for rel in fleet_files(EXAMPLE_FLEET):
        if not rel.endswith(".yaml"):
            continue
        first = (EXAMPLE_FLEET / rel).read_text().splitlines()[0]
        match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        assert match, f"{rel}: first line must be the yaml-language-server schema line"
        target = (EXAMPLE_FLEET / rel).parent / match.group(1)
        assert target.resolve().is_file(), f"{rel}: {match.group(1)} does not exist"
