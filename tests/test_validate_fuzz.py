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
