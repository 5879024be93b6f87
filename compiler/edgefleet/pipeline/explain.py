"""`edgefleet explain`: why a model version fits a hardware class or not, and what the build shipped.

For each class asked about: every variant's measured properties against the class's
limits (the same checks `validate` runs), the variant selected and why, and, when the
artifact store holds the build of that (model version, class) under the key the
repository gives it now, what that build shipped: variant, recipe, precision, digest,
size, and each recipe it rejected with the reason.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.core.diagnostics import DiagnosticError, has_errors
from edgefleet.pipeline.common import RequestError


@dataclass(frozen=True)
class ExplainRequest:
    root: Path
    target: str  # MODEL@VERSION
    classes: tuple[str, ...] = ()  # none: the classes the version is built for (else every class)
    all_classes: bool = False
    store: str | None = None  # artifact store to read build records from (default: fleet.yaml's)


@dataclass(frozen=True)
class Explanation:
    model: str
    version: str
    reports: tuple[dict[str, Any], ...]  # one per class, in the order asked (JSON-ready)
    notes: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return all(r["fits"] for r in self.reports)


def explain(request: ExplainRequest) -> Explanation:
    """Raises RequestError for an unknown name, DiagnosticError when the repository cannot be read."""
    from edgefleet.analysis.selection import choose_variant
    from edgefleet.load.repo import read_repository

    model, sep, version = request.target.partition("@")
    if not sep or not model or not version:
        raise RequestError(f"'{request.target}': give MODEL@VERSION, e.g. meter-digits@1.1.0")
    repo, diags = read_repository(request.root)
    errors = [d for d in diags if d.is_error]
    try:
        classes = _classes(repo, model, version, request)
    except RequestError:
        if has_errors(errors):  # the name may be in a document that failed to load
            raise DiagnosticError(errors) from None
        raise
    notes: list[str] = []
    store = _store(repo, request.store, notes)
    reports = []
    for cls in classes:
        choice = choose_variant(repo, model, version, cls)
        report = class_report(choice, repo.hardware[cls].doc)
        report["build"] = _shipped(repo, model, version, cls, store, choice)
        reports.append(report)
    return Explanation(model, version, tuple(reports), tuple(notes))


def _classes(repo, model: str, version: str, request: ExplainRequest) -> list[str]:
    from edgefleet.rules.needs import needed_builds

    if model not in repo.models:
        raise unknown("unknown model", model, repo.models)
    versions = [v.version for v in repo.models[model].doc.spec.versions]
    if version not in versions:
        raise unknown(f"model '{model}' has no version", version, versions)
    for cls in request.classes:
        if cls not in repo.hardware:
            raise unknown("unknown hardware class", cls, repo.hardware)
    if request.all_classes:
        if request.classes:
            raise RequestError("give --class or --all-classes, not both")
        return sorted(repo.hardware)
    if request.classes:
        return list(dict.fromkeys(request.classes))
    needed = sorted({n.hardware_class for n in needed_builds(repo) if (n.model, n.version) == (model, version)})
    return needed or sorted(repo.hardware)


def unknown(what: str, name: str, known) -> RequestError:
    known = sorted(known)
    guess = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{guess[0]}'?" if guess else f"known: {', '.join(known) or 'none'}"
    return RequestError(f"{what} '{name}'; {hint}")


def _store(repo, override: str | None, notes: list[str]):
    from edgefleet.build.store import open_store

    config = repo.fleet.doc.spec.artifact_store if repo.fleet else None
    try:
        return open_store(repo.root, config, override, repo.display_root)
    except Exception as exc:  # noqa: BLE001 - explain works without a store; it says so
        notes.append(f"artifact store not read ({exc}): what the build shipped is not shown")
        return None


def _shipped(repo, model: str, version: str, cls: str, store, choice) -> dict[str, Any] | None:
    """What the store's build of this need shipped, or a statement that it holds none."""
    from edgefleet.build.key import FileDigests
    from edgefleet.pipeline.artifacts import key_need, stored_record
    from edgefleet.rules.needs import BuildNeed, needed_builds

    need = BuildNeed(model, version, cls)
    if need not in set(needed_builds(repo)):
        return {"status": "not needed", "detail": f"no rollout builds {model}@{version} for {cls}"}
    if choice.variant is None:
        return {"status": "cannot build", "detail": "no variant fits"}
    keyed, _ = key_need(repo, need, FileDigests(repo.root))
    if keyed is None:
        return {"status": "cannot build", "detail": "the build's pre-flight checks fail (run `edgefleet build`)"}
    record = stored_record(store, keyed.key)
    if record is None:
        return {"status": "not built", "key": keyed.key,
                "detail": f"no build record for key {keyed.key[:12]} in the artifact store"}
    out = {
        "status": "built", "key": record.key, "variant": record.variant,
        "recipe": str(record.recipe.get("name", "")), "precision": record.precision,
        "digest": record.artifact.sha256, "size": record.artifact.size,
        "attempts": [{"recipe": a.recipe, "passed": a.passed, "reason": _reason(a)} for a in record.attempts],
        "agrees": record.variant == choice.variant.name,
    }
    return out


def _reason(attempt) -> str:
    from edgefleet.build.orchestrate import gate_summary

    return "" if attempt.passed else gate_summary(attempt)


# ---- the report (data; the CLI renders it) --------------------------------------------------

def check_json(c) -> dict:
    return {"check": c.name, "code": c.code, "status": c.status, "model": c.measured, "limit": c.limit,
            "detail": c.detail if c.status != "pass" else ""}


def class_report(choice, hw) -> dict:
    rt = hw.spec.runtime
    return {
        "model": choice.model,
        "version": choice.version,
        "hardware_class": choice.hardware_class,
        "runtime": {"name": rt.name, "version": rt.version, "device": rt.device},
        "fits": choice.variant is not None,
        "variant": choice.variant.name if choice.variant else None,
        "reasons": list(choice.reasons),
        "accuracy_gate": check_json(choice.gate) if choice.gate else None,
        "variants": [
            {
                "name": fit.variant.name,
                "source": fit.variant.source,
                "fits": fit.fits,
                "precision": fit.precision,
                "checks": [check_json(c) for c in fit.checks],
                "notes": list(fit.notes),
                "facts": facts_json(fit.facts),
            }
            for fit in choice.fits
        ],
    }


def facts_json(facts) -> dict | None:
    if facts is None:
        return None
    return {
        "sha256": facts.sha256,
        "file_size": facts.file_size,
        "ir_version": facts.ir_version,
        "opsets": facts.opsets,
        "parameters": facts.parameter_count,
        "operators": {op.key: op.count for op in facts.operators},
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape) if t.shape else None}
                   for t in facts.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape) if t.shape else None}
                    for t in facts.outputs],
        "dynamic_dims": [{"input": n, "axis": a, "name": s} for n, a, s in facts.dynamic_dims()],
        "native_precision": facts.native_precision,
    }
