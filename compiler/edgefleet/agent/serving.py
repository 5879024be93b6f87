"""The local inference API: the REST subset of the Open Inference Protocol (KServe v2).

Applications written for Triton, OpenVINO Model Server or MLServer talk to it unchanged:

    GET  /v2                              server metadata
    GET  /v2/health/live                  200 {"live": true}
    GET  /v2/health/ready                 200 {"ready": true}, 503 while nothing can serve
    GET  /v2/models/{m}[/versions/{v}]            model metadata (name, versions, platform, inputs, outputs)
    GET  /v2/models/{m}[/versions/{v}]/ready      200 {"name", "ready": true}
    POST /v2/models/{m}[/versions/{v}]/infer      JSON tensors in, JSON tensors out

Tensors are `{"name", "shape", "datatype", "data"}` with data flat or nested (row-major);
outputs are flat. Errors are `{"error": "..."}` with 400 (bad request), 404 (no such
model or path), 411/413 (no length / too large), 503 (not ready, busy), 500 (the model
failed). BYTES tensors and the binary-data extension are not supported (400).

It listens on 127.0.0.1 (or [::1]) or a unix socket, never on another address unless the
caller passes `allow_remote=True` (the OIP has no authentication). Built on the standard
library's ThreadingHTTPServer: no dependency to install on a device, unix sockets
included, and inference is a blocking onnxruntime call, so a thread per connection fits.
What the stdlib leaves out is added here: a bounded body (`max_body`), a socket timeout
against slow clients, a cap on concurrent connections (503 past it), and strict JSON.
The probe and applications use the same path: `Runner.infer` behind `infer_tensors`.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import os
import re
import socket
import socketserver
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

SERVER_NAME = "edgefleet-agent"
MAX_BODY = 16 * 1024 * 1024
MAX_ELEMENTS = 4 * 1024 * 1024
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}
_MODEL_PATH = re.compile(r"^/v2/models/([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:/versions/([A-Za-z0-9][A-Za-z0-9.+_-]{0,127}))?"
                         r"(/ready|/infer)?$")


class Runner(Protocol):
    def metadata(self) -> dict: ...

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Registry(Protocol):
    def models(self) -> dict[str, Runner]: ...

    def ready(self) -> bool: ...


class ServingError(Exception):
    """The server cannot listen where asked: E675 non-loopback refused, E676 bad address, E677 socket in use."""

    def __init__(self, code: str, message: str, hint: str = ""):
        self.code, self.message, self.hint = code, message, hint
        super().__init__(f"error[{code}]: {message}")


class RequestError(Exception):
    """A request that gets an `{"error": ...}` answer with `status`."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


# -- listen addresses ------------------------------------------------------------------------

def parse_listen(listen: str, allow_remote: bool = False) -> tuple[str, Any]:
    """("tcp", (host, port)) or ("unix", path); only loopback unless `allow_remote`."""
    if not isinstance(listen, str) or not listen:
        raise ServingError("E676", "no listen address", "give 127.0.0.1:PORT or unix:PATH")
    if listen.startswith("unix:"):
        path = listen[5:]
        if not path or "\0" in path or len(os.fsencode(path)) > 100:
            raise ServingError("E676", f"invalid unix socket path {path!r}", "an absolute path of at most 100 bytes")
        return "unix", path
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})", listen)
    if not match or int(match.group(2)) > 65535:
        raise ServingError("E676", f"invalid listen address {listen!r}", "give 127.0.0.1:PORT ([::1]:PORT) or unix:PATH")
    host, port = match.group(1).strip("[]"), int(match.group(2))
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ServingError("E676", f"listen on an IP address, not the name {host!r}",
                           "give 127.0.0.1:PORT or unix:PATH") from exc
    if not addr.is_loopback and not allow_remote:
        raise ServingError("E675", f"refusing to serve on {listen}: not a loopback address",
                           "the inference API has no authentication; listen on 127.0.0.1, [::1] or a unix "
                           "socket (InferenceServer(..., allow_remote=True) is the explicit opt-in)")
    return "tcp", (str(addr), port)


# -- tensors ---------------------------------------------------------------------------------

def decode_tensor(spec: Any) -> tuple[str, np.ndarray]:
    """One OIP input tensor as (name, array); RequestError(400) on anything malformed."""
    if not isinstance(spec, dict):
        raise RequestError(400, "each input is an object with name, shape, datatype and data")
    unknown = set(spec) - {"name", "shape", "datatype", "data", "parameters"}
    if unknown:
        raise RequestError(400, f"unknown input field(s): {', '.join(sorted(unknown))[:200]}")
    name, shape, datatype, data = spec.get("name"), spec.get("shape"), spec.get("datatype"), spec.get("data")
    if not isinstance(name, str) or not name or len(name) > 256:
        raise RequestError(400, "an input needs a name")
    if not isinstance(shape, list) or len(shape) > 16 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape):
        raise RequestError(400, f"input {name!r}: shape is a list of non-negative integers")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise RequestError(400, f"input {name!r}: {count} elements, more than {MAX_ELEMENTS}")
    if datatype == "BYTES":
        raise RequestError(400, f"input {name!r}: BYTES tensors are not supported")
    if datatype not in DATATYPES:
        raise RequestError(400, f"input {name!r}: unknown datatype {str(datatype)[:32]!r} "
                                f"(one of {', '.join(DATATYPES)})")
    if not isinstance(data, list):
        raise RequestError(400, f"input {name!r}: data is a JSON array (flat or nested)")
    dtype = DATATYPES[datatype]
    try:
        raw = np.array(data)  # nested lists become dimensions; row-major order is the OIP's
    except (ValueError, TypeError, RecursionError) as exc:
        raise RequestError(400, f"input {name!r}: data is ragged or not numbers") from exc
    if raw.size != count:
        raise RequestError(400, f"input {name!r}: {raw.size} values for shape {shape} ({count} expected)")
    if raw.size and datatype == "BOOL" and raw.dtype.kind != "b":
        raise RequestError(400, f"input {name!r}: BOOL data is true or false")
    if raw.size and datatype != "BOOL" and raw.dtype.kind not in "iuf":
        raise RequestError(400, f"input {name!r}: {datatype} data are numbers (got {_kind(raw)})")
    if raw.size and dtype.kind in "iu":
        if raw.dtype.kind == "f" and not np.all(np.mod(raw, 1) == 0):
            raise RequestError(400, f"input {name!r}: {datatype} data are integers")
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise RequestError(400, f"input {name!r}: a value is out of range for {datatype}")
    with np.errstate(over="ignore", invalid="ignore"):
        array = raw.astype(dtype).reshape(shape)
    if dtype.kind == "f" and array.size and not np.isfinite(array).all():
        raise RequestError(400, f"input {name!r}: a value does not fit {datatype}")
    return name, array


def _kind(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "O": "mixed values or huge integers"}.get(array.dtype.kind,
                                                                                        str(array.dtype))


def encode_tensor(name: str, array: np.ndarray) -> dict:
    array = np.asarray(array)
    datatype = _DATATYPE_OF.get(array.dtype)
    if datatype is None:
        raise RequestError(500, f"output {name!r} has a type the protocol cannot carry ({array.dtype})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(500, f"output {name!r} holds NaN or infinity")
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def check_inputs(metadata: dict, inputs: dict[str, np.ndarray]) -> None:
    """Names, datatypes and shapes against the model's metadata (-1 matches any size)."""
    declared = {t["name"]: t for t in metadata.get("inputs", [])}
    if set(inputs) != set(declared):
        raise RequestError(400, f"the model takes inputs {sorted(declared)}, got {sorted(inputs)}")
    for name, array in inputs.items():
        want = declared[name]
        if want.get("datatype") and _DATATYPE_OF.get(array.dtype) != want["datatype"]:
            raise RequestError(400, f"input {name!r} is {want['datatype']}, got {_DATATYPE_OF.get(array.dtype)}")
        shape = want.get("shape")
        if shape is not None and (len(shape) != array.ndim or any(
                d not in (-1, None) and d != got for d, got in zip(shape, array.shape))):
            raise RequestError(400, f"input {name!r} has shape {list(shape)}, got {list(array.shape)}")


def infer_tensors(runner: Runner, body: dict) -> dict:
    """One OIP inference request (decoded JSON) through `runner`: the response body."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise RequestError(400, 'the request body is {"inputs": [tensor, ...]}')
    unknown = set(body) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise RequestError(400, f"unknown request field(s): {', '.join(sorted(unknown))[:200]}")
    inputs: dict[str, np.ndarray] = {}
    for spec in body["inputs"][:64]:
        name, array = decode_tensor(spec)
        if name in inputs:
            raise RequestError(400, f"input {name!r} given twice")
        inputs[name] = array
    metadata = runner.metadata()
    check_inputs(metadata, inputs)
    wanted = body.get("outputs")
    names = None
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                   for o in wanted):
            raise RequestError(400, 'outputs is a list of {"name": ...}')
        names = [o["name"] for o in wanted]
    try:
        results = runner.infer(inputs)
    except RequestError:
        raise
    except Exception as exc:  # the model or runtime failed: the client's request was fine
        raise RequestError(500, f"inference failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if names is not None:
        missing = [n for n in names if n not in results]
        if missing:
            raise RequestError(400, f"the model has no output(s) {missing}")
        results = {n: results[n] for n in names}
    versions = metadata.get("versions") or []
    response = {"model_name": metadata.get("name"), "model_version": versions[0] if versions else "",
                "outputs": [encode_tensor(n, a) for n, a in results.items()]}
    if isinstance(body.get("id"), str):
        response["id"] = body["id"][:256]
    return response


# -- the server ------------------------------------------------------------------------------

class InferenceServer:
    """The OIP endpoint for `registry`, on `listen` (`127.0.0.1:PORT`, port 0 picks one, or `unix:PATH`)."""

    def __init__(self, registry: Registry, listen: str, *, allow_remote: bool = False, max_body: int = MAX_BODY,
                 max_connections: int = 32, timeout: float = 10.0,
                 observer: Callable[[str, float, bool], None] | None = None, socket_mode: int = 0o660):
        self.registry = registry
        self.kind, self.target = parse_listen(listen, allow_remote)
        self.max_body, self.timeout, self.observer = max_body, timeout, observer
        self.max_connections, self.socket_mode = max_connections, socket_mode
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not started")
        if self.kind == "unix":
            return f"unix:{self.target}"
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> InferenceServer:
        handler = _handler_class(self)
        slots = threading.BoundedSemaphore(self.max_connections)
        if self.kind == "unix":
            _clear_stale_socket(self.target)
            old_umask = os.umask(0o177)  # the socket is made 0600, then opened to the group below
            try:
                server = _UnixServer(self.target, handler, slots)
            finally:
                os.umask(old_umask)
            os.chmod(self.target, self.socket_mode)
        else:
            host, port = self.target
            cls = _TCP6Server if ":" in host else _TCPServer
            try:
                server = cls((host, port), handler, slots)
            except OSError as exc:
                raise ServingError("E677", f"cannot listen on {host}:{port}: {exc.strerror}",
                                   "pick another port, or port 0 for any free one") from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgefleet-serving", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.kind == "unix":
            try:
                if stat.S_ISSOCK(os.lstat(self.target).st_mode):
                    os.unlink(self.target)
            except FileNotFoundError:
                pass

    def __enter__(self) -> InferenceServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # The request logic, apart from HTTP plumbing so the probe can reuse it.
    def handle(self, method: str, path: str, body: bytes | None) -> tuple[int, dict]:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/v2/health/live":
            return _get_only(method, 200, {"live": True})
        if path == "/v2/health/ready":
            ready = bool(self.registry.ready())
            return _get_only(method, 200 if ready else 503, {"ready": ready})
        if path == "/v2":
            return _get_only(method, 200, {"name": SERVER_NAME, "version": _version(), "extensions": []})
        match = _MODEL_PATH.fullmatch(path)
        if not match:
            raise RequestError(404, f"no such endpoint: {path[:200]}")
        name, version, action = match.groups()
        runner = self.registry.models().get(name)
        if runner is None:
            raise RequestError(404, f"no model named {name!r} is served here")
        metadata = runner.metadata()
        if version is not None and version not in (metadata.get("versions") or []):
            raise RequestError(404, f"model {name!r} has no version {version!r} here")
        if action is None:
            return _get_only(method, 200, metadata)
        if action == "/ready":
            ready = bool(self.registry.ready())
            return _get_only(method, 200 if ready else 503, {"name": name, "ready": ready})
        if method != "POST":
            raise RequestError(405, "infer takes POST")
        if not self.registry.ready():
            raise RequestError(503, "the device is not ready to serve")
        try:
            request = json.loads((body or b"").decode("utf-8"), parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the body is not JSON: {str(exc)[:200]}") from exc
        except RecursionError as exc:
            raise RequestError(400, "the body is nested too deeply") from exc
        started = time.perf_counter()
        try:
            response = infer_tensors(runner, request)
        except RequestError as exc:
            if exc.status >= 500:
                self._observe(name, (time.perf_counter() - started) * 1000, False)
            raise
        self._observe(name, (time.perf_counter() - started) * 1000, True)
        return 200, response

    def _observe(self, model: str, latency_ms: float, ok: bool) -> None:
        if self.observer is not None:
            try:
                self.observer(model, latency_ms, ok)
            except Exception:  # telemetry must never fail an inference
                pass


def _get_only(method: str, status: int, body: dict) -> tuple[int, dict]:
    if method != "GET":
        raise RequestError(405, "this endpoint takes GET")
    return status, body


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("edgefleet")
    except Exception:
        return "0"


def _handler_class(app: InferenceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = app.timeout

        def setup(self) -> None:
            super().setup()
            if self.connection.family in (socket.AF_INET, socket.AF_INET6):
                # Headers and body go out in separate writes: without NODELAY, Nagle's algorithm
                # and the client's delayed ACK add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def version_string(self) -> str:
            return SERVER_NAME

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            try:
                body = self._body() if method == "POST" else None
                status, payload = app.handle(method, self.path, body)
            except RequestError as exc:
                status, payload = exc.status, {"error": exc.message}
            except Exception as exc:  # a bug must still answer in the protocol's form
                status, payload = 500, {"error": f"internal error: {type(exc).__name__}"}
            self._send(status, payload)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise RequestError(411, "send the body with Content-Length (chunked is not supported)")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                raise RequestError(411, "a POST needs Content-Length")
            if int(length) > app.max_body:
                self.close_connection = True  # do not read it
                raise RequestError(413, f"the body is {length} bytes, more than {app.max_body}")
            return self.rfile.read(int(length))

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                self.close_connection = True

        def send_error(self, code, message=None, explain=None) -> None:  # stdlib errors in the OIP form too
            self.close_connection = True
            self._send(code, {"error": message or http.client.responses.get(code, "error")})

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - no per-request logging on a device
            pass

    return Handler


class _Bounded:
    """At most N connections at once; one more gets a quick 503 and is closed."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, slots: threading.BoundedSemaphore):
        self._slots = slots
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                body = b'{"error":"too many connections"}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _TCPServer(_Bounded, ThreadingHTTPServer):
    allow_reuse_address = True


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(_Bounded, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)  # BaseHTTPRequestHandler expects a (host, port) pair

    def server_bind(self):
        try:
            super().server_bind()
        except OSError as exc:
            raise ServingError("E677", f"cannot listen on unix:{self.server_address}: {exc.strerror}") from exc


def _clear_stale_socket(path: str) -> None:
    """Remove a socket left by a killed agent; refuse to touch anything that is not a socket or is in use."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServingError("E677", f"{path} exists and is not a socket", "remove it or pick another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a stale socket
        return
    finally:
        probe.close()
    raise ServingError("E677", f"another process serves on unix:{path}", "stop it, or pick another path")


# -- a client, for the probe and for tests ---------------------------------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def connect(address: str, timeout: float = 30.0) -> http.client.HTTPConnection:
    """An HTTP connection to an `InferenceServer.address` (TCP or `unix:PATH`)."""
    if address.startswith("unix:"):
        return _UnixConnection(address[5:], timeout)
    host, _, port = address.rpartition(":")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)


def request(address: str, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    """One request over a fresh connection: (status, decoded JSON body)."""
    conn = connect(address, timeout)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def as_path(address: str) -> Path | None:
    return Path(address[5:]) if address.startswith("unix:") else None
