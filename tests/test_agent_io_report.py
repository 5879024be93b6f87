"""Signed reports: round trip, and every kind of hostile envelope refused with its code."""

from __future__ import annotations

import base64
import json

import pytest
import rfc8785
from hypothesis import given, settings, strategies as st
from securesystemslib.dsse import Envelope

from agent_io_support import make_identity, make_report, signed
from edgefleet.agent.report import (MAX_ENVELOPE, PAYLOAD_TYPE, Latency, Report, ReportError, TelemetrySummary,
                                    check_sequence, pae, sign_report, unverified_counter, verify_report)


@pytest.fixture
def ident(tmp_path):
    return make_identity(tmp_path)


def _resign(ident, payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """An envelope over arbitrary payload bytes, correctly signed by the device key."""
    sig = ident.sign(Envelope(payload, payload_type, {}).pae())
    return json.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
                       "signatures": [{"keyid": ident.public_key, "sig": base64.b64encode(sig).decode()}]}).encode()


def test_round_trip_is_canonical_and_deterministic(ident):
    report = make_report(ident.device_id, 7, telemetry=TelemetrySummary(
        inferences=10, errors=1, latency_ms=Latency(p50=1.5, p95=3.0, p99=4.25)))
    env = sign_report(report, ident)
    assert env == sign_report(report, ident)  # ed25519 is deterministic; canonical JSON too
    assert rfc8785.dumps(json.loads(env)) == env
    back = verify_report(env, ident.public_key, ident.device_id)
    assert back == report and back.counter == 7
    assert verify_report(env, ident.public_key, None) == report
    assert unverified_counter(env) == 7


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.binary(max_size=300))
def test_our_pae_is_securesystemslibs_byte_for_byte(payload_type, payload):
    assert pae(payload_type, payload) == Envelope(payload, payload_type, {}).pae()


def test_a_tampered_payload_is_refused(ident):
    env = json.loads(signed(ident, 1))
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["counter"] = 99
    env["payload"] = base64.b64encode(rfc8785.dumps(payload)).decode()
    with pytest.raises(ReportError) as err:
        verify_report(json.dumps(env).encode(), ident.public_key, ident.device_id)
    assert err.value.code == "E663"


def test_another_key_is_refused(ident, tmp_path):
    other = make_identity(tmp_path, "pa-robot-002")
    with pytest.raises(ReportError) as err:
        verify_report(signed(ident, 1), other.public_key, ident.device_id)
    assert err.value.code == "E663"


def test_a_report_for_another_device_is_refused(ident):
    # Signed with the right key, but it claims another device: refused even though it verifies.
    payload = rfc8785.dumps(make_report("pa-robot-002", 1).model_dump(mode="json"))
    with pytest.raises(ReportError) as err:
        verify_report(_resign(ident, payload), ident.public_key, ident.device_id)
    assert err.value.code == "E664"
    with pytest.raises(ReportError) as err:
        sign_report(make_report("pa-robot-002", 1), ident)
    assert err.value.code == "E664"


@pytest.mark.parametrize("envelope", [
    b"", b"not json", b"[]", b'{"payload": "", "payloadType": "x"}',
    b'{"payload": "!!!", "payloadType": "%s", "signatures": [{"keyid": "k", "sig": "AA=="}]}' % PAYLOAD_TYPE.encode(),
    b'{"payload": "AA==", "payloadType": "text/plain", "signatures": [{"keyid": "k", "sig": "AA=="}]}',
    b'{"payload": "AA==", "payloadType": "%s", "signatures": []}' % PAYLOAD_TYPE.encode(),
    b'{"payload": "AA==", "payload": "AA==", "payloadType": "%s", "signatures": [{"keyid": "k", "sig": "AA=="}]}'
    % PAYLOAD_TYPE.encode(),
    b'{"payload": "AA==", "payloadType": "%s", "signatures": [{"keyid": "k", "sig": "AA=="}], "x": NaN}'
    % PAYLOAD_TYPE.encode(),
    b"\xff\xfe", b"[" * 60000,
], ids=["empty", "text", "array", "no-signatures-field", "bad-base64", "wrong-type", "zero-signatures",
        "duplicate-key", "nan", "not-utf8", "deep-nesting"])
def test_malformed_envelopes_are_refused(ident, envelope):
    with pytest.raises(ReportError) as err:
        verify_report(envelope, ident.public_key, ident.device_id)
    assert err.value.code == "E661"


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(counter=-1), lambda r: r.update(counter=2**53), lambda r: r.update(counter=True),
    lambda r: r.update(extra_field=1), lambda r: r.update(format="edgefleet/report/v2"),
    lambda r: r["telemetry"].update(latency_ms={"p50": 1, "p95": 2, "p99": 1e300}),
    lambda r: r.update(observed_at="2026-12-01 10:00"), lambda r: r.update(workloads=[{"model": "m"}] * 33),
    lambda r: r["conditions"][0].update(status="Yes"),
], ids=["negative-counter", "huge-counter", "bool-counter", "unknown-field", "other-format", "huge-latency",
        "bad-time", "too-many-workloads", "bad-condition"])
def test_signed_but_invalid_payloads_are_refused(ident, mutate):
    value = make_report(ident.device_id, 1).model_dump(mode="json")
    mutate(value)
    with pytest.raises(ReportError) as err:
        verify_report(_resign(ident, json.dumps(value, sort_keys=True).encode()), ident.public_key, ident.device_id)
    assert err.value.code == "E662"


def test_nan_inside_a_signed_payload_is_refused(ident):
    value = make_report(ident.device_id, 1).model_dump(mode="json")
    text = rfc8785.dumps(value).replace(b'"inferences":0', b'"inferences":NaN')
    with pytest.raises(ReportError) as err:
        verify_report(_resign(ident, text), ident.public_key, ident.device_id)
    assert err.value.code == "E662"


def test_a_non_canonical_payload_is_refused(ident):
    value = make_report(ident.device_id, 1).model_dump(mode="json")
    with pytest.raises(ReportError) as err:
        verify_report(_resign(ident, json.dumps(value, indent=1).encode()), ident.public_key, ident.device_id)
    assert err.value.code == "E662" and "canonical" in err.value.message


def test_oversize_envelopes_are_refused_before_parsing(ident):
    with pytest.raises(ReportError) as err:
        verify_report(b" " * (MAX_ENVELOPE + 1), ident.public_key, ident.device_id)
    assert err.value.code == "E660"


def test_a_malformed_enrolled_key_is_a_distinct_error(ident):
    with pytest.raises(ReportError) as err:
        verify_report(signed(ident, 1), "ed25519:xyz", ident.device_id)
    assert err.value.code == "E666"


def _on_curve(key_hex: str) -> bool:
    """Whether the 32 bytes encode a point of edwards25519 (RFC 8032 5.1.3: x^2 = (y^2 - 1) /
    (d y^2 + 1) must be a square mod p), worked out here, not by the library under test."""
    p = 2**255 - 19
    d = -121665 * pow(121666, p - 2, p) % p
    y = int.from_bytes(bytes.fromhex(key_hex), "little") & ((1 << 255) - 1)
    if y >= p:
        return False
    x2 = (y * y - 1) * pow(d * y * y + 1, p - 2, p) % p
    return x2 == 0 or pow(x2, (p - 1) // 2, p) == 1


SMALL_ORDER_KEYS = {  # encodings of points of order 1, 2, 4 and 8 (libsodium's blocklist)
    "identity": "01" + "00" * 31,
    "order 4": "00" * 32,
    "order 2": "ec" + "ff" * 30 + "7f",
    "order 8": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
}


@pytest.mark.parametrize("name", sorted(SMALL_ORDER_KEYS))
def test_a_small_order_enrolled_key_never_verifies_even_the_forgery_openssl_accepts(ident, name):
    """With the identity point as the key, R = identity and S = 0 satisfy the ed25519 equation for
    every message: OpenSSL (cryptography) accepts that forgery, libsodium does not. Such a key in
    the inventory must never let a report through, whoever signed it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edgefleet.agent.identity import verify_signature

    key = "ed25519:" + SMALL_ORDER_KEYS[name]
    report = make_report(ident.device_id, 1)
    payload = rfc8785.dumps(report.model_dump(mode="json"))
    forged_sig = bytes([1]) + bytes(63)
    pae = Envelope(payload, PAYLOAD_TYPE, {}).pae()
    if name == "identity":  # the forgery is real: the other verifier takes it
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(SMALL_ORDER_KEYS[name])).verify(forged_sig, pae)
    assert not verify_signature(key, forged_sig, pae)
    envelope = rfc8785.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                              "signatures": [{"keyid": key, "sig": base64.b64encode(forged_sig).decode()}]})
    with pytest.raises(ReportError) as err:
        verify_report(envelope, key, ident.device_id)
    assert err.value.code == "E666" and "small-order" in err.value.message
    mistyped = "ed25519:" + next(k for k in (f"{i:02x}" * 32 for i in range(2, 256)) if not _on_curve(k))
    with pytest.raises(ReportError) as err:  # a key that is no point at all: E666 too, saying so
        verify_report(envelope, mistyped, ident.device_id)
    assert err.value.code == "E666" and "not a point on the curve" in err.value.message
    with pytest.raises(InvalidSignature):  # (a real key's wrong signature stays E663, not E666)
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(ident.public_key[8:])).verify(forged_sig, pae)
    with pytest.raises(ReportError) as err:
        verify_report(envelope, ident.public_key, ident.device_id)
    assert err.value.code == "E663"


ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=511))
def test_libsodium_and_openssl_agree_on_real_keys(message, bit):
    """Reports are verified with libsodium, signed with OpenSSL (cryptography): for a real key
    they agree on the valid signature, on a signature with any one bit flipped, on a message
    with one bit flipped, and on the malleable S + L form (both refuse it)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from edgefleet.agent.identity import verify_signature

    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    key = "ed25519:" + public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    sig = private.sign(message)

    def openssl(signature: bytes, data: bytes) -> bool:
        try:
            public.verify(signature, data)
            return True
        except InvalidSignature:
            return False

    flipped_sig = bytearray(sig)
    flipped_sig[bit // 8] ^= 1 << (bit % 8)
    s = int.from_bytes(sig[32:], "little")
    cases = [(sig, message), (bytes(flipped_sig), message), (sig[:32] + (s + ED25519_ORDER).to_bytes(32, "little"), message)]
    if message:
        flipped_msg = bytearray(message)
        flipped_msg[(bit // 8) % len(message)] ^= 1 << (bit % 8)
        cases.append((sig, bytes(flipped_msg)))
    for signature, data in cases:
        assert verify_signature(key, signature, data) == openssl(signature, data)
    assert verify_signature(key, sig, message) and not verify_signature(key, cases[2][0], message)


def test_check_sequence_refuses_a_counter_that_does_not_grow(ident):
    report = make_report(ident.device_id, 5)
    check_sequence(None, report)
    check_sequence(4, report)
    for previous in (5, 6):
        with pytest.raises(ReportError) as err:
            check_sequence(previous, report)
        assert err.value.code == "E665"


def test_report_model_refuses_nan_directly():
    with pytest.raises(ValueError):
        Latency(p50=float("nan"), p95=1.0, p99=1.0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_arbitrary_bytes_only_ever_raise_report_error(data):
    from edgefleet.agent.identity import public_key_string
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = public_key_string(Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key())
    with pytest.raises(ReportError):
        verify_report(data, key, "pa-robot-001")


def test_report_default_fields_round_trip():
    report = Report(device="d1", counter=0, observed_at="2026-12-01T10:00:00Z")
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_the_largest_valid_report_still_fits_the_envelope_bound(ident):
    from edgefleet.agent.conditions import CONDITION_TYPES, Condition
    from edgefleet.agent.conditions import MAX_MESSAGE
    from edgefleet.agent.report import MAX_WORKLOADS, WorkloadStatus
    long_name = "m" + "x" * 61 + "m"
    version = "1.2.3-" + "a" * 64
    report = make_report(ident.device_id, 2**53 - 1, workloads=[WorkloadStatus(
        model=long_name, rollout=long_name, wave=long_name, desired_version=version, serving_version=version,
        update="ProbeFailed", digest="sha256:" + "f" * 64, ready=False,
        degraded=False, update_failed=True, rolled_back=False, code="E609",
        latency_ms=Latency(p50=123456.789012, p95=234567.890123, p99=999999999999.125))] * MAX_WORKLOADS,
        conditions=[Condition(
            type=t, status="Unknown", reason="R" * 64, message="\U0001F600" * (MAX_MESSAGE - 1) + "\x01", observed_generation="f" * 64,
            last_transition="2026-12-01T10:00:00.123456Z") for t in CONDITION_TYPES])
    env = sign_report(report, ident)
    assert MAX_ENVELOPE - 4096 < len(env) <= MAX_ENVELOPE  # near the bound: the test is the worst case
    assert verify_report(env, ident.public_key, ident.device_id) == report


def test_a_condition_type_twice_is_refused(ident):
    report = make_report(ident.device_id, 1)
    with pytest.raises(ValueError):
        make_report(ident.device_id, 1, conditions=report.conditions * 2)
