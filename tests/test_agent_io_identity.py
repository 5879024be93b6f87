"""Device identity and conditions: key made once, 0600, loaded, signs in the inventory's format."""

from __future__ import annotations

import os
import stat

import pytest

from edgefleet.agent.conditions import Condition, set_condition
from edgefleet.agent.identity import (IdentityError, enroll, identity_dir, inventory_entry, key_file, load_identity,
                                      parse_public_key, verify_signature)
from edgefleet.spec.device import Device


def test_enroll_makes_an_owner_only_key_in_the_inventory_format(tmp_path):
    ident = enroll(tmp_path, "pa-robot-001")
    mode = stat.S_IMODE(os.stat(key_file(tmp_path)).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(identity_dir(tmp_path)).st_mode) == 0o700
    # The inventory's own model accepts the entry enroll prints.
    Device(hardware_class="jetson-vision-standard", site="plant-augsburg", **inventory_entry(ident))
    loaded = load_identity(tmp_path)
    assert (loaded.device_id, loaded.public_key) == ("pa-robot-001", ident.public_key)
    sig = loaded.sign(b"hello")
    assert verify_signature(ident.public_key, sig, b"hello")
    assert not verify_signature(ident.public_key, sig, b"hellO")
    assert "PRIVATE" not in repr(loaded)


def test_enroll_refuses_to_overwrite(tmp_path):
    first = enroll(tmp_path, "pa-robot-001")
    before = key_file(tmp_path).read_bytes()
    with pytest.raises(IdentityError) as err:
        enroll(tmp_path, "pa-robot-002")
    assert err.value.code == "E650"
    assert key_file(tmp_path).read_bytes() == before
    assert load_identity(tmp_path).public_key == first.public_key


def test_enroll_does_not_follow_a_planted_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    identity_dir(tmp_path / "s").mkdir(parents=True)
    os.symlink(target, key_file(tmp_path / "s"))
    with pytest.raises(IdentityError) as err:
        enroll(tmp_path / "s", "pa-robot-001")
    assert err.value.code == "E650"
    assert not target.exists()


@pytest.mark.parametrize("bad", ["", "UPPER", "-lead", "a/b", "x" * 64, "a b"])
def test_enroll_refuses_invalid_device_ids(tmp_path, bad):
    with pytest.raises(IdentityError) as err:
        enroll(tmp_path, bad)
    assert err.value.code == "E654"
    assert not identity_dir(tmp_path).exists()


def test_load_refuses_missing_open_and_damaged_keys(tmp_path):
    with pytest.raises(IdentityError) as err:
        load_identity(tmp_path)
    assert err.value.code == "E651"
    enroll(tmp_path, "pa-robot-001")
    os.chmod(key_file(tmp_path), 0o644)
    with pytest.raises(IdentityError) as err:
        load_identity(tmp_path)
    assert err.value.code == "E652" and "chmod 600" in err.value.hint
    os.chmod(key_file(tmp_path), 0o600)
    key_file(tmp_path).write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(IdentityError) as err:
        load_identity(tmp_path)
    assert err.value.code == "E653"


def test_load_refuses_a_device_json_naming_another_key(tmp_path):
    enroll(tmp_path, "pa-robot-001")
    other = enroll(tmp_path / "other", "pa-robot-002")
    info = identity_dir(tmp_path) / "device.json"
    info.write_text('{"device": "pa-robot-001", "public_key": "%s"}' % other.public_key)
    with pytest.raises(IdentityError) as err:
        load_identity(tmp_path)
    assert err.value.code == "E653"


@pytest.mark.parametrize("bad", ["ed25519:" + "0" * 63, "ed25519:" + "G" * 64, "rsa:" + "0" * 64, 5])
def test_parse_public_key_refuses_malformed_keys(bad):
    with pytest.raises(ValueError):
        parse_public_key(bad)


def _cond(status, reason="Serving", at="2026-12-01T10:00:00Z", type_="Ready"):
    return Condition(type=type_, status=status, reason=reason, message="", observed_generation=None,
                     last_transition=at)


def test_set_condition_keeps_the_transition_time_while_the_status_holds():
    conds = [_cond("True")]
    same = set_condition(conds, _cond("True", reason="StillServing", at="2026-12-01T11:00:00Z"))
    assert same[0].last_transition == "2026-12-01T10:00:00Z" and same[0].reason == "StillServing"
    flipped = set_condition(same, _cond("False", reason="ProbeFailed", at="2026-12-01T12:00:00Z"))
    assert flipped[0].last_transition == "2026-12-01T12:00:00Z"
    assert conds[0].reason == "Serving"  # pure: input untouched


def test_set_condition_orders_by_type_and_replaces_only_its_type():
    conds = set_condition([], _cond("True", type_="Frozen", reason="MetadataExpired"))
    conds = set_condition(conds, _cond("True"))
    conds = set_condition(conds, _cond("False", type_="Degraded", reason="AcceleratorOk"))
    assert [c.type for c in conds] == ["Ready", "Degraded", "Frozen"]


@pytest.mark.parametrize("field,value", [("reason", "not camel"), ("last_transition", "2026-12-01T10:00:00+02:00"),
                                         ("last_transition", "yesterday"), ("observed_generation", "abc"),
                                         ("type", "Healthy"), ("message", "x" * 1025)])
def test_condition_refuses_bad_fields(field, value):
    fields = dict(type="Ready", status="True", reason="Serving", message="", observed_generation=None,
                  last_transition="2026-12-01T10:00:00Z")
    fields[field] = value
    with pytest.raises(ValueError):
        Condition(**fields)


def test_control_characters_in_messages_become_replacement_characters():
    cond = _cond("True")
    cond = Condition(**{**cond.model_dump(), "message": "line one\nline\ttwo\r\x00\x1b[31m"})
    assert cond.message == "line one\nline\ttwo\ufffd\ufffd\ufffd[31m"
