"""edgefleet schema [--out DIR] [--check]: write the JSON Schemas of every document kind,
the field reference and the diagnostic code tables (schemas/CODES.md and, in a checkout, the
tables in README.md)."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("schema", help="write JSON Schemas for editors into schemas/", description=__doc__)
    parser.add_argument("--out", default=None,
                        help="directory (default: schemas/ of this checkout; required for an installed package)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk are stale")
    parser.set_defaults(run=run)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run(args) -> int:
    from edgefleet.cli import UsageError
    from edgefleet.core import resources
    from edgefleet.pipeline.schema import schema_files, with_code_tables

    checkout = resources.is_source_checkout()
    if args.out:
        out = Path(args.out)
    elif checkout or args.check:
        out = resources.schema_dir()  # an installed package's copy can be checked, never rewritten
    else:
        raise UsageError("this edgefleet is an installed package, not a checkout: pass --out DIR")
    wanted = dict(schema_files())
    if checkout and not args.out:
        # The README beside the checkout's schemas/ carries generated code tables too.
        readme = out.parent / "README.md"
        if readme.is_file():
            wanted["../README.md"] = with_code_tables(readme.read_text(encoding="utf-8"))
    stale = []
    for name, text in wanted.items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            _write(path, text)
    if args.check:
        for name in stale:
            print(f"{(out / name).resolve()}: stale; run `edgefleet schema` and commit it", file=sys.stderr)
        return 1 if stale else 0
    print(f"{len(stale)} schema file(s) updated in {out}")
    return 0
