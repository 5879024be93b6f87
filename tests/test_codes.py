"""Every diagnostic code lives in one registry (edgefleet/core/codes.py), and the README's and
schemas/CODES.md's code tables are generated from it."""

from __future__ import annotations

import re

from edgefleet.core import codes
from edgefleet.pipeline.schema import CODE_BLOCK, schema_files, with_code_tables
from tests.conftest import ROOT

SOURCE = ROOT / "compiler" / "edgefleet"
USE = re.compile(r'"([EWN][0-9]{3})"')


def codes_in_source() -> dict[str, set[str]]:
    """code -> the files that use it as a string literal."""
    found: dict[str, set[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if path.name == "codes.py" and path.parent.name == "core":
            continue
        for code in USE.findall(path.read_text(encoding="utf-8")):
            found.setdefault(code, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_code_used_in_the_source_is_registered():
    missing = {code: sorted(files) for code, files in codes_in_source().items() if code not in codes.REGISTRY}
    assert not missing, (f"add one `Code(...)` line per code to compiler/edgefleet/core/codes.py, then run "
                         f"`edgefleet schema`: {missing}")


def test_every_registered_code_is_used():
    unused = sorted(set(codes.REGISTRY) - set(codes_in_source()))
    assert not unused, f"codes in core/codes.py that no module reports (remove them): {unused}"


def test_registry_is_well_formed():
    entries = codes._CODES
    assert len(entries) == len(codes.REGISTRY), "a code is listed twice"
    for entry in entries:
        assert re.fullmatch(r"[EWN][0-9]{3}", entry.code), entry
        assert entry.code[1] in codes.SECTIONS, f"{entry.code}: no section for its hundreds digit"
        assert entry.meaning.strip() and "|" not in entry.meaning + entry.where.replace("\\|", ""), entry
    assert codes.get("E203").severity == "error" and codes.get("W201").severity == "warning"
    assert codes.get("N301").severity == "note"


def test_severity_helpers_match_the_code_letter():
    """error("W...") would print a warning's code as an error: the letter is the severity."""
    wrong = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for helper, letter in (("error", "E"), ("warning", "W"), ("note", "N")):
            for code in re.findall(rf'\b{helper}\(\s*"([EWN][0-9]{{3}})"', text):
                if code[0] != letter:
                    wrong.append(f"{path.relative_to(ROOT)}: {helper}({code!r})")
    assert not wrong, wrong


def test_readme_code_tables_are_generated_and_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = CODE_BLOCK.findall(readme)
    assert len(blocks) >= 6, "README lost its generated code tables"
    assert with_code_tables(readme) == readme, "README's code tables are stale: run `edgefleet schema` and commit"
    # Every registered code appears in some README table (none is documented only in CODES.md).
    listed = set(re.findall(r"^\| ([EWN][0-9]{3}) \|", readme, re.MULTILINE))
    assert set(codes.REGISTRY) <= listed, f"not in any README table: {sorted(set(codes.REGISTRY) - listed)}"


def test_codes_reference_is_current():
    assert (ROOT / "schemas" / "CODES.md").read_text(encoding="utf-8") == schema_files()["CODES.md"]


def test_schema_command_rewrites_a_stale_readme_table(run_cli, tmp_path):
    """Regenerating is what `edgefleet schema` does; a hand edit inside the block is undone."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    edited = readme.replace("| E203 | a device names an unknown hardware class |", "| E203 | edited by hand |")
    assert edited != readme
    assert with_code_tables(edited) == readme
    # and the check mode of the command sees the checkout as current
    assert run_cli("schema", "--check").code == 0
