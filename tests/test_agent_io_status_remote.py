"""Status remote: reports pushed with real git to a real `git daemon`, guarded by the real hook."""

from __future__ import annotations

import os
import subprocess

import pytest

from agent_io_support import bare_repo, git_daemon, make_identity, signed
from edgefleet.agent.report import verify_report
from edgefleet.agent.status_remote import (ENROLLED_FILE, REPORT_FILE, StatusRemoteError, install_status_hook,
                                           load_enrolled, push_reports, read_reports)
from edgefleet.agent.telemetry import TelemetryStore


@pytest.fixture
def fleet(tmp_path):
    """Two enrolled devices, one unenrolled, a status repo with the hook, served by git daemon."""
    base = tmp_path / "srv"
    base.mkdir()
    repo = bare_repo(base / "status.git")
    a, b, stranger = (make_identity(tmp_path, d) for d in ("pa-robot-001", "pa-robot-002", "pa-robot-099"))
    install_status_hook(repo, {a.device_id: a.public_key, b.device_id: b.public_key})
    with git_daemon(base) as url:
        yield {"url": f"{url}/status.git", "repo": repo, "a": a, "b": b, "stranger": stranger, "tmp": tmp_path}


def _git(*args, cwd=None, input=None, check=True):
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=check)


def raw_push(work, url, ref, blobs, *, parent="fetch", name=REPORT_FILE, extra_file=None, force=False):
    """Push hand-made commits (one blob each) on top of the remote's `ref`: for attacks."""
    if not (work / "HEAD").exists():
        _git("init", "-q", "--bare", str(work))
    tip = None
    if parent == "fetch":
        got = _git("-C", str(work), "fetch", "-q", url, f"+{ref}:refs/tip", check=False)
        tip = _git("-C", str(work), "rev-parse", "refs/tip").stdout.decode().strip() if got.returncode == 0 else None
    elif parent:
        tip = parent
    for blob in blobs:
        sha = _git("-C", str(work), "hash-object", "-w", "--stdin", input=blob).stdout.decode().strip()
        entries = f"100644 blob {sha}\t{name}\n"
        if extra_file:
            other = _git("-C", str(work), "hash-object", "-w", "--stdin", input=b"x").stdout.decode().strip()
            entries += f"100644 blob {other}\t{extra_file}\n"
        tree = _git("-C", str(work), "mktree", input=entries.encode()).stdout.decode().strip()
        args = ["-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree, "-m", "r"]
        if tip:
            args += ["-p", tip]
        tip = _git(*args).stdout.decode().strip()
    cmd = ["-C", str(work), "push", url, f"{'+' if force else ''}{tip}:{ref}"]
    return _git(*cmd, check=False)


def _remote_reports(repo):
    return list(read_reports(repo))


def test_good_reports_are_accepted_in_order_and_read_back(fleet):
    a = fleet["a"]
    envs = [signed(a, c) for c in (1, 2, 3)]
    assert push_reports(fleet["url"], a.device_id, envs) == 3
    got = _remote_reports(fleet["repo"])
    assert got == [(a.device_id, e) for e in envs]
    assert [verify_report(e, a.public_key, a.device_id).counter for _, e in got] == [1, 2, 3]
    # Each report is one commit holding exactly one file.
    log = _git("-C", str(fleet["repo"]), "log", "--format=%H %P", "refs/status/pa-robot-001").stdout.decode().split("\n")
    assert len([line for line in log if line]) == 3
    assert _git("-C", str(fleet["repo"]), "ls-tree", "--name-only", "refs/status/pa-robot-001").stdout == b"report.dsse.json\n"


def test_a_retry_after_a_lost_acknowledgement_skips_what_arrived(fleet, tmp_path):
    a = fleet["a"]
    work = tmp_path / "device-status.git"
    assert push_reports(fleet["url"], a.device_id, [signed(a, 1), signed(a, 2)], work_dir=work) == 2
    # The device crashed before mark_delivered: it sends 1 and 2 again, with 3.
    assert push_reports(fleet["url"], a.device_id, [signed(a, c) for c in (1, 2, 3)], work_dir=work) == 3
    # A fresh device-side clone (no work dir) fetches the tip and carries on too.
    assert push_reports(fleet["url"], a.device_id, [signed(a, 3), signed(a, 4)]) == 2
    counters = [verify_report(e, a.public_key, None).counter for _, e in _remote_reports(fleet["repo"])]
    assert counters == [1, 2, 3, 4]


def test_two_devices_each_keep_their_own_log(fleet):
    a, b = fleet["a"], fleet["b"]
    push_reports(fleet["url"], a.device_id, [signed(a, 1)])
    push_reports(fleet["url"], b.device_id, [signed(b, 10), signed(b, 11)])
    got = _remote_reports(fleet["repo"])
    assert [(d, verify_report(e, fleet[d[-1:] == "1" and "a" or "b"].public_key, d).counter) for d, e in got] == [
        ("pa-robot-001", 1), ("pa-robot-002", 10), ("pa-robot-002", 11)]
    assert list(read_reports(fleet["repo"], devices=["pa-robot-002"])) == got[1:]
    # Reading through the git server (as `edgefleet status` does from elsewhere) gives the same.
    assert list(read_reports(fleet["url"])) == got


def _refused(result, code):
    assert result.returncode != 0, result.stderr.decode()
    assert f"error[{code}]" in result.stderr.decode(), result.stderr.decode()


def test_a_forged_report_is_refused(fleet, tmp_path):
    a, stranger = fleet["a"], fleet["stranger"]
    push_reports(fleet["url"], a.device_id, [signed(a, 1)])
    # A report claiming to be pa-robot-001 but signed with another key.
    forged = signed(make_identity(tmp_path / "evil", a.device_id), 2)
    _refused(raw_push(tmp_path / "w", fleet["url"], "refs/status/pa-robot-001", [forged]), "E663")
    with pytest.raises(StatusRemoteError) as err:
        push_reports(fleet["url"], a.device_id, [forged])
    assert err.value.code == "E680" and "E663" in err.value.message
    assert [verify_report(e, a.public_key, None).counter for _, e in _remote_reports(fleet["repo"])] == [1]
    del stranger


def test_a_replayed_counter_is_refused(fleet, tmp_path):
    a = fleet["a"]
    push_reports(fleet["url"], a.device_id, [signed(a, 1), signed(a, 2)])
    # A genuine old report, pushed again on top: the counter does not grow.
    _refused(raw_push(tmp_path / "w", fleet["url"], "refs/status/pa-robot-001", [signed(a, 2)]), "E665")
    _refused(raw_push(tmp_path / "w2", fleet["url"], "refs/status/pa-robot-001", [signed(a, 1)]), "E665")
    # Out of order inside one push is refused too.
    _refused(raw_push(tmp_path / "w3", fleet["url"], "refs/status/pa-robot-001", [signed(a, 5), signed(a, 4)]),
             "E665")
    assert len(_remote_reports(fleet["repo"])) == 2


def test_another_devices_ref_is_refused(fleet, tmp_path):
    a, b = fleet["a"], fleet["b"]
    # pa-robot-001 pushes its own genuine report onto pa-robot-002's ref.
    _refused(raw_push(tmp_path / "w", fleet["url"], "refs/status/pa-robot-002", [signed(a, 1)]), "E663")
    # pa-robot-002's key signing a report that claims pa-robot-001, pushed to 002's ref.
    from agent_io_support import make_report
    from edgefleet.agent.report import report_payload
    import base64
    import json
    from securesystemslib.dsse import Envelope
    from edgefleet.agent.report import PAYLOAD_TYPE
    payload = report_payload(make_report("pa-robot-001", 1))
    sig = b.sign(Envelope(payload, PAYLOAD_TYPE, {}).pae())
    claim = json.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                        "signatures": [{"keyid": b.public_key, "sig": base64.b64encode(sig).decode()}]}).encode()
    _refused(raw_push(tmp_path / "w2", fleet["url"], "refs/status/pa-robot-002", [claim]), "E664")
    assert _remote_reports(fleet["repo"]) == []


def test_an_unenrolled_device_is_refused(fleet):
    stranger = fleet["stranger"]
    with pytest.raises(StatusRemoteError) as err:
        push_reports(fleet["url"], stranger.device_id, [signed(stranger, 1)])
    assert "E683" in err.value.message
    assert _remote_reports(fleet["repo"]) == []


@pytest.mark.parametrize("ref,code", [("refs/heads/main", "E682"), ("refs/status/Not_A_Device", "E682"),
                                      ("refs/tags/v1", "E682")])
def test_refs_outside_the_status_namespace_are_refused(fleet, tmp_path, ref, code):
    _refused(raw_push(tmp_path / "w", fleet["url"], ref, [signed(fleet["a"], 1)], parent=None), code)


def test_non_fast_forward_deletion_and_odd_commits_are_refused(fleet, tmp_path):
    a = fleet["a"]
    url, ref = fleet["url"], "refs/status/pa-robot-001"
    push_reports(url, a.device_id, [signed(a, 1), signed(a, 2)])
    before = _git("-C", str(fleet["repo"]), "rev-parse", ref).stdout
    # Rewrite history: a new root commit with a higher counter, force-pushed.
    result = raw_push(tmp_path / "w", url, ref, [signed(a, 9)], parent=None, force=True)
    assert result.returncode != 0 and b"non-fast-forward" in result.stderr
    # Delete the log.
    result = _git("-C", str(tmp_path / "w"), "push", url, f":{ref}", check=False)
    assert result.returncode != 0
    # A commit with a second file, and a commit whose file has another name.
    _refused(raw_push(tmp_path / "w2", url, ref, [signed(a, 3)], extra_file="notes.txt"), "E685")
    _refused(raw_push(tmp_path / "w3", url, ref, [signed(a, 3)], name="report.json"), "E685")
    # A merge of two report chains.
    work = tmp_path / "w3"
    tip = _git("-C", str(work), "rev-parse", "refs/tip").stdout.decode().strip()
    tree = _git("-C", str(work), "rev-parse", f"{tip}^{{tree}}").stdout.decode().strip()
    merge = _git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree, "-p", tip,
                 "-p", f"{tip}~1", "-m", "m").stdout.decode().strip()
    _refused(_git("-C", str(work), "push", url, f"{merge}:{ref}", check=False), "E685")
    assert _git("-C", str(fleet["repo"]), "rev-parse", ref).stdout == before


def test_a_hook_hit_by_its_own_bug_refuses(fleet, tmp_path):
    (fleet["repo"] / ENROLLED_FILE).write_text("{broken")
    with pytest.raises(StatusRemoteError) as err:
        push_reports(fleet["url"], fleet["a"].device_id, [signed(fleet["a"], 1)])
    assert "E681" in err.value.message


def test_install_status_hook_is_idempotent_and_validates_keys(fleet):
    repo, a = fleet["repo"], fleet["a"]
    hook = install_status_hook(repo, {a.device_id: a.public_key})
    assert os.access(hook, os.X_OK) and hook.read_text().startswith("#!")
    assert load_enrolled(repo) == {a.device_id: a.public_key}
    with pytest.raises(StatusRemoteError) as err:
        install_status_hook(repo, {a.device_id: "ed25519:nothex"})
    assert err.value.code == "E681"
    with pytest.raises(StatusRemoteError):
        install_status_hook(fleet["tmp"] / "not-a-repo", {})


def test_outage_buffers_and_then_every_report_arrives(tmp_path):
    """Server down: pushes fail, the outbox keeps all; server back: every report arrives (count checked)."""
    base = tmp_path / "srv"
    base.mkdir()
    repo = bare_repo(base / "status.git")
    a = make_identity(tmp_path)
    install_status_hook(repo, {a.device_id: a.public_key})
    from agent_io_support import free_port
    port = free_port()
    url = f"git://127.0.0.1:{port}/status.git"
    store = TelemetryStore(tmp_path / "telemetry.db")

    def cycle():
        c = store.next_counter()
        store.enqueue_report(c, signed(a, c))
        pending = store.pending_reports()
        try:
            delivered = push_reports(url, a.device_id, [e for _, e in pending], work_dir=tmp_path / "w")
        except StatusRemoteError:
            return False
        store.mark_delivered([c for c, _ in pending[:delivered]])
        return True

    with git_daemon(base, port):
        assert cycle() and cycle()
    assert not any(cycle() for _ in range(5))  # outage: nothing delivered, nothing lost
    assert len(store.pending_reports()) == 5
    with git_daemon(base, port):
        assert cycle()
    assert store.pending_reports() == []
    counters = [verify_report(e, a.public_key, a.device_id).counter for _, e in read_reports(repo)]
    assert len(counters) == 8 and counters == sorted(counters)


def test_object_store_directory_keeps_one_key_per_device(tmp_path):
    a, b = make_identity(tmp_path, "pa-robot-001"), make_identity(tmp_path, "pa-robot-002")
    url = f"dir:{tmp_path / 'status'}"
    assert push_reports(url, a.device_id, [signed(a, 1), signed(a, 2)]) == 2
    assert push_reports(url, a.device_id, [signed(a, 2), signed(a, 3)]) == 2
    push_reports(url, b.device_id, [signed(b, 7)])
    assert sorted(p.name for p in (tmp_path / "status" / "status").iterdir()) == ["pa-robot-001.json",
                                                                                 "pa-robot-002.json"]
    got = [(d, verify_report(e, (a if d == a.device_id else b).public_key, d).counter) for d, e in read_reports(url)]
    assert got == [("pa-robot-001", 1), ("pa-robot-001", 2), ("pa-robot-001", 3), ("pa-robot-002", 7)]
    assert [d for d, _ in read_reports(url, devices=["pa-robot-002", "pa-robot-003"])] == ["pa-robot-002"]


def test_enrolled_keys_come_from_the_fleet_inventory(tmp_path):
    from agent_io_support import REPO
    from edgefleet.agent.status_remote import enrolled_keys
    keys = enrolled_keys(REPO / "fleet")
    assert keys["pa-robot-001"] == "ed25519:c34f9502a530e5e4a847f94be7596ca9b98d64cc4ec353f69f72cb1518303474"
    assert len(keys) > 20
    repo = bare_repo(tmp_path / "status.git")
    install_status_hook(repo, keys)
    assert load_enrolled(repo) == keys


def test_a_plain_directory_reads_like_dir_url(tmp_path):
    a = make_identity(tmp_path)
    push_reports(f"dir:{tmp_path / 's'}", a.device_id, [signed(a, 1)])
    assert [d for d, _ in read_reports(tmp_path / "s")] == [a.device_id]


def test_pushes_over_smart_http_are_guarded_by_the_same_hook(tmp_path):
    from agent_io_support import git_http_backend
    base = tmp_path / "srv"
    base.mkdir()
    repo = bare_repo(base / "status.git")
    a = make_identity(tmp_path)
    install_status_hook(repo, {a.device_id: a.public_key})
    with git_http_backend(base) as url:
        assert push_reports(f"{url}/status.git", a.device_id, [signed(a, 1), signed(a, 2)]) == 2
        _refused(raw_push(tmp_path / "w", f"{url}/status.git", "refs/status/pa-robot-001", [signed(a, 2)]), "E665")
        assert [d for d, _ in read_reports(f"{url}/status.git")] == [a.device_id] * 2


def test_s3_object_store_one_key_per_device(tmp_path, monkeypatch):
    """moto stands in for the S3 service (in-process); boto3 and the store's S3 backend run for real."""
    moto = pytest.importorskip("moto")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        import boto3
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="fleet-status")
        a = make_identity(tmp_path)
        url = "s3://fleet-status/acme"
        assert push_reports(url, a.device_id, [signed(a, c) for c in (1, 2)]) == 2
        assert push_reports(url, a.device_id, [signed(a, c) for c in (2, 3)]) == 2
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="fleet-status")["Contents"]]
        assert keys == ["acme/status/pa-robot-001.json"]
        got = [verify_report(e, a.public_key, d).counter for d, e in read_reports(url, devices=[a.device_id])]
        assert got == [1, 2, 3]
        with pytest.raises(StatusRemoteError):
            list(read_reports(url))  # S3 cannot be listed through the store backend: give the devices


def test_an_object_log_keeps_the_newest_reports_and_rewrites_a_damaged_one(tmp_path):
    from edgefleet.agent.status_remote import MAX_LOG_REPORTS
    a = make_identity(tmp_path)
    url = f"dir:{tmp_path / 's'}"
    push_reports(url, a.device_id, [signed(a, c) for c in range(1, MAX_LOG_REPORTS + 11)])
    counters = [verify_report(e, a.public_key, None).counter for _, e in read_reports(url)]
    assert counters == list(range(11, MAX_LOG_REPORTS + 11))
    (tmp_path / "s" / "status" / "pa-robot-001.json").write_bytes(b"{damaged")
    push_reports(url, a.device_id, [signed(a, 100)])
    assert [verify_report(e, a.public_key, None).counter for _, e in read_reports(url)] == [100]


def test_the_hooks_own_checks_without_git_configs_help(tmp_path):
    """check_push alone refuses non-fast-forwards and deletions (receive.deny* are only a second line)."""
    import io
    from edgefleet.agent.status_remote import check_push, pre_receive_main
    a = make_identity(tmp_path)
    repo = bare_repo(tmp_path / "status.git")
    enrolled = {a.device_id: a.public_key}
    push_reports(str(repo), a.device_id, [signed(a, 1), signed(a, 2)])
    ref = "refs/status/pa-robot-001"
    tip = _git("-C", str(repo), "rev-parse", ref).stdout.decode().strip()
    first = _git("-C", str(repo), "rev-parse", f"{ref}~1").stdout.decode().strip()
    # An unrelated chain with higher counters, written into the same repository.
    raw_push(tmp_path / "w", str(repo), "refs/status/other", [signed(a, 7)], parent=None)
    other = _git("-C", str(repo), "rev-parse", "refs/status/other").stdout.decode().strip()
    assert check_push(repo, [(first, tip, ref)], enrolled) == []
    [refusal] = check_push(repo, [(tip, other, ref)], enrolled)
    assert "E684" in refusal and "non-fast-forward" in refusal
    [refusal] = check_push(repo, [(tip, "0" * 40, ref)], enrolled)
    assert "E684" in refusal
    install_status_hook(repo, enrolled)
    err = io.StringIO()
    assert pre_receive_main(str(repo), io.StringIO("garbage\n"), err) == 1 and "E685" in err.getvalue()
    err = io.StringIO()
    assert pre_receive_main(str(repo), io.StringIO(f"{first} {tip} {ref}\n"), err) == 0, err.getvalue()


def test_reading_a_git_status_remote_gives_what_rev_list_per_ref_gives(tmp_path, monkeypatch):
    """`read_reports` of a git status remote reads every ref's first-parent chain, oldest first,
    with one `git cat-file --batch` process (in batches of devices, a chain level per exchange),
    not two processes per device. The reference here is the old reader: `git rev-list --reverse
    --first-parent` per ref and `<commit>:report.dsse.json`. Odd refs a hook would never let in
    (a blob, a tag) hold no report and do not stop the others."""
    import edgefleet.agent.status_remote as status_remote

    repo = tmp_path / "status.git"
    _git("init", "-q", "--bare", str(repo))
    work = tmp_path / "work.git"
    devices = [f"dev-{i:03d}" for i in range(7)]
    for i, device in enumerate(devices):  # chains of 1..4 reports, one a merge (first parent followed)
        raw_push(work, str(repo), f"refs/status/{device}", [b"env %d.%d" % (i, n) for n in range(1 + i % 4)],
                 parent=None)
    side = _git("-C", str(repo), "rev-parse", f"refs/status/{devices[1]}").stdout.decode().strip()
    main_tip = _git("-C", str(repo), "rev-parse", f"refs/status/{devices[3]}").stdout.decode().strip()
    tree = _git("-C", str(repo), "rev-parse", f"{main_tip}^{{tree}}").stdout.decode().strip()
    merge = _git("-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", tree,
                 "-p", main_tip, "-p", side, "-m", "merge").stdout.decode().strip()
    _git("-C", str(repo), "update-ref", f"refs/status/{devices[3]}", merge)
    blob = _git("-C", str(repo), "hash-object", "-w", "--stdin", input=b"not a commit").stdout.decode().strip()
    _git("-C", str(repo), "update-ref", "refs/status/dev-blob", blob)
    _git("-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "-m", "t", "t1",
         f"refs/status/{devices[2]}")
    tag = _git("-C", str(repo), "rev-parse", "refs/tags/t1").stdout.decode().strip()
    _git("-C", str(repo), "update-ref", "refs/status/dev-tagged", tag)  # an annotated tag of a chain: peeled

    def reference(device: str) -> list[bytes]:
        commits = _git("-C", str(repo), "rev-list", "--reverse", "--first-parent",
                       f"refs/status/{device}").stdout.decode().split()
        return [_git("-C", str(repo), "cat-file", "blob", f"{c}:{REPORT_FILE}").stdout for c in commits]

    expected = [(d, e) for d in sorted([*devices, "dev-tagged"]) for e in reference(d)]
    monkeypatch.setattr(status_remote, "_GIT_READ_BATCH", 3)  # several batches of devices
    assert list(read_reports(repo)) == expected
    # the merge holds its first parent's file again; its second parent (device 1's chain) is not followed
    assert [e for d, e in expected if d == devices[3]] == [b"env 3.0", b"env 3.1", b"env 3.2", b"env 3.3", b"env 3.3"]
    assert [e for d, e in expected if d == "dev-tagged"] == [e for d, e in expected if d == devices[2]]
    assert list(read_reports(repo, devices=[devices[5], "dev-blob", "nobody"])) == [
        (d, e) for d, e in expected if d == devices[5]]
