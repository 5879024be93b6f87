"""One rule decides the recipe chain for validation's estimates and for the build."""

from __future__ import annotations

from edgefleet.analysis.selection import choose_variant
from edgefleet.build.recipes import recipe_chain
from edgefleet.rules.recipe_chain import resolve_chain
from edgefleet.load.repo import read_repository


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_an_empty_override_falls_through_to_the_class_chain(fleet_copy):
    _edit(fleet_copy / "models/meter-digits.yaml", "  versions:\n", "  recipes:\n    onnxruntime: []\n  versions:\n")
    repo, diags = read_repository(fleet_copy)
    assert not [d for d in diags if d.is_error]
    chain = resolve_chain(repo.models["meter-digits"].doc, 1, repo.hardware["medical-cart-cpu"].doc)
    assert chain.origin == "class"
    assert [r.name for r in chain.recipes] == ["ort-int8-static", "ort-int8-percentile", "ort-fp32"]
    choice = choose_variant(repo, "meter-digits", "1.1.0", "medical-cart-cpu")
    assert choice.chain == chain
    assert recipe_chain(repo, "meter-digits", "1.1.0", "medical-cart-cpu") == list(chain.recipes)


def test_no_chain_anywhere_gives_the_default_to_both_stages(fleet_copy):
    hw = fleet_copy / "hardware/factory-gateway-gpu.yaml"
    text = hw.read_text()
    hw.write_text(text[: text.index("  recipes:")])
    repo, _ = read_repository(fleet_copy)
    chain = resolve_chain(repo.models["meter-digits"].doc, 1, repo.hardware["factory-gateway-gpu"].doc)
    assert chain.origin == "default" and [r.precision for r in chain.recipes] == ["fp32"]
    assert choose_variant(repo, "meter-digits", "1.1.0", "factory-gateway-gpu").chain == chain
    assert recipe_chain(repo, "meter-digits", "1.1.0", "factory-gateway-gpu") == list(chain.recipes)
