"""edgefleet explain MODEL@VERSION --class CLASS [REPO]: why a version fits a class, or not.

Prints, per variant, the model's measured properties against the class's limits with
pass/fail per line, and which variant is chosen and why. Exit 0 when a variant fits,
1 when none does (or the repository cannot be read), 2 for an unknown model,
version or class on the command line.
"""

from __future__ import annotations

import difflib
import json
import sys

from edgefleet.cli.output import add_format_argument, add_repo_argument, resolve_repo


def register(sub) -> None:
    parser = sub.add_parser("explain", help="show why a model version fits a hardware class, or not",
                            description=__doc__)
    parser.add_argument("target", metavar="MODEL@VERSION", help="e.g. meter-digits@1.1.0")
    parser.add_argument("--class", dest="hardware_class", required=True, metavar="CLASS",
                        help="hardware class name (hardware/*.yaml)")
    add_repo_argument(parser)
    add_format_argument(parser)
    parser.set_defaults(run=run)


def _unknown(what: str, name: str, known):
    from edgefleet.cli import UsageError

    known = sorted(known)
    guess = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{guess[0]}'?" if guess else f"known: {', '.join(known) or 'none'}"
    return UsageError(f"{what} '{name}'; {hint}")


def run(args) -> int:
    from edgefleet.cli import UsageError
    from edgefleet.core.diagnostics import DiagnosticError, has_errors
    from edgefleet.load.repo import read_repository

    model, sep, version = args.target.partition("@")
    if not sep or not model or not version:
        raise UsageError(f"'{args.target}': give MODEL@VERSION, e.g. meter-digits@1.1.0")
    root = resolve_repo(args.repo)
    repo, diags = read_repository(root)
    errors = [d for d in diags if d.is_error]
    missing = None
    if model not in repo.models:
        missing = _unknown("unknown model", model, repo.models)
    elif version not in (versions := [v.version for v in repo.models[model].doc.spec.versions]):
        missing = _unknown(f"model '{model}' has no version", version, versions)
    elif args.hardware_class not in repo.hardware:
        missing = _unknown("unknown hardware class", args.hardware_class, repo.hardware)
    if missing is not None:
        if has_errors(errors):  # the name may be in a document that failed to load
            raise DiagnosticError(errors)
        raise missing

    from edgefleet.analysis.selection import choose_variant

    choice = choose_variant(repo, model, version, args.hardware_class)
    hw = repo.hardware[args.hardware_class].doc
    report = _report(choice, hw)
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        _print_text(report)
    return 0 if choice.variant is not None else 1


def _check_json(c) -> dict:
    return {"check": c.name, "code": c.code, "status": c.status, "model": c.measured, "limit": c.limit,
            "detail": c.detail if c.status != "pass" else ""}


def _report(choice, hw) -> dict:
    rt = hw.spec.runtime
    return {
        "model": choice.model,
        "version": choice.version,
        "hardware_class": choice.hardware_class,
        "runtime": {"name": rt.name, "version": rt.version, "device": rt.device},
        "fits": choice.variant is not None,
        "variant": choice.variant.name if choice.variant else None,
        "reasons": list(choice.reasons),
        "accuracy_gate": _check_json(choice.gate) if choice.gate else None,
        "variants": [
            {
                "name": fit.variant.name,
                "source": fit.variant.source,
                "fits": fit.fits,
                "precision": fit.precision,
                "checks": [_check_json(c) for c in fit.checks],
                "notes": list(fit.notes),
                "facts": _facts_json(fit.facts),
            }
            for fit in choice.fits
        ],
    }


def _facts_json(facts) -> dict | None:
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


_RESULT = {"pass": "pass", "fail": "FAIL", "unchecked": "not checked", "warning": "warning"}


def _print_text(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, highlight=False, soft_wrap=False,
                      width=None if sys.stdout.isatty() else 140)
    rt = report["runtime"]
    console.print(f"[bold]{report['model']}@{report['version']}[/bold] on hardware class "
                  f"[bold]{report['hardware_class']}[/bold] ({rt['name']} {rt['version']}, {rt['device']})")
    for variant in report["variants"]:
        facts = variant["facts"]
        verdict = "fits" if variant["fits"] else "does not fit"
        console.print()
        console.print(f"variant [bold]{variant['name']}[/bold] ({variant['source']}): {verdict}")
        if facts:
            ops = ", ".join(f"{k} x{v}" for k, v in facts["operators"].items())
            ins = ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in facts["inputs"])
            outs = ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in facts["outputs"])
            console.print(f"  {facts['file_size']:,} bytes, IR {facts['ir_version']}, opsets {facts['opsets']}, "
                          f"{facts['parameters']:,} parameters ({facts['native_precision']})")
            console.print(f"  inputs: {ins}; outputs: {outs}")
            console.print(f"  operators: {ops}")
        table = Table(show_header=True, header_style="bold", expand=False)
        for column in ("check", "model", "class limit", "result"):
            table.add_column(column, overflow="fold")
        for c in variant["checks"] + ([report["accuracy_gate"]] if report["accuracy_gate"] else []):
            result = _RESULT[c["status"]] + (f" {c['code']}" if c["status"] in ("fail", "warning") else "")
            style = {"fail": "red", "warning": "yellow", "unchecked": "dim"}.get(c["status"], "green")
            table.add_row(c["check"], c["model"], c["limit"], f"[{style}]{result}[/{style}]")
        console.print(table)
        for c in variant["checks"]:
            if c["status"] != "pass" and c["detail"]:
                console.print(f"  {c['check']}: {c['detail']}", soft_wrap=True)
        for text in variant["notes"]:
            console.print(f"  note: {text}", soft_wrap=True)
    console.print()
    chosen = report["variant"]
    text = {"soft_wrap": True}
    console.print(f"selected: [bold]{chosen}[/bold]" if chosen else
                  f"[red]no variant of {report['model']}@{report['version']} fits "
                  f"{report['hardware_class']}[/red]")
    for reason in report["reasons"]:
        console.print(f"  - {reason}", **text)
