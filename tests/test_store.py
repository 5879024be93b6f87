"""The content-addressed store: every backend keeps the same layout and the same promises."""

from __future__ import annotations

import hashlib
import os
import re
import threading

import pytest

from edgefleet.build.record import BuildRecord, FileRef, InputRef, ProbeRecord, parse_record, plain, record_bytes
from edgefleet.build.store import (PROVENANCE, SIGNATURE, LocalStore, ObjectStore, RepoStore, StoreError, blob_path,
                                   open_store)
from edgefleet.spec.fleet import ArtifactStore

ARTIFACT = b"\x08\x07onnx-bytes" * 100
EXTRA = b'{"trt": "build spec"}'
GOLDEN = b"\x93NUMPY golden input"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref(name: str, data: bytes) -> FileRef:
    return FileRef(name=name, sha256=sha(data), size=len(data))


def make_record(key: str, artifact: bytes = ARTIFACT) -> BuildRecord:
    return BuildRecord(
        key=key, model="meter-digits", version="1.1.0", variant="full", hardware_class="medical-cart-cpu",
        runtime={"name": "onnxruntime", "version": "1.20", "device": "CPUExecutionProvider"},
        precisions=["fp32", "int8"],
        inputs=[InputRef(role="source", path="models/m.onnx", sha256="a" * 64)],
        recipes=[{"name": "ort-int8-static", "precision": "int8"}], recipe={"name": "ort-int8-static", "precision": "int8"},
        artifact=ref("model.onnx", artifact), files=[ref("build-spec.json", EXTRA)],
        attempts=[], metrics={"top1_agreement": 0.99}, toolchain={"onnxruntime": "1.23.2"},
        probe=ProbeRecord(input=ref("probe-input.npy", GOLDEN), expected_output=[1, 2], tolerance=0.01,
                          latency_budget_ms=20.0),
    )


KEY = "1" * 64
FILES = {"model.onnx": ARTIFACT, "build-spec.json": EXTRA, "probe-input.npy": GOLDEN}


class _S3Root:
    """Reads a moto S3 bucket back as {name: bytes}, like a directory listing."""

    def __init__(self, backend):
        self.backend = backend

    def listing(self) -> dict[str, bytes]:
        client, out = self.backend.client, {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.backend.bucket):
            for obj in page.get("Contents", []):
                name = obj["Key"].removeprefix(self.backend.prefix + "/")
                out[name] = client.get_object(Bucket=self.backend.bucket, Key=obj["Key"])["Body"].read()
        return out


@pytest.fixture(params=["local", "repo", "file-object", "s3-moto"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    if request.param == "repo":
        return RepoStore(tmp_path / "fleet" / "artifacts")
    if request.param == "file-object":
        return ObjectStore.from_url((tmp_path / "objects").as_uri())
    # S3 itself cannot be reached here: moto stands in for the service (in-process), while
    # boto3 and our S3Backend run for real. The same code talks to AWS/MinIO in production.
    moto = pytest.importorskip("moto")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    mock = moto.mock_aws()
    mock.start()
    request.addfinalizer(mock.stop)
    import boto3

    boto3.client("s3").create_bucket(Bucket="fleet-artifacts")
    return ObjectStore.from_url("s3://fleet-artifacts/acme")


def listing(root) -> dict[str, bytes]:
    if isinstance(root, _S3Root):
        return root.listing()
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def root_of(store):
    if isinstance(store, LocalStore):
        return store.root
    return store.backend.root if hasattr(store.backend, "root") else _S3Root(store.backend)


def test_put_then_read_back(store):
    assert not store.has(KEY) and store.get_record(KEY) is None
    assert store.put(KEY, FILES, make_record(KEY), {PROVENANCE: b'{"_type": "x"}'})
    assert store.has(KEY)
    assert store.get_record(KEY) == make_record(KEY)
    assert store.get_document(KEY, PROVENANCE) == b'{"_type": "x"}'
    assert store.get_document(KEY, SIGNATURE) is None
    with store.open_artifact(sha(ARTIFACT)) as fh:
        assert fh.read() == ARTIFACT
    files = set(listing(root_of(store)))
    assert {f"keys/{KEY}/record.json", f"keys/{KEY}/{PROVENANCE}", blob_path(sha(ARTIFACT)),
            blob_path(sha(EXTRA)), blob_path(sha(GOLDEN))} <= files
    assert not any(name.startswith("tmp/") for name in files), "staging leftovers"


def test_same_key_is_never_written_twice(store):
    assert store.put(KEY, FILES, make_record(KEY), {})
    before = listing(root_of(store))
    assert not store.put(KEY, FILES, make_record(KEY), {PROVENANCE: b"other"})
    assert listing(root_of(store)) == before


def test_identical_artifacts_of_two_keys_share_one_blob(store):
    other = "2" * 64
    store.put(KEY, FILES, make_record(KEY), {})
    store.put(other, FILES, make_record(other), {})
    blobs = [n for n in listing(root_of(store)) if n.startswith("blobs/")]
    assert len(blobs) == 3


@pytest.mark.parametrize("files, record_key, message", [
    pytest.param({**FILES, "model.onnx": b"tampered"}, KEY, "does not match", id="bytes-differ-from-record"),
    pytest.param({k: v for k, v in FILES.items() if k != "build-spec.json"}, KEY, "not given", id="file-missing"),
    pytest.param(FILES, "3" * 64, "record is for key", id="record-of-another-key"),
])
def test_inconsistent_put_is_refused_and_writes_nothing(store, files, record_key, message):
    root = root_of(store)
    with pytest.raises(StoreError, match=message):
        store.put(KEY, files, make_record(record_key), {})
    assert listing(root) == {}
    assert not store.has(KEY)


def test_unknown_document_is_refused(store):
    with pytest.raises(StoreError, match="unknown document"):
        store.put(KEY, FILES, make_record(KEY), {"notes.txt": b"x"})


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "1" * 63, ""], ids=["traversal", "upper", "short", "empty"])
def test_paths_are_only_ever_hex_digests(store, bad):
    with pytest.raises(StoreError, match="not a sha256"):
        store.has(bad)
    with pytest.raises(StoreError, match="not a sha256"):
        blob_path(bad)


def test_missing_blob_is_a_key_error(store):
    with pytest.raises(KeyError, match="no blob"):
        store.open_artifact("f" * 64)


def test_crash_before_commit_leaves_no_key(tmp_path, monkeypatch):
    """A failure at the final rename (power loss, full disk) must not leave a half key."""
    store = LocalStore(tmp_path / "store")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError):
        store.put(KEY, FILES, make_record(KEY), {PROVENANCE: b"{}"})
    monkeypatch.undo()
    assert not store.has(KEY)
    assert not (tmp_path / "store" / "keys" / KEY).exists()
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    assert store.put(KEY, FILES, make_record(KEY), {})  # and the next run commits it


def test_racing_writers_commit_once(tmp_path):
    """CI jobs sharing a store: the first rename wins, the others see the key taken."""
    store = LocalStore(tmp_path / "store")
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def writer():
        barrier.wait()
        results.append(store.put(KEY, FILES, make_record(KEY), {PROVENANCE: b"{}"}))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert store.get_record(KEY) == make_record(KEY)


def test_blobs_are_read_only(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put(KEY, FILES, make_record(KEY), {})
    mode = (tmp_path / "store" / blob_path(sha(ARTIFACT))).stat().st_mode
    assert mode & 0o222 == 0


def test_record_json_is_canonical_and_round_trips():
    record = make_record(KEY)
    raw = record_bytes(record)
    assert parse_record(raw) == record
    assert b" " not in raw.replace(b"meter digits", b"")  # JCS: no insignificant whitespace
    assert raw.index(b'"artifact"') < raw.index(b'"attempts"') < raw.index(b'"format"')  # sorted keys


def test_plain_makes_engine_values_json_ready():
    import numpy as np

    assert plain({"a": np.float32(0.5), "b": np.array([1, 2]), "c": float("nan"), "d": (1, b"\x00")}) == \
        {"a": 0.5, "b": [1, 2], "c": None, "d": [1, "AA=="]}


@pytest.mark.parametrize("config, override, kind, where", [
    pytest.param(ArtifactStore(), None, LocalStore, "fleet/.edgefleet/artifacts", id="default-local"),
    pytest.param(ArtifactStore(kind="repo", path="artifacts"), None, RepoStore, "fleet/artifacts", id="repo"),
    pytest.param(ArtifactStore(), "elsewhere", LocalStore, "elsewhere", id="override-dir"),
])
def test_open_store_follows_fleet_yaml(tmp_path, config, override, kind, where):
    root = tmp_path / "fleet"
    store = open_store(root, config, override and str(tmp_path / override), "fleet")
    assert type(store) is kind
    assert store.root == tmp_path / where


def test_open_store_object_url(tmp_path):
    store = open_store(tmp_path, ArtifactStore(kind="object", url=(tmp_path / "o").as_uri()))
    assert isinstance(store, ObjectStore) and store.location.startswith("file://")


@pytest.mark.parametrize("url, message", [
    pytest.param("ftp://host/x", "unsupported object store URL", id="unknown-scheme"),
    pytest.param("s3:///prefix", "give the bucket", id="s3-without-bucket"),
    pytest.param("file://otherhost/x", "local path", id="file-url-with-host"),
])
def test_bad_object_store_url_is_a_clear_error(tmp_path, url, message):
    with pytest.raises(StoreError, match=message):
        open_store(tmp_path, ArtifactStore(), url)


def test_s3_without_boto3_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)  # as on a host without the package
    with pytest.raises(StoreError, match="pip install boto3"):
        open_store(tmp_path, ArtifactStore(kind="object", url="s3://bucket/fleet"))


def test_object_kind_without_url(tmp_path):
    with pytest.raises(StoreError, match="no url"):
        open_store(tmp_path, ArtifactStore(kind="object"))


# -- keys ----------------------------------------------------------------------------

def _key_inputs(**change):
    from edgefleet.build.key import KeyInputs

    base = dict(model="meter-digits", version="1.1.0", hardware_class="medical-cart-cpu", variant="full",
                source_sha256="a" * 64, recipes=[{"name": "ort-int8-static", "precision": "int8"}],
                calibration_sha256="b" * 64, evaluation_sha256="c" * 64,
                accuracy={"metric": "top1_agreement", "threshold": 0.98},
                runtime={"name": "onnxruntime", "version": "1.20", "device": "CPUExecutionProvider"},
                precisions=["fp32", "int8"], limits={"max_artifact_bytes": 67108864, "latency_budget_ms": 20.0},
                toolchain={"onnxruntime": "1.23.2", "onnx": "1.19.0"})
    return KeyInputs(**(base | change))


@pytest.mark.parametrize("change", [
    pytest.param({"source_sha256": "d" * 64}, id="source-bytes"),
    pytest.param({"recipes": [{"name": "ort-int8-static", "precision": "int8", "per_channel": True}]}, id="recipe"),
    pytest.param({"calibration_sha256": "e" * 64}, id="calibration-data"),
    pytest.param({"evaluation_sha256": None}, id="evaluation-data"),
    pytest.param({"toolchain": {"onnxruntime": "1.24.0", "onnx": "1.19.0"}}, id="toolchain"),
    pytest.param({"limits": {"max_artifact_bytes": 1, "latency_budget_ms": 20.0}}, id="class-limit"),
    pytest.param({"runtime": {"name": "onnxruntime", "version": "1.21", "device": "CPUExecutionProvider"}},
                 id="runtime-version"),
    pytest.param({"variant": "student"}, id="variant"),
    pytest.param({"format": "edgefleet/artifact-key/v2"}, id="format-version"),
])
def test_key_changes_with_every_input(change):
    from edgefleet.build.key import key_of

    assert key_of(_key_inputs(**change)) != key_of(_key_inputs())


def test_key_is_canonical():
    """Dict order does not matter (JCS sorts keys); the key is a plain sha256 hex."""
    from edgefleet.build.key import key_of

    reordered = _key_inputs(toolchain={"onnx": "1.19.0", "onnxruntime": "1.23.2"})
    assert key_of(reordered) == key_of(_key_inputs())
    assert re.fullmatch(r"[0-9a-f]{64}", key_of(_key_inputs()))


# -- verified reads: a store is checked, not trusted --------------------------------


def _overwrite(store, name: str, data: bytes | None) -> None:
    """Change the store behind edgefleet's back (data None deletes the object)."""
    if isinstance(store, LocalStore) or hasattr(store.backend, "root"):
        root = store.root if isinstance(store, LocalStore) else store.backend.root
        path = root / name
        if path.exists():
            os.chmod(path, 0o644)
            path.unlink()
        if data is not None:
            path.write_bytes(data)
        return
    backend = store.backend
    key = f"{backend.prefix}/{name}" if backend.prefix else name
    if data is None:
        backend.client.delete_object(Bucket=backend.bucket, Key=key)
    else:
        backend.client.put_object(Bucket=backend.bucket, Key=key, Body=data)


RECORD_BYTES = record_bytes(make_record(KEY))
CORRUPTIONS = {
    "artifact-edited": (blob_path(sha(ARTIFACT)), ARTIFACT[:-1] + b"X", "does not match"),
    "artifact-truncated": (blob_path(sha(ARTIFACT)), ARTIFACT[:10], "does not match"),
    "artifact-deleted": (blob_path(sha(ARTIFACT)), None, "is missing"),
    "extra-file-edited": (blob_path(sha(EXTRA)), EXTRA + b" ", "does not match"),
    "probe-input-deleted": (blob_path(sha(GOLDEN)), None, "is missing"),
    "record-truncated": (f"keys/{KEY}/record.json", RECORD_BYTES[: len(RECORD_BYTES) // 2], "cannot be read"),
    "record-not-json": (f"keys/{KEY}/record.json", b"\x00\xff garbage", "cannot be read"),
    "record-empty": (f"keys/{KEY}/record.json", b"", "cannot be read"),
    "record-of-another-key": (f"keys/{KEY}/record.json", record_bytes(make_record("4" * 64)), "for key 4444"),
}


@pytest.mark.parametrize("name,data,words", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_corrupt_entry_is_a_reported_error_never_a_hit(store, name, data, words):
    from edgefleet.build.store import StoreCorrupt

    assert store.put(KEY, FILES, make_record(KEY), {})
    _overwrite(store, name, data)
    with pytest.raises(StoreCorrupt, match=words) as info:
        store.get_record(KEY)
    [diag] = info.value.diagnostics
    assert diag.code == "E416" and KEY in diag.location.path and "rebuild" in diag.hint
    assert isinstance(info.value, StoreError)


def test_verified_read_rehashes_every_time(tmp_path):
    """No memo of a past verification: a blob edited after a good read is caught."""
    from edgefleet.build.store import StoreCorrupt

    store = LocalStore(tmp_path / "store")
    store.put(KEY, FILES, make_record(KEY), {})
    assert store.get_record(KEY) == make_record(KEY)
    _overwrite(store, blob_path(sha(ARTIFACT)), b"swapped")
    with pytest.raises(StoreCorrupt):
        store.get_record(KEY)


@pytest.fixture(scope="module")
def built_copy_source(tmp_path_factory):
    from tests.desired_support import built_store

    return built_store(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("corruption", ["edit-blob", "truncate-record", "delete-blob"])
def test_build_and_compile_report_a_corrupt_store(corruption, built_copy_source, fleet_copy, run_cli, tmp_path):
    """The cache-hit path of build and the artifact index of compile both meet the verified
    read: exit 1 with E416 naming the entry, no cache hit, nothing signed."""
    import json
    import shutil

    store_dir = tmp_path / "store"
    shutil.copytree(built_copy_source, store_dir)
    key_dir = sorted((store_dir / "keys").iterdir())[0]
    record = json.loads((key_dir / "record.json").read_bytes())
    blob = store_dir / blob_path(record["artifact"]["sha256"])
    os.chmod(blob, 0o644)
    if corruption == "edit-blob":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    elif corruption == "truncate-record":
        raw = (key_dir / "record.json").read_bytes()
        (key_dir / "record.json").write_bytes(raw[: len(raw) // 3])
    else:
        blob.unlink()
    res = run_cli("build", fleet_copy, "--store", store_dir)
    assert res.code == 1, res.err
    assert "[E416]" in res.err and key_dir.name in res.err and "internal error" not in res.err
    res = run_cli("compile", fleet_copy, "--store", store_dir, "--keys", tmp_path / "keys",
                  "--out", tmp_path / "out", "--now", "2026-11-20T08:00:00Z", "--allow-clock-skew")
    assert res.code == 1, res.err
    assert "[E416]" in res.err and "internal error" not in res.err
    assert not (tmp_path / "out" / "metadata").exists()
