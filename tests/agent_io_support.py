"""Fixtures and helpers for agent-io tests: device identities, reports, a real ONNX runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefleet.agent.conditions import Condition
from edgefleet.agent.identity import DeviceIdentity, enroll
from edgefleet.agent.report import Generation, Report, sign_report

REPO = Path(__file__).resolve().parents[1]
METER_MODEL = REPO / "fleet/models/meter-digits/1.1.0/full.onnx"
T0 = "2026-12-01T10:00:00Z"


def make_identity(tmp_path: Path, device_id: str = "pa-robot-001") -> DeviceIdentity:
    return enroll(tmp_path / f"state-{device_id}", device_id)


def make_report(device: str, counter: int, **extra) -> Report:
    fields = dict(device=device, counter=counter, observed_at=T0,
                  generation=Generation(target_sha256="ab" * 32, release_counter=3),
                  conditions=[Condition(type="Ready", status="True", reason="Serving",
                                        message="meter-digits 1.1.0", observed_generation="ab" * 32,
                                        last_transition=T0)])
    fields.update(extra)
    return Report(**fields)


def signed(identity: DeviceIdentity, counter: int, **extra) -> bytes:
    return sign_report(make_report(identity.device_id, counter, **extra), identity)


class OnnxRunner:
    """A real onnxruntime session behind the serving Runner interface (test helper)."""

    def __init__(self, path: Path = METER_MODEL, name: str = "meter-digits", version: str = "1.1.0"):
        import onnxruntime as ort

        self.name, self.version = name, version
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def metadata(self) -> dict:
        def tensors(items):
            return [{"name": t.name, "datatype": _DATATYPES[t.type],
                     "shape": [d if isinstance(d, int) else -1 for d in t.shape]} for t in items]
        return {"name": self.name, "versions": [self.version], "platform": "onnxruntime_onnx",
                "inputs": tensors(self.session.get_inputs()), "outputs": tensors(self.session.get_outputs())}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs)))


class Registry:
    def __init__(self, runners: dict, ready: bool = True):
        self.runners, self.is_ready = runners, ready

    def models(self) -> dict:
        return dict(self.runners)

    def ready(self) -> bool:
        return self.is_ready


_DATATYPES = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(float16)": "FP16",
              "tensor(int32)": "INT32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
              "tensor(double)": "FP64", "tensor(bool)": "BOOL"}


# -- a real git server on 127.0.0.1 ----------------------------------------------------------

import contextlib
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def git_daemon(base: Path, port: int | None = None):
    """`git daemon` serving every repository under `base` on 127.0.0.1, pushes allowed.

    Yields the base URL (git://127.0.0.1:PORT); stopped even when the test fails.
    """
    port = port or free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                             "--listen=127.0.0.1", f"--port={port}", f"--base-path={base}", "--informative-errors",
                             str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"git daemon did not start: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def bare_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


@contextlib.contextmanager
def git_http_backend(base: Path):
    """Smart HTTP git (`git http-backend` as CGI) for the repositories under `base`, on 127.0.0.1.

    A minimal CGI bridge on the stdlib HTTP server; pushes are enabled (http.receivepack).
    Yields the base URL (http://127.0.0.1:PORT); stopped even when the test fails.
    """
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class CGI(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self._run()

        def do_POST(self):
            self._run()

        def _run(self):
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = _dechunk(self.rfile)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
                   "GIT_PROJECT_ROOT": str(base), "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command,
                   "PATH_INFO": path, "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1", "REMOTE_USER": "device",
                   "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            out = subprocess.run(["git", "-c", "http.receivepack=true", "http-backend"], input=body, env=env,
                                 capture_output=True, timeout=120).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.split(b"\r\n"):
                name, _, value = line.decode().partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), CGI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _dechunk(rfile) -> bytes:
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            rfile.readline()
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()
