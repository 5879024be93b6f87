"""The local Open Inference Protocol API: real onnxruntime, real clients over TCP and a unix socket."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import subprocess

import numpy as np
import pytest

from agent_io_support import METER_MODEL, OnnxRunner, Registry
from edgefleet.agent.serving import InferenceServer, ServingError, connect, parse_listen, request

DIGIT = np.linspace(0, 16, 64, dtype=np.float32).reshape(1, 1, 8, 8)


@pytest.fixture(scope="module")
def runner():
    return OnnxRunner(METER_MODEL)


@pytest.fixture
def registry(runner):
    return Registry({"meter-digits": runner})


@pytest.fixture
def tcp_server(registry):
    seen = []
    server = InferenceServer(registry, "127.0.0.1:0", observer=lambda m, ms, ok: seen.append((m, ok)))
    server.seen = seen
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unix_server(registry, tmp_path):
    server = InferenceServer(registry, f"unix:{tmp_path / 'infer.sock'}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _infer_body(data=None, shape=(1, 1, 8, 8)):
    return {"id": "r1", "inputs": [{"name": "image", "shape": list(shape), "datatype": "FP32",
                                    "data": DIGIT.ravel().tolist() if data is None else data}]}


def _check_served_like_the_runtime(runner, address):
    status, body = request(address, "POST", "/v2/models/meter-digits/infer", _infer_body())
    assert status == 200, body
    expected = runner.infer({"image": DIGIT})["logits"]
    [out] = body["outputs"]
    assert (out["name"], out["shape"], out["datatype"]) == ("logits", [1, 10], "FP32")
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(1, 10), expected, rtol=1e-6)
    assert body["model_name"] == "meter-digits" and body["model_version"] == "1.1.0" and body["id"] == "r1"
    return int(np.argmax(expected))


def test_health_metadata_and_inference_over_tcp(tcp_server, runner):
    addr = tcp_server.address
    assert addr.startswith("127.0.0.1:") and not addr.endswith(":0")
    assert request(addr, "GET", "/v2/health/live") == (200, {"live": True})
    assert request(addr, "GET", "/v2/health/ready") == (200, {"ready": True})
    assert request(addr, "GET", "/v2")[1]["name"] == "edgefleet-agent"
    status, meta = request(addr, "GET", "/v2/models/meter-digits")
    assert status == 200 and meta["name"] == "meter-digits" and meta["versions"] == ["1.1.0"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert request(addr, "GET", "/v2/models/meter-digits/ready") == (200, {"name": "meter-digits", "ready": True})
    assert request(addr, "GET", "/v2/models/meter-digits/versions/1.1.0/ready")[0] == 200
    _check_served_like_the_runtime(runner, addr)
    assert tcp_server.seen == [("meter-digits", True)]


def test_nested_data_and_a_batch_give_the_same_answers(tcp_server, runner):
    batch = np.concatenate([DIGIT, DIGIT[:, :, ::-1, :]])
    status, body = request(tcp_server.address, "POST", "/v2/models/meter-digits/versions/1.1.0/infer",
                           _infer_body(batch.tolist(), shape=(2, 1, 8, 8)))
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(2, 10),
                               runner.infer({"image": batch})["logits"], rtol=1e-6)


def test_inference_over_a_unix_socket(unix_server, runner, tmp_path):
    path = tmp_path / "infer.sock"
    assert unix_server.address == f"unix:{path}"
    assert stat.S_ISSOCK(os.lstat(path).st_mode) and stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    assert request(unix_server.address, "GET", "/v2/health/ready") == (200, {"ready": True})
    _check_served_like_the_runtime(runner, unix_server.address)
    unix_server.stop()
    assert not path.exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_the_unix_socket(unix_server, tmp_path):
    out = subprocess.run(["curl", "-s", "--unix-socket", str(tmp_path / "infer.sock"), "-H",
                          "Content-Type: application/json", "-d", json.dumps(_infer_body()),
                          "http://localhost/v2/models/meter-digits/infer"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["outputs"][0]["shape"] == [1, 10]


def test_keep_alive_serves_many_requests_on_one_connection(tcp_server):
    conn = connect(tcp_server.address)
    try:
        for _ in range(5):
            conn.request("POST", "/v2/models/meter-digits/infer", body=json.dumps(_infer_body()),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["outputs"]
    finally:
        conn.close()


@pytest.mark.parametrize("path,body,status,words", [
    ("/v2/models/nope", None, 404, "no model named"),
    ("/v2/models/nope/infer", {}, 404, "no model named"),
    ("/v2/models/meter-digits/versions/9.9.9", None, 404, "no version"),
    ("/v2/elsewhere", None, 404, "no such endpoint"),
    ("/v2/models/meter-digits/infer", b"{not json", 400, "not JSON"),
    ("/v2/models/meter-digits/infer", b'{"inputs": NaN}', 400, "not JSON"),
    ("/v2/models/meter-digits/infer", b"[" * 100_000, 400, "nested too deeply"),
    ("/v2/models/meter-digits/infer", {"inputs": []}, 400, "inputs"),
    ("/v2/models/meter-digits/infer", _infer_body(shape=(1, 64)), 400, "shape"),
    ("/v2/models/meter-digits/infer", _infer_body(data=[1.0] * 63), 400, "63 values"),
    ("/v2/models/meter-digits/infer", _infer_body(data=["x"] * 64), 400, "numbers"),
    ("/v2/models/meter-digits/infer", {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "INT64",
                                                   "data": [1] * 64}]}, 400, "FP32"),
    ("/v2/models/meter-digits/infer", {"inputs": [{"name": "other", "shape": [1], "datatype": "FP32",
                                                   "data": [1]}]}, 400, "takes inputs"),
    ("/v2/models/meter-digits/infer", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                   "data": ["a"]}]}, 400, "BYTES"),
    ("/v2/models/meter-digits/infer", {**_infer_body(), "outputs": [{"name": "nope"}]}, 400, "no output"),
    ("/v2/models/meter-digits/infer", {**_infer_body(), "extra": 1}, 400, "unknown request field"),
], ids=["unknown-model", "infer-unknown-model", "unknown-version", "unknown-path", "bad-json", "nan", "deep", "no-inputs",
        "wrong-shape", "too-few-values", "strings", "wrong-datatype", "wrong-name", "bytes", "unknown-output",
        "unknown-field"])
def test_bad_requests_get_an_error_object(tcp_server, path, body, status, words):
    method = "GET" if body is None else "POST"
    got, answer = request(tcp_server.address, method, path, body)
    assert got == status, answer
    assert set(answer) == {"error"} and words in answer["error"]
    assert tcp_server.seen == []  # refused requests are not inferences


def test_an_oversize_body_is_refused_unread(registry):
    with InferenceServer(registry, "127.0.0.1:0", max_body=1024) as server:
        status, body = request(server.address, "POST", "/v2/models/meter-digits/infer", b"x" * 4096)
        assert status == 413 and "more than 1024" in body["error"]
        # A POST without Content-Length: a raw socket, as http.client always sends one.
        host, port = server.address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v2/models/meter-digits/infer HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):  # the server closes after an error
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 411") and b'"error"' in reply


def test_not_ready_and_model_failures(runner):
    class Broken:
        def metadata(self):
            return runner.metadata()

        def infer(self, inputs):
            raise RuntimeError("accelerator gone")
    seen = []
    registry = Registry({"meter-digits": Broken()}, ready=False)
    with InferenceServer(registry, "127.0.0.1:0", observer=lambda m, ms, ok: seen.append(ok)) as server:
        assert request(server.address, "GET", "/v2/health/ready") == (503, {"ready": False})
        assert request(server.address, "GET", "/v2/health/live") == (200, {"live": True})
        assert request(server.address, "GET", "/v2/models/meter-digits/ready") == (
            503, {"name": "meter-digits", "ready": False})
        status, body = request(server.address, "POST", "/v2/models/meter-digits/infer", _infer_body())
        assert status == 503 and "not ready" in body["error"]
        registry.is_ready = True
        status, body = request(server.address, "POST", "/v2/models/meter-digits/infer", _infer_body())
        assert status == 500 and "accelerator gone" in body["error"]
    assert seen == [False]


def test_connections_past_the_cap_get_503(registry):
    with InferenceServer(registry, "127.0.0.1:0", max_connections=1, timeout=5) as server:
        held = connect(server.address)
        held.request("GET", "/v2/health/live")
        assert held.getresponse().read()  # keep-alive: this connection holds the only slot
        try:
            status, body = request(server.address, "GET", "/v2/health/live")
            assert status == 503 and "too many" in body["error"]
        finally:
            held.close()


@pytest.mark.parametrize("listen,code", [("0.0.0.0:8000", "E675"), ("10.1.2.3:8000", "E675"), ("[::]:8000", "E675"),
                                         ("example.com:80", "E676"), ("127.0.0.1", "E676"),
                                         ("127.0.0.1:99999", "E676"), ("unix:", "E676"), ("", "E676")])
def test_non_loopback_and_malformed_addresses_are_refused(registry, listen, code):
    with pytest.raises(ServingError) as err:
        InferenceServer(registry, listen)
    assert err.value.code == code


def test_loopback_forms_and_the_explicit_remote_flag():
    assert parse_listen("localhost:0") == ("tcp", ("127.0.0.1", 0))
    assert parse_listen("[::1]:8000") == ("tcp", ("::1", 8000))
    assert parse_listen("0.0.0.0:8000", allow_remote=True) == ("tcp", ("0.0.0.0", 8000))


def test_a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_not(registry, tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a SIGKILLed agent leaves
    with InferenceServer(registry, f"unix:{path}") as server:
        assert request(server.address, "GET", "/v2/health/live")[0] == 200
        with pytest.raises(ServingError) as err:
            InferenceServer(registry, f"unix:{path}").start()
        assert err.value.code == "E677"
    plain = tmp_path / "file"
    plain.write_text("keep me")
    with pytest.raises(ServingError):
        InferenceServer(registry, f"unix:{plain}").start()
    assert plain.read_text() == "keep me"


def test_a_port_in_use_is_a_clear_error(tcp_server, registry):
    with pytest.raises(ServingError) as err:
        InferenceServer(registry, tcp_server.address).start()
    assert err.value.code == "E677"


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from edgefleet.agent.serving import RequestError, infer_tensors  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                     max_leaves=40)
_tensor = st.fixed_dictionaries({"name": st.sampled_from(["image", "x", 3]),
                                 "shape": st.sampled_from([[1, 1, 8, 8], [64], [1, -1], "x", [2**40]]),
                                 "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "FP16", "BYTES", "??"]),
                                 "data": _json})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_json, st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=3)})))
def test_any_request_body_is_answered_or_refused_cleanly(runner, body):
    try:
        out = infer_tensors(runner, body)
    except RequestError as exc:
        assert 400 <= exc.status < 600 and exc.message
    else:
        assert out["outputs"][0]["shape"][1:] == [10]
