"""The fast ways `status` verifies reports give exactly what the reference ways give.

- `Prechecked(envelope).verify(key, device)` (the signature checked first against the key
  the envelope names, in worker processes, before the inventory is loaded) accepts and
  refuses exactly as `verify_report(envelope, key, device)`, with the same messages.
- `_plainly_canonical` (the canonical-form check without rfc8785) never calls a payload
  canonical that rfc8785 would not write byte for byte.
- Worker processes that read their own devices from a `dir:` store give the same verified
  set, refusals included, as one process reading through agent-io's reader.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
import rfc8785
from hypothesis import given, settings, strategies as st
from securesystemslib.dsse import Envelope

from agent_io_support import make_identity, make_report, signed
from edgefleet.agent.report import (MAX_ENVELOPE, PAYLOAD_TYPE, Latency, Prechecked, ReportError, TelemetrySummary,
                                    _plainly_canonical, verify_report)


def _envelope(ident, payload: bytes, keyid: str | None = None, signer=None) -> bytes:
    sig = (signer or ident).sign(Envelope(payload, PAYLOAD_TYPE, {}).pae())
    return rfc8785.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                          "signatures": [{"keyid": ident.public_key if keyid is None else keyid,
                                          "sig": base64.b64encode(sig).decode()}]})


def _outcome(call):
    try:
        return "accepted", call()
    except ReportError as exc:
        return exc.code, exc.message


def _payload(ident, **changes) -> dict:
    value = make_report(ident.device_id, 3, telemetry=TelemetrySummary(
        inferences=5, latency_ms=Latency(p50=1.5, p95=3.25, p99=4.0))).model_dump(mode="json")
    value.update(changes)
    return value


def _cases(ident, other):
    good = rfc8785.dumps(_payload(ident))
    text = good.decode()
    tampered = json.loads(base64.b64decode(json.loads(signed(ident, 1))["payload"]))
    tampered["counter"] = 9
    forged_env = json.loads(signed(ident, 1))
    forged_env["payload"] = base64.b64encode(rfc8785.dumps(tampered)).decode()
    return {
        "good": _envelope(ident, good),
        "tampered-payload": rfc8785.dumps(forged_env),
        "signed-by-a-stranger-under-its-own-keyid": _envelope(other, rfc8785.dumps(_payload(ident))),
        "valid-signature-wrong-keyid-hint": _envelope(ident, good, keyid=other.public_key),
        "valid-signature-malformed-keyid": _envelope(ident, good, keyid="k"),
        "another-devices-report": _envelope(ident, rfc8785.dumps(_payload(ident, device=other.device_id))),
        "indented": _envelope(ident, json.dumps(json.loads(good), indent=1, sort_keys=True).encode()),
        "unsorted-keys": _envelope(ident, json.dumps(dict(reversed(json.loads(good).items())),
                                                     separators=(",", ":")).encode()),
        "integral-float": _envelope(ident, good.replace(b'"p99":4', b'"p99":4.0')),
        "exponent-float": _envelope(ident, good.replace(b'"p50":1.5', b'"p50":1.5e0')),
        "small-float-python-form": _envelope(ident, good.replace(b'"p50":1.5', b'"p50":1e-05')),
        "small-float-canonical-form": _envelope(ident, good.replace(b'"p50":1.5', b'"p50":0.00001')),
        "negative-zero": _envelope(ident, good.replace(b'"errors":0', b'"errors":-0')),
        "huge-int": _envelope(ident, good.replace(b'"counter":3', b'"counter":9007199254740993')),
        "duplicate-key": _envelope(ident, good.replace(b'{"conditions":', b'{"counter":3,"conditions":', 1)),
        "escaped-ascii": _envelope(ident, good.replace(b"Serving", b"Serv\\u0069ng", 1)),
        "raw-non-ascii-message": _envelope(ident, rfc8785.dumps(_payload(ident, conditions=[
            {**_payload(ident)["conditions"][0], "message": "caf\u00e9 \U0001f600"}]))),
        "nan": _envelope(ident, good.replace(b'"inferences":5', b'"inferences":NaN')),
        "not-json": _envelope(ident, text[:-1].encode()),
        "deep": _envelope(ident, b"[" * 5000 + b"]" * 5000),
    }


def test_prechecked_verification_is_verify_report(tmp_path):
    ident, other = make_identity(tmp_path), make_identity(tmp_path, "pa-robot-002")
    cases = _cases(ident, other)
    for name, envelope in cases.items():
        for key, device in ((ident.public_key, ident.device_id), (other.public_key, ident.device_id),
                            (ident.public_key, None), ("ed25519:xyz", ident.device_id)):
            want = _outcome(lambda: verify_report(envelope, key, device))
            assert _outcome(lambda: Prechecked(envelope).verify(key, device)) == want, (name, key, device)
            assert _outcome(lambda: Prechecked(envelope, precheck=False).verify(key, device)) == want
    # The cases mean what they say (with the device's own key and id).
    accepted = {n for n, envelope in cases.items()
                if _outcome(lambda: verify_report(envelope, ident.public_key, ident.device_id))[0] == "accepted"}
    assert accepted == {"good", "valid-signature-wrong-keyid-hint", "valid-signature-malformed-keyid",
                        "small-float-canonical-form", "raw-non-ascii-message"}
    codes = {n: _outcome(lambda: verify_report(e, ident.public_key, ident.device_id))[0] for n, e in cases.items()}
    assert codes["tampered-payload"] == codes["signed-by-a-stranger-under-its-own-keyid"] == "E663"
    assert codes["another-devices-report"] == "E664"
    for name in ("indented", "unsorted-keys", "integral-float", "exponent-float", "small-float-python-form",
                 "negative-zero", "huge-int", "duplicate-key", "escaped-ascii", "nan", "not-json", "deep"):
        assert codes[name] == "E662", name


def test_a_non_canonical_payload_is_refused_on_the_fast_path_too(tmp_path):
    ident = make_identity(tmp_path)
    good = rfc8785.dumps(_payload(ident))
    assert _plainly_canonical(good) == json.loads(good)  # the common case is decided fast
    for bad in (json.dumps(json.loads(good), indent=1).encode(), good.replace(b'"p99":4', b'"p99":4.0'),
                good.replace(b'"p50":1.5', b'"p50":1e-05'), good + b" "):
        assert _plainly_canonical(bad) is None
        with pytest.raises(ReportError) as err:
            Prechecked(_envelope(ident, bad)).verify(ident.public_key, ident.device_id)
        assert err.value.code == "E662" and "canonical" in err.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**60, max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_what_the_fast_check_calls_canonical_rfc8785_writes_byte_for_byte(value):
    texts = {json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
             json.dumps(value, sort_keys=True, separators=(",", ":")), json.dumps(value)}
    try:
        canonical = rfc8785.dumps(value)
        texts.add(canonical.decode())
    except rfc8785.CanonicalizationError:
        canonical = None
    for text in texts:
        payload = text.encode("utf-8", "surrogatepass")
        if _plainly_canonical(payload) is not None:
            assert canonical is not None and rfc8785.dumps(json.loads(text)) == payload, text


# -- the worker processes of `status` at a dir: store -----------------------------------------

def test_workers_reading_a_store_give_what_one_process_gives(tmp_path, monkeypatch):
    import edgefleet.pipeline.status as status_module
    from edgefleet.agent.identity import enroll
    from edgefleet.agent.status_remote import LOG_FORMAT, push_reports, read_reports
    from edgefleet.rollout.sources import list_report_devices, read_object_logs
    from tests.rollout_support import T0, hours, make_fleet

    fleet = make_fleet(tmp_path, {"site-a": 4, "site-b": 12})
    fleet.compile(T0)
    devices = sorted(fleet.identities)
    for device in devices:
        fleet.report(device, T0 + hours(0.2))
        fleet.report(device, T0 + hours(0.4), update="ProbeFailed" if device.endswith("3") else "Committed")
    stranger = enroll(tmp_path / "stranger", devices[1])
    fleet.report(devices[1], T0 + hours(0.5), identity=stranger)  # forged: a key the inventory does not hold
    fleet.report(devices[2], T0 + hours(0.5), as_device=devices[3])  # 2's report in 3's log
    outsider = enroll(tmp_path / "outsider", "dev-9999")
    fleet.report("dev-9999", T0 + hours(0.2), identity=outsider, generation=("ab" * 32, 1))  # unenrolled
    fleet.report(devices[4], T0 + hours(0.5), generation=("cd" * 32, 7))  # a generation never given
    store = tmp_path / "store"
    remote = f"dir:{store}"
    by_device: dict[str, list[bytes]] = {}
    for device, envelope in fleet.envelopes:
        by_device.setdefault(device, []).append(envelope)
    for device, envelopes in by_device.items():
        push_reports(remote, device, envelopes)  # agent-io's own delivery
    # A log entry that is no report at all (agent-io's reader leaves it out), and a damaged log.
    log = json.loads((store / f"status/{devices[5]}.json").read_bytes())
    log["reports"].insert(1, base64.b64encode(b"not an envelope").decode())
    (store / f"status/{devices[5]}.json").write_bytes(rfc8785.dumps(log))
    (store / f"status/{devices[6]}.json").write_bytes(b'{"format": "' + LOG_FORMAT.encode() + b'", "rep')
    (store / "status/loop-0001.json").symlink_to("loop-0001.json")  # unreadable: no log, as agent-io reads it
    os.mkfifo(store / "status/fifo-0001.json")  # planted in the store: opened without waiting for a writer
    (store / "status/dir-0001.json").mkdir()
    (store / "status/huge-0001.json").write_bytes(b"[" + b" " * 64 * MAX_ENVELOPE + b"]")  # read no further than the cap
    (store / "status/link-0001.json").symlink_to(f"{devices[7]}.json")  # followed; then left out: the log says its device is another

    listed = list_report_devices(remote)
    assert listed == sorted([*by_device, "loop-0001", "fifo-0001", "dir-0001", "huge-0001", "link-0001"])
    fast = [(d, e) for d, e in read_object_logs(remote, listed)]
    assert (devices[5], b"not an envelope") in fast
    assert [p for p in fast if p[1] != b"not an envelope"] == list(read_reports(remote))

    one = status_module.run_status(fleet.root, remote, T0 + hours(1), desired=fleet.desired, jobs=1)
    monkeypatch.setattr(status_module, "PARALLEL_FROM", 0)
    two = status_module.run_status(fleet.root, remote, T0 + hours(1), desired=fleet.desired, jobs=2)
    assert not [d for d in one.diagnostics + two.diagnostics if d.is_error]
    assert two.verified.latest == one.verified.latest
    assert two.verified.rejected == one.verified.rejected
    assert two.verified.accepted == one.verified.accepted == 2 * len(devices) - 2  # 6's log is unreadable
    codes = sorted((r.device, r.code) for r in two.verified.rejected)
    assert codes == sorted([(devices[1], "E663"), (devices[3], "E664"), ("dev-9999", "E702"),
                            (devices[4], "E703")])
    assert (devices[6], "meter-digits") not in two.verified.latest
