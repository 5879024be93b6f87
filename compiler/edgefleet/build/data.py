"""Real calibration and evaluation inputs: loading npz files and checking them.

A model declares its data as npz files: key `input` (float32, batch first) and, for
evaluation, an optional `label` (integers, one per sample). Every problem is a
`BuildError` that says which file and what to do; nothing is pickled (allow_pickle=False),
so a data file can never run code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefleet.build.errors import BuildError

SAVE_HINT = "write it with numpy.savez(path, input=x.astype(numpy.float32){labels})"


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
