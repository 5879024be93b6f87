"""The daemon loop: a cycle every `interval`, bounded exponential backoff with jitter when offline.

`backoff_delay` is pure: after `failures` consecutive unreachable polls the next poll waits
min(cap, base * 2**(failures-1)) scaled by a jitter factor in [0.5, 1.0) (so a site's
devices that lost the link together do not come back in lockstep). The cap is the poll
interval: an offline device never polls less often than a healthy one.
"""

from __future__ import annotations

import random
import threading
from typing import Callable


def backoff_delay(failures: int, interval_s: float, base_s: float = 5.0,
                  rand: Callable[[], float] = random.random) -> float:
    if failures <= 0:
        return interval_s
    raw = min(interval_s, base_s * (2 ** min(failures - 1, 30)))
    return raw * (0.5 + 0.5 * rand())


def run_forever(cycle: Callable[[], object], interval_s: float, stop: threading.Event,
                base_s: float = 5.0) -> None:
    """Call `cycle()` until `stop` is set; it returns an object with `.offline`."""
    failures = 0
    while not stop.is_set():
        result = cycle()
        failures = failures + 1 if getattr(result, "offline", False) else 0
        stop.wait(backoff_delay(failures, interval_s, base_s))
