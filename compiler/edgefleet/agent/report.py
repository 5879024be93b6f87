"""The device's signed report: what it serves, for which generation, and how it is doing.

Wire format: a DSSE envelope (securesystemslib.dsse; the in-toto signing envelope) whose
payload is the RFC 8785 canonical JSON of a `Report` (`format: edgefleet/report/v1`) and
whose payloadType is `application/vnd.edgefleet.report.v1+json`. The signature is the
device key's ed25519 signature of DSSE's PAE(payloadType, payload); `keyid` is the
device's public key in the inventory's format (`ed25519:<64 hex>`), a hint only. The
envelope itself is written as canonical JSON, so one report has one byte form.

Reports arrive from devices, so a reader treats them as hostile: at most MAX_ENVELOPE
bytes, strict JSON (no NaN/Infinity, no duplicate keys), the signature checked before
the payload is parsed, a strict model with bounded strings and lists, and a payload that
must already be canonical. Replay protection is the counter: each report of a device
carries a larger one than the last (`check_sequence`, called by readers with history:
the status hook and `edgefleet status`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from securesystemslib.dsse import Envelope

from edgefleet.agent.conditions import CONDITION_TYPES, Condition, Rfc3339Utc, Sha256Hex
from edgefleet.agent.identity import PUBLIC_KEY, DeviceIdentity, verify_signature
from edgefleet.core.ids import DEVICE_ID_PATTERN

REPORT_FORMAT = "edgefleet/report/v1"
PAYLOAD_TYPE = "application/vnd.edgefleet.report.v1+json"
MAX_ENVELOPE = 64 * 1024
MAX_WORKLOADS = 32
MAX_COUNTER = 2**53 - 1  # the largest integer canonical JSON (RFC 8785) carries exactly
UpdateStatus = Literal["Idle", "Downloading", "Staged", "Probing", "Switched", "Committed",
                       "ProbeFailed", "RolledBack", "UpdateFailed", "Waiting"]

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
Version = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]{1,64})?$", max_length=96)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNTER)]
Finite = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]


class ReportError(Exception):
    """A report was refused (or cannot be made). `code` is a stable E66x code."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"error[{code}]: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Generation(_Strict):
    """The desired state a report describes: its TUF target's sha256 and release counter."""

    target_sha256: Sha256Hex
    release_counter: Count


class Serving(_Strict):
    model: Name
    version: Version
    variant: Name
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    slot: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]


class WorkloadStatus(_Strict):
    """One workload (model) of the device. The fields after `update` came with multi-workload
    agents; null means an older agent's report, which readers judge by the device-wide conditions."""

    model: Name
    rollout: Name | None = None
    wave: Name | None = None
    desired_version: Version | None = None
    serving_version: Version | None = None
    update: UpdateStatus = "Idle"
    # (the variant and slot are in `agent state`; the largest report must stay under MAX_ENVELOPE)
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None   # what serves it
    ready: bool | None = None           # serves what the desired state asks of this model
    degraded: bool | None = None        # on a fallback or CPU path
    update_failed: bool | None = None   # this model's update failed (or the desired state was refused)
    rolled_back: bool | None = None     # this model rolled back after a switch
    code: Annotated[str, Field(pattern=r"^E[0-9]{3}$")] | None = None   # the error code, when not ready


class Latency(_Strict):
    p50: Finite
    p95: Finite
    p99: Finite


class Resources(_Strict):
    """Resource pressure where the OS shows it; a field the device cannot read is null."""

    cpu_percent: Annotated[float, Field(ge=0, le=100 * 1024, allow_inf_nan=False)] | None = None
    memory_percent: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    memory_available_bytes: Count | None = None
    disk_free_bytes: Count | None = None
    disk_percent: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    load_1m: Finite | None = None
    temperature_c: Annotated[float, Field(ge=-273.15, le=1000, allow_inf_nan=False)] | None = None


class TelemetrySummary(_Strict):
    inferences: Count = 0
    errors: Count = 0
    latency_ms: Latency | None = None
    last_success: Rfc3339Utc | None = None
    dropped_rows: Count = 0
    since: Rfc3339Utc | None = None
    until: Rfc3339Utc | None = None
    resources: Resources = Field(default_factory=Resources)


class OfflineStatus(_Strict):
    last_contact: Rfc3339Utc | None = None
    beyond_max_offline: bool = False


def _one_per_type(conds: list[Condition]) -> list[Condition]:
    types = [c.type for c in conds]
    if len(set(types)) != len(types):
        raise ValueError("a condition type appears twice")
    return conds


class Report(_Strict):
    format: Literal["edgefleet/report/v1"] = REPORT_FORMAT
    device: DeviceId
    counter: Count
    generation: Generation | None = None
    observed_at: Rfc3339Utc
    serving: Serving | None = None
    workloads: Annotated[list[WorkloadStatus], Field(max_length=MAX_WORKLOADS)] = Field(default_factory=list)
    # One condition per type at most, so even the largest report stays under MAX_ENVELOPE.
    conditions: Annotated[list[Condition], Field(max_length=len(CONDITION_TYPES)),
                          AfterValidator(_one_per_type)] = Field(default_factory=list)
    telemetry: TelemetrySummary = Field(default_factory=TelemetrySummary)
    offline: OfflineStatus = Field(default_factory=OfflineStatus)


class _Signature(_Strict):
    keyid: Annotated[str, Field(max_length=256)]
    sig: Annotated[str, Field(max_length=256)]


class _Envelope(_Strict):
    payload: Annotated[str, Field(max_length=MAX_ENVELOPE)]
    payloadType: Annotated[str, Field(max_length=128)]
    signatures: Annotated[list[_Signature], Field(min_length=1, max_length=4)]


def report_payload(report: Report) -> bytes:
    """The signed bytes: RFC 8785 canonical JSON of the report."""
    return rfc8785.dumps(report.model_dump(mode="json"))


def sign_report(report: Report, identity: DeviceIdentity) -> bytes:
    """The report as a signed DSSE envelope (canonical JSON bytes) of at most MAX_ENVELOPE bytes."""
    if report.device != identity.device_id:
        raise ReportError("E664", f"a report for device {report.device!r} cannot be signed by {identity.device_id!r}")
    envelope = Envelope(report_payload(report), PAYLOAD_TYPE, {})
    signature = identity.sign(envelope.pae())
    data = rfc8785.dumps({
        "payload": _b64(envelope.payload),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": identity.public_key, "sig": _b64(signature)}],
    })
    if len(data) > MAX_ENVELOPE:
        raise ReportError("E660", f"the signed report is {len(data)} bytes, more than {MAX_ENVELOPE}")
    return data


def verify_report(envelope: bytes, public_key: str, device_id: str | None) -> Report:
    """The report inside `envelope` once it is proven to be `public_key`'s and `device_id`'s.

    Refuses (ReportError): E660 too large, E661 malformed envelope, E663 bad signature,
    E662 payload that is not a canonical, valid report, E664 a report for another device,
    E666 a public key that is not `ed25519:<64 hex>`.
    """
    if not isinstance(public_key, str) or not PUBLIC_KEY.fullmatch(public_key):
        raise ReportError("E666", "the enrolled public key is not 'ed25519:' and 64 hex digits")
    if not isinstance(envelope, (bytes, bytearray)):
        raise ReportError("E661", "a report envelope is bytes")
    if len(envelope) > MAX_ENVELOPE:
        raise ReportError("E660", f"the report is {len(envelope)} bytes, more than {MAX_ENVELOPE}")
    try:
        parsed = _Envelope.model_validate(_strict_json(bytes(envelope)))
    except (ValueError, ValidationError) as exc:
        raise ReportError("E661", f"not a DSSE envelope: {_brief(exc)}") from exc
    if parsed.payloadType != PAYLOAD_TYPE:
        raise ReportError("E661", f"payloadType is {parsed.payloadType[:64]!r}, not {PAYLOAD_TYPE!r}")
    try:
        payload = _unb64(parsed.payload)
        signatures = [_unb64(s.sig) for s in parsed.signatures]
    except ValueError as exc:
        raise ReportError("E661", f"invalid base64 in the envelope: {exc}") from exc
    pae = Envelope(payload, PAYLOAD_TYPE, {}).pae()
    if not any(verify_signature(public_key, sig, pae) for sig in signatures):
        raise ReportError("E663", "the report's signature does not verify with the device's enrolled key")
    try:
        value = _strict_json(payload)
        report = Report.model_validate(value)
    except (ValueError, ValidationError) as exc:
        raise ReportError("E662", f"the signed payload is not a valid {REPORT_FORMAT} report: {_brief(exc)}") from exc
    if rfc8785.dumps(value) != payload:
        raise ReportError("E662", "the signed payload is not canonical JSON (RFC 8785)")
    if device_id is not None and report.device != device_id:
        raise ReportError("E664", f"the report is for device {report.device!r}, not {device_id!r}")
    return report


def check_sequence(previous_counter: int | None, report: Report) -> None:
    """Refuse a replayed or reordered report: its counter must be above the last accepted one (E665)."""
    if previous_counter is not None and report.counter <= previous_counter:
        raise ReportError("E665", f"report counter {report.counter} is not above the last accepted "
                                  f"{previous_counter} (a replayed or reordered report)")


def unverified_counter(envelope: bytes) -> int | None:
    """The counter of a report the caller made itself (its own outbox); None when unreadable.

    Never use on input from elsewhere: nothing is verified.
    """
    try:
        value = _strict_json(_unb64(_Envelope.model_validate(_strict_json(bytes(envelope))).payload))
        counter = value.get("counter") if isinstance(value, dict) else None
    except (ValueError, ValidationError):
        return None
    return counter if isinstance(counter, int) and not isinstance(counter, bool) else None


def _strict_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:  # "[[[[...": 64 KiB of brackets is deeper than the parser's stack
        raise ValueError("nested too deeply") from exc


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(str(exc)) from exc


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(top)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first.get('msg', '')}{more}"[:300]
    return str(exc)[:300]
