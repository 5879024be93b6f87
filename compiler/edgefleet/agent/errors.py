"""The agent's error codes (E6xx) and the one exception type its steps raise.

A step that fails raises `AgentError(code, message, hint)`; the driver turns it into a
condition and a report, and the device keeps serving what it served. Codes:

  E601 remote unreachable (git or HTTP mirror)     E602 the branch / tree is missing on the remote
  E603 desired state not usable (bad JSON, no workload, not this device)
  E604 no artifact store to fetch from             E605 artifact digest mismatch (tampered, corrupted)
  E606 artifact larger than its declared size      E607 not enough free space
  E608 staged model does not load                  E609 probe output outside tolerance
  E610 probe latency over the class budget         E611 failed after the switch: rolled back
  E612 runtime / accelerator failure: degraded     E613 state directory or journal unreadable
  E614 loop guard: too many state saves in one update
  E615 offline longer than max_offline             E616 status remote push failed (reports stay queued)
  E617 device not enrolled / identity missing      E618 artifact store read failed (missing blob, I/O)
  E619 another agent holds the state directory      E620 provenance refused before staging
"""

from __future__ import annotations

from edgefleet.core.codes import REGISTRY

# The default CamelCase condition reason of each agent code (a caller may name a finer one);
# what each code means is in the one registry, edgefleet/core/codes.py.
REASONS = {
    "E601": "remote unreachable",
    "E602": "branch or tree missing on the remote",
    "E603": "desired state not usable",
    "E604": "no artifact store",
    "E605": "artifact digest mismatch",
    "E606": "artifact larger than declared",
    "E607": "not enough free space",
    "E608": "staged model does not load",
    "E609": "probe output outside tolerance",
    "E610": "probe latency over budget",
    "E611": "failed after the switch, rolled back",
    "E612": "runtime or accelerator failure",
    "E613": "state directory unreadable",
    "E614": "loop guard tripped",
    "E615": "offline beyond max_offline",
    "E616": "status remote push failed",
    "E617": "device not enrolled",
    "E618": "artifact store read failed",
    "E619": "state directory in use",
    "E620": "provenance refused",
}


class AgentError(Exception):
    """A step failed for a reason the device reports; the served model is unaffected."""

    def __init__(self, code: str, message: str, hint: str = "", reason: str = ""):
        assert code in REGISTRY, code
        self.code = code
        self.message = message
        self.hint = hint
        # CamelCase reason for conditions, e.g. "DigestMismatch"
        self.reason = reason or "".join(w.capitalize() for w in REASONS.get(code, "VerifyFailed").split()[:3])
        super().__init__(f"error[{code}]: {message}")
