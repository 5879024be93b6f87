"""edgefleet plan [REPO] --base REV [--head REV]: which devices a change moves, for a pull request.

Compiles the fleet at both revisions without keys (nothing is signed or written) and
lists, grouped by rollout, wave, hardware class and site, every device whose desired
state changes: to which model and version, added, removed, and the bytes each will
download. Revisions are read with `git archive`; the work tree is never checked out.
The default head is the work tree as it is, uncommitted edits included. Artifacts
already in a local artifact store are used as built; others are previewed by their
key with an estimated size. Needs no device access and no secrets.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgefleet.cli.output import add_format_argument, add_repo_argument, emit, resolve_repo

# Bytes per weight relative to fp32, for size estimates of artifacts not built yet.
PRECISION_SCALE = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}


def register(sub) -> None:
    parser = sub.add_parser("plan", help="show which devices a change moves (for a pull request)",
                            description=__doc__)
    add_repo_argument(parser)
    parser.add_argument("--base", required=True, help="revision to compare against, e.g. origin/main")
    parser.add_argument("--head", default=None, help="revision to compare (default: the work tree as it is)")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="local artifact store to take built artifacts from (default: fleet.yaml's, if local)")
    add_format_argument(parser, choices=("text", "markdown", "json"))
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.desired.gitio import extract_revision
    from edgefleet.desired.plan import diff_fleets, render_json, render_markdown, render_text
    from edgefleet.load.repo import display_root_for

    root = resolve_repo(args.repo)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-plan-") as tmp:
        base = extract_revision(root, args.base, Path(tmp) / "base")
        if args.head is None:
            head_root, head_name, head_display = root, "work tree", display_root_for(root)
        else:
            head = extract_revision(root, args.head, Path(tmp) / "head")
            head_root, head_name, head_display = head.root, args.head, f"{args.head}:{_shown(root)}"
        store = _plan_store(root, args.store, notes)
        after, diags = _compile_side(head_root, head_display, store, notes)
        if after is None:
            return emit(diags, _diag_format(args.format))
        if base.exists:
            before, base_diags = _compile_side(base.root, f"{args.base}:{_shown(root)}", store, notes)
            if before is None:
                return emit(base_diags, _diag_format(args.format))
        else:
            before = {}
            notes.append(f"the fleet does not exist at {args.base}: every device is new")
    plan = diff_fleets(before, after, base=args.base, head=head_name, notes=sorted(set(notes)))
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[args.format]
    sys.stdout.write(render(plan))
    return 0


def _diag_format(fmt: str) -> str:
    return "json" if fmt == "json" else "text"


def _shown(root: Path) -> str:
    from edgefleet.load.repo import display_root_for

    return display_root_for(root)


def _plan_store(root: Path, override: str | None, notes: list[str]):
    """The work tree's artifact store if it is local (plan never needs credentials)."""
    from edgefleet.build.store import LocalStore, open_store
    from edgefleet.cli import UsageError
    from edgefleet.load.repo import read_repository

    if override:
        if "://" in override:
            raise UsageError(f"--store {override}: plan reads local stores only (a directory)")
        return LocalStore(Path(override), override)
    repo, _ = read_repository(root)
    config = repo.fleet.doc.spec.artifact_store if repo.fleet else None
    if config is not None and config.kind == "object":
        notes.append("artifact store is an object store: plan does not read it; artifact sizes are estimates")
        return None
    try:
        store = open_store(root, config, display_root=repo.display_root)
    except Exception:  # a misconfigured store only costs plan its exact sizes
        return None
    return store if isinstance(store, LocalStore) else None


def _compile_side(root: Path, display: str, store, notes: list[str]):
    """{device id: CompiledDevice} of one revision, or (None, diagnostics)."""
    from edgefleet.pipeline.validate import check_fleet
    from edgefleet.desired.compile import compile_all
    from edgefleet.core.diagnostics import has_errors, sorted_diagnostics
    from edgefleet.load.repo import load_fleet, read_fleet_files

    files, read_diags = read_fleet_files(root, display)  # the same boundary and size cap as validate
    repo, diags = load_fleet(files, root, display)
    diags = sorted_diagnostics([*read_diags, *diags, *check_fleet(repo)])
    if has_errors(diags):
        return None, diags
    artifacts, problems = preview_artifacts(repo, store, notes)
    if has_errors(problems):
        return None, sorted_diagnostics(problems)
    return compile_all(repo, artifacts), diags


def preview_artifacts(repo, store, notes: list[str]):
    """Per need: the built artifact if the store has its key, else an UnbuiltArtifact."""
    from edgefleet.build.index import artifact_from_record
    from edgefleet.build.key import FileDigests, key_inputs, key_of, toolchain_for
    from edgefleet.build.resolve import resolve_need
    from edgefleet.desired.compile import UnbuiltArtifact
    from edgefleet.core.diagnostics import has_errors
    from edgefleet.rules.needs import needed_builds

    digests = FileDigests(repo.root)
    artifacts, diags = {}, []
    unbuilt = 0
    for need in needed_builds(repo):
        resolved, problems = resolve_need(repo, need)
        diags += problems
        if resolved is None or has_errors(problems):
            continue
        key = key_of(key_inputs(resolved, digests, toolchain_for(resolved)))
        record = store.get_record(key) if store is not None else None
        if record is not None:
            artifacts[need] = artifact_from_record(record)
            continue
        unbuilt += 1
        first = resolved.recipes[0] if resolved.recipes else None
        precision = first.precision if first else None
        source = repo.path(resolved.variant.source).stat().st_size
        artifacts[need] = UnbuiltArtifact(
            need.model, need.version, resolved.variant.name, need.hardware_class, key,
            int(source * PRECISION_SCALE.get(precision or "fp32", 1.0)), precision, first.name if first else None)
    if unbuilt:
        notes.append("artifacts not built yet are previewed by key; their sizes are estimated "
                     "from the source model and the preferred recipe's precision")
    return artifacts, diags
