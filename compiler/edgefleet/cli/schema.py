"""edgefleet schema [--out DIR] [--check]: write the JSON Schemas of every document kind."""

from __future__ import annotations

import sys
from pathlib import Path

from edgefleet.cli.output import example_fleet


def register(sub) -> None:
    parser = sub.add_parser("schema", help="write JSON Schemas for editors into schemas/", description=__doc__)
    parser.add_argument("--out", default=None, help="directory (default: schemas/ of this checkout)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk are stale")
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.pipeline.schema import schema_files

    out = Path(args.out) if args.out else example_fleet().parent / "schemas"
    stale = []
    for name, text in schema_files().items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            out.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    if args.check:
        for name in stale:
            print(f"{out / name}: stale; run `edgefleet schema` and commit it", file=sys.stderr)
        return 1 if stale else 0
    print(f"{len(stale)} schema file(s) updated in {out}")
    return 0
