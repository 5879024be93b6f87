"""Checks across documents: every reference resolves, rollouts are coherent.

Pure: a loaded FleetRepo in, diagnostics out (only file existence is looked up,
through the `exists` callable the caller passes in).
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable

from edgefleet.core.diagnostics import Diagnostic, error, warning
from edgefleet.load.repo import FleetRepo
from edgefleet.rules.selectors import matches


def _suggest(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    guess = difflib.get_close_matches(name, known, n=1)
    if guess:
        return f"did you mean '{guess[0]}'?"
    return f"known: {', '.join(known)}" if known else "none are defined yet"


def check_references(repo: FleetRepo, exists: Callable[[str], bool]) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    diags += _check_devices(repo)
    diags += _check_models(repo, exists)
    diags += _check_rollouts(repo)
    return diags


def _check_devices(repo: FleetRepo) -> list[Diagnostic]:
    out = []
    for loaded in repo.devices:
        cls = loaded.doc.hardware_class
        if cls not in repo.hardware and ("HardwareClass", cls) not in repo.invalid:
            out.append(error("E203", f"device '{loaded.doc.id}' names unknown hardware class '{cls}'",
                             loaded.source.at("hardware_class"),
                             f"{_suggest(cls, repo.hardware)} (classes are defined in hardware/*.yaml)"))
    return out


def _check_models(repo: FleetRepo, exists: Callable[[str], bool]) -> list[Diagnostic]:
    out = []
    for name, loaded in repo.models.items():
        spec, src = loaded.doc.spec, loaded.source
        for key in ("calibration", "evaluation"):
            rel = getattr(spec.data, key)
            if rel is not None and not exists(rel):
                out.append(error("E212", f"{key} data file '{rel}' does not exist", src.at("spec", "data", key),
                                 "give a path relative to the repository root, and commit the file"))
        seen_versions: dict[str, int] = {}
        for vi, version in enumerate(spec.versions):
            if version.version in seen_versions:
                out.append(error("E213", f"model '{name}' lists version {version.version} twice",
                                 src.at("spec", "versions", vi, "version"), "remove or renumber one",
                                 related=[(src.at("spec", "versions", seen_versions[version.version], "version"),
                                           "first listing")]))
            seen_versions.setdefault(version.version, vi)
            seen_variants: set[str] = set()
            for wi, variant in enumerate(version.variants):
                if variant.name in seen_variants:
                    out.append(error("E213", f"variant '{variant.name}' appears twice in {name}@{version.version}",
                                     src.at("spec", "versions", vi, "variants", wi, "name"), "rename one"))
                seen_variants.add(variant.name)
                if not exists(variant.source):
                    out.append(error("E212", f"model file '{variant.source}' does not exist",
                                     src.at("spec", "versions", vi, "variants", wi, "source"),
                                     "give the ONNX path relative to the repository root, and commit the file"))
    return out


def _check_rollouts(repo: FleetRepo) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    sites = {d.doc.site for d in repo.devices}
    device_ids = {d.doc.id for d in repo.devices}
    # model name -> device id -> first rollout that took it
    taken: dict[str, dict[str, str]] = {}
    for name in sorted(repo.rollouts):
        loaded = repo.rollouts[name]
        spec, src = loaded.doc.spec, loaded.source
        model = repo.models.get(spec.model)
        if model is None and ("Model", spec.model) in repo.invalid:
            pass  # its own errors are reported
        elif model is None:
            out.append(error("E204", f"rollout '{name}' names unknown model '{spec.model}'",
                             src.at("spec", "model"), f"{_suggest(spec.model, repo.models)} (models/*.yaml)"))
        else:
            versions = [v.version for v in model.doc.spec.versions]
            for key in ("from_version", "to_version"):
                version = getattr(spec, key)
                if version is not None and version not in versions:
                    out.append(error("E205", f"model '{spec.model}' has no version {version}",
                                     src.at("spec", key), f"{_suggest(version, versions)}",
                                     related=[(model.source.at("spec", "versions"), "versions of the model")]))
            if spec.from_version == spec.to_version:
                out.append(warning("W201", f"rollout '{name}' goes from {spec.to_version} to itself",
                                   src.at("spec", "to_version"), "set to_version to the new version"))
        selector = spec.selector
        for i, cls in enumerate(selector.hardware_classes):
            if cls not in repo.hardware and ("HardwareClass", cls) not in repo.invalid:
                out.append(error("E206", f"selector names unknown hardware class '{cls}'",
                                 src.at("spec", "selector", "hardware_classes", i), _suggest(cls, repo.hardware)))
        for i, site in enumerate(selector.sites):
            if site not in sites:
                out.append(error("E206", f"selector names site '{site}' where no device is",
                                 src.at("spec", "selector", "sites", i), _suggest(site, sites)))
        for i, dev in enumerate(selector.devices):
            if dev not in device_ids:
                out.append(error("E206", f"selector names unknown device '{dev}'",
                                 src.at("spec", "selector", "devices", i), _suggest(dev, device_ids)))
        out += _check_waves(name, loaded)
        selected = [d for d in repo.devices if matches(selector, d.doc)]
        if not selected:
            out.append(error("E207", f"rollout '{name}' selects no device", src.at("spec", "selector"),
                             "widen the selector (hardware_classes, sites, match_labels, devices)"))
        owners = taken.setdefault(spec.model, {})
        for device in selected:
            other = owners.setdefault(device.doc.id, name)
            if other != name:
                out.append(error("E209", f"device '{device.doc.id}' is in two rollouts of model "
                                         f"'{spec.model}': '{other}' and '{name}'",
                                 src.at("spec", "selector"),
                                 "narrow one selector so each device is in one rollout per model",
                                 related=[(repo.rollouts[other].source.at("spec", "selector"), f"rollout '{other}'"),
                                          (device.source.at("id"), "the device")]))
    return out


def _check_waves(name: str, loaded) -> list[Diagnostic]:
    spec, src = loaded.doc.spec, loaded.source
    out = []
    names: dict[str, int] = {}
    for i, wave in enumerate(spec.waves):
        if wave.name in names:
            out.append(error("E214", f"wave name '{wave.name}' is used twice in rollout '{name}'",
                             src.at("spec", "waves", i, "name"), "give each wave its own name"))
        names.setdefault(wave.name, i)
        before = [j for j in range(i) if spec.waves[j].percent is not None]  # explicit waves have no share
        if wave.percent is not None and before and wave.percent <= spec.waves[before[-1]].percent:
            prev = spec.waves[before[-1]].percent
            out.append(error("E208", f"wave '{wave.name}' covers {wave.percent:g}%, not more than the "
                                     f"{prev:g}% of the wave before it",
                             src.at("spec", "waves", i, "percent"),
                             "wave shares are cumulative: each wave must cover more than the one before, up to 100",
                             related=[(src.at("spec", "waves", before[-1], "percent"), "previous wave")]))
    current = loaded.doc.status.current_wave
    if current is not None and current >= len(spec.waves):
        out.append(error("E211", f"status.current_wave is {current} but the rollout has {len(spec.waves)} waves",
                         src.at("status", "current_wave"),
                         f"use a wave index from 0 to {len(spec.waves) - 1}"))
    return out
