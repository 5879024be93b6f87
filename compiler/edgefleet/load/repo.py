"""Loading a fleet repository into typed documents that remember where they came from.

`read_repository` is the I/O edge (it lists and reads files); `load_fleet` is pure:
file bytes in, a `FleetRepo` and diagnostics out, so it is testable without disks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Mapping, TypeVar

from edgefleet.core.collector import collector_paused
from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.paths import PathRefused, resolve_inside
from edgefleet.load.inventory_csv import iter_csv_rows
from edgefleet.core.source import Location, Source
from edgefleet.spec import FOLDER_KINDS, KINDS, Device, DeviceList, Fleet, HardwareClass, Model, Rollout
from edgefleet.load.validation import validate_document
from edgefleet.load.yamlsource import check_text, parse_yaml
from edgefleet.load.legacy import legacy_state

T = TypeVar("T")
YAML_SUFFIXES = (".yaml", ".yml")
# All files of the fleet's YAML/CSV folders together (each file also has its own limit,
# yamlsource.MAX_FILE_BYTES): many files just under the per-file limit are no cheaper.
MAX_REPO_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Loaded(Generic[T]):
    """A validated document (or device) and the place of each of its values."""

    doc: T
    source: Source


@dataclass
class FleetRepo:
    root: Path
    display_root: str
    fleet: Loaded[Fleet] | None = None
    hardware: dict[str, Loaded[HardwareClass]] = field(default_factory=dict)
    models: dict[str, Loaded[Model]] = field(default_factory=dict)
    devices: list[Loaded[Device]] = field(default_factory=list)
    rollouts: dict[str, Loaded[Rollout]] = field(default_factory=dict)
    # Names of documents that exist but failed validation: references to them are not
    # reported again as "unknown", which would bury the one real error under many.
    invalid: set[tuple[str, str]] = field(default_factory=set)
    # Paths named in the YAML that were refused (E011/E012, see load.boundary): already
    # reported, so other checks do not report them again as missing.
    refused: set[str] = field(default_factory=set)

    def display(self, relative: str) -> str:
        """How a repository path is shown in messages (relative to where the user stands)."""
        return _join(self.display_root, relative)

    def path(self, relative: str, what: str = "file") -> Path:
        """The file a repository-relative path names; PathRefused if it leads outside."""
        return resolve_inside(self.root, relative, what)

    def is_file(self, relative: str) -> bool:
        """True if the path names a regular file inside the repository."""
        try:
            return self.path(relative).is_file()
        except PathRefused:
            return False


def _join(root: str, relative: str) -> str:
    return relative if root in ("", ".") else f"{root.rstrip('/')}/{relative}"


def display_root_for(root: Path) -> str:
    try:
        rel = os.path.relpath(root)
    except ValueError:
        return str(root)
    return str(root) if rel.startswith("..") else rel


def fleet_files(root: Path) -> list[str]:
    """Repository-relative paths of every file edgefleet reads, sorted."""
    found: list[str] = []
    if (root / "fleet.yaml").is_file():
        found.append("fleet.yaml")
    for folder in FOLDER_KINDS:
        directory = root / folder
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.is_file() and (entry.suffix in YAML_SUFFIXES or (folder == "devices" and entry.suffix == ".csv")):
                found.append(f"{folder}/{entry.name}")
    return found


def read_fleet_files(root: Path, display_root: str = ".") -> tuple[dict[str, bytes], list[Diagnostic]]:
    """{relative path: bytes} of every fleet file, refusing files that lead outside the
    repository (a symlinked inventory) and a total over MAX_REPO_BYTES."""
    files: dict[str, bytes] = {}
    diags: list[Diagnostic] = []
    total = 0
    outside: set[str] = set()
    for folder in FOLDER_KINDS:  # a folder symlinked elsewhere: one error, its files unlisted
        try:
            resolve_inside(root, folder, "folder")
        except PathRefused as exc:
            outside.add(folder)
            diags.append(error(exc.code, exc.message, Location(_join(display_root, folder), 1, 1), exc.hint))
    for rel in fleet_files(root):
        if rel.split("/", 1)[0] in outside:
            continue
        shown = _join(display_root, rel)
        try:
            path = resolve_inside(root, rel, "fleet file")
            size = path.stat().st_size
        except PathRefused as exc:
            diags.append(error(exc.code, exc.message, Location(shown, 1, 1), exc.hint))
            continue
        except OSError as exc:
            diags.append(error("E014", f"cannot read {rel}: {exc.strerror or exc}", Location(shown, 1, 1),
                               "check the file's permissions"))
            continue
        total += size
        if total > MAX_REPO_BYTES:
            diags.append(error(
                "E013", f"the fleet's files add up to more than {MAX_REPO_BYTES} bytes (reached at {rel})",
                Location(shown, 1, 1),
                "a fleet repository holds declarations, not data: move large inventories to fewer, "
                "smaller CSV files or split the fleet into several repositories"))
            break
        try:
            files[rel] = path.read_bytes()
        except OSError as exc:
            diags.append(error("E014", f"cannot read {rel}: {exc.strerror or exc}", Location(shown, 1, 1),
                               "check the file's permissions"))
    return files, diags


def read_repository(root: Path) -> tuple[FleetRepo, list[Diagnostic]]:
    """Read and load the fleet repository at `root` (the I/O edge)."""
    display_root = display_root_for(root)
    files, diags = read_fleet_files(root, display_root)
    repo, loaded = load_fleet(files, root, display_root)
    return repo, diags + loaded


def load_fleet(files: Mapping[str, bytes], root: Path, display_root: str = ".") -> tuple[FleetRepo, list[Diagnostic]]:
    """Validate every document of a repository given as {relative path: bytes}."""
    with collector_paused():  # a large inventory is many small objects: see core/collector.py
        return _load_fleet(files, root, display_root)


def _load_fleet(files: Mapping[str, bytes], root: Path, display_root: str) -> tuple[FleetRepo, list[Diagnostic]]:
    repo = FleetRepo(root=root, display_root=display_root)
    diags: list[Diagnostic] = []
    first_seen: dict[tuple[str, str], Location] = {}
    if "fleet.yaml" not in files:
        diags.append(error("E210", "no fleet.yaml in the repository", Location(_join(display_root, "fleet.yaml")),
                           "create fleet.yaml (kind: Fleet) at the repository root; see fleet/fleet.yaml"))
    for rel in sorted(files):
        shown = _join(display_root, rel)
        folder = rel.split("/", 1)[0] if "/" in rel else ""
        if rel.endswith(".csv"):
            diags += _load_csv(files[rel], shown, repo, first_seen)
            continue
        docs, problems = parse_yaml(files[rel], shown)
        diags += problems
        for doc in docs:
            diags += _load_document(doc.data, doc.source, folder, repo, first_seen)
    return repo, diags


def _expected_kind(folder: str) -> str:
    return FOLDER_KINDS.get(folder, "Fleet")


def _load_document(data, source, folder: str, repo: FleetRepo, first_seen) -> list[Diagnostic]:
    expected = _expected_kind(folder)
    if not isinstance(data, dict):
        return [error("E101", f"a document must be a mapping, not a {type(data).__name__}", source.at(),
                      f"start with apiVersion: edgefleet/v1, kind: {expected}, metadata, spec")]
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        where = source.at("kind") if "kind" in data else source.at()
        return [error("E101", f"unknown kind {kind!r}" if kind is not None else "missing 'kind'", where,
                      f"documents in {folder or 'the repository root'}/ are kind: {expected}")]
    if kind != expected:
        return [error("E102", f"a {kind} document does not belong in {folder or 'the repository root'}/",
                      source.at("kind"),
                      f"move it to {_folder_of(kind)}, or set kind: {expected}")]
    cls = KINDS[kind]
    if kind == "Rollout" and (legacy := legacy_state(data, source)) is not None:
        name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
        if isinstance(name, str):
            repo.invalid.add((kind, name))
        return [legacy]
    doc, diags = validate_document(cls, data, source, f"see schemas/{kind.lower()}.schema.json")
    if doc is None:
        name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
        if isinstance(name, str):
            repo.invalid.add((kind, name))
        return diags
    if isinstance(doc, Fleet):
        if repo.fleet is not None:
            return [error("E210", "a second Fleet document", source.at("kind"),
                          "keep exactly one Fleet document, in fleet.yaml",
                          related=[(repo.fleet.source.at(), "the first one")])]
        repo.fleet = Loaded(doc, source)
        return []
    if isinstance(doc, DeviceList):
        out: list[Diagnostic] = []
        for i, device in enumerate(doc.spec.devices):
            out += _add_device(Loaded(device, source.sub("spec", "devices", i)), repo, first_seen)
        return out
    table = {HardwareClass: repo.hardware, Model: repo.models, Rollout: repo.rollouts}[type(doc)]
    name = doc.metadata.name
    if name in table:
        return [error("E201", f"{kind} '{name}' is defined twice", source.at("metadata", "name"),
                      "rename one of them, or delete the duplicate",
                      related=[(table[name].source.at("metadata", "name"), "first definition")])]
    table[name] = Loaded(doc, source)
    return []


def _folder_of(kind: str) -> str:
    for folder, k in FOLDER_KINDS.items():
        if k == kind:
            return f"{folder}/"
    return "fleet.yaml"


def _add_device(loaded: Loaded[Device], repo: FleetRepo, first_seen) -> list[Diagnostic]:
    key = ("device", loaded.doc.id)
    here = loaded.source.at("id")
    if key in first_seen:
        return [error("E202", f"device id '{loaded.doc.id}' is used twice", here,
                      "device ids are unique across all files of devices/; rename or remove one",
                      related=[(first_seen[key], "first use")])]
    first_seen[key] = here
    repo.devices.append(loaded)
    return []


def _load_csv(raw: bytes, shown: str, repo: FleetRepo, first_seen) -> list[Diagnostic]:
    text, diags = check_text(raw, shown)
    if text is None:
        return diags
    for data, where, problems in iter_csv_rows(text, shown):
        diags += problems
        if data is None:
            continue
        device, problems = validate_document(Device, data, where, "see schemas/devicelist.schema.json")
        diags += problems
        if device is not None:
            diags += _add_device(Loaded(device, where), repo, first_seen)
    return diags
