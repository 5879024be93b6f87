"""Pausing CPython's cyclic garbage collector while a use case loads many small objects.

Why: loading a large fleet makes hundreds of thousands of long-lived containers (device
documents, their source positions, report observations, generation sets) and no cycles.
CPython's generational collector keeps re-walking that growing heap: loading a 100k-device
inventory ran nine full collections, 2.8 s of the 4.9 s validation (1.2 s with collection
paused; `python bench/bench_status.py`, phase `validate_fleet`). Reference counting still
frees every object as usual; only cycles made meanwhile wait until the collector resumes.

The switch is the interpreter's, so it is paused only for the block and restored after
(nested blocks leave it to the outermost), and used only by a command's own loading step.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
