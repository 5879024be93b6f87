"""Real calibration and evaluation inputs: loading npz files and checking them.

A model declares its data as npz files: key `input` (float32, batch first) and, for
evaluation, an optional `label` (integers, one per sample). Every problem is a
`BuildError` that says which file and what to do; nothing is pickled (allow_pickle=False),
so a data file can never run code. A data file is repository input, so its size is read
from the zip directory and each array's shape from its npy header before anything is
decompressed: a few kilobytes that would expand to gigabytes are refused (E417) unread.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefleet.build.errors import BuildError

SAVE_HINT = "write it with numpy.savez(path, input=x.astype(numpy.float32){labels})"
# Calibration and evaluation sets of edge models are megabytes; a gigabyte is far beyond
# any of them and still fits in a CI runner's memory.
MAX_DATA_BYTES = 1 << 30
MAX_ARRAYS = 16


@dataclass(frozen=True)
class Dataset:
    inputs: np.ndarray  # float32, (N, ...)
    labels: np.ndarray | None  # int64, (N,)


def load_npz(path: Path, role: str, shown: str | None = None) -> Dataset:
    """Read the calibration or evaluation npz at `path` (`shown` is how to name it)."""
    shown = shown or str(path)
    labels_hint = ", label=y" if role == "evaluation" else ""
    if not path.is_file():
        raise BuildError("E412", f"{role} data {shown} does not exist",
                         f"create it ({SAVE_HINT.format(labels=labels_hint)}) or fix spec.data.{role}; "
                         "paths are relative to the repository root", subject=role)
    check_npz_size(path, role, shown)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BuildError("E413", f"{role} data {shown} is not a readable npz file ({exc})",
                         SAVE_HINT.format(labels=labels_hint), subject=role) from None
    if "input" not in arrays:
        raise BuildError("E413", f"{role} data {shown} has no array 'input' (it has: "
                                 f"{', '.join(sorted(arrays)) or 'nothing'})",
                         SAVE_HINT.format(labels=labels_hint), subject=role)
    inputs = check_inputs(arrays["input"], role, shown)
    labels = arrays.get("label") if role == "evaluation" else None
    if labels is not None:
        labels = check_labels(labels, len(inputs), shown)
    return Dataset(inputs, labels)


def check_npz_size(path: Path, role: str, shown: str) -> None:
    """Refuse an npz whose arrays would expand beyond MAX_DATA_BYTES, from its headers alone.

    The zip directory gives each member's uncompressed size (zipfile never returns more
    than that), and each npy header its dtype and shape; the two must agree, and their
    total stays under the limit. Only the first bytes of each member are decompressed.
    """
    def refuse(code: str, message: str, hint: str) -> BuildError:
        return BuildError(code, f"{role} data {shown} {message}", hint, subject=role)

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise refuse("E413", f"is not a readable npz file ({exc})", SAVE_HINT.format(
            labels=", label=y" if role == "evaluation" else "")) from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ARRAYS:
            raise refuse("E417", f"holds {len(members)} arrays (at most {MAX_ARRAYS})",
                         "keep only 'input' (and 'label' for evaluation data) in the file")
        total = sum(m.file_size for m in members)
        if total > MAX_DATA_BYTES:
            raise refuse("E417", f"expands to {total} bytes, over the {MAX_DATA_BYTES} byte limit",
                         "use fewer samples: a few hundred real inputs calibrate and evaluate a model")
        for member in members:
            if member.filename.endswith(".npy"):
                _check_npy_header(archive, member, refuse)


def _check_npy_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, refuse) -> None:
    name = member.filename.removesuffix(".npy")
    try:
        with archive.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"npy format version {version[0]}.{version[1]} is not read")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, SyntaxError) as exc:
        raise refuse("E413", f"has an unreadable array '{name}' ({exc})",
                     SAVE_HINT.format(labels="")) from None
    if dtype.hasobject:
        raise refuse("E413", f"array '{name}' holds Python objects, which are never loaded",
                     "save numeric arrays only")
    need = math.prod(shape) * dtype.itemsize
    if need > MAX_DATA_BYTES or need > member.file_size:
        raise refuse("E417", f"array '{name}' claims shape {tuple(shape)} of {dtype} ({need} bytes), "
                             f"more than {'the limit' if need > MAX_DATA_BYTES else 'the file holds'}",
                     "save the real samples with numpy.savez; the header and the data must agree")


def check_inputs(array: np.ndarray, role: str, shown: str) -> np.ndarray:
    """float32, batch first, at least one finite sample."""
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise BuildError("E413", f"{role} inputs in {shown} are {dtype}, not float32",
                         "save them as float32, exactly as the device feeds the model "
                         "(x.astype(numpy.float32))", subject=role)
    if array.ndim < 2 or array.shape[0] == 0:
        raise BuildError("E413", f"{role} inputs in {shown} have shape {tuple(array.shape)}; "
                                 "expected (N, ...) with N >= 1 samples",
                         "stack the samples along a first (batch) axis", subject=role)
    if not np.isfinite(array).all():
        raise BuildError("E413", f"{role} inputs in {shown} contain NaN or infinity",
                         "remove or fix those samples", subject=role)
    return np.ascontiguousarray(array)


def check_labels(labels: np.ndarray, count: int, shown: str) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
        raise BuildError("E413", f"labels in {shown} must be {count} integers (one per input), "
                                 f"not {labels.dtype} of shape {tuple(labels.shape)}",
                         "save them as label=numpy.asarray(y, dtype=numpy.int64)", subject="evaluation")
    return labels.astype(np.int64)


def check_fits(array: np.ndarray, model_shape: tuple[int | None, ...], role: str, input_name: str) -> None:
    """The samples match the model input's fixed dimensions (batch and dynamic ones are free)."""
    sample = tuple(array.shape[1:])
    wanted = tuple(model_shape[1:])
    if len(sample) != len(wanted) or any(w is not None and w != s for w, s in zip(wanted, sample)):
        shown = "x".join("?" if w is None else str(w) for w in (None, *wanted))
        raise BuildError("E414", f"{role} samples have shape {sample}, but the model input "
                                 f"'{input_name}' takes {shown} (batch first)",
                         f"make the {role} data the same shape as the model input (the data the "
                         "device really feeds it)", subject=role)


def chunks(array: np.ndarray, size: int):
    """(batch, real rows) in batches of `size`; the last one is padded by repeating its last
    sample (a model with a fixed batch takes no other shape), and `real rows` says how many
    of its outputs to keep."""
    for start in range(0, len(array), size):
        batch = array[start:start + size]
        real = len(batch)
        if real < size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], size - real, axis=0)])
        yield batch, real
