"""The signed desired-state tree: a TUF repository that devices verify offline.

keys.py     role keys (ed25519) in 0600 files or the environment; init, rotate, and the
            guard that refuses private keys inside a fleet repository.
publish.py  writes one version of the tree: targets (one file per device), hash-bin
            delegations, targets, snapshot, timestamp and the root chain; atomic, and
            touching only files whose bytes change.
verify.py   what a device does: python-tuf's Updater over a local (offline) fetcher,
            plus the Uptane-style checks on the device's own target.

Layout of a published tree (consistent snapshots, as python-tuf's ngclient expects):

    metadata/1.root.json, 2.root.json, ...     every root version (the chain a device walks)
    metadata/timestamp.json                    the one mutable file: the commit point
    metadata/{V}.snapshot.json, {V}.targets.json
    metadata/bins/{hh}/{V}.bins-{hex}.json     hash-bin delegations, sharded by the bin's first two hex digits
    targets/devices/{sss}/{sha256}.{device-id}.json  each device's desired state, sharded (layout.py)

Each device target carries custom fields (Uptane-style): `device_id`, `hardware_class`
and `release_counter` (monotonic per device). Error codes: E50x keys, E54x publishing,
E55x/E56x verifying (see the README section).
"""

from __future__ import annotations

from edgefleet.core.diagnostics import DiagnosticError, error
from edgefleet.core.source import Location
from edgefleet.signing.layout import BINS_PREFIX, device_target_path  # noqa: F401 - the one layout

ROLES = ("root", "targets", "snapshot", "timestamp", "bins")
TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")

# Custom fields of every device target (Uptane calls them ECU identifier, hardware
# identifier and release counter).
CUSTOM_DEVICE_ID = "device_id"
CUSTOM_HARDWARE_CLASS = "hardware_class"
CUSTOM_RELEASE_COUNTER = "release_counter"
REQUIRED_CUSTOM = (CUSTOM_DEVICE_ID, CUSTOM_HARDWARE_CLASS, CUSTOM_RELEASE_COUNTER)


class SigningError(DiagnosticError):
    """A key, publishing or verification problem, carried as one diagnostic.

    It is a DiagnosticError, so a CLI command that lets it escape prints
    `PATH: error[E5xx]: message` with its hint and exits 1.
    """

    def __init__(self, code: str, message: str, hint: str = "", path: str = ""):
        self.code = code
        self.message = message
        self.hint = hint
        self.path = path
        super().__init__([error(code, message, Location(path or "<signing>"), hint)])

    def __str__(self) -> str:
        return f"error[{self.code}]: {self.message}"
