"""Which devices a rollout's selector takes."""

from __future__ import annotations

from typing import Iterable, Iterator

from edgefleet.spec.device import Device
from edgefleet.spec.rollout import Selector


def matches(selector: Selector, device: Device) -> bool:
    if selector.hardware_classes and device.hardware_class not in selector.hardware_classes:
        return False
    if selector.sites and device.site not in selector.sites:
        return False
    if selector.devices and device.id not in selector.devices:
        return False
    return all(device.labels.get(k) == v for k, v in selector.match_labels.items())


def select(selector: Selector, devices: Iterable[Device]) -> Iterator[Device]:
    return (d for d in devices if matches(selector, d))
