"""`edgefleet init DIR`: a new fleet repository that works by pull request from its first commit.

Composes the pure scaffold (gitops/scaffold.py) with the I/O around it: the example
model files and templates shipped with edgefleet, the generated JSON Schemas, fresh
placeholder device keys (their private halves are never written anywhere), the files
themselves, `git init` and the first commit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from edgefleet.gitops.scaffold import MODEL_FILES, ScaffoldOptions, environment, scaffold_files


class InitError(Exception):
    """DIR cannot take a new fleet repository (usage error, exit 2)."""


@dataclass
class InitResult:
    root: Path
    files: list[str] = field(default_factory=list)
    commit: str | None = None


def placeholder_device_keys(device_ids) -> dict[str, str]:
    """A fresh ed25519 public key per device; the private key is dropped at once, so no one
    can sign as a placeholder device until the real device enrolls its own key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return {d: "ed25519:" + Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw).hex() for d in device_ids}


def init_repository(target: Path, options: ScaffoldOptions, *, example_fleet: Path, templates_dir: Path,
                    force: bool = False, commit: bool = True) -> InitResult:
    from edgefleet.gitops.scaffold import DEVICE_IDS
    from edgefleet.pipeline.schema import schema_files

    options.check()
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InitError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise InitError(f"{target} is not empty; give an empty or new directory, or --force to add the "
                        "scaffold to it (existing files with the same names are replaced)")
    files = scaffold_files(
        options,
        templates=environment(jinja2.FileSystemLoader(str(templates_dir))),
        model_files={rel: (example_fleet / rel).read_bytes() for rel in MODEL_FILES.values()},
        schemas={name: text for name, text in schema_files().items() if name.endswith(".schema.json")},
        device_keys=placeholder_device_keys(DEVICE_IDS))
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            raise InitError(f"{path} is a symbolic link; refusing to write through it")
        tmp = path.with_name(f".{path.name}.edgefleet-init.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    result = InitResult(root, sorted(files))
    result.commit = _git_init(root, sorted(files), options.name) if commit else _git_init(root, [], options.name)
    return result


def _git_init(root: Path, files: list[str], name: str) -> str | None:
    import git

    repo = git.Repo(root) if (root / ".git").exists() else git.Repo.init(root, initial_branch="main")
    if not files:
        return None
    repo.index.add(files)
    reader = repo.config_reader()
    author = git.Actor(reader.get_value("user", "name", "edgefleet init"),
                       reader.get_value("user", "email", "edgefleet@localhost"))
    return repo.index.commit(f"edgefleet init: fleet repository {name}", author=author, committer=author).hexsha
