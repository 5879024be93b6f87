"""The device-id rule: the one definition every stage uses (spec, publish, verify, agent).

A device id becomes part of a TUF target path (`targets/devices/<sha256>.<id>.json`), a
git ref (`refs/status/<id>`) and a file name, so it is a short lower-case token that is
safe in all three. Pure and dependency-free, so the device side can import it.
"""

from __future__ import annotations

import re

DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
DEVICE_ID_DESCRIPTION = "lower-case letters, digits, '.', '_' and '-'"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def is_device_id(value: object) -> bool:
    """True for a well-formed device id (a str; `fullmatch`, so no trailing newline slips in)."""
    return type(value) is str and _DEVICE_ID.fullmatch(value) is not None
