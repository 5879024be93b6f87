"""Real parts for the device-agent tests: a built store, a desired-state git repository
compiled by the real compiler from the example fleet, a real `git daemon` and real HTTP
servers on 127.0.0.1, and the invariant every crash test checks after a restart.

The example rollout's maintenance window (hospital carts switch only at night) and spread
are removed from the test fleet, so a device switches when the test publishes; the
activation logic itself is the rollouts engineer's and tested there.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILER = ROOT / "compiler"
DEVICE = "sm-cart-001"          # medical-cart-cpu (onnxruntime CPU), wave "half" of meter-digits-1-1
V1, V2 = "1.0.0", "1.1.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


class DesiredRepo:
    """A fleet copy and the git repository its signed desired state is committed to."""

    def __init__(self, base: Path, store: Path, keys: Path, fleet_src: Path, keep_activation: bool = False):
        self.base = Path(base)
        self.store, self.keys = Path(store), Path(keys)
        self.fleet = self.base / "fleet"
        shutil.copytree(fleet_src, self.fleet, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
        rollout = self.fleet / "rollouts" / "meter-digits-1-1.yaml"
        text = rollout.read_text()
        if not keep_activation:
            text = re.sub(r"(?m)^  spread: .*\n", "", text)
            text = re.sub(r"(?m)^  maintenance:.*\n(?:    .*\n)+", "", text)
        rollout.write_text(text)
        self.repo = self.base / "desired"
        self.repo.mkdir()
        git("init", "-q", cwd=self.repo)
        git("config", "uploadpack.allowFilter", "true", cwd=self.repo)
        git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=self.repo)
        self.tree = self.repo / "tree"
        self.published: list[dict] = []

    @property
    def root(self) -> Path:
        return self.tree / "metadata" / "1.root.json"

    def set_wave(self, wave: int) -> None:
        rollout = self.fleet / "rollouts" / "meter-digits-1-1.yaml"
        rollout.write_text(re.sub(r"current_wave: \d+", f"current_wave: {wave}", rollout.read_text()))

    def publish(self, wave: int | None = None, store: Path | None = None) -> dict:
        """Compile the fleet and commit the tree to the desired-state branch; return this device's state."""
        from edgefleet.cli import main

        if wave is not None:
            self.set_wave(wave)
        code = main(["compile", str(self.fleet), "--out", str(self.tree), "--keys", str(self.keys),
                     "--store", str(store or self.store), "--commit", "desired-state"])
        assert code == 0, "edgefleet compile failed"
        state = self.device_state()
        self.published.append(state)
        return state

    def commit(self, message: str) -> None:
        """Commit the tree as it is now (e.g. after a test tampered with it) to the branch."""
        from datetime import datetime, timezone

        from edgefleet.desired.gitio import commit_tree
        from edgefleet.pipeline.compile import published_files

        commit_tree(self.tree, "desired-state", message, datetime.now(timezone.utc), files=published_files(self.tree))

    def snapshot(self, dest: Path) -> Path:
        shutil.copytree(self.tree, dest)
        return dest

    def restore(self, snapshot: Path) -> None:
        shutil.rmtree(self.tree)
        shutil.copytree(snapshot, self.tree)

    def device_state(self, device: str = DEVICE) -> dict:
        """The device's current desired state, as TUF resolves it in the tree (not by file times:
        the publisher keeps an unchanged older version's file as it was)."""
        from datetime import datetime, timezone

        from edgefleet.signing.verify import verify_device

        verified = verify_device(self.tree, device, self.root.read_bytes(), datetime.now(timezone.utc))
        return json.loads(verified.data)

    def allowed_digests(self) -> set[str]:
        out = set()
        for state in self.published:
            for w in state["workloads"]:
                for ref in (w["run"], w.get("fallback")):
                    if ref:
                        out.add(ref["artifact"]["digest"])
        return out


@contextlib.contextmanager
def git_daemon(base: Path, port: int | None = None, receive: bool = False):
    """`git daemon` on 127.0.0.1 serving every repository under `base`; stopped on exit.

    `receive=True` also accepts pushes (the status remote; its pre-receive hook decides)."""
    port = port or free_port()
    extra = ["--enable=receive-pack"] if receive else []
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
                             f"--base-path={base}", "--export-all", "--enable=upload-pack", *extra, str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}", port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with `Range: bytes=N-` support; `truncate_once` breaks one body off mid-way."""

    truncate: set[str] = set()
    requests: list[tuple[str, str | None]] = []
    bytes_sent = 0

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        from edgefleet.simulate.servers import send_file_range

        path = Path(self.translate_path(self.path))
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = send_file_range(self, path)
        if body is None:
            return
        name = path.name
        if name in type(self).truncate:
            type(self).truncate.discard(name)
            body = body[: len(body) // 2]
            self.close_connection = True
        type(self).bytes_sent += len(body)
        self.wfile.write(body)


class GzipHandler(RangeHandler):
    """Static files, gzip-compressed on the fly for a client that accepts it (as nginx `gzip on`,
    or a CDN compressing JSON); `bomb` maps a file name to a gzip body served instead of it."""

    bomb: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802
        path = Path(self.translate_path(self.path))
        if "gzip" not in (self.headers.get("Accept-Encoding") or "") or self.headers.get("Range"):
            return super().do_GET()
        type(self).requests.append((self.path, "gzip"))
        if not path.is_file():
            self.send_error(404)
            return
        body = type(self).bomb.get(path.name) or gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
        if path.name in type(self).truncate:
            type(self).truncate.discard(path.name)
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        type(self).bytes_sent += len(body)
        self.wfile.write(body)


@contextlib.contextmanager
def http_server(directory: Path, handler_class: type[RangeHandler] = RangeHandler):
    handler = type("Handler", (handler_class,), {"truncate": set(), "requests": [], "bytes_sent": 0, "bomb": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_AGENT_TEST_")}
    env["PYTHONPATH"] = str(COMPILER) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def agent_args(state: Path, remote: str, root: Path, store: Path | str, *extra: str) -> list[str]:
    return ["agent", "run", "--state-dir", str(state), "--device", DEVICE, "--remote", remote, "--root", str(root),
            "--store", str(store), "--once", "--soak", "0.2s", "--confirm-inferences", "5", *extra]


def run_agent(state: Path, remote: str, root: Path, store: Path | str, *extra: str, env: dict | None = None,
              timeout: float = 120, subprocess_: bool = False) -> subprocess.CompletedProcess:
    """`edgefleet agent run --once ...`: in this process (the same CLI code, no start-up cost),
    or as a real process (`subprocess_=True`, for kills)."""
    args = agent_args(state, remote, root, store, *extra)
    if subprocess_:
        return subprocess.run([sys.executable, "-m", "edgefleet", *args], env=agent_env(**(env or {})),
                              capture_output=True, text=True, timeout=timeout)
    return cli_in_process(args, env or {})


def cli_in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    import io

    from edgefleet.cli import main
    from edgefleet.simulate.agents import scoped_env

    stale = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("EDGEFLEET_AGENT_TEST_") and k not in env}
    out, err = io.StringIO(), io.StringIO()
    try:
        with scoped_env(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        os.environ.update(stale)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def agent_state(state: Path) -> dict:
    proc = cli_in_process(["agent", "state", "--state-dir", str(state), "--format", "json"], {})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_invariants(state: Path, allowed: set[str], serving_required: bool = True) -> dict:
    """After a restart: one active slot, a verified allowed artifact in it, a consistent journal, a passing probe."""
    from edgefleet.agent import journal, slots
    from edgefleet.agent.probe import load_golden, run_probe
    from edgefleet.agent.runner import load_runner

    j = journal.load(state / "journal.json")
    assert j.step == "idle" and j.install is None, f"journal not settled: {j.step}"
    active = slots.active_slot(state)
    links = [p for p in state.iterdir() if p.is_symlink()]
    assert [p.name for p in links] == (["current"] if active else []), f"stray links: {links}"
    if active is None:
        assert not serving_required, "no slot is active"
        return {"active": None}
    assert j.committed == active, f"active slot {active} is not the committed one ({j.committed})"
    info = slots.read_slot(state, active)  # checks every file's digest
    assert info is not None, f"active slot {active} is incomplete or corrupted"
    assert info.digest in allowed, f"slot {active} holds sha256:{info.digest}, never allowed"
    meta = info.meta
    runner = load_runner(info.path, meta, meta["runtime"], meta["runtime_config"])
    run_probe(runner, load_golden(info.path / slots.GOLDEN), meta["probe"], runs=3)
    return {"active": active, "version": meta["version"], "digest": info.digest}
