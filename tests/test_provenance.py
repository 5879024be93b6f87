"""SLSA v1 provenance statements: shape, determinism, and what CI adds."""

from __future__ import annotations

import json

import pytest
import rfc8785

from edgefleet.build.provenance import (BUILD_TYPE, LOCAL_BUILDER, PREDICATE_TYPE, STATEMENT_TYPE,
                                        provenance_statement, statement_bytes, subject_digests)
from test_store import EXTRA, KEY, make_record, sha

GITHUB_ENV = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/meter-fleet",
    "GITHUB_WORKFLOW_REF": "acme/meter-fleet/.github/workflows/build.yml@refs/heads/main",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_RUN_ID": "42",
    "GITHUB_RUN_ATTEMPT": "2",
}


def test_statement_names_the_artifact_and_its_inputs():
    record = make_record(KEY)
    st = provenance_statement(record, {})
    assert st["_type"] == STATEMENT_TYPE and st["predicateType"] == PREDICATE_TYPE
    assert st["subject"][0] == {"name": "model.onnx", "digest": {"sha256": record.artifact.sha256}}
    assert {"name": "build-spec.json", "digest": {"sha256": sha(EXTRA)}} in st["subject"]
    definition = st["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"].items() >= {
        "model": "meter-digits", "version": "1.1.0", "variant": "full", "hardware_class": "medical-cart-cpu"}.items()
    assert definition["externalParameters"]["recipes"] == record.recipes
    assert definition["internalParameters"]["key"] == KEY
    assert definition["internalParameters"]["toolchain"] == {"onnxruntime": "1.23.2"}
    assert definition["resolvedDependencies"] == [
        {"name": "models/m.onnx", "digest": {"sha256": "a" * 64}, "annotations": {"role": "source"}}]
    assert st["predicate"]["runDetails"] == {"builder": {"id": LOCAL_BUILDER, "version": {"edgefleet": "0.1.0"}}}


def test_statement_is_valid_for_sigstore_and_slsa_models():
    """sigstore's own in-toto and SLSA v1 models accept what we sign."""
    from sigstore.dsse import Statement
    from sigstore.dsse._predicate import SLSAPredicateV1_0

    raw = statement_bytes(make_record(KEY), GITHUB_ENV)
    statement = Statement(raw)  # raises on a malformed statement
    # sigstore reads our subject back: the artifact's digest, under its name
    assert [(x.name, x.digest.root["sha256"]) for x in statement._inner.subjects][0] == (
        "model.onnx", make_record(KEY).artifact.sha256)
    predicate = SLSAPredicateV1_0.model_validate(json.loads(raw)["predicate"])
    assert predicate.build_definition.build_type == BUILD_TYPE
    assert predicate.run_details.builder.id == GITHUB_ENV["GITHUB_SERVER_URL"] + "/" + GITHUB_ENV["GITHUB_WORKFLOW_REF"]


def test_statement_bytes_are_canonical_and_deterministic():
    first = statement_bytes(make_record(KEY), GITHUB_ENV)
    again = statement_bytes(make_record(KEY), dict(reversed(list(GITHUB_ENV.items()))))
    assert first == again == rfc8785.dumps(json.loads(first))
    text = first.decode()
    for word in ("startedOn", "finishedOn", "timestamp", "/tmp/", "/work/"):
        assert word not in text, f"{word!r} makes provenance depend on when or where it was built"


def test_github_actions_builder_and_invocation():
    st = provenance_statement(make_record(KEY), GITHUB_ENV)
    run = st["predicate"]["runDetails"]
    # The builder id is the workflow identity that Fulcio writes into the signing certificate.
    assert run["builder"]["id"] == "https://github.com/acme/meter-fleet/.github/workflows/build.yml@refs/heads/main"
    assert run["metadata"] == {"invocationId": "https://github.com/acme/meter-fleet/actions/runs/42/attempts/2"}
    deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps[0] == {"uri": "git+https://github.com/acme/meter-fleet@refs/heads/main",
                       "digest": {"gitCommit": GITHUB_ENV["GITHUB_SHA"]}}


def test_github_variables_are_ignored_outside_actions():
    env = {k: v for k, v in GITHUB_ENV.items() if k != "GITHUB_ACTIONS"}
    assert statement_bytes(make_record(KEY), env) == statement_bytes(make_record(KEY), {})


def test_subject_digests():
    raw = statement_bytes(make_record(KEY), {})
    digests = subject_digests(raw)
    assert digests["model.onnx"] == make_record(KEY).artifact.sha256
    with pytest.raises(ValueError, match="not an in-toto Statement"):
        subject_digests(b'{"_type": "https://example.com/other"}')
