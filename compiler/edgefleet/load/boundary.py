"""Every path a fleet's YAML names must stay inside the repository (core.paths).

Checked once, after loading and before any stage opens a file, at the YAML place that
names the path: model sources, calibration and evaluation data, the Sigstore trusted
root, and the artifact store directory. Refused paths are remembered in
`repo.refused`, so a later "file does not exist" check does not report them twice;
every reader still goes through `resolve_inside` itself (FleetRepo.path), so nothing
outside is ever opened even by a stage that runs without this check.
"""

from __future__ import annotations

from typing import Iterator

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.paths import PathRefused, check_relative, resolve_inside
from edgefleet.core.source import Location
from edgefleet.load.repo import FleetRepo


def _named_paths(repo: FleetRepo) -> Iterator[tuple[str, str, Location]]:
    """(path, what it is, where the YAML names it) of every repository path in the YAML."""
    if repo.fleet is not None:
        spec, src = repo.fleet.doc.spec, repo.fleet.source
        if spec.signing.trusted_root is not None:
            yield spec.signing.trusted_root, "trusted root", src.at("spec", "signing", "trusted_root")
    for loaded in repo.models.values():
        spec, src = loaded.doc.spec, loaded.source
        for key in ("calibration", "evaluation"):
            rel = getattr(spec.data, key)
            if rel is not None:
                yield rel, f"{key} data", src.at("spec", "data", key)
        for vi, version in enumerate(spec.versions):
            for wi, variant in enumerate(version.variants):
                yield variant.source, "model source", src.at("spec", "versions", vi, "variants", wi, "source")


def check_repo_paths(repo: FleetRepo) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for rel, what, where in _named_paths(repo):
        try:
            resolve_inside(repo.root, rel, what)
        except PathRefused as exc:
            repo.refused.add(rel)
            out.append(error(exc.code, exc.message, where, exc.hint))
    out += _check_store(repo)
    return out


def _check_store(repo: FleetRepo) -> list[Diagnostic]:
    """A local or repo store lives inside the repository; a URL is only `kind: object`."""
    if repo.fleet is None:
        return []
    store, src = repo.fleet.doc.spec.artifact_store, repo.fleet.source
    if store.kind == "object":
        if not store.url:
            return [error("E012", "artifact_store.kind is object but no url is set",
                          src.at("spec", "artifact_store", "kind"),
                          "add url: s3://bucket/prefix (or file:///path for a shared directory)")]
        return []
    where = src.at("spec", "artifact_store", "path")
    try:
        check_relative(store.path, "artifact store")
        resolve_inside(repo.root, store.path, "artifact store")
    except PathRefused as exc:
        hint = exc.hint
        if exc.code == "E011":
            hint = ("keep the store inside the repository (the default is .edgefleet/artifacts); a store "
                    "elsewhere is `edgefleet build --store DIR` or `kind: object` with a file:// or s3:// url")
        return [error(exc.code, exc.message.replace("artifact store path", "artifact_store.path"), where, hint)]
    if store.url:
        return [error("E012", f"artifact_store.url is set but kind is {store.kind}",
                      src.at("spec", "artifact_store", "url"),
                      "set kind: object to use the url, or remove the url")]
    return []
