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

from edgefleet.agent.conditions import CONDITION_TYPES, Condition, Rfc3339Utc, Sha256Hex
from edgefleet.agent.identity import PUBLIC_KEY, DeviceIdentity, is_usable_public_key, verify_signature
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


class Latency(_Strict):
    p50: Finite
    p95: Finite
    p99: Finite


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
    # This model's own latency over the report's window (a device serving several models reports
    # each; `telemetry.latency_ms` is every inference of the device together).
    latency_ms: Latency | None = None


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


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, the bytes a signature covers (DSSE protocol v1):
    `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal. The same bytes
    as securesystemslib.dsse.Envelope.pae() (tests/test_agent_io_report.py holds them equal);
    written out because importing that module imports every securesystemslib signer (and
    boto3 with them), a tenth of a second on each `status` and agent start."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def report_payload(report: Report) -> bytes:
    """The signed bytes: RFC 8785 canonical JSON of the report."""
    return rfc8785.dumps(report.model_dump(mode="json"))


def sign_report(report: Report, identity: DeviceIdentity) -> bytes:
    """The report as a signed DSSE envelope (canonical JSON bytes) of at most MAX_ENVELOPE bytes."""
    if report.device != identity.device_id:
        raise ReportError("E664", f"a report for device {report.device!r} cannot be signed by {identity.device_id!r}")
    payload = report_payload(report)
    signature = identity.sign(pae(PAYLOAD_TYPE, payload))
    data = rfc8785.dumps({
        "payload": _b64(payload),
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
    E666 a public key that is not `ed25519:<64 hex>` or not a usable point.
    """
    if not isinstance(public_key, str) or not PUBLIC_KEY.fullmatch(public_key):
        raise ReportError("E666", "the enrolled public key is not 'ed25519:' and 64 hex digits")
    payload, signatures = _open(envelope)
    signed = pae(PAYLOAD_TYPE, payload)
    if not any(verify_signature(public_key, sig, signed) for _, sig in signatures):
        if not is_usable_public_key(public_key):
            raise ReportError("E666", "the enrolled public key is no usable ed25519 key (not a point on the curve, "
                                      "or a small-order or non-canonical one, which anyone could forge signatures "
                                      "for): no report is trusted under it (re-enroll the device and put its new "
                                      "key in the inventory)")
        raise ReportError("E663", "the report's signature does not verify with the device's enrolled key")
    return _signed_report(payload, device_id)


class Prechecked:
    """An envelope opened, and its signature checked against the key its own `keyid` names,
    before the enrolled key is known (readers overlap this, the costly part, with loading
    the inventory). Nothing here is trusted and the payload is not parsed: `verify` gives
    exactly what `verify_report(envelope, public_key, device_id)` gives, taking the short
    way only when the signature that verified is `public_key`'s (the keyid is a hint, so a
    valid signature under a wrong hint still takes the long way and verifies).
    """

    __slots__ = ("envelope", "_payload", "_signer")

    def __init__(self, envelope: bytes, precheck: bool = True):
        """`precheck=False`: nothing done now (the key is known already): `verify` is `verify_report`."""
        self.envelope = envelope
        self._payload: bytes | None = None
        self._signer: str | None = None
        if not precheck:
            return
        try:
            payload, signatures = _open(envelope)
        except ReportError:
            return  # verify() raises the same error again
        signed = pae(PAYLOAD_TYPE, payload)
        for keyid, sig in signatures:
            if PUBLIC_KEY.fullmatch(keyid) and verify_signature(keyid, sig, signed):
                self._payload, self._signer = payload, keyid
                return

    def verify(self, public_key: str, device_id: str | None) -> Report:
        if self._signer is not None and self._signer == public_key:
            return _signed_report(self._payload, device_id)
        return verify_report(self.envelope, public_key, device_id)


def _open(envelope: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The payload and (keyid, signature) pairs of a well-formed envelope (E660, E661)."""
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
        signatures = [(s.keyid, _unb64(s.sig)) for s in parsed.signatures]
    except ValueError as exc:
        raise ReportError("E661", f"invalid base64 in the envelope: {exc}") from exc
    return payload, signatures


def _signed_report(payload: bytes, device_id: str | None) -> Report:
    """The report in a payload whose signature verified: strict JSON, a valid report, canonical
    (E662), of `device_id` (E664).

    `_accepted_fast` decides most reports without re-serialising them; whatever it does not
    accept takes the reference path below, so every refusal and its message stay the same.
    """
    report = _accepted_fast(payload)
    if report is None:
        try:
            value = _strict_json(payload)
            report = Report.model_validate(value)
        except (ValueError, ValidationError) as exc:
            raise ReportError("E662", f"the signed payload is not a valid {REPORT_FORMAT} report: "
                                      f"{_brief(exc)}") from exc
        try:
            canonical = rfc8785.dumps(value) == payload
        except rfc8785.CanonicalizationError:
            canonical = False
        if not canonical:
            raise ReportError("E662", "the signed payload is not canonical JSON (RFC 8785)")
    if device_id is not None and report.device != device_id:
        raise ReportError("E664", f"the report is for device {report.device!r}, not {device_id!r}")
    return report


# json's compact sorted form: byte for byte RFC 8785's where `_accepted_fast` relies on it.
_JSON_FORM = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))
_SAFE_INT = 2**53 - 1


def _accepted_fast(payload: bytes) -> Report | None:
    """The report when `payload` is plainly a canonical, valid one; None: ask the reference path."""
    value = _plainly_canonical(payload)
    if value is None:
        return None
    try:
        return Report.model_validate(value)
    except ValidationError:
        return None


def _plainly_canonical(payload: bytes) -> Any | None:
    """The JSON value of `payload` when it is, without doubt, RFC 8785's form of it; else None.

    For an ASCII payload whose numbers all have one form in json and in RFC 8785, json's
    compact sorted form of the parsed value is RFC 8785's: the same string escapes, ASCII keys
    sort the same by code point as by UTF-16 unit. Python's float repr agrees with ECMAScript's
    number form when it has no exponent and is not integral ("4.0" is "4" there, "1e-05" is
    "0.00001"); ints within 53 bits (rfc8785 refuses the rest). So one comparison in C stands
    for rfc8785's serialiser. It also rules out duplicate keys (the dict keeps one, so its form
    is shorter than the payload) and NaN/Infinity (refused by the decoder and the encoder).
    None never means "not canonical", only "not decided here".
    """
    if not payload.isascii():
        return None
    try:
        text = payload.decode("ascii")
        value = _PLAIN_JSON.decode(text)
        return value if _JSON_FORM.encode(value) == text else None
    except (ValueError, RecursionError, _NotPlain):
        return None


class _NotPlain(Exception):
    """A number whose json and RFC 8785 forms may differ: the reference path decides."""


def _plain_float(token: str) -> float:
    value = float(token)
    shown = repr(value)
    if "e" in shown or "n" in shown or shown.endswith(".0"):
        raise _NotPlain(token)
    return value


def _plain_int(token: str) -> int:
    value = int(token)
    if len(token) > 15 and not -_SAFE_INT <= value <= _SAFE_INT:
        raise _NotPlain(token)
    return value


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
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _STRICT_JSON.decode(text)
    except RecursionError as exc:  # "[[[[...": 64 KiB of brackets is deeper than the parser's stack
        raise ValueError("nested too deeply") from exc


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # in C; only a shorter dict needs the loop that names the key
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:64]!r}")
            seen.add(key)
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


# Built once: json.loads with options builds a decoder per call.
_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
_PLAIN_JSON = json.JSONDecoder(parse_float=_plain_float, parse_int=_plain_int, parse_constant=_refuse_constant)
