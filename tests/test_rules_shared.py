"""Each shared rule has one definition, and the copies it replaced do not come back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from edgefleet.core.ids import DEVICE_ID_PATTERN, is_device_id
from edgefleet.rules.digests import digest_mismatch
from edgefleet.rules.gates import gate_problems
from edgefleet.spec.device import DeviceId
from edgefleet.spec.model import AccuracyBudget

PACKAGE = Path(__file__).resolve().parents[1] / "compiler" / "edgefleet"
SOURCES = {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("value", ["pb-robot-001", "a", "x" * 63, "cart.7_b"])
def test_a_good_device_id_is_one_everywhere(value):
    assert is_device_id(value)
    assert TypeAdapter(DeviceId).validate_python(value) == value


@pytest.mark.parametrize("value", ["", "-lead", "Upper", "x" * 64, "a/b", "dev\n", "dev\x00", "dé", 7, None])
def test_a_bad_device_id_is_refused_everywhere(value):
    # "dev\n" passed the old `re.match(...$)` copies in signing/: `$` matches before a final newline.
    assert not is_device_id(value)
    with pytest.raises(ValidationError):
        TypeAdapter(DeviceId).validate_python(value)


def test_the_device_id_pattern_is_written_once():
    body = DEVICE_ID_PATTERN.strip("^$")
    holders = sorted(name for name, text in SOURCES.items() if body in text)
    assert holders == ["core/ids.py"], holders


def test_the_artifact_key_is_derived_once():
    derivations = sorted(name for name, text in SOURCES.items() if re.search(r"key_of\(\s*key_inputs\(", text))
    assert derivations == ["build/key.py"], derivations


def test_the_digest_rule_gives_the_fix_both_ways():
    assert digest_mismatch("m.onnx", "ab" * 32, "ab" * 32) is None
    problem = digest_mismatch("m.onnx", "ab" * 32, "cd" * 32)
    assert problem.message == f"'m.onnx' has sha256 {'ab' * 32}, but the model YAML declares {'cd' * 32}"
    assert f"set sha256: {'ab' * 32}" in problem.hint and "git checkout -- m.onnx" in problem.hint


@pytest.mark.parametrize("requires, metric, evaluation, labels, missing", [
    (True, None, False, None, ["evaluation", "accuracy"]),
    (True, "top1_agreement", False, None, ["evaluation"]),
    (True, None, True, None, ["accuracy"]),
    (False, "cosine", False, None, ["evaluation"]),  # a declared budget is enforced even when not required
    (False, None, False, None, []),
    (True, "top1_accuracy", True, False, ["labels"]),
    (True, "top1_accuracy", True, None, []),  # labels unknown (validation): left to the build
    (True, "top1_agreement", True, False, []),
], ids=["nothing", "no-evaluation", "no-budget", "budget-without-data", "ungated", "no-labels",
        "labels-unknown", "agreement-needs-no-labels"])
def test_the_gate_rule(requires, metric, evaluation, labels, missing):
    budget = AccuracyBudget(metric=metric, threshold=0.9) if metric else None
    assert [p.missing for p in gate_problems(requires, budget, evaluation, labels)] == missing
