"""`edgefleet validate`'s model-vs-hardware stage: every needed build must fit its class.

For each (model, version, hardware class) that `needs.needed_builds` says devices
will run, the variants are measured and one is chosen (`selection.choose_variant`);
integrity problems (E301, E302) are always errors, and when no variant fits, every
variant's failing constraint is reported at the model YAML with the class field it
breaks. Every recipe is checked with the build's own rule (`rules.recipes`, E308), every
class for consistency of its own figures (`rules.hardware`, E220-E222).

With `with_notes=True`, one note per class also says where OpenVINO's device was
checked on a proxy (N301) or where operators could not be checked at all (N302).
`validate` leaves them out (its report holds only what must be fixed); `explain`
always shows them.

This stage reads model files (through the analyzer's content cache); everything it
decides is in `constraints`, which is pure.
"""

from __future__ import annotations

from edgefleet.analysis.cache import Analyzer
from edgefleet.analysis.constraints import ChainUse, choice_diagnostics, gate_diagnostics, recipe_diagnostics
from edgefleet.analysis.selection import analyzer_for, choose_variant, source_node_names
from edgefleet.core.diagnostics import Diagnostic, note
from edgefleet.rules.needs import needed_builds
from edgefleet.load.repo import FleetRepo
from edgefleet.rules.hardware import class_consistency


def check_constraints(repo: FleetRepo, analyzer: Analyzer | None = None, with_notes: bool = False) -> list[Diagnostic]:
    analyzer = analyzer or analyzer_for(repo)
    out: list[Diagnostic] = []
    for cls in sorted(repo.hardware):
        out += class_consistency(repo.hardware[cls])
    chains: list[ChainUse] = []
    proxied: dict[str, str] = {}
    unchecked: dict[str, str] = {}
    gates: dict[str, dict[str, tuple]] = {}
    for need in needed_builds(repo):
        loaded = repo.models[need.model]
        versions = [v.version for v in loaded.doc.spec.versions]
        if need.version not in versions:
            continue  # E205 already says so
        version_index = versions.index(need.version)
        if not any(repo.is_file(v.source) for v in loaded.doc.spec.versions[version_index].variants):
            continue  # no file to measure; E212 already says so
        choice = choose_variant(repo, need.model, need.version, need.hardware_class, analyzer)
        hw = repo.hardware[need.hardware_class]
        out += choice_diagnostics(loaded, version_index, hw, list(choice.fits))
        nodes = None
        if choice.chosen is not None and any(r.exclude_nodes for r in choice.chain.recipes):
            nodes = source_node_names(analyzer, choice.chosen.variant.source)
        chains.append(ChainUse(need.model, choice.chain, need.hardware_class, nodes))
        if choice.gate is not None and choice.gate.status == "fail":
            gates.setdefault(need.model, {})[need.hardware_class] = (hw, choice.gate)
        for fit in choice.fits:
            if fit.support is not None and fit.support.proxy_for:
                proxied.setdefault(need.hardware_class, fit.support.checked_with)
            for c in fit.checks:
                if c.name == "operators" and c.status == "unchecked":
                    unchecked.setdefault(need.hardware_class, c.detail)
    out += recipe_diagnostics(repo, chains)
    for model in sorted(gates):
        out += gate_diagnostics(repo.models[model], [gates[model][c] for c in sorted(gates[model])])
    if not with_notes:
        return out
    for cls, text in sorted(proxied.items()):
        hw = repo.hardware[cls]
        device = hw.doc.spec.runtime.device
        out.append(note("N301", f"hardware class '{cls}': OpenVINO device {device} is not present on this host; "
                                f"operators were checked with {text}",
                        hw.source.at("spec", "runtime", "device"),
                        "run `edgefleet validate` on a host with this device for the real answer"))
    for cls, text in sorted(unchecked.items()):
        hw = repo.hardware[cls]
        out.append(note("N302", f"hardware class '{cls}': operators not checked: {text}",
                        hw.source.at("spec", "runtime", "version"),
                        "the build or the device will find unsupported operators instead; see README "
                        "(model-vs-hardware constraints) for what each runtime check needs"))
    return out
