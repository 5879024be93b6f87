"""Benchmark: the agent's reports, telemetry, status pushes and local inference API; prints JSON.

    python bench/bench_agent_io.py [--requests 300] [--reports 100] [--rows 5000]

- `report`: sign and verify rate of a typical report (DSSE, ed25519, canonical JSON), and its size.
- `telemetry`: `record_inference` rows/s (synchronous=NORMAL), `enqueue_report` + `next_counter`
  per second (synchronous=FULL), and the file size after `--rows` rows at a 256 KiB bound.
- `status_git`: seconds for `push_reports` of 1 and of `--reports` reports to a real `git daemon`
  on 127.0.0.1 whose pre-receive hook verifies each one, and for `read_reports` of all of them.
- `serving`: latency (p50/p99 ms) of KServe v2 `infer` on the example model
  (`fleet/models/meter-digits/1.1.0/full.onnx`, onnxruntime CPU) over TCP and over a unix
  socket with keep-alive, against `session.run` alone.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "compiler"))

from edgefleet.agent.conditions import Condition  # noqa: E402
from edgefleet.agent.identity import enroll  # noqa: E402
from edgefleet.agent.report import Generation, Latency, Report, TelemetrySummary, sign_report, verify_report  # noqa: E402
from edgefleet.agent.serving import InferenceServer, connect  # noqa: E402
from edgefleet.agent.status_remote import install_status_hook, push_reports, read_reports  # noqa: E402
from edgefleet.agent.telemetry import TelemetryStore  # noqa: E402

MODEL = ROOT / "fleet/models/meter-digits/1.1.0/full.onnx"
T0 = "2026-12-01T10:00:00Z"


def _report(device: str, counter: int) -> Report:
    return Report(device=device, counter=counter, observed_at=T0,
                  generation=Generation(target_sha256="ab" * 32, release_counter=3),
                  conditions=[Condition(type="Ready", status="True", reason="Serving", message="meter-digits 1.1.0",
                                        observed_generation="ab" * 32, last_transition=T0)],
                  telemetry=TelemetrySummary(inferences=1000, errors=2, latency_ms=Latency(p50=0.2, p95=0.4, p99=0.9)))


def bench_report(identity, n: int = 500) -> dict:
    reports = [_report(identity.device_id, c) for c in range(1, n + 1)]
    t = time.perf_counter()
    envs = [sign_report(r, identity) for r in reports]
    sign_s = time.perf_counter() - t
    t = time.perf_counter()
    for e in envs:
        verify_report(e, identity.public_key, identity.device_id)
    verify_s = time.perf_counter() - t
    return {"envelope_bytes": len(envs[0]), "sign_per_s": round(n / sign_s), "verify_per_s": round(n / verify_s)}


def bench_telemetry(tmp: Path, rows: int) -> dict:
    store = TelemetryStore(tmp / "t.db", max_rows=max(10, rows // 10), max_bytes=256 * 1024)
    t = time.perf_counter()
    for i in range(rows):
        store.record_inference(0.5 + (i % 7), ok=i % 50 != 0)
    rows_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(100):
        c = store.next_counter()
        store.enqueue_report(c, b"x" * 1500)
    durable_s = time.perf_counter() - t
    return {"rows": rows, "record_inference_per_s": round(rows / rows_s), "file_bytes": store.file_bytes(),
            "bound_bytes": 256 * 1024, "summary_inferences": store.summary().inferences,
            "enqueue_durable_per_s": round(100 / durable_s)}


def bench_status(tmp: Path, identity, n: int) -> dict:
    base = tmp / "srv"
    base.mkdir()
    repo = base / "status.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    install_status_hook(repo, {identity.device_id: identity.public_key})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                               "--listen=127.0.0.1", f"--port={port}", f"--base-path={base}", str(base)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"git://127.0.0.1:{port}/status.git"
        envs = [sign_report(_report(identity.device_id, c), identity) for c in range(1, n + 3)]
        work = tmp / "device-status.git"
        push_reports(url, identity.device_id, envs[:1], work_dir=work)
        t = time.perf_counter()
        push_reports(url, identity.device_id, envs[1:2], work_dir=work)
        one = time.perf_counter() - t
        t = time.perf_counter()
        push_reports(url, identity.device_id, envs[2:], work_dir=work)
        many = time.perf_counter() - t
        t = time.perf_counter()
        count = sum(1 for _ in read_reports(repo))
        read = time.perf_counter() - t
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    return {"push_1_s": round(one, 3), f"push_{n}_s": round(many, 3), "read_s": round(read, 3), "reports_read": count}


class _Runner:
    def __init__(self):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])

    def metadata(self) -> dict:
        return {"name": "meter-digits", "versions": ["1.1.0"], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}

    def infer(self, inputs):
        return {"logits": self.session.run(["logits"], inputs)[0]}


class _Registry:
    def __init__(self, runner):
        self.runner = runner

    def models(self):
        return {"meter-digits": self.runner}

    def ready(self):
        return True


def _percentiles(samples: list[float]) -> dict:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def bench_serving(tmp: Path, n: int) -> dict:
    runner = _Runner()
    image = np.linspace(0, 16, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    direct = []
    for _ in range(n):
        t = time.perf_counter()
        runner.infer({"image": image})
        direct.append(time.perf_counter() - t)
    body = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                   "data": image.ravel().tolist()}]})
    out = {"session_run": _percentiles(direct)}
    for label, listen in (("tcp", "127.0.0.1:0"), ("unix", f"unix:{tmp / 'infer.sock'}")):
        with InferenceServer(_Registry(runner), listen) as server:
            conn = connect(server.address)
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                conn.request("POST", "/v2/models/meter-digits/infer", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                samples.append(time.perf_counter() - t)
                assert resp.status == 200
            conn.close()
        out[label] = _percentiles(samples)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-agent-io-") as tmp_name:
        tmp = Path(tmp_name)
        identity = enroll(tmp / "state", "pa-robot-001")
        result = {"report": bench_report(identity), "telemetry": bench_telemetry(tmp, args.rows),
                  "status_git": bench_status(tmp, identity, args.reports),
                  "serving": bench_serving(tmp, args.requests)}
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
