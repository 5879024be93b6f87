"""The repository is a boundary: every path the fleet names resolves inside it (after
symlinks), and what lies outside is refused without being read or described."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import git
import pytest

from edgefleet.build.store import StoreError, open_store
from edgefleet.core.paths import PathRefused, resolve_inside
from edgefleet.spec.fleet import ArtifactStore

MODEL = "models/meter-digits.yaml"
SOURCE = "models/meter-digits/1.0.0/full.onnx"
CALIBRATION = "models/meter-digits/data/calibration.npz"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret file beside the repository, as on a CI host."""
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"not for the fleet: " + os.urandom(64))
    return secret


def _all_output(res) -> str:
    return res.out + res.err


def _assert_nothing_of(outside: Path, text: str) -> None:
    data = outside.read_bytes()
    assert hashlib.sha256(data).hexdigest() not in text
    assert str(len(data)) + " bytes" not in text
    assert "not for the fleet" not in text


# -- the resolver ---------------------------------------------------------------------


@pytest.mark.parametrize("rel,code", [
    ("../x", "E011"), ("a/../../x", "E011"), ("/etc/passwd", "E011"), ("~/x", "E011"),
    ("a\x00b", "E012"), ("s3://bucket/x", "E012"), ("https://host/x.onnx", "E012"), ("", "E012"),
    ("A" * 300, "E012"), ("a/" * 2100 + "x", "E012"),
], ids=["dotdot", "nested-dotdot", "absolute", "home", "nul", "s3-url", "https-url", "empty", "long-name",
        "long-path"])
def test_resolver_refuses(tmp_path, rel, code):
    with pytest.raises(PathRefused) as info:
        resolve_inside(tmp_path, rel, "model source")
    assert info.value.code == code and info.value.hint
    assert isinstance(info.value, OSError)  # readers that handle unreadable files handle it too


def test_resolver_follows_symlinks_before_deciding(tmp_path, outside):
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    (root / "models" / "inside.onnx").write_bytes(b"x")
    (root / "models" / "alias.onnx").symlink_to(root / "models" / "inside.onnx")
    (root / "models" / "escape.onnx").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path)
    (root / "loop").symlink_to(root / "loop")
    assert resolve_inside(root, "models/alias.onnx") == (root / "models" / "inside.onnx").resolve()
    assert resolve_inside(root, "models/missing.onnx") == (root / "models" / "missing.onnx").resolve()
    for rel in ("models/escape.onnx", "linkdir/secret.onnx", "loop"):
        with pytest.raises(PathRefused):
            resolve_inside(root, rel)


# -- validate / build / explain -------------------------------------------------------


def _point_source_at(fleet: Path, target: str) -> None:
    path = fleet / MODEL
    path.write_text(path.read_text().replace(f"source: {SOURCE}", f"source: {target}", 1))


@pytest.mark.parametrize("how", ["dotdot", "symlinked-file", "symlinked-folder", "absolute"])
def test_model_source_outside_is_refused_without_its_digest(how, fleet_copy, outside, run_cli, tmp_path):
    if how == "dotdot":
        target = os.path.relpath(outside, fleet_copy)
    elif how == "symlinked-file":
        (fleet_copy / SOURCE).unlink()
        (fleet_copy / SOURCE).symlink_to(outside)
        target = SOURCE
    elif how == "symlinked-folder":
        (fleet_copy / "models" / "shared").symlink_to(outside.parent)
        target = "models/shared/secret.onnx"
    else:
        target = str(outside)
    _point_source_at(fleet_copy, target)
    for command in ("validate", "build"):
        res = run_cli(command, "fleet", "--store", tmp_path / "store", cwd=tmp_path) if command == "build" \
            else run_cli(command, "fleet", cwd=tmp_path)
        assert res.code == 1, res.err
        assert "[E011]" in res.err and "internal error" not in res.err
        assert "[E212]" not in res.err  # reported once, as outside, not again as missing
        _assert_nothing_of(outside, _all_output(res))
    assert not (tmp_path / "store").exists()


def test_symlinked_data_file_outside_is_refused(fleet_copy, outside, run_cli, tmp_path):
    (fleet_copy / CALIBRATION).unlink()
    (fleet_copy / CALIBRATION).symlink_to(outside)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1 and "[E011]" in res.err and "calibration data" in res.err
    _assert_nothing_of(outside, _all_output(res))


def test_symlinked_inventory_outside_is_refused(fleet_copy, tmp_path, run_cli):
    secret = tmp_path / "other-fleet.csv"
    secret.write_text((fleet_copy / "devices/st-marys-hospital.csv").read_text().replace("sm-cart", "xx-cart"))
    (fleet_copy / "devices/borrowed.csv").symlink_to(secret)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1
    assert "fleet/devices/borrowed.csv:1:1: error[E011]" in res.err, res.err
    assert "xx-cart" not in _all_output(res)


def test_symlink_inside_the_repository_is_fine(fleet_copy, run_cli, tmp_path):
    real = fleet_copy / "models/meter-digits/1.0.0/full-real.onnx"
    (fleet_copy / SOURCE).rename(real)
    (fleet_copy / SOURCE).symlink_to(real)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 0, res.err


# -- the artifact store --------------------------------------------------------------


@pytest.mark.parametrize("config,words", [
    (ArtifactStore(kind="local", path="../elsewhere"), "leads outside"),
    (ArtifactStore(kind="repo", path="/var/tmp/store"), "not relative"),
    (ArtifactStore(kind="local", path="s3://bucket/x"), "is a URL"),
    (ArtifactStore(kind="object"), "no url"),
], ids=["dotdot", "absolute", "url-as-path", "object-without-url"])
def test_store_from_fleet_yaml_stays_inside(tmp_path, config, words):
    with pytest.raises(StoreError, match=words):
        open_store(tmp_path, config)


def test_store_path_symlinked_outside_is_refused(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "store").symlink_to(tmp_path)
    with pytest.raises(StoreError, match="leads outside"):
        open_store(tmp_path / "repo", ArtifactStore(kind="local", path="store"))


def test_store_override_on_the_command_line_may_be_anywhere(tmp_path):
    store = open_store(tmp_path / "repo", ArtifactStore(kind="local", path="../x"), override=str(tmp_path / "s"))
    assert store.location == str(tmp_path / "s")


def test_object_url_needs_kind_object(fleet_copy, run_cli, tmp_path):
    path = fleet_copy / "fleet.yaml"
    path.write_text(path.read_text().replace("path: .edgefleet/artifacts", "path: .edgefleet/artifacts\n"
                                                                          "    url: s3://bucket/x", 1))
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1 and "[E012]" in res.err and "kind: object" in res.err, res.err


# -- plan reads revisions: a committed symlink is refused ------------------------------


def _commit(repo: git.Repo, message: str) -> None:
    repo.git.add("--all")
    actor = git.Actor("Fleet Operator", "ops@example.com")
    when = f"{int(datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc).timestamp())} +0000"
    repo.index.commit(message, author=actor, committer=actor, author_date=when, commit_date=when)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../etc/hostname", "full.onnx"],
                         ids=["absolute", "dotdot", "inside"])
def test_plan_refuses_a_committed_symlink(fleet_copy, run_cli, tmp_path, target):
    repo = git.Repo.init(fleet_copy)
    _commit(repo, "fleet")
    (fleet_copy / "models/meter-digits/1.0.0/link.onnx").symlink_to(target)
    _commit(repo, "a link")
    res = run_cli("plan", fleet_copy, "--base", "HEAD~1", "--head", "HEAD", "--store", tmp_path / "store")
    assert res.code == 1, res.err
    assert "[E015]" in res.err and "models/meter-digits/1.0.0/link.onnx" in res.err, res.err
    assert "internal error" not in res.err


def test_folder_symlinked_outside_is_one_error_and_unread(fleet_copy, tmp_path, run_cli):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret-class.yaml").write_text("kind: HardwareClass\nsecret: 1\n")
    (fleet_copy / "rollouts").rename(tmp_path / "rollouts-real")
    (fleet_copy / "rollouts").symlink_to(elsewhere)
    res = run_cli("validate", "fleet", cwd=tmp_path)
    assert res.code == 1
    assert res.err.count("[E011]") == 1 and "fleet/rollouts:1:1" in res.err, res.err
    assert "secret" not in res.err
