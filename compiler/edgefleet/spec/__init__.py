"""The typed model of a fleet repository: one module per kind of document."""

from edgefleet.spec.common import API_VERSION, Document, Metadata, duration_seconds
from edgefleet.spec.device import CSV_COLUMNS, Device, DeviceList
from edgefleet.spec.fleet import Fleet
from edgefleet.spec.hardware import HardwareClass
from edgefleet.spec.model import Model, ModelVersion, Variant
from edgefleet.spec.recipe import Recipe
from edgefleet.spec.rollout import Rollout, Wave

# kind -> model, and the folder where documents of that kind live.
KINDS: dict[str, type[Document]] = {
    "Fleet": Fleet,
    "HardwareClass": HardwareClass,
    "Model": Model,
    "DeviceList": DeviceList,
    "Rollout": Rollout,
}
FOLDER_KINDS: dict[str, str] = {
    "hardware": "HardwareClass",
    "models": "Model",
    "devices": "DeviceList",
    "rollouts": "Rollout",
}

__all__ = [
    "API_VERSION", "CSV_COLUMNS", "Device", "DeviceList", "Document", "Fleet", "FOLDER_KINDS",
    "HardwareClass", "KINDS", "Metadata", "Model", "ModelVersion", "Recipe", "Rollout",
    "Variant", "Wave", "duration_seconds",
]
