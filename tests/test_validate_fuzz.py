"""Property: whatever a pull request does to a fleet's files, the validator answers with
reported diagnostics (file, line, code), never with an exception."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from edgefleet.pipeline.validate import check_fleet
from edgefleet.core.diagnostics import Diagnostic
from edgefleet.load.repo import fleet_files, load_fleet
from edgefleet.load.yamlsource import parse_yaml
from tests.conftest import EXAMPLE_FLEET

FILES = {rel: (EXAMPLE_FLEET / rel).read_bytes() for rel in fleet_files(EXAMPLE_FLEET)}
YAML_FILES = sorted(rel for rel in FILES if rel.endswith(".yaml"))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["jetson-vision-standard", "1.1.0", "int8", "lots", "", "-1", "onnxruntime"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)


def paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths(value, prefix + (i,))


def mutate(data, path, op, value):
    if not path:
        return value if op == "replace" else data
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "add" and isinstance(parent, dict):
        parent[f"{last}x"] = value
    return data


def dump(data) -> bytes:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue().encode("utf-8")


def assert_reported(files: dict[str, bytes]) -> None:
    repo, diags = load_fleet(files, EXAMPLE_FLEET, "fleet")
    diags = diags + check_fleet(repo)
    for d in diags:
        assert isinstance(d, Diagnostic)
        assert d.location.path.startswith("fleet")
        assert d.code[0] in "EWN" and d.message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_documents_are_reported_not_raised(data):
    rel = data.draw(st.sampled_from(YAML_FILES), label="file")
    docs, _ = parse_yaml(FILES[rel], rel)
    document = docs[0].data
    path = data.draw(st.sampled_from(list(paths(document))), label="path")
    op = data.draw(st.sampled_from(["delete", "replace", "add"]), label="op")
    value = data.draw(values, label="value")
    mutated = mutate(document, path, op, value)
    assert_reported({**FILES, rel: dump(mutated)})


@settings(max_examples=80, deadline=None)
@given(rel=st.sampled_from(sorted(FILES)), offset=st.integers(0, 4000), junk=st.binary(max_size=12))
def test_corrupted_bytes_are_reported_not_raised(rel, offset, junk):
    raw = FILES[rel]
    at = offset % (len(raw) + 1)
    assert_reported({**FILES, rel: raw[:at] + junk + raw[at:]})


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_as_a_file_is_reported_not_raised(text):
    assert_reported({**FILES, "hardware/extra.yaml": text.encode("utf-8")})


# -- hostile values into every field of every kind, through the command line ----------
#
# Every field the models define (found from the generated JSON Schemas, so fields the
# example fleet leaves at their defaults are reached too) gets a hostile number, string
# or nesting; `edgefleet validate` must answer with exit 0 or 1 and a JSON report whose
# every diagnostic names a file of the fleet: never 70 (internal error), never a signal.

import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

import pytest  # noqa: E402

from edgefleet.cli import main  # noqa: E402
from edgefleet.pipeline.schema import _schemas  # noqa: E402
from edgefleet.spec import FOLDER_KINDS  # noqa: E402

SCHEMAS = _schemas()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def schema_paths(schema: dict, node: dict | None = None, prefix=(), depth=0):
    """Every field path a document of this schema can hold (list items as index 0,
    free-form mappings as key 'k')."""
    node = _resolve(schema, node if node is not None else schema)
    if depth > 8:
        return
    for option in node.get("anyOf", []):
        yield from schema_paths(schema, option, prefix, depth + 1)
    for name, prop in node.get("properties", {}).items():
        yield prefix + (name,)
        yield from schema_paths(schema, prop, prefix + (name,), depth + 1)
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield prefix + (0,)
        yield from schema_paths(schema, node["items"], prefix + (0,), depth + 1)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        keys = node.get("propertyNames", {}).get("enum") or ["k"]
        for key in keys[:1]:
            yield prefix + (key,)
            yield from schema_paths(schema, extra, prefix + (key,), depth + 1)


def set_at(data, path, value):
    """`data` with `value` at `path`, creating the mappings and lists on the way."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(data) if isinstance(data, list) else []
        if not items:
            items.append({} if rest and isinstance(rest[0], str) else [])
        items[0] = set_at(items[0], rest, value)
        return items
    mapping = dict(data) if isinstance(data, dict) else {}
    mapping[head] = set_at(mapping.get(head), rest, value)
    return mapping


KIND_OF_FILE = {rel: ("Fleet" if rel == "fleet.yaml" else FOLDER_KINDS[rel.split("/")[0]]) for rel in YAML_FILES}
TARGETS = sorted({(rel, path) for rel, kind in KIND_OF_FILE.items()
                  for path in schema_paths(SCHEMAS[kind])}, key=repr)

HOSTILE_NUMBERS = st.one_of(
    st.sampled_from([2**53 + 1, -(2**53) - 1, 2**63, 2**64, 10**45, -(10**45), 10**400, float("nan"), float("inf"),
                     float("-inf"), 1e308, -0.0, 5e-324, True, False, 0, -1]),
    st.integers(), st.floats())
HOSTILE_STRINGS = st.one_of(
    st.sampled_from(["", "\x00", "a\x00b", "models/x\x00.onnx", "x\n::error::owned", "::set-output name=a::b",
                     "x\r\n::add-mask::s", "../../etc/passwd", "/etc/passwd", "s3://bucket/x", "https://h/m.onnx",
                     "~/x", "999999999999d", "0s", "-1d", "1e999", "1.10", "x\u2028y", "A" * 5000, "%0A", "ed25519:",
                     "-----BEGIN PRIVATE KEY-----"]),
    st.text(max_size=40))


def nested(depth: int, mapping: bool):
    value: object = 1
    for _ in range(depth):
        value = {"a": value} if mapping else [value]
    return value


HOSTILE_NESTING = st.builds(nested, st.integers(1, 300), st.booleans())
HOSTILE = st.one_of(HOSTILE_NUMBERS, HOSTILE_STRINGS, HOSTILE_NESTING)


@pytest.fixture(scope="module")
def fuzz_fleet(tmp_path_factory) -> _Path:
    dest = tmp_path_factory.mktemp("fuzz") / "fleet"
    shutil.copytree(EXAMPLE_FLEET, dest, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    return dest


def run_validate(fleet: _Path) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(fleet), "--format", "json"])
    assert code in (0, 1), (code, err.getvalue()[-2000:])
    text = out.getvalue()
    return code, json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def assert_validate_reports(fleet: _Path, rel: str, raw: bytes) -> None:
    original = (fleet / rel).read_bytes()
    (fleet / rel).write_bytes(raw)
    try:
        code, report = run_validate(fleet)
    finally:
        (fleet / rel).write_bytes(original)
    assert report["ok"] == (code == 0)
    for d in report["diagnostics"]:
        assert d["code"][0] in "EWN" and d["message"]
        assert d["file"].startswith(str(fleet)) or d["file"].startswith("fleet") or d["file"] == ".", d


def test_every_field_of_every_kind_is_reached():
    kinds = {KIND_OF_FILE[rel] for rel, _ in TARGETS}
    assert kinds == {"Fleet", "HardwareClass", "Model", "DeviceList", "Rollout"}
    fields = {path[-1] for _, path in TARGETS}
    # fields the example fleet never writes (defaults) are reached through the schemas
    assert {"hash_bins", "trusted_root", "max_latency_p95_ms", "sparsity", "url", "exclude_nodes"} <= fields


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_values_in_any_field_are_reported_never_a_crash(fuzz_fleet, data):
    rel, path = data.draw(st.sampled_from(TARGETS), label="field")
    value = data.draw(HOSTILE, label="value")
    docs, _ = parse_yaml(FILES[rel], rel)
    mutated = set_at(docs[0].data, path, value)
    assert_validate_reports(fuzz_fleet, rel, dump(mutated))


CSV_FILE = next(rel for rel in FILES if rel.endswith(".csv"))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(column=st.integers(0, 4), value=HOSTILE_STRINGS)
def test_hostile_csv_cells_are_reported_never_a_crash(fuzz_fleet, column, value):
    import csv

    rows = list(csv.reader(io.StringIO(FILES[CSV_FILE].decode("utf-8"), newline="")))
    rows[1][column] = value
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    assert_validate_reports(fuzz_fleet, CSV_FILE, out.getvalue().encode("utf-8"))
