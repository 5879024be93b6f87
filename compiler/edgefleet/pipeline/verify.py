"""`edgefleet verify`: one device's desired state, checked offline exactly as the device does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edgefleet.pipeline.common import RequestError


@dataclass(frozen=True)
class VerifyRequest:
    tree: Path
    device: str
    trusted_root: Path
    now: datetime
    hardware_class: str | None = None
    last_counter: int | None = None
    metadata_cache: Path | None = None


@dataclass(frozen=True)
class Verified:
    device: str
    path: str
    custom: dict[str, Any]
    versions: dict[str, int]
    data: bytes  # the verified desired-state bytes
    state: Any  # the same, parsed; None when it is not JSON

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def verify(request: VerifyRequest) -> Verified:
    """Run the TUF client workflow over the tree; raises VerifyError (a DiagnosticError) on any failure."""
    from edgefleet.signing.verify import verify_device

    if not request.tree.is_dir():
        raise RequestError(f"{request.tree}: no such directory (give the tree `edgefleet compile --out` wrote)")
    try:
        trusted_root = request.trusted_root.read_bytes()
    except OSError as exc:
        raise RequestError(f"{request.trusted_root}: cannot read the trusted root ({exc.strerror})") from None
    result = verify_device(request.tree, request.device, trusted_root, request.now,
                           hardware_class=request.hardware_class, last_counter=request.last_counter,
                           metadata_cache=request.metadata_cache)
    try:
        state = json.loads(result.data)
    except ValueError:
        state = None
    return Verified(request.device, result.path, dict(result.custom), dict(result.versions), result.data, state)
