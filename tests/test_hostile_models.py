"""Hostile model and data files: everything a model consists of is pinned, and data files
are sized from their headers before anything is decompressed."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgefleet.analysis.onnx_facts import ModelReadError, read_model
from edgefleet.build import data as data_mod
from edgefleet.build.data import load_npz
from edgefleet.build.errors import BuildError
from edgefleet.build.onnx_io import load_source
from tests.conftest import EXAMPLE_FLEET

FULL = EXAMPLE_FLEET / "models/meter-digits/1.1.0/full.onnx"
SOURCE = "models/meter-digits/1.0.0/full.onnx"
MODEL_YAML = "models/meter-digits.yaml"
CALIBRATION = "models/meter-digits/data/calibration.npz"


# -- ONNX external data: refused (a model is pinned by the sha256 of its one file) -----


def save_with_external_data(dest: Path, location: str = "full.weights") -> Path:
    model = onnx.load(str(FULL))
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    return dest


def set_location(path: Path, location: str) -> None:
    """Point every external tensor at `location` (a hostile model can name any path)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("location", ["full.weights", "../../../../etc/passwd", "/etc/hostname"],
                         ids=["beside-the-model", "dotdot", "absolute"])
def test_external_data_is_refused_by_the_analyzer_and_the_build(tmp_path, location):
    path = save_with_external_data(tmp_path / "m" / "full.onnx")
    if location != "full.weights":
        set_location(path, location)
    with pytest.raises(ModelReadError, match="external data") as info:
        read_model(path)
    assert "save_as_external_data=False" in str(info.value)
    with pytest.raises(BuildError, match="external data") as built:
        load_source(path)
    assert built.value.code == "E410"


def test_validate_refuses_a_model_with_external_data(fleet_copy, run_cli, tmp_path):
    path = save_with_external_data(fleet_copy / SOURCE)
    yaml = fleet_copy / MODEL_YAML
    text = yaml.read_text()
    old = text.split(f"source: {SOURCE}\n", 1)[1].split("sha256: ", 1)[1].split("\n", 1)[0]
    yaml.write_text(text.replace(old, hashlib.sha256(path.read_bytes()).hexdigest(), 1))
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1, res.err
    line = yaml.read_text()[: yaml.read_text().index(f"source: {SOURCE}")].count("\n") + 1
    assert f"fleet/{MODEL_YAML}:{line}:" in res.err and "[E302]" in res.err and "external data" in res.err, res.err
    # editing the side file cannot change what ships: there is no side file to ship
    (path.parent / "full.weights").write_bytes(b"\x00" * 16)
    again = run_cli("validate", "fleet", cwd=tmp_path)
    assert again.code == 1 and "[E302]" in again.err


def test_embedded_models_still_load(tmp_path):
    shutil.copy(FULL, tmp_path / "full.onnx")
    assert load_source(tmp_path / "full.onnx").graph.node
    assert read_model(tmp_path / "full.onnx")[1] == FULL.stat().st_size


# -- npz: sized from the zip directory and npy headers before loading ----------------


def npz_with_header(shape, descr="<f4", payload: bytes = b"\x00" * 64) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    buf.write(payload)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("input.npy", buf.getvalue())
    return out.getvalue()


def deflate_bomb(path: Path, expanded: int) -> None:
    """A real zip bomb: `expanded` bytes of zeros in a few megabytes."""
    rows = expanded // 16
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("input.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (rows, 4)})
            chunk = bytes(1 << 24)
            for _ in range(rows * 16 // len(chunk)):
                fh.write(chunk)
            fh.write(bytes(rows * 16 % len(chunk)))


@pytest.fixture
def never_decompressed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("np.load ran on a file the headers should have refused")

    monkeypatch.setattr(data_mod.np, "load", refuse)


HEADER_LIES = {
    "shape-of-exabytes": (npz_with_header((10**9, 10**9)), "E417", "claims shape"),
    "shape-more-than-the-file": (npz_with_header((1024, 1024)), "E417", "more than the file holds"),
    "object-dtype": (npz_with_header((4,), descr="|O"), "E413", "Python objects"),
    "not-a-zip": (b"PK\x03\x04 not really", "E413", "not a readable npz"),
    "npy-garbage-header": (b"", "E413", "unreadable array"),
}


@pytest.mark.parametrize("name", list(HEADER_LIES), ids=list(HEADER_LIES))
def test_npz_headers_are_checked_before_loading(tmp_path, name, never_decompressed):
    raw, code, words = HEADER_LIES[name]
    if name == "npy-garbage-header":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("input.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr': nonsense")
        raw = out.getvalue()
    path = tmp_path / "data.npz"
    path.write_bytes(raw)
    with pytest.raises(BuildError, match=words) as info:
        load_npz(path, "calibration", "data.npz")
    assert info.value.code == code and info.value.subject == "calibration"


def test_npz_with_too_many_arrays_is_refused(tmp_path, never_decompressed):
    np.savez(tmp_path / "many.npz", **{f"a{i}": np.zeros(1, np.float32) for i in range(data_mod.MAX_ARRAYS + 1)})
    with pytest.raises(BuildError, match="arrays") as info:
        load_npz(tmp_path / "many.npz", "evaluation")
    assert info.value.code == "E417"


def test_npz_over_the_limit_is_refused_unread(tmp_path, monkeypatch, never_decompressed):
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 4 << 20)
    deflate_bomb(tmp_path / "bomb.npz", 8 << 20)
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000
    with pytest.raises(BuildError, match="expands to") as info:
        load_npz(tmp_path / "bomb.npz", "calibration")
    assert info.value.code == "E417"


@pytest.mark.slow
def test_a_real_gigabyte_bomb_is_refused_in_the_build(fleet_copy, run_cli, tmp_path):
    deflate_bomb(fleet_copy / CALIBRATION, (1 << 30) + (64 << 20))
    assert (fleet_copy / CALIBRATION).stat().st_size < 8 << 20
    res = run_cli("build", "fleet", "--store", tmp_path / "store", cwd=tmp_path)
    assert res.code == 1, res.err
    assert "[E417]" in res.err and "expands to" in res.err and "internal error" not in res.err
    assert not (tmp_path / "store").exists()


def test_honest_data_still_loads():
    data = load_npz(EXAMPLE_FLEET / CALIBRATION, "calibration")
    assert data.inputs.dtype == np.float32 and len(data.inputs) > 0
