"""The status remote: where devices deliver signed reports, apart from the desired-state repo.

Two kinds, by URL:

- **A git repository** (any URL git accepts: `git://`, `http(s)://`, `ssh://`, `file://`,
  a path). Each device pushes only `refs/status/<device-id>`: a chain of commits, one
  report per commit (the tree holds exactly one file, `report.dsse.json`, the signed
  envelope), so every buffered report is delivered in order and the history is the
  device's report log. The server-side `pre-receive` hook (`install_status_hook`, from
  `templates/agent/pre-receive.j2`) refuses a ref outside `refs/status/`, another
  device's or an unenrolled device's ref, a deletion, a non-fast-forward, a commit
  that is not one report file on one parent, a bad signature, a report for another
  device, and a counter not above the previous one (replay). The enrolled keys live in
  `<git-dir>/edgefleet/enrolled-keys.json`, written by `install_status_hook` (run it
  again when the inventory changes).
- **An object store** for large fleets: `s3://bucket/prefix` or `dir:PATH` (the same
  backends as the artifact store, `build/store.py`, imported lazily). One object per
  device, `status/<device-id>.json`, holding the newest `MAX_LOG_REPORTS` envelopes; the
  device rewrites it (it is the only writer of its key). Nothing checks a write there,
  so give each device credentials for its own key only (an S3 policy on
  `status/<device-id>.json`); readers verify every envelope anyway (`edgefleet status`).

Delivery is at least once: `push_reports` skips envelopes the remote already holds
(counter at or below the remote's newest), so a retry after a crash between push and
`mark_delivered` is not refused as a replay.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import rfc8785

from edgefleet.agent.identity import PUBLIC_KEY
from edgefleet.core.ids import is_device_id
from edgefleet.agent.report import MAX_ENVELOPE, ReportError, check_sequence, unverified_counter, verify_report
from edgefleet.core.fsutil import fsync_dir

REPORT_FILE = "report.dsse.json"
STATUS_PREFIX = "refs/status/"
OUTGOING = "refs/edgefleet/outgoing"
ENROLLED_FILE = "edgefleet/enrolled-keys.json"
ENROLLED_FORMAT = "edgefleet/enrolled-keys/v1"
LOG_FORMAT = "edgefleet/status-log/v1"
MAX_LOG_REPORTS = 64
MAX_COMMITS_PER_PUSH = 10_000
ZERO = "0" * 40
GIT_TIMEOUT = 120


class StatusRemoteError(Exception):
    """Reports could not be delivered or read (E680), or the status repo cannot be set up (E681)."""

    def __init__(self, code: str, message: str, hint: str = ""):
        self.code, self.message, self.hint = code, message, hint
        super().__init__(f"error[{code}]: {message}")


def is_object_store(url: str) -> bool:
    return url.startswith(("s3://", "dir:"))


# -- delivering ------------------------------------------------------------------------------

def push_reports(remote_url: str, device_id: str, envelopes: Iterable[bytes], *,
                 work_dir: Path | None = None) -> int:
    """Deliver `envelopes` (oldest first) to the status remote; the number now held there.

    On return every given envelope is on the remote (those it already held are skipped),
    so the caller may mark all of them delivered. Raises StatusRemoteError (E680) when
    the remote is unreachable or refuses the push; nothing is lost then.
    `work_dir` (git only) is a bare repository kept between pushes, e.g. in the state
    directory, so a push needs no fetch; without it a temporary one fetches the tip.
    """
    if not is_device_id(device_id):
        raise StatusRemoteError("E680", f"invalid device id {device_id!r}")
    envelopes = list(envelopes)
    if not envelopes:
        return 0
    numbered = []
    for env in envelopes:
        counter = unverified_counter(env)
        if counter is None:
            raise StatusRemoteError("E680", "an envelope in the outbox is not a readable report")
        numbered.append((counter, env))
    if is_object_store(remote_url):
        _push_object(remote_url, device_id, numbered)
    elif work_dir is not None:
        _push_git(remote_url, device_id, numbered, Path(work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="edgefleet-status-") as tmp:
            _push_git(remote_url, device_id, numbered, Path(tmp) / "status.git")
    return len(envelopes)


def _push_git(url: str, device_id: str, numbered: list[tuple[int, bytes]], work: Path) -> None:
    ref = STATUS_PREFIX + device_id
    if not (work / "HEAD").exists():
        work.mkdir(parents=True, exist_ok=True)
        _git(work, "init", "--bare", "-q", str(work))
    tip = _remote_tip(work, url, ref)
    tip_counter = None
    if tip is not None:
        if not _has_object(work, tip):
            # One commit is all a push needs: the parent of the next report, and its counter.
            # (Depth 1 of a chain of one-file trees is a few hundred bytes for the server.)
            _git(work, "fetch", "-q", "--no-tags", "--depth=1", url, f"+{ref}:{OUTGOING}", remote=True)
        blob = _git(work, "cat-file", "blob", f"{tip}:{REPORT_FILE}", check=False, binary=True)
        tip_counter = unverified_counter(blob) if blob else None
    fresh = _new_reports(numbered, tip_counter)
    if not fresh:
        return
    stream = bytearray()
    if tip is None:
        stream += f"reset {OUTGOING}\n".encode()
    for i, (counter, env) in enumerate(fresh):
        message = f"report {counter}\n".encode()
        stream += f"commit {OUTGOING}\n".encode()
        stream += f"committer {device_id} <{device_id}@devices.edgefleet.invalid> {_now()} +0000\n".encode()
        stream += b"data %d\n%s" % (len(message), message)
        if i == 0 and tip is not None:
            stream += f"from {tip}\n".encode()
        stream += b"deleteall\n"
        stream += f"M 100644 inline {REPORT_FILE}\n".encode()
        stream += b"data %d\n%s\n" % (len(env), env)
    _git(work, "fast-import", "--quiet", "--force", input=bytes(stream))
    head = _git(work, "rev-parse", OUTGOING).strip()
    _git(work, "push", "-q", "--porcelain", url, f"{head}:{ref}", remote=True)


def _new_reports(numbered: list[tuple[int, bytes]], above: int | None) -> list[tuple[int, bytes]]:
    """Envelopes not yet on the remote, by counter, without duplicates, oldest first."""
    seen: dict[int, bytes] = {}
    for counter, env in numbered:
        if above is None or counter > above:
            seen.setdefault(counter, env)
    return sorted(seen.items())


def _remote_tip(work: Path, url: str, ref: str) -> str | None:
    out = _git(work, "ls-remote", url, ref, remote=True)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def _has_object(work: Path, sha: str) -> bool:
    return subprocess.run(["git", "-C", str(work), "cat-file", "-e", f"{sha}^{{commit}}"], env=_git_env(),
                          capture_output=True, timeout=GIT_TIMEOUT).returncode == 0


def _push_object(url: str, device_id: str, numbered: list[tuple[int, bytes]]) -> None:
    backend = _object_backend(url)
    key = f"status/{device_id}.json"
    try:
        held = _log_envelopes(backend.read(key), device_id)
    except Exception as exc:  # an unreadable remote, not a damaged log: a damaged log is rewritten
        raise StatusRemoteError("E680", f"{url}: cannot read {key}: {exc}") from exc
    newest = max((c for c, _ in held), default=None)
    merged = held + _new_reports(numbered, newest)
    # Newest MAX_LOG_REPORTS, and at most 16 envelopes' worth of bytes.
    merged = merged[-MAX_LOG_REPORTS:]
    while len(merged) > 1 and sum(len(e) for _, e in merged) > 16 * MAX_ENVELOPE:
        merged.pop(0)
    data = rfc8785.dumps({"format": LOG_FORMAT, "device": device_id,
                          "reports": [base64.b64encode(e).decode() for _, e in merged]})
    try:
        backend.write(key, data)
    except Exception as exc:
        raise StatusRemoteError("E680", f"{url}: cannot write {key}: {exc}") from exc


def _log_envelopes(data: bytes | None, device_id: str) -> list[tuple[int, bytes]]:
    if not data or len(data) > 64 * MAX_ENVELOPE:
        return []
    try:
        value = json.loads(data)
        if value.get("format") != LOG_FORMAT or value.get("device") != device_id:
            return []
        out = []
        for text in value["reports"][:MAX_LOG_REPORTS]:
            env = base64.b64decode(text, validate=True)
            counter = unverified_counter(env)
            if counter is not None:
                out.append((counter, env))
        return out
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return []


def _object_backend(url: str):
    from edgefleet.build.store import FileObjectBackend, ObjectStore, StoreError

    if url.startswith("dir:"):
        return FileObjectBackend(Path(url[4:]), url)
    try:
        return ObjectStore.from_url(url).backend
    except StoreError as exc:
        raise StatusRemoteError("E680", str(exc)) from exc


# -- reading ---------------------------------------------------------------------------------

def read_reports(remote_or_dir: str | Path, *, devices: Iterable[str] | None = None,
                 work_dir: Path | None = None) -> Iterator[tuple[str, bytes]]:
    """Every report held, as (device_id, envelope bytes), oldest first per device.

    Nothing is verified here: the caller checks each with `verify_report` against the
    enrolled key and `check_sequence`. A git remote that is not a local repository is
    fetched into `work_dir` (or a temporary directory) first. An S3 store cannot be
    listed through the store backends, so give `devices` (the inventory's ids) for it.
    An oversize blob is cut at MAX_ENVELOPE + 1 bytes, so verify_report refuses it (E660).
    """
    source = str(remote_or_dir)
    wanted = None if devices is None else set(devices)
    if is_object_store(source):
        yield from _read_objects(source, wanted)
        return
    local = _local_git_dir(source)
    if local is not None:
        yield from _read_git(local, wanted)
        return
    if "://" not in source and (Path(source) / "status").is_dir():
        yield from _read_objects(f"dir:{source}", wanted)  # a plain directory written through dir:
        return
    if work_dir is not None:
        yield from _fetch_and_read(source, Path(work_dir), wanted)
        return
    with tempfile.TemporaryDirectory(prefix="edgefleet-status-read-") as tmp:
        yield from _fetch_and_read(source, Path(tmp) / "status.git", wanted)


def _fetch_and_read(url: str, work: Path, wanted: set[str] | None) -> Iterator[tuple[str, bytes]]:
    if not (work / "HEAD").exists():
        work.mkdir(parents=True, exist_ok=True)
        _git(work, "init", "--bare", "-q", str(work))
    _git(work, "fetch", "-q", "--no-tags", "--prune", url, f"+{STATUS_PREFIX}*:{STATUS_PREFIX}*", remote=True)
    yield from _read_git(work, wanted)


def _local_git_dir(source: str) -> Path | None:
    path = Path(source[7:] if source.startswith("file://") else source)
    if "://" in source and not source.startswith("file://"):
        return None
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path
    if (path / ".git" / "HEAD").is_file():
        return path / ".git"
    return None


def _read_git(git_dir: Path, wanted: set[str] | None) -> Iterator[tuple[str, bytes]]:
    """Each device's reports, oldest first: its ref's first-parent chain (`git rev-list --reverse
    --first-parent`), each commit's report.dsse.json. `for-each-ref` names each tip's tree and
    parents; one `git cat-file --batch` process reads the rest, a batch of devices at a time and
    one level of the chains per exchange, each report as `<tree>:report.dsse.json` (the tree and
    the blob: git spends ~10 µs an object). Not two processes per device as before: 5.7 ms each,
    about ten minutes at 100k devices. A ref that is not a chain of commits holds no report (as a
    damaged log in a store holds none)."""
    listed = _git(git_dir, "for-each-ref", "--format=%(refname)%09%(objectname)%09%(objecttype)%09%(tree)%09%(parent)",
                  STATUS_PREFIX).splitlines()
    tips: dict[str, tuple[str, str, str, str]] = {}
    for line in listed:
        fields = line.split("\t")
        if len(fields) != 5:
            continue
        device = fields[0][len(STATUS_PREFIX):]
        if is_device_id(device) and (wanted is None or device in wanted):
            tips[device] = tuple(fields[1:])
    devices = sorted(tips)
    with _CatFile(git_dir) as cat:
        for start in range(0, len(devices), _GIT_READ_BATCH):
            batch = devices[start:start + _GIT_READ_BATCH]
            chains: dict[str, list[tuple[str, str]]] = {device: [] for device in batch}  # (commit, tree), newest first
            seen: dict[str, set[str]] = {device: set() for device in batch}  # a cheap guard on long chains
            frontier: dict[str, str] = {}
            for device in batch:
                oid, kind, tree, parents = tips[device]
                if kind == "commit" and tree:
                    chains[device].append((oid, tree))
                    seen[device].add(oid)
                    if parents.split():
                        frontier[device] = parents.split()[0]
                else:  # a tag (peeled, as rev-list peels it) or anything else (then: no report)
                    frontier[device] = f"{oid}^{{commit}}"
            while frontier:
                asked = list(frontier.items())
                frontier = {}
                for (device, _), (oid, kind, raw) in zip(asked, cat.read_many([name for _, name in asked],
                                                                               limit=_MAX_COMMIT)):
                    tree, parent = _commit_links(raw) if kind == "commit" else (None, None)
                    if tree is None or oid in seen[device]:
                        continue
                    seen[device].add(oid)
                    chains[device].append((oid, tree))
                    if parent is not None:
                        frontier[device] = parent
            wanted_blobs = [(device, tree) for device in batch for _, tree in reversed(chains[device])]
            blobs = cat.read_many([f"{tree}:{REPORT_FILE}" for _, tree in wanted_blobs], limit=MAX_ENVELOPE + 1)
            for (device, _), (_, kind, blob) in zip(wanted_blobs, blobs):
                if kind == "blob" and blob is not None:
                    yield device, blob


_GIT_READ_BATCH = 1024  # devices per exchange: bounds the envelopes held at once
_MAX_COMMIT = 64 * 1024  # a report commit is a few hundred bytes; more is kept of none


def _commit_links(commit: bytes) -> tuple[str | None, str | None]:
    """(tree, first parent) of a raw commit object (its header ends at the first blank line)."""
    tree = parent = None
    for line in commit.split(b"\n"):
        if not line:
            break
        if line.startswith(b"tree ") and tree is None:
            tree = line[5:].decode("ascii", "replace").strip()
        elif line.startswith(b"parent ") and parent is None:
            parent = line[7:].decode("ascii", "replace").strip()
    return tree, parent


def _read_objects(url: str, wanted: set[str] | None) -> Iterator[tuple[str, bytes]]:
    backend = _object_backend(url)
    if wanted is None:
        root = getattr(backend, "root", None)
        if root is None:
            raise StatusRemoteError("E680", f"{url}: an object store cannot be listed; give the device ids",
                                    "edgefleet status passes the inventory's devices")
        folder = Path(root) / "status"
        wanted = {p.name[:-5] for p in folder.glob("*.json")} if folder.is_dir() else set()
    for device in sorted(wanted):
        if not is_device_id(device):
            continue
        try:
            data = backend.read(f"status/{device}.json")
        except Exception as exc:
            raise StatusRemoteError("E680", f"{url}: cannot read status/{device}.json: {exc}") from exc
        for _, env in _log_envelopes(data, device):
            yield device, env


class _CatFile:
    """One `git cat-file --batch` process for many reads."""

    def __init__(self, git_dir: Path, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(["git", "-C", str(git_dir), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env or _git_env())

    def __enter__(self) -> _CatFile:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.wait(timeout=GIT_TIMEOUT)

    def read_many(self, names: list[str], limit: int | None = None) -> list[tuple[str | None, str | None, bytes | None]]:
        """(object id, type, bytes) per name, (None, None, None) when missing; at most `limit` bytes
        kept of each. A thread writes the requests while this one reads the answers, so neither
        pipe fills up and there is no round trip per object."""
        import threading

        requests = b"".join(name.encode() + b"\n" for name in names)

        def send() -> None:
            try:
                self.proc.stdin.write(requests)
                self.proc.stdin.flush()
            except OSError:
                pass  # git ended; reading its answers says so

        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        try:
            return [self._answer(limit) for _ in names]
        finally:
            writer.join()

    def read(self, name: str, limit: int | None = None) -> bytes | None:
        return self.read_typed(name, limit)[1]

    def read_typed(self, name: str, limit: int | None = None) -> tuple[str | None, bytes | None]:
        """(type, bytes) of an object, or (None, None) when missing; at most `limit` bytes kept."""
        self.proc.stdin.write(name.encode() + b"\n")
        self.proc.stdin.flush()
        return self._answer(limit)[1:]

    def _answer(self, limit: int | None) -> tuple[str | None, str | None, bytes | None]:
        header = self.proc.stdout.readline().decode()
        parts = header.split()
        if len(parts) != 3:
            if not header:
                raise StatusRemoteError("E680", "git cat-file ended early")
            return None, None, None  # "<name> missing" (or ambiguous)
        size = int(parts[2])
        kept, left = bytearray(), size
        while left:
            chunk = self.proc.stdout.read(min(left, 1 << 16))
            if not chunk:
                raise StatusRemoteError("E680", "git cat-file ended early")
            if limit is None or len(kept) < limit:
                kept += chunk[: (limit - len(kept)) if limit is not None else None]
            left -= len(chunk)
        self.proc.stdout.read(1)  # the newline after the object
        return parts[0], parts[1], bytes(kept)


# -- the server side: enrolled keys and the pre-receive hook ---------------------------------

def install_status_hook(repo_dir: Path, enrolled: Mapping[str, str], *, python: str | None = None) -> Path:
    """Make `repo_dir` (a bare status repository) refuse everything but valid reports.

    Writes `<git-dir>/edgefleet/enrolled-keys.json` ({device id: "ed25519:<hex>"}), the
    executable `hooks/pre-receive` rendered from `templates/agent/pre-receive.j2`, and sets
    `receive.denyDeletes` and `receive.denyNonFastForwards`. Idempotent: run it again
    whenever the inventory changes. Returns the hook's path.
    """
    git_dir = _local_git_dir(str(repo_dir))
    if git_dir is None:
        raise StatusRemoteError("E681", f"{repo_dir} is not a git repository", "git init --bare DIR first")
    for device, key in enrolled.items():
        if not is_device_id(device):
            raise StatusRemoteError("E681", f"invalid device id {device!r} in the enrolled keys")
        if not isinstance(key, str) or not PUBLIC_KEY.fullmatch(key):
            raise StatusRemoteError("E681", f"device {device}: the public key is not 'ed25519:' and 64 hex digits")
    keys_path = git_dir / ENROLLED_FILE
    keys_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(keys_path, rfc8785.dumps({"format": ENROLLED_FORMAT, "devices": dict(enrolled)}) + b"\n", 0o644)
    from edgefleet.agent.templates import render_template

    package_root = str(Path(__file__).resolve().parents[2])
    hook = git_dir / "hooks" / "pre-receive"
    hook.parent.mkdir(parents=True, exist_ok=True)
    text = render_template("agent/pre-receive.j2", python=python or sys.executable, package_root=package_root,
                           enrolled_file=ENROLLED_FILE)
    _write_atomic(hook, text.encode(), 0o755)
    for key, value in (("receive.denyDeletes", "true"), ("receive.denyNonFastForwards", "true")):
        _git(git_dir, "config", key, value)
    return hook


def enrolled_keys(fleet_root: Path) -> dict[str, str]:
    """{device id: public key} of a fleet repository's inventory, for `install_status_hook`."""
    from edgefleet.core.diagnostics import has_errors
    from edgefleet.load.repo import read_repository

    repo, diags = read_repository(Path(fleet_root))
    if has_errors(diags):
        first = next(d for d in diags if d.is_error)
        raise StatusRemoteError("E681", f"{first.location.path}:{first.location.line}: {first.message}",
                                "run `edgefleet validate` on the fleet repository")
    return {d.doc.id: d.doc.public_key for d in repo.devices}


def load_enrolled(git_dir: Path) -> dict[str, str]:
    """The enrolled keys beside a status repository; E681 if missing or malformed."""
    path = Path(git_dir) / ENROLLED_FILE
    try:
        value = json.loads(path.read_bytes()[: 64 * 1024 * 1024])
        devices = value["devices"]
        if value.get("format") != ENROLLED_FORMAT or not isinstance(devices, dict):
            raise ValueError("not an enrolled-keys file")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StatusRemoteError("E681", f"{path}: cannot read the enrolled keys: {exc}",
                                "run install_status_hook(repo, enrolled) on the server") from exc
    return {d: k for d, k in devices.items() if isinstance(k, str)}


def check_push(git_dir: Path, updates: list[tuple[str, str, str]], enrolled: Mapping[str, str]) -> list[str]:
    """Why a push must be refused (empty: accept). `updates` are pre-receive's (old, new, ref) lines.

    Runs inside the hook, where git's environment points at the pushed objects still in
    quarantine; every object is read through `git`, never trusted by name.
    """
    refusals: list[str] = []
    git_dir = Path(git_dir)
    for old, new, ref in updates:
        try:
            _check_update(git_dir, old, new, ref, enrolled)
        except _Refused as exc:
            refusals.append(f"error[{exc.code}]: {ref}: {exc.message}")
        except ReportError as exc:
            refusals.append(f"error[{exc.code}]: {ref}: {exc.message}")
    return refusals


class _Refused(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(message)


def _check_update(git_dir: Path, old: str, new: str, ref: str, enrolled: Mapping[str, str]) -> None:
    if not ref.startswith(STATUS_PREFIX):
        raise _Refused("E682", "only refs/status/<device-id> may be pushed to a status repository")
    device = ref[len(STATUS_PREFIX):]
    if not is_device_id(device):
        raise _Refused("E682", f"{device[:80]!r} is not a device id")
    key = enrolled.get(device)
    if key is None:
        raise _Refused("E683", f"device {device} is not enrolled here (its key is not in {ENROLLED_FILE})")
    if not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", new) or not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", old):
        raise _Refused("E685", "malformed update line")
    if set(new) == {"0"}:
        raise _Refused("E684", "a device's report log cannot be deleted")
    fresh_ref = set(old) == {"0"}
    if not fresh_ref:
        ancestor = subprocess.run(["git", "-C", str(git_dir), "merge-base", "--is-ancestor", old, new],
                                  env=_hook_env(), capture_output=True, timeout=GIT_TIMEOUT)
        if ancestor.returncode != 0:
            raise _Refused("E684", "non-fast-forward: a report log only grows")
    span = new if fresh_ref else f"{old}..{new}"
    lines = _git(git_dir, "rev-list", "--reverse", "--topo-order", "--parents", span, env=_hook_env()).splitlines()
    if not lines:
        raise _Refused("E685", "the push adds no report")
    if len(lines) > MAX_COMMITS_PER_PUSH:
        raise _Refused("E685", f"{len(lines)} commits in one push, more than {MAX_COMMITS_PER_PUSH}")
    with _CatFile(git_dir, _hook_env()) as cat:
        previous = None
        expected_parent = None if fresh_ref else old
        if not fresh_ref:
            kind, blob = cat.read_typed(f"{old}:{REPORT_FILE}", limit=MAX_ENVELOPE + 1)
            previous = unverified_counter(blob) if blob else None  # accepted by this hook before
        for line in lines:
            commit, *parents = line.split()
            if parents != ([expected_parent] if expected_parent else []):
                raise _Refused("E685", f"commit {commit[:12]} is not one report on the previous one "
                                       "(merges and side branches are refused)")
            kind, tree = cat.read_typed(f"{commit}^{{tree}}")
            entries = _tree_entries(tree or b"")
            if [(m, n) for m, n, _ in entries] != [("100644", REPORT_FILE)]:
                raise _Refused("E685", f"commit {commit[:12]} must hold exactly one file, {REPORT_FILE}")
            kind, blob = cat.read_typed(entries[0][2], limit=MAX_ENVELOPE + 1)
            if kind != "blob" or blob is None:
                raise _Refused("E685", f"commit {commit[:12]}: {REPORT_FILE} is not a file")
            try:
                report = verify_report(blob, key, device)
                check_sequence(previous, report)
            except ReportError as exc:
                raise _Refused(exc.code, f"commit {commit[:12]}: {exc.message}") from exc
            previous, expected_parent = report.counter, commit


def _tree_entries(raw: bytes) -> list[tuple[str, str, str]]:
    """(mode, name, sha hex) of a raw tree object."""
    entries, i = [], 0
    while i < len(raw):
        space = raw.index(b" ", i)
        nul = raw.index(b"\0", space)
        mode, name = raw[i:space].decode(), raw[space + 1:nul].decode("utf-8", "replace")
        sha = raw[nul + 1:nul + 21].hex()
        entries.append((mode, name, sha))
        i = nul + 21
    return entries


def pre_receive_main(git_dir: str, stdin, stderr, enrolled_file: str = ENROLLED_FILE) -> int:
    """The hook's entry point (see templates/agent/pre-receive.j2): 0 accepts the whole push."""
    try:
        enrolled = load_enrolled(Path(git_dir))
        updates = []
        for line in stdin.read(1 << 20).splitlines():
            parts = line.split()
            if len(parts) != 3:
                stderr.write("error[E685]: malformed pre-receive input\n")
                return 1
            updates.append((parts[0], parts[1], parts[2]))
        refusals = check_push(Path(git_dir), updates, enrolled)
    except StatusRemoteError as exc:
        stderr.write(f"error[{exc.code}]: {exc.message}\n")
        return 1
    except Exception as exc:  # refuse rather than accept on a bug
        stderr.write(f"error[E685]: the status hook failed: {type(exc).__name__}: {exc}\n")
        return 1
    for line in refusals:
        stderr.write(line + "\n")
    return 1 if refusals else 0


# -- plumbing --------------------------------------------------------------------------------

def _now() -> int:
    import time

    return int(time.time())


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    return env


def _hook_env() -> dict[str, str]:
    """Inside the hook keep git's variables: they point at the quarantined objects."""
    return {**os.environ, "LC_ALL": "C"}


def _git(cwd: Path, *args: str, input: bytes | None = None, check: bool = True, binary: bool = False,
         remote: bool = False, env: dict | None = None):
    cmd = ["git", "-C", str(cwd)]
    if remote:
        cmd += ["-c", "protocol.version=2", "-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=30"]
    try:
        proc = subprocess.run(cmd + list(args), input=input, capture_output=True, timeout=GIT_TIMEOUT,
                              env=env or _git_env())
    except subprocess.TimeoutExpired as exc:
        raise StatusRemoteError("E680", f"git {args[0]} timed out after {GIT_TIMEOUT}s") from exc
    if check and proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip()
        raise StatusRemoteError("E680", f"git {args[0]} failed: {detail[-2000:]}",
                                "the reports stay queued; they are pushed again on the next cycle")
    if not check and proc.returncode != 0:
        return b"" if binary else ""
    return proc.stdout if binary else proc.stdout.decode("utf-8", "replace")


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def hook_is_installed(repo_dir: Path) -> bool:
    git_dir = _local_git_dir(str(repo_dir))
    hook = git_dir / "hooks" / "pre-receive" if git_dir else None
    return bool(hook and hook.is_file() and os.stat(hook).st_mode & stat.S_IXUSR)
