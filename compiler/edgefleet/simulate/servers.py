"""The simulation's servers, all on 127.0.0.1: a real `git daemon` (desired state and status
remote), byte-counting TCP proxies in front of it (git daemon counts nothing), and static HTTP
servers for the tree mirror and the artifact store, whose faults are real: slow bodies,
bodies cut off before their declared length (bytes on a real socket, not a flag to the agent).
"""

from __future__ import annotations

import functools
import http.server
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    return free_port()


class GitDaemon:
    """`git daemon` serving every repository under `base` (upload-pack and receive-pack)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "GitDaemon":
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", f"--listen={LOOPBACK}", f"--port={self.port}",
             f"--base-path={self.base}", "--export-all", "--enable=upload-pack", "--enable=receive-pack",
             str(self.base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise OSError("git daemon did not start listening on 127.0.0.1")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


class CountingProxy:
    """127.0.0.1:PORT -> 127.0.0.1:target, counting the bytes the server sent to clients."""

    def __init__(self, target_port: int):
        self.target = (LOOPBACK, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.server_bytes = 0        # server -> client
        self.client_bytes = 0        # client -> server
        self.connections = 0         # one per git fetch / ls-remote, one per HTTP GET without keep-alive
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="sim-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=30)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if from_server:
                        self.server_bytes += len(data)
                    else:
                        self.client_bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def served(self) -> int:
        with self._lock:
            return self.server_bytes

    def close(self) -> None:
        self._closed = True
        self.sock.close()


class StoreFaults:
    """What the store server does wrong right now (set by the fault schedule, read per request)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slow_s = 0.0            # extra seconds spread over each blob body
        self.truncate = 0            # the next N blob bodies are cut off at half their length
        self.slowed = 0
        self.truncated = 0
        self.requests = 0
        self.bytes_sent = 0

    def take_truncate(self) -> bool:
        with self.lock:
            if self.truncate > 0:
                self.truncate -= 1
                self.truncated += 1
                return True
            return False


def send_file_range(handler: http.server.BaseHTTPRequestHandler, path: Path) -> bytes | None:
    """Answer a GET for the file at `path` as a static server does, `Range: bytes=N-` included:
    send the status line and headers, return the body to write (the caller may cut it short);
    None once a 404 or 416 has been sent."""
    if not path.is_file():
        handler.send_error(404)
        return None
    data = path.read_bytes()
    start = 0
    rng = handler.headers.get("Range")
    if rng and (m := re.match(r"bytes=(\d+)-$", rng)):
        start = int(m.group(1))
        if start >= len(data):
            handler.send_error(416)
            return None
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        handler.send_response(200)
    body = data[start:]
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    return body


class _Handler(http.server.SimpleHTTPRequestHandler):
    faults: StoreFaults

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        faults = self.faults
        with faults.lock:
            faults.requests += 1
        path = Path(self.translate_path(self.path))
        body = send_file_range(self, path)
        if body is None:
            return
        blob = "/blobs/" in self.path or "/sha256/" in self.path or len(body) > 4096
        if blob and faults.take_truncate():
            body = body[: len(body) // 2]
            self.close_connection = True
        slow = faults.slow_s if blob else 0.0
        if slow > 0:
            with faults.lock:
                faults.slowed += 1
            chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
            for chunk in chunks:
                time.sleep(slow / len(chunks))
                self.wfile.write(chunk)
        else:
            self.wfile.write(body)
        with faults.lock:
            faults.bytes_sent += len(body)


class StaticServer:
    """A threading HTTP server of `directory` on 127.0.0.1 with `StoreFaults`."""

    def __init__(self, directory: Path, faults: StoreFaults | None = None):
        self.faults = faults or StoreFaults()
        handler = type("SimHandler", (_Handler,), {"faults": self.faults})
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0),
                                                      functools.partial(handler, directory=str(directory)))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="sim-http")

    def start(self) -> "StaticServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
