"""Benchmark: what the device agent costs on the wire, in time and in memory; prints JSON.

    python bench/bench_agent.py [--store DIR] [--devices 100000] [--tmpdir /dev/shm]

Every byte is counted by a TCP proxy on 127.0.0.1 in front of the server (git daemon for
the git remote, a static HTTP server for the mirror and the artifact store), both
directions, protocol overhead included. Per tree (the example fleet, really built and
compiled; and a generated tree of N devices whose targets are the example device's real
desired states under generated ids, published with the real publisher):

- `full_clone`: `git clone` of the desired-state branch / GET of every file of the tree;
- `first_poll`: the agent's first cycle (a `tree:0` partial clone walked to the device's
  files, or mirror GETs);
- `noop_poll`: a cycle after which nothing changed (`git ls-remote` / root+timestamp);
- `update_poll`: a cycle after the device's state changed (1% of devices changed), tree
  bytes apart from the artifact bytes (fetched from the HTTP store);
- `*_connections`: TCP connections, i.e. round trips (git: one per ls-remote or fetch;
  HTTP: one per GET);
- kinds: `git` (git daemon), `http` (a plain static server: S3, any web server),
  `http_gzip` (one that gzips JSON on the fly, as nginx `gzip on` or a CDN does);
- `bin_tradeoff` (generated tree): the bytes of snapshot + one bin, measured per entry on
  the published files, raw and gzipped, for each power-of-two bin count, and the optimum.
Then, on the example fleet, the agent as a daemon (`--interval 0.5s --listen`): seconds
from a new state committed to the KServe endpoint answering with the new version, and the
daemon's peak RSS (VmHWM). Targets: no-op poll <= 5 KB; update <= own state + artifact +
64 KB metadata at 100k devices; new model serving < 5 s; agent RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "compiler"))
from edgefleet.simulate.servers import CountingProxy as SimProxy  # noqa: E402

DEVICE = "sm-cart-001"


class CountingProxy(SimProxy):
    """The simulator's byte-counting proxy (127.0.0.1 only), read as bytes both ways and connections
    since the last call."""

    def reset(self) -> int:
        return self.take()[0]

    def take(self) -> tuple[int, int]:
        """(bytes, connections) since the last call."""
        time.sleep(0.1)  # let in-flight pumps finish counting
        with self._lock:
            value, count = self.server_bytes + self.client_bytes, self.connections
            self.server_bytes = self.client_bytes = self.connections = 0
        return value, count


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "compiler") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def agent(state: Path, remote: str, root: Path, store: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefleet", "agent", "run", "--state-dir", str(state), "--device",
                           DEVICE, "--remote", remote, "--root", str(root), "--store", store, "--once",
                           "--soak", "0.2s", "--confirm-inferences", "5"], env=env(), capture_output=True, text=True)


def check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def measure_tree(work: Path, tree: Path, root: Path, store_url: str, store_proxy: CountingProxy,
                 git_proxy: CountingProxy, http_proxies: dict[str, CountingProxy], update) -> dict:
    """first / no-op / update polls over git and HTTP for DEVICE; `update()` publishes a change.

    `http_proxies`: {"http": a plain static server, "http_gzip": one that gzips (nginx `gzip on`)}."""
    out = {}
    gremote = f"git://127.0.0.1:{git_proxy.port}/desired"
    kinds = [("git", gremote, git_proxy)] + [(k, f"http://127.0.0.1:{p.port}", p) for k, p in http_proxies.items()]
    git_proxy.reset()
    clone = subprocess.run(["git", "clone", "-q", "--branch", "desired-state", gremote, str(work / "full-clone")],
                           capture_output=True, text=True)
    check(clone, "full clone")
    full = git_proxy.reset()
    full_http = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    res = {}
    for kind, remote, proxy in kinds:
        state = work / f"device-{kind}"
        proxy.reset()
        store_proxy.reset()
        check(agent(state, remote, root, store_url), f"{kind} first poll")
        first, first_trips = proxy.take()
        store_proxy.reset()
        check(agent(state, remote, root, store_url), f"{kind} no-op poll")
        noop, noop_trips = proxy.take()
        res[kind] = {"first_poll_bytes": first, "first_poll_connections": first_trips, "noop_poll_bytes": noop,
                     "noop_poll_connections": noop_trips, "state": state}
    update()
    for kind, remote, proxy in kinds:
        state = res[kind].pop("state")
        proxy.reset()
        store_proxy.reset()
        t0 = time.perf_counter()
        check(agent(state, remote, root, store_url), f"{kind} update poll")
        res[kind]["update_poll_seconds"] = round(time.perf_counter() - t0, 2)
        res[kind]["update_poll_tree_bytes"], res[kind]["update_poll_connections"] = proxy.take()
        res[kind]["update_artifact_bytes"] = store_proxy.reset()
    out["full_clone_bytes"] = {"git": full, "http_all_files": full_http}
    out.update(res)
    return out


def serve_static(directory: Path, gzip: bool = False):
    import functools
    import http.server

    from tests.agent_support import GzipHandler, RangeHandler

    handler = type("H", (GzipHandler if gzip else RangeHandler,), {"truncate": set(), "requests": [], "bytes_sent": 0,
                                                                   "bomb": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def daemon_timing(work: Path, desired, remote: str, store: str) -> dict:
    """Seconds from a new state committed to the KServe endpoint serving it; daemon peak RSS."""
    from tests.agent_support import free_port

    state = work / "device-daemon"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet", "agent", "run", "--state-dir", str(state), "--device",
                             DEVICE, "--remote", remote, "--root", str(desired.root), "--store", store,
                             "--interval", "0.5s", "--soak", "1s", "--confirm-inferences", "20",
                             "--listen", f"127.0.0.1:{port}"], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)

    def version():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/meter-digits", timeout=2) as r:
                return json.loads(r.read())["versions"][0]
        except OSError:
            return None
    try:
        deadline = time.monotonic() + 120
        while version() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        before = version()
        desired.publish(wave=1)  # committed: visible to the next poll from now
        t0 = time.perf_counter()
        while version() == before and time.perf_counter() - t0 < 120:
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        after = version()
        time.sleep(2)  # through the soak and commit
        rss_kb = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss_kb = int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(30)
    return {"from_version": before, "to_version": after, "new_state_to_serving_seconds": round(seconds, 2),
            "poll_interval_seconds": 0.5, "daemon_peak_rss_mb": round(rss_kb / 1024, 1)}


def generated_tree(work: Path, count: int, v1: bytes, v2: bytes, keys: Path) -> tuple[Path, Path, callable]:
    """A desired-state repo of `count` devices: the example device's real states under generated ids."""
    from edgefleet.desired.gitio import commit_tree
    from edgefleet.pipeline.compile import published_files
    from edgefleet.signing import device_target_path
    from edgefleet.signing.keys import load_keys
    from edgefleet.signing.publish import TargetFile, publish
    from edgefleet.spec.fleet import ExpiryWindows
    from tests.agent_support import git

    repo = work / "gen" / "desired"
    repo.mkdir(parents=True)
    git("init", "-q", cwd=repo)
    git("config", "uploadpack.allowFilter", "true", cwd=repo)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repo)
    tree = repo / "tree"
    a, b = json.loads(v1), json.loads(v2)
    role_keys = load_keys(keys)

    def targets(changed: bool):
        for i in range(count):
            device = DEVICE if i == 0 else f"dev-{i:07d}"
            bump = changed and i % 100 == 0
            state = dict(b if bump else a)
            state["device"] = {**state["device"], "id": device}
            data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
            yield TargetFile(device_target_path(device), data, {"device_id": device, "hardware_class": "medical-cart-cpu",
                                                                "release_counter": 2 if bump else 1})

    def pub(changed: bool):
        now = datetime.now(timezone.utc)
        publish(tree, targets(changed), role_keys, ExpiryWindows(), now)
        commit_tree(tree, "desired-state", "bench", now, files=published_files(tree))

    t0 = time.perf_counter()
    pub(False)
    return repo, tree, (lambda: pub(True)), round(time.perf_counter() - t0, 1)


def bin_tradeoff(tree: Path, devices: int) -> dict:
    """What a device's update fetches of snapshot + its bin, for each bin count 2**bits.

    Per-entry bytes are measured on the published snapshot and one bin (raw and gzip -6):
    `a` per bin listed in the snapshot, `b` per target listed in a bin (each file's
    signature and envelope spread over its entries). snapshot + bin = a*B + b*N/B, least
    at B = sqrt(b*N/a), where it is 2*sqrt(a*b*N)."""
    import gzip
    import math

    meta = tree / "metadata"
    snap = max(meta.glob("*.snapshot.json"), key=lambda p: int(p.name.split(".")[0]))
    bins = sorted((meta / "bins").rglob("*.json"))
    one = max(bins, key=lambda p: p.stat().st_size)
    out = {"devices": devices}
    for codec, size in (("raw", len), ("gzip", lambda b: len(gzip.compress(b, 6, mtime=0)))):
        sdata, bdata = snap.read_bytes(), one.read_bytes()
        s_entries = len(json.loads(sdata)["signed"]["meta"])
        b_entries = len(json.loads(bdata)["signed"]["targets"])
        a, b = size(sdata) / s_entries, size(bdata) / b_entries
        best = math.sqrt(b * devices / a)
        out[codec] = {"snapshot_bytes_per_bin": round(a, 1), "bin_bytes_per_target": round(b, 1),
                      "optimal_bins": round(best), "lower_bound_bytes": round(2 * math.sqrt(a * b * devices)),
                      "by_bins": {str(1 << k): round(a * (1 << k) + b * devices / (1 << k)) for k in range(7, 13)}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="a built artifact store of the example fleet (else built now)")
    parser.add_argument("--devices", type=int, default=100_000, help="size of the generated tree (0: skip)")
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()

    from edgefleet.cli import main as cli
    from edgefleet.signing.keys import init_keys
    from tests.agent_support import DesiredRepo, git_daemon

    results: dict = {"benchmark": "agent", "device": DEVICE}
    with tempfile.TemporaryDirectory(prefix="bench-agent-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        store = args.store
        if store is None:
            store = work / "store"
            fleet = work / "fleet-build"
            shutil.copytree(ROOT / "fleet", fleet, ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
            assert cli(["build", str(fleet), "--store", str(store)]) == 0
        keys = work / "keys"
        init_keys(keys)
        desired = DesiredRepo(work / "origin", store, keys, ROOT / "fleet")
        v1 = desired.publish(wave=0)
        store_server = serve_static(store)
        store_proxy = CountingProxy(store_server.server_address[1])
        store_url = f"http://127.0.0.1:{store_proxy.port}"
        with git_daemon(desired.base) as (_url, gport):
            servers = [serve_static(desired.tree), serve_static(desired.tree, gzip=True)]
            git_proxy = CountingProxy(gport)
            proxies = {k: CountingProxy(s.server_address[1]) for k, s in zip(("http", "http_gzip"), servers)}
            example = measure_tree(work / "example", desired.tree, desired.root, store_url, store_proxy, git_proxy,
                                   proxies, lambda: desired.publish(wave=1))
            v1_bytes = json.dumps(v1, sort_keys=True, separators=(",", ":")).encode()
            v2_bytes = json.dumps(desired.device_state(), sort_keys=True, separators=(",", ":")).encode()
            example["own_state_bytes"] = len(v2_bytes)
            example["devices"] = 48
            results["example"] = example
            desired.publish(wave=0)
            results["daemon"] = daemon_timing(work / "timing", desired, f"git://127.0.0.1:{gport}/desired",
                                              str(store))
            for server in servers:
                server.shutdown()
        if args.devices:
            repo, tree, update, publish_s = generated_tree(work, args.devices, v1_bytes, v2_bytes, keys)
            with git_daemon(repo.parent) as (_url, gport):
                servers = [serve_static(tree), serve_static(tree, gzip=True)]
                git_proxy = CountingProxy(gport)
                proxies = {k: CountingProxy(s.server_address[1]) for k, s in zip(("http", "http_gzip"), servers)}
                big = measure_tree(work / "big", tree, tree / "metadata" / "1.root.json", store_url, store_proxy,
                                   git_proxy, proxies, update)
                for server in servers:
                    server.shutdown()
            big["devices"] = args.devices
            big["publish_seconds"] = publish_s
            big["bin_tradeoff"] = bin_tradeoff(tree, args.devices)
            big["own_state_bytes"] = len(v2_bytes)
            budget = len(v2_bytes) + 64 * 1024
            big["update_within_target"] = {k: big[k]["update_poll_tree_bytes"] <= budget
                                           for k in ("git", "http", "http_gzip")}
            results["generated"] = big
        store_server.shutdown()
    targets = {"noop_poll_bytes_max": 5 * 1024, "new_model_serving_seconds_max": 5, "agent_rss_mb_max": 150,
               "update_tree_bytes_max": "own state + 64 KiB (artifact counted apart)"}
    results["targets"] = targets
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
