"""`edgefleet keys`: make and rotate the desired state's signing keys, never inside a fleet repository."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgefleet.core.diagnostics import DiagnosticError
from edgefleet.pipeline.common import RUN, RequestError


def _about_the_run(exc: DiagnosticError) -> DiagnosticError:
    """Key problems concern a key directory or variable, not a fleet file: one run-level form."""
    return DiagnosticError([replace(d, location=RUN) for d in exc.diagnostics])


@dataclass(frozen=True)
class KeyInit:
    directory: Path
    keyids: dict[str, str]  # role -> keyid, in role order


@dataclass(frozen=True)
class KeyRotation:
    directory: Path
    role: str
    keyid: str
    previous_dir: Path | None  # where the old root key is kept (root only)


def enclosing_fleet_repo(path: Path) -> Path | None:
    """The fleet repository that `path` lies in, if any."""
    for parent in [path.resolve(), *path.resolve().parents]:
        if (parent / "fleet.yaml").is_file():
            return parent
    return None


def init(target: Path) -> KeyInit:
    from edgefleet.signing import ROLES, SigningError
    from edgefleet.signing.keys import init_keys

    repo = enclosing_fleet_repo(target)
    if repo is not None:
        raise _about_the_run(SigningError("E505", f"refusing to create private keys inside the fleet repository {repo}",
                           "put them outside the fleet repository (e.g. ~/.edgefleet/keys) or in a CI secret; "
                           "`edgefleet compile` refuses a fleet repository that holds a private key", str(target)))
    try:
        keys = init_keys(target)
    except SigningError as exc:
        raise _about_the_run(exc) from None
    return KeyInit(target, {role: keys.keyid(role) for role in ROLES})


def rotate(keys_dir: Path, role: str) -> KeyRotation:
    from edgefleet.signing.keys import PREVIOUS_DIR, rotate_key

    if not keys_dir.is_dir():
        raise RequestError(f"{keys_dir}: no such key directory (make one with `edgefleet keys init DIR`)")
    from edgefleet.signing import SigningError

    try:
        key = rotate_key(keys_dir, role)
    except SigningError as exc:
        raise _about_the_run(exc) from None
    return KeyRotation(keys_dir, role, key.keyid, keys_dir / PREVIOUS_DIR if role == "root" else None)
