"""devices/*.yaml and devices/*.csv: the inventory."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edgefleet.core.ids import DEVICE_ID_DESCRIPTION, DEVICE_ID_PATTERN
from edgefleet.spec.common import Document, Name, Strict

# The rule itself lives in core/ids.py (shared with signing and the agent).
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN, description=DEVICE_ID_DESCRIPTION)]
PublicKey = Annotated[str, Field(pattern=r"^ed25519:[0-9a-f]{64}$",
                                 description="the device's enrolled key: ed25519: and 64 hex digits")]
CSV_COLUMNS = ("id", "hardware_class", "site", "labels", "public_key")


class Device(Strict):
    id: DeviceId
    hardware_class: Name
    site: Name
    labels: dict[str, str] = Field(default_factory=dict)
    public_key: PublicKey


class DeviceListSpec(Strict):
    devices: list[Device] = Field(min_length=1)


class DeviceList(Document):
    """devices/*.yaml: a list of devices (use CSV for large fleets)."""

    kind: Literal["DeviceList"]
    spec: DeviceListSpec
