"""The YAML/CSV readers: positions survive, and hostile input is refused clearly."""

from __future__ import annotations

import pytest

from edgefleet.load import yamlsource
from edgefleet.load.inventory_csv import iter_csv_rows, parse_labels
from edgefleet.load.yamlsource import parse_yaml


def codes(raw: bytes) -> list[str]:
    return [d.code for d in parse_yaml(raw, "f.yaml")[1]]


def test_positions_of_values_and_keys():
    docs, diags = parse_yaml(b"spec:\n  ram_mb: 512\n  precisions: [fp16, int8]\n", "f.yaml")
    assert not diags
    src = docs[0].source
    assert str(src.at("spec", "ram_mb")) == "f.yaml:2:11"
    assert str(src.key_at("spec", "ram_mb")) == "f.yaml:2:3"
    assert str(src.at("spec", "precisions", 1)) == "f.yaml:3:22"
    # a missing value points at its nearest present parent
    assert str(src.at("spec", "storage_mb")) == "f.yaml:2:3"


def test_scalars_follow_yaml_1_2_core_schema():
    docs, _ = parse_yaml(b"a: 0x1f\nb: 1_000\nc: .inf\nd: ~\ne: true\nf: '010'\ng: 2026-01-01\nh: 1.5\n", "f.yaml")
    assert docs[0].data == {"a": 31, "b": 1000, "c": float("inf"), "d": None, "e": True,
                            "f": "010", "g": "2026-01-01", "h": 1.5}


def test_multi_document_files_keep_each_document():
    docs, diags = parse_yaml(b"a: 1\n---\nb: 2\n", "f.yaml")
    assert not diags
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert str(docs[1].source.at("b")) == "f.yaml:3:4"


@pytest.mark.parametrize("raw,code", [
    (b"a: 1\nb: 2\na: 3\n", "E005"),
    (b"a: &x [*x]\n", "E006"),
    (b"a: !!python/object/apply:os.system [ls]\n", "E007"),
    (b"a: !custom 1\n", "E007"),
    (b"? [a, b]\n: 1\n", "E009"),
    (b"\xff\xfeb\x00", "E003"),
    (b"a: \xc3\x28\n", "E002"),
    (b"# only a comment\n", "E008"),
    (b"a: [1, 2\n", "E004"),
    (b"[" * 3000 + b"]" * 3000, "E004"),
], ids=["duplicate-key", "recursive-alias", "python-tag", "custom-tag", "complex-key", "utf16-binary",
        "invalid-utf8", "only-comment", "unclosed-flow", "nested-too-deep"])
def test_hostile_yaml_is_refused(raw, code):
    assert codes(raw) == [code]


def test_oversized_file_is_refused(monkeypatch):
    monkeypatch.setattr(yamlsource, "MAX_FILE_BYTES", 64)
    diags = parse_yaml(b"a: " + b"x" * 100 + b"\n", "big.yaml")[1]
    assert [d.code for d in diags] == ["E001"]
    assert "split it" in diags[0].hint


def test_honest_anchor_reuse_is_allowed():
    docs, diags = parse_yaml(b"base: &g {soak: 1h}\nwaves: [{gates: *g}, {gates: *g}]\n", "f.yaml")
    assert not diags
    assert docs[0].data["waves"][1]["gates"] == {"soak": "1h"}


def test_byte_order_mark_is_accepted():
    docs, diags = parse_yaml("\ufeffa: 1\n".encode("utf-8"), "f.yaml")
    assert not diags and docs[0].data == {"a": 1}


def test_csv_rows_keep_line_and_column():
    text = "id,hardware_class,site,labels,public_key\n\ncart-1,medical-cart-cpu,ward,a=1;b=2,ed25519:00\n"
    rows = list(iter_csv_rows(text, "d.csv"))
    assert len(rows) == 1
    data, where, diags = rows[0]
    assert not diags and data["labels"] == {"a": "1", "b": "2"}
    assert str(where.at("site")) == "d.csv:3:25"


@pytest.mark.parametrize("text,code", [
    ("", "E008"),
    ("id,class\n", "E106"),
    ("id,hardware_class,site,labels,public_key\nx,y\n", "E106"),
    ("id,hardware_class,site,labels,public_key\nx,y,z,novalue,k\n", "E105"),
], ids=["empty", "wrong-header", "short-row", "bad-labels"])
def test_bad_csv_is_reported(text, code):
    diags = [d for _, _, ds in iter_csv_rows(text, "d.csv") for d in ds]
    assert [d.code for d in diags] == [code]


def test_labels_parsing():
    assert parse_labels("") == {}
    assert parse_labels("a=1; b = 2 ;") == {"a": "1", "b": "2"}
    assert parse_labels("a") is None
