"""edgefleet explain MODEL@VERSION [REPO] [--class CLASS... | --all-classes]: why a version fits a class, or not.

Prints, per variant, the model's measured properties against the class's limits with
pass/fail per line, which variant is chosen and why, and what the build in the
artifact store shipped (recipe, and each recipe rejected with its reason). REPO and
MODEL@VERSION may come in either order. Without --class: the classes the version is
built for. Exit 0 when a variant fits every class shown, 1 when one does not (or the
repository cannot be read), 2 for an unknown model, version or class.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgefleet.cli.output import add_example_argument, add_format_argument, resolve_repo


def register(sub) -> None:
    parser = sub.add_parser("explain", help="show why a model version fits a hardware class, or not",
                            description=__doc__)
    parser.add_argument("words", nargs="+", metavar="MODEL@VERSION [REPO]",
                        help="e.g. meter-digits@1.1.0 fleet (either order)")
    parser.add_argument("--class", dest="hardware_class", action="append", default=[], metavar="CLASS",
                        help="hardware class name (hardware/*.yaml); repeatable; default: the classes the "
                             "version is built for")
    parser.add_argument("--all-classes", action="store_true", help="show every hardware class of the fleet")
    parser.add_argument("--store", default=None, metavar="DIR|URL",
                        help="artifact store to read build records from (default: fleet.yaml artifact_store)")
    add_example_argument(parser)
    add_format_argument(parser)
    parser.set_defaults(run=run, intermixed_words="words")


def split_words(words: list[str]) -> tuple[str, str | None]:
    """(MODEL@VERSION, REPO or None) from one or two words in either order: REPO is the directory."""
    from edgefleet.cli import UsageError

    if len(words) == 1:
        return words[0], None
    if len(words) > 2:
        raise UsageError(f"expected MODEL@VERSION and at most one REPO, got {' '.join(words)}")
    first, second = words
    if Path(first).is_dir() and not Path(second).is_dir():
        return second, first
    if Path(second).is_dir() and not Path(first).is_dir():
        return first, second
    if "@" in first and "@" not in second:
        return first, second
    if "@" in second and "@" not in first:
        return second, first
    raise UsageError(f"cannot tell which of '{first}' and '{second}' is MODEL@VERSION and which the fleet "
                     "repository (REPO must be a directory)")


def run(args) -> int:
    from edgefleet.pipeline.explain import ExplainRequest, explain

    target, repo = split_words(args.words)
    root = resolve_repo(repo, args.example)
    result = explain(ExplainRequest(root, target, tuple(args.hardware_class), args.all_classes, args.store))
    if args.format == "json":
        if len(args.hardware_class) == 1:
            payload = result.reports[0]
        else:
            payload = {"model": result.model, "version": result.version, "fits": result.fits,
                       "classes": list(result.reports), "notes": list(result.notes)}
        json.dump(payload, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for i, report in enumerate(result.reports):
            if i:
                print("\n" + "=" * 60 + "\n")
            _print_text(report)
        for note in result.notes:
            print(f"note: {note}")
    return 0 if result.fits else 1


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
    _print_build(console, report.get("build"))


def _print_build(console, build) -> None:
    if not build:
        return
    if build["status"] != "built":
        console.print(f"build: {build['status']}: {build['detail']}", soft_wrap=True, markup=False)
        return
    size = build["size"]
    shown = f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"
    console.print(f"built: {build['variant']}, {build['recipe']} ({build['precision']}) "
                  f"sha256:{build['digest'][:12]} {shown} (build record {build['key'][:12]})", soft_wrap=True,
                  markup=False)
    if not build["agrees"]:
        console.print("  [yellow]the stored build took another variant than the one selected here[/yellow]",
                      soft_wrap=True)
    for attempt in build["attempts"]:
        if not attempt["passed"]:
            console.print(f"  rejected {attempt['recipe']}: {attempt['reason']}", soft_wrap=True, markup=False)
