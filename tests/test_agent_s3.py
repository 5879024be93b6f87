"""The agent's S3 paths against a real S3 API server on 127.0.0.1.

S3 itself cannot be reached from here, so moto's standalone server (`ThreadedMotoServer`)
is the S3 emulator: a real HTTP server speaking the S3 REST API on a loopback port. What
runs against it is the real code path: boto3, pointed at the endpoint by
`AWS_ENDPOINT_URL` exactly as a device on MinIO/Ceph would be, streaming ranged GETs into
the download cache (`agent/artifacts.py`), and the status remote's one-key-per-device
object log (`agent/status_remote.py`). A small TCP proxy on 127.0.0.1 in front of the
server breaks a response off mid-body, so the resume path is exercised by a real
interrupted download, not a simulated one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from edgefleet.agent import artifacts  # noqa: E402
from edgefleet.agent.errors import AgentError  # noqa: E402
from edgefleet.signing.keys import init_keys  # noqa: E402
from tests.agent_support import DEVICE, V1, V2, DesiredRepo, agent_state, cli_in_process, git_daemon, run_agent  # noqa: E402
from tests.conftest import EXAMPLE_FLEET  # noqa: E402
from tests.desired_support import built_store  # noqa: E402

BUCKET, PREFIX = "fleet-artifacts", "acme"
STORE = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 emulator on 127.0.0.1 (an ephemeral port), stopped at the end of the module."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that can break the next connection's response after N bytes."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cut_next: int | None = None
        self.downstream_bytes = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            cut, self.cut_next = self.cut_next, None
            threading.Thread(target=self._pipe, args=(client, cut), daemon=True).start()

    def _pipe(self, client: socket.socket, cut: int | None) -> None:
        with client, socket.create_connection(self.upstream, timeout=10) as up:
            def upward():
                with contextlib.suppress(OSError):
                    while data := client.recv(65536):
                        up.sendall(data)
            threading.Thread(target=upward, daemon=True).start()
            sent = 0
            with contextlib.suppress(OSError):
                while data := up.recv(65536):
                    if cut is not None and sent + len(data) > cut:
                        data = data[: cut - sent]
                        client.sendall(data)
                        self.downstream_bytes += len(data)
                        client.shutdown(socket.SHUT_RDWR)  # the connection breaks mid-body
                        return
                    client.sendall(data)
                    sent += len(data)
                    self.downstream_bytes += len(data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """Environment of a device on an S3-compatible store: endpoint, test credentials, no
    shared config files and no instance-metadata lookups (nothing leaves the loopback)."""
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_server, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server)
    for bucket in (BUCKET, "fleet-status"):
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    yield client
    for bucket in (BUCKET, "fleet-status"):  # a clean emulator for the next test
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])


@pytest.fixture
def proxy(s3_server, monkeypatch):
    host, port = s3_server.removeprefix("http://").split(":")
    p = CuttingProxy((host, int(port)))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{p.port}")
    try:
        yield p
    finally:
        p.close()


def put_blob(client, data: bytes, digest: str | None = None) -> str:
    digest = digest or hashlib.sha256(data).hexdigest()
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/blobs/sha256/{digest}", Body=data)
    return digest


def upload_store(client, store: Path) -> int:
    """Copy a built local store into the bucket under the prefix, as `edgefleet build --store s3://` would."""
    count = 0
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store).as_posix()
        if path.is_file() and rel.startswith(("blobs/", "keys/")):
            client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}", Body=path.read_bytes())
            count += 1
    return count


def _fetch(digest: str, size: int, cache: Path, **kw) -> Path:
    return artifacts.fetch_blob(STORE, digest, size, cache, margin=0, **kw)


# -- fetch by digest -------------------------------------------------------------------------

def test_fetches_a_blob_by_digest_and_then_serves_it_from_the_cache(s3, proxy, tmp_path):
    data = os.urandom(700_000)
    digest = put_blob(s3, data)
    got = _fetch(digest, len(data), tmp_path / "cache")
    assert got == tmp_path / "cache" / digest and got.read_bytes() == data
    assert not (tmp_path / "cache" / f"{digest}.part").exists()
    fetched = proxy.downstream_bytes
    assert len(data) <= fetched < len(data) + 4096  # one GET: the body plus its headers
    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/blobs/sha256/{digest}")
    assert _fetch(digest, len(data), tmp_path / "cache").read_bytes() == data  # the cache, no request
    assert proxy.downstream_bytes == fetched


def test_an_object_larger_than_the_declared_size_is_refused_before_it_is_read(s3, tmp_path):
    data = os.urandom(2_000_000)
    digest = put_blob(s3, data)
    with pytest.raises(AgentError) as exc:
        _fetch(digest, 1000, tmp_path / "cache")
    assert exc.value.code == "E606" and exc.value.reason == "Oversized"
    assert "2000000 bytes, more than the declared 1000" in exc.value.message
    assert list((tmp_path / "cache").iterdir()) == []  # refused from its Content-Length: not a byte written


def test_other_bytes_under_the_digest_are_refused_and_discarded(s3, tmp_path):
    data = os.urandom(50_000)
    digest = hashlib.sha256(data).hexdigest()
    put_blob(s3, os.urandom(50_000), digest)  # same size, other content: a tampered store
    with pytest.raises(AgentError) as exc:
        _fetch(digest, len(data), tmp_path / "cache")
    assert exc.value.code == "E605" and exc.value.reason == "DigestMismatch"
    assert list((tmp_path / "cache").iterdir()) == []
    put_blob(s3, data)  # repaired: the next poll fetches it
    assert _fetch(digest, len(data), tmp_path / "cache").read_bytes() == data


def test_a_missing_key_is_a_clear_error_naming_the_object(s3, tmp_path):
    digest = hashlib.sha256(b"never uploaded").hexdigest()
    with pytest.raises(AgentError) as exc:
        _fetch(digest, 10, tmp_path / "cache")
    assert exc.value.code == "E618" and exc.value.reason == "BlobMissing"
    assert f"s3://{BUCKET}/{PREFIX}/blobs/sha256/{digest}" in exc.value.message
    assert "artifact_store" in exc.value.hint
    # A provenance bundle that is absent is None (optional); a missing bucket is an error.
    assert artifacts.fetch_store_file(STORE, "keys/" + "0" * 64 + "/provenance.sigstore.json",
                                      tmp_path / "cache") is None
    with pytest.raises(AgentError) as exc:
        artifacts.fetch_blob("s3://no-such-bucket/acme", digest, 10, tmp_path / "cache", margin=0)
    assert exc.value.code == "E618" and exc.value.reason == "StoreUnavailable" and "NoSuchBucket" in exc.value.message


def test_an_unreachable_endpoint_is_a_bounded_clear_error(s3, monkeypatch, tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    start = time.monotonic()
    with pytest.raises(AgentError) as exc:
        _fetch(hashlib.sha256(b"x").hexdigest(), 10, tmp_path / "cache")
    assert exc.value.code == "E618" and exc.value.reason == "StoreUnavailable"
    assert f"127.0.0.1:{dead}" in exc.value.message
    assert time.monotonic() - start < 20  # bounded retries, not botocore's minutes-long default


def test_a_download_broken_off_mid_body_resumes_with_a_ranged_get(s3, proxy, tmp_path):
    data = os.urandom(1_500_000)
    digest = put_blob(s3, data)
    cache = tmp_path / "cache"
    proxy.cut_next = 600_000  # the first connection breaks after ~600 KB of the response
    with pytest.raises(AgentError) as exc:
        _fetch(digest, len(data), cache)
    assert exc.value.code == "E605" and exc.value.reason == "Truncated", exc.value.message
    part = cache / f"{digest}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(data) and part.read_bytes() == data[:kept]  # what arrived is kept
    before = proxy.downstream_bytes
    got = _fetch(digest, len(data), cache)
    assert got.read_bytes() == data and not part.exists()
    resumed = proxy.downstream_bytes - before
    assert resumed < len(data) - kept + 4096  # only the rest was fetched (Range: bytes=kept-)


def test_a_part_file_longer_than_the_object_starts_over(s3, tmp_path):
    """A stale part (the store's object replaced by a shorter one under the same digest cannot
    happen with content addressing, but a damaged cache can): refused, then fetched whole."""
    data = os.urandom(10_000)
    digest = put_blob(s3, data[:4000])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{digest}.part").write_bytes(data[:6000])
    with pytest.raises(AgentError) as exc:
        _fetch(digest, 10_000, cache)
    assert exc.value.code == "E605" and not (cache / f"{digest}.part").exists()


# -- a whole update from an S3 store -----------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("s3-agent-keys") / "keys"
    init_keys(path)
    return path


def _name_s3_store_in_fleet(fleet: Path) -> None:
    path = fleet / "fleet.yaml"
    text = path.read_text()
    old = "  artifact_store:\n    kind: local\n    path: .edgefleet/artifacts\n"
    assert old in text
    path.write_text(text.replace(old, f"  artifact_store:\n    kind: object\n    url: {STORE}\n"))


@pytest.mark.slow
def test_an_update_from_the_s3_store_the_desired_state_names_ends_serving(s3, tmp_path, store, keys):
    """nothing -> v1 -> v2 with every blob fetched from the emulated S3 (no --store: the signed
    desired state names s3://...), and the reports delivered to an S3 status remote."""
    from edgefleet.agent.report import verify_report
    from edgefleet.agent.status_remote import read_reports

    assert upload_store(s3, store) > 0
    desired = DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)
    _name_s3_store_in_fleet(desired.fleet)
    state = tmp_path / "device"
    enrolled = cli_in_process(["agent", "enroll", "--state-dir", str(state), "--device", DEVICE, "--format", "json"], {})
    public_key = json.loads(enrolled.stdout)["public_key"]
    status = "s3://fleet-status/acme"
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        v1 = desired.publish(wave=0)
        assert v1["artifact_store"] == {"kind": "object", "url": STORE}
        res = cli_in_process(["agent", "run", "--state-dir", str(state), "--device", DEVICE, "--remote", remote,
                              "--root", str(desired.root), "--once", "--soak", "0.2s", "--confirm-inferences", "3",
                              "--status-remote", status], {})
        assert res.returncode == 0, res.stderr
        assert agent_state(state)["serving"]["version"] == V1
        v2 = desired.publish(wave=1)
        res = cli_in_process(["agent", "run", "--state-dir", str(state), "--device", DEVICE, "--remote", remote,
                              "--root", str(desired.root), "--once", "--soak", "0.2s", "--confirm-inferences", "3",
                              "--status-remote", status], {})
        assert res.returncode == 0, res.stderr
    s = agent_state(state)
    want = v2["workloads"][0]["run"]["artifact"]["digest"]
    assert s["serving"]["version"] == V2 and s["serving"]["digest"] == f"sha256:{want}" and s["degraded"] is False
    assert s["pending_reports"] == 0
    keys_held = [o["Key"] for o in s3.list_objects_v2(Bucket="fleet-status")["Contents"]]
    assert keys_held == [f"acme/status/{DEVICE}.json"]  # one key per device
    reports = [verify_report(e, public_key, DEVICE) for _, e in read_reports(status, devices=[DEVICE])]
    counters = [r.counter for r in reports]
    assert counters == sorted(counters) and len(counters) >= 2
    assert reports[-1].serving.version == V2


@pytest.mark.slow
def test_store_flag_s3_overrides_and_a_missing_blob_keeps_the_old_model(s3, tmp_path, store, keys):
    """`--store s3://...` for a fleet whose state names a local store; a blob deleted from the
    bucket is E618 with the served model unchanged, and the update lands once it is back."""
    assert upload_store(s3, store) > 0
    desired = DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)
    state = tmp_path / "device"
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        desired.publish(wave=0)
        assert run_agent(state, remote, desired.root, STORE).returncode == 0
        v2 = desired.publish(wave=1)
        digest = v2["workloads"][0]["run"]["artifact"]["digest"]
        key = f"{PREFIX}/blobs/sha256/{digest}"
        held = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        s3.delete_object(Bucket=BUCKET, Key=key)
        res = run_agent(state, remote, desired.root, STORE)
        assert res.returncode == 1 and "E618" in res.stderr and f"s3://{BUCKET}/{key}" in res.stderr, res.stderr
        assert agent_state(state)["serving"]["version"] == V1
        s3.put_object(Bucket=BUCKET, Key=key, Body=held)
        res = run_agent(state, remote, desired.root, STORE)
        assert res.returncode == 0, res.stderr
    assert agent_state(state)["serving"]["version"] == V2


# -- the status remote as an object store --------------------------------------------------------

def test_status_remote_on_s3_keeps_one_key_per_device_and_skips_what_it_holds(s3, tmp_path):
    from tests.agent_io_support import make_identity, signed
    from edgefleet.agent.report import verify_report
    from edgefleet.agent.status_remote import StatusRemoteError, push_reports, read_reports

    url = "s3://fleet-status/acme"
    a, b = make_identity(tmp_path, "pa-robot-001"), make_identity(tmp_path, "pa-robot-002")
    assert push_reports(url, a.device_id, [signed(a, 1), signed(a, 2)]) == 2
    assert push_reports(url, a.device_id, [signed(a, 2), signed(a, 3)]) == 2  # a retry after a lost ack
    push_reports(url, b.device_id, [signed(b, 5)])
    held = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="fleet-status")["Contents"])
    assert held == ["acme/status/pa-robot-001.json", "acme/status/pa-robot-002.json"]
    got = [(d, verify_report(e, (a if d == a.device_id else b).public_key, d).counter)
           for d, e in read_reports(url, devices=[a.device_id, b.device_id, "pa-robot-003"])]
    assert got == [("pa-robot-001", 1), ("pa-robot-001", 2), ("pa-robot-001", 3), ("pa-robot-002", 5)]
    with pytest.raises(StatusRemoteError) as exc:
        push_reports("s3://no-such-status-bucket/acme", a.device_id, [signed(a, 4)])
    assert exc.value.code == "E680" and "NoSuchBucket" in exc.value.message
