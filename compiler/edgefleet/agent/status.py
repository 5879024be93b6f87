"""`status.json`: what the device observed at the end of its last cycle (for `agent state`).

Written atomically after every cycle. Holds the serving model, conditions, whether the
device is degraded, its last contact with the remote and whether that is beyond the
class's `max_offline`. `pending_reports` is read from the outbox when asked.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefleet.agent.durable import write_json

FILE = "status.json"


def read_status(state_dir: Path) -> dict:
    try:
        return json.loads((Path(state_dir) / FILE).read_bytes())
    except (OSError, ValueError):
        return {}


def write_status(state_dir: Path, status: dict) -> None:
    write_json(Path(state_dir) / FILE, status)
