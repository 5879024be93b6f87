"""Two model slots (A/B) and the `current` symlink that names the active one.

    slots/a/  slots/b/     each: the artifact files, golden.npy, slot.json (written last)
    current -> slots/a     changed only by rename() of a new link over it

A slot is complete when its `slot.json` exists and every file it lists has the digest it
records; `slot.json` is written (durably) after the files, so a slot interrupted while
staging reads as empty. Only the idle slot is ever written. OpenVINO artifacts (one
`model.ov.tar` of model.xml + model.bin) are unpacked at staging time, with a reader that
takes only those two regular files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgefleet.core.fsutil import sha256_file
from edgefleet.agent.durable import swap_symlink, write_json
from edgefleet.agent.errors import AgentError
from edgefleet.core.fsutil import fsync_dir

SLOTS = ("a", "b")
LINK = "current"
META = "slot.json"
GOLDEN = "golden.npy"
OV_MEMBERS = ("model.xml", "model.bin")


@dataclass(frozen=True)
class SlotInfo:
    slot: str
    meta: dict          # model, version, variant, digest, size, name, runtime, probe, files
    path: Path

    @property
    def digest(self) -> str:
        return self.meta["digest"]


def slot_dir(state_dir: Path, slot: str) -> Path:
    return Path(state_dir) / "slots" / slot


def active_slot(state_dir: Path) -> str | None:
    link = Path(state_dir) / LINK
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    name = Path(target).name
    return name if name in SLOTS else None


def activate(state_dir: Path, slot: str | None) -> None:
    """Point `current` at `slot` atomically (None: nothing serves; only a first install's rollback)."""
    link = Path(state_dir) / LINK
    if slot is None:
        if link.is_symlink():
            link.unlink()
            fsync_dir(link.parent)
        return
    swap_symlink(link, f"slots/{slot}")


def read_slot(state_dir: Path, slot: str, check_digests: bool = True) -> SlotInfo | None:
    """The slot's record when the slot is complete (and its files intact), else None."""
    path = slot_dir(state_dir, slot)
    try:
        meta = json.loads((path / META).read_bytes())
    except (OSError, ValueError):
        return None
    if check_digests:
        for name, digest in meta.get("files", {}).items():
            try:
                if sha256_file(path / name) != digest:
                    return None
            except OSError:
                return None
    return SlotInfo(slot, meta, path)




def stage(state_dir: Path, slot: str, meta: dict, artifact: Path, golden: Path | None,
          extra: dict[str, Path] | None = None) -> SlotInfo:
    """Fill `slot` (which must not be active) from verified downloads; slot.json last."""
    if active_slot(state_dir) == slot:
        raise ValueError(f"slot {slot} is active; only the idle slot is staged")
    path = slot_dir(state_dir, slot)
    clear(state_dir, slot)
    path.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    name = meta["name"]
    if name.endswith(".ov.tar"):
        for member, data in _ov_members(artifact).items():
            _write(path / member, data)
            files[member] = hashlib.sha256(data).hexdigest()
    else:
        shutil.copyfile(artifact, path / name)
        _fsync(path / name)
        files[name] = meta["digest"]
    for fname, src in (extra or {}).items():
        shutil.copyfile(src, path / fname)
        _fsync(path / fname)
        files[fname] = sha256_file(path / fname)
    if golden is not None:
        shutil.copyfile(golden, path / GOLDEN)
        _fsync(path / GOLDEN)
        files[GOLDEN] = sha256_file(path / GOLDEN)
    fsync_dir(path)
    record = {**meta, "files": files, "slot": slot}
    write_json(path / META, record)
    return SlotInfo(slot, record, path)


def clear(state_dir: Path, slot: str) -> None:
    """Empty the idle slot: slot.json first, so a crash mid-way leaves it incomplete, not wrong."""
    if active_slot(state_dir) == slot:
        raise ValueError(f"slot {slot} is active")
    path = slot_dir(state_dir, slot)
    if (path / META).exists():
        (path / META).unlink()
        fsync_dir(path)
    if path.exists():
        shutil.rmtree(path)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ov_members(artifact: Path) -> dict[str, bytes]:
    """model.xml and model.bin from an OpenVINO artifact tar; anything else is refused."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(artifact, mode="r:") as tar:
            for info in tar:
                if info.name not in OV_MEMBERS or not info.isreg() or info.name in out:
                    raise AgentError("E608", f"OpenVINO artifact holds an unexpected member {info.name!r}",
                                     "the artifact must be edgefleet's model.ov.tar (model.xml, model.bin)")
                fh = tar.extractfile(info)
                out[info.name] = fh.read() if fh else b""
    except (tarfile.TarError, OSError) as exc:
        raise AgentError("E608", f"OpenVINO artifact is not a readable tar: {exc}") from None
    if set(out) != set(OV_MEMBERS):
        raise AgentError("E608", "OpenVINO artifact lacks model.xml or model.bin")
    return out

