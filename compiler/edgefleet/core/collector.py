"""Pausing CPython's cyclic garbage collector while a use case loads many small objects.

Why: loading a large fleet makes hundreds of thousands of long-lived containers (device
documents, their source positions, report observations, generation sets) and no cycles.
CPython's generational collector keeps re-walking that growing heap: validating a
100k-device inventory in one process took 2.8 s with it running (nine full collections) and
1.2 s with it paused (`validate_repository` on bench/bench_status.py's fleet); compiling 300k devices,
loading 9.7 -> 5.8 s and compiling 8.1 -> 4.4 s (`bench/bench_compile.py`). Reference counting
still frees every object as usual; only cycles made meanwhile wait until the collector resumes.

The switch is the interpreter's, so it is paused only for the block and restored after
(nested blocks leave it to the outermost). Used by compile, status and promote, whose runs
hold their whole fleet, and by the loader of a fleet.
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
