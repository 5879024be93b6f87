"""The device's telemetry buffer and report outbox: one SQLite file, bounded in rows and bytes.

What it keeps:

- `inference` rows (time, latency, ok, the model that answered) and `event` rows (time,
  kind, detail: update status changes, the model now serving, errors). When there are more
  than `max_rows` of them, or the file's live pages pass `max_bytes`, the oldest rows are
  folded into hourly `bucket` rows (counts, errors, last success, a latency histogram, and
  one per model) and counted in `dropped_rows`. Buckets themselves are capped (`MAX_BUCKETS`); the oldest merge
  into one "before" bucket. So totals stay exact forever, percentiles of folded data
  are approximate (histogram bins 26% wide), and the file never grows without bound
  (the failure of Azure iotedge #835).
- the `outbox` of signed reports not yet delivered, and the report `counter`. Both are
  written with `synchronous=FULL`: once `enqueue_report` or `next_counter` returns, a
  power cut keeps it. A counter is never handed out twice; a fresh database starts its
  counter at the current time in milliseconds, so even a lost database does not reuse
  counters while the clock moves forward. The outbox is bounded too (`max_reports`, and
  half of `max_bytes`): past it the oldest undelivered reports are dropped and counted
  (`dropped_reports`); newer reports carry the current state, so the newest are kept.

Inference rows are batched in memory (up to BATCH_ROWS rows or BATCH_SECONDS) and
telemetry is written with `synchronous=NORMAL` (WAL): a crash or power cut loses at most
the last second of telemetry, which keeps inference fast. The WAL is checkpointed and
truncated to a small limit.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from edgefleet.agent.report import MAX_ENVELOPE, Latency, Resources, TelemetrySummary

MAX_BUCKETS = 24 * 14  # at most two weeks of hourly summaries (fewer for a small bound), then "before"
BEFORE = 0  # bucket start of the merged "before" bucket
_HOUR_US = 3600 * 1_000_000
# Latency histogram: bin i holds latencies up to EDGES[i] ms (10 bins per decade, 0.01 ms .. 100 s).
EDGES = [round(0.01 * 10 ** (i / 10), 6) for i in range(71)]
_MAX_DETAIL = 1024
# Inferences are written in batches: a serving thread pays for a commit once per BATCH_ROWS
# inferences, and a crash loses at most this much telemetry (never a queued report).
BATCH_ROWS = 64
BATCH_SECONDS = 1.0
_MAX_KIND = 64

# Columns added after the first release: a device's existing file gains them on open (ALTER TABLE
# ADD COLUMN, in one transaction); rows written before hold NULL there (latency of no known model).
_ADDED_COLUMNS = (("inference", "model", "TEXT"), ("bucket", "model_hists", "TEXT"))
_MAX_MODEL = 63  # a model name (report.Name)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inference (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, latency_ms REAL NOT NULL,
                                      ok INTEGER NOT NULL, model TEXT);
CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL,
                                  detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bucket (start INTEGER PRIMARY KEY, inferences INTEGER NOT NULL, errors INTEGER NOT NULL,
                                   events INTEGER NOT NULL, last_success INTEGER, hist TEXT NOT NULL,
                                   model_hists TEXT);
CREATE TABLE IF NOT EXISTS outbox (counter INTEGER PRIMARY KEY, envelope BLOB NOT NULL, enqueued_at INTEGER NOT NULL);
"""


class TelemetryError(Exception):
    """The telemetry database cannot be used (E670) or was given bad input (E671)."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"error[{code}]: {message}")


def to_us(at: datetime | str | None) -> int:
    """Microseconds since the epoch, UTC; None is now."""
    if at is None:
        return time.time_ns() // 1000
    if isinstance(at, str):
        at = datetime.fromisoformat(at.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise TelemetryError("E671", "a telemetry time must carry its timezone (UTC)")
    return int(at.timestamp() * 1_000_000)


def from_us(us: int | None) -> str | None:
    if us is None:
        return None
    moment = datetime.fromtimestamp(us / 1_000_000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TelemetryStore:
    """The buffer and outbox in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path, max_rows: int = 50_000, max_bytes: int = 8 * 1024 * 1024,
                 max_reports: int = 1024, state_dir: Path | None = None):
        if max_rows < 10 or max_bytes < 256 * 1024:
            raise TelemetryError("E671", "max_rows must be at least 10 and max_bytes at least 256 KiB")
        self.path = Path(path)
        self.max_rows, self.max_bytes, self.max_reports = max_rows, max_bytes, max_reports
        self.state_dir = Path(state_dir) if state_dir else self.path.parent
        # Buckets hold ~100-300 bytes each; their share of the bound is 1/8.
        self.max_buckets = max(8, min(MAX_BUCKETS, max_bytes // 8 // 512))
        self._lock = threading.Lock()
        self._writes = self._unchecked = 0
        self._pending: list[tuple] = []
        self._pending_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.recovered_from: Path | None = None
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _damaged(exc):
                raise TelemetryError("E670", f"{self.path}: cannot open the telemetry database: {exc}") from exc
            # A damaged file must not stop the agent: keep it aside for a person and start afresh.
            # The new counter starts at the clock, so no report counter is handed out again.
            self.recovered_from = self._quarantine()
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as again:
                raise TelemetryError("E670", f"{self.path}: cannot open the telemetry database: {again}") from again
            self.record_event("telemetry", f"E670: the database was damaged ({exc}); moved to "
                                           f"{self.recovered_from.name}, buffered telemetry and reports lost")

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file; lets the file shrink
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The WAL is bounded too: checkpoint often, truncate it back after a checkpoint.
        db.execute(f"PRAGMA wal_autocheckpoint={max(8, self.max_bytes // 4096 // 8)}")
        db.execute(f"PRAGMA journal_size_limit={self.max_bytes // 8}")
        db.executescript(_SCHEMA)
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            db.close()
            raise sqlite3.DatabaseError("quick_check found damage")
        with _transaction(db, durable=True):
            for table, column, kind in _ADDED_COLUMNS:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('counter', ?)", (time.time_ns() // 1_000_000,))
            for key in ("dropped_rows", "dropped_reports", "rows"):
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (key,))
        return db

    def _quarantine(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                os.replace(part, Path(f"{aside}{suffix}"))
        return aside

    def close(self) -> None:
        try:
            self.flush()
        except TelemetryError:
            pass  # a full disk: the batch is lost, the reports in the outbox are not
        with self._lock:
            self._db.close()

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- telemetry ---------------------------------------------------------------------------

    def record_inference(self, latency_ms: float, ok: bool, at: datetime | str | None = None,
                         model: str | None = None) -> None:
        """One inference; `model`: the workload that answered (its latency is reported per model)."""
        if not isinstance(latency_ms, (int, float)) or not math.isfinite(latency_ms) or latency_ms < 0:
            raise TelemetryError("E671", f"latency must be a finite number of ms >= 0, not {latency_ms!r}")
        if model is not None and (not isinstance(model, str) or not 0 < len(model) <= _MAX_MODEL):
            raise TelemetryError("E671", f"a model name is 1 to {_MAX_MODEL} characters")
        row = (to_us(at), float(latency_ms), 1 if ok else 0, model)
        with self._pending_lock:
            self._pending.append(row)
            due = len(self._pending) >= BATCH_ROWS or time.monotonic() - self._last_flush >= BATCH_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the inferences batched in memory (at most BATCH_ROWS rows or BATCH_SECONDS old)."""
        with self._pending_lock:
            rows, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if rows:
            self._insert("INSERT INTO inference (at, latency_ms, ok, model) VALUES (?, ?, ?, ?)", rows)

    def record_event(self, kind: str, detail: str = "", at: datetime | str | None = None) -> None:
        """An update status change, the model now serving, an error: `kind` names which."""
        if not isinstance(kind, str) or not kind or len(kind) > _MAX_KIND:
            raise TelemetryError("E671", f"an event kind is 1 to {_MAX_KIND} characters")
        self._insert("INSERT INTO event (at, kind, detail) VALUES (?, ?, ?)",
                     [(to_us(at), kind, str(detail)[:_MAX_DETAIL])])

    def _insert(self, sql: str, batch: list[tuple]) -> None:
        with self._lock, _transaction(self._db):
            self._db.executemany(sql, batch)
            self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'rows'", (len(batch),))
            self._writes += len(batch)
            self._unchecked += len(batch)
            rows = self._meta("rows")
            if rows > self.max_rows:
                # Fold a tenth at a time, so folding is rare (amortized) rather than on every insert.
                self._fold(rows - self.max_rows + max(1, self.max_rows // 10))
            elif self._unchecked >= 16 and self._row_bytes() > self._row_budget():
                # Over the byte bound: fold until the live pages fit again with room to spare.
                while rows > 1 and self._row_bytes() > self._row_budget() * 3 // 4:
                    self._fold(max(1, rows // 4))
                    rows = self._meta("rows")
                # Freed pages are reused by the next rows, so the file stays put until _compact.
            if self._unchecked >= 16:
                self._unchecked = 0
        if self._writes >= 256:
            self._writes = 0
            self._compact()

    def last_event(self, kind: str) -> tuple[str, str] | None:
        """(time, detail) of the newest event of `kind` still held as a row."""
        self.flush()
        with self._lock:
            row = self._db.execute("SELECT at, detail FROM event WHERE kind = ? ORDER BY at DESC, id DESC LIMIT 1",
                                   (kind,)).fetchone()
        return (from_us(row[0]), row[1]) if row else None

    def summary(self, since: datetime | str | None = None, until: datetime | str | None = None,
                resources: Resources | None = None) -> TelemetrySummary:
        """Inferences, errors, latency percentiles and last success in [since, until).

        Folded data counts by its hour: a bucket counts when its hour starts in the window
        (the "before" bucket only when `since` is None). Without a window, totals are exact
        over everything ever recorded. `resources` defaults to a snapshot taken now.
        """
        lo = to_us(since) if since is not None else None
        hi = to_us(until) if until is not None else None
        raw, buckets, dropped = self._window_rows(lo, hi)
        inferences = len(raw) + sum(b[0] for b in buckets)
        errors = sum(1 for r in raw if not r[1]) + sum(b[1] for b in buckets)
        successes = [r[2] for r in raw if r[1]] + [b[2] for b in buckets if b[2] is not None]
        latency = _percentiles([r[0] for r in raw if r[1]], [_hist_list(b[3]) for b in buckets])
        return TelemetrySummary(
            inferences=inferences, errors=errors, latency_ms=latency,
            last_success=from_us(max(successes)) if successes else None, dropped_rows=dropped,
            since=from_us(lo), until=from_us(hi),
            resources=resources if resources is not None else resource_snapshot(self.state_dir))

    def latency_by_model(self, since: datetime | str | None = None,
                         until: datetime | str | None = None) -> dict[str, Latency]:
        """Latency percentiles per model in [since, until), as `summary` counts the window:
        each workload's own, for a device serving several (inferences of no known model, made
        before this column existed, count in `summary` only)."""
        lo = to_us(since) if since is not None else None
        hi = to_us(until) if until is not None else None
        raw, buckets, _ = self._window_rows(lo, hi)
        exact: dict[str, list[float]] = {}
        for latency_ms, ok, _, model in raw:
            if ok and model is not None:
                exact.setdefault(model, []).append(latency_ms)
        folded: dict[str, list[list[int]]] = {}
        for b in buckets:
            for model, hist in json.loads(b[4] or "{}").items():
                folded.setdefault(model, []).append(_hist_list(hist))
        out = {}
        for model in sorted(set(exact) | set(folded)):
            latency = _percentiles(exact.get(model, []), folded.get(model, []))
            if latency is not None:
                out[model] = latency
        return out

    def _window_rows(self, lo: int | None, hi: int | None) -> tuple[list, list, int]:
        """(inference rows, bucket rows, dropped_rows) of [lo, hi): rows by time, buckets by their hour
        (the "before" bucket only without a start)."""
        where, args = _window(lo, hi)
        self.flush()
        with self._lock:
            raw = self._db.execute(f"SELECT latency_ms, ok, at, model FROM inference {where}", args).fetchall()
            bwhere, bargs = _window(lo, hi, column="start")
            if lo is not None:
                bwhere += (" AND " if bwhere else "WHERE ") + "start <> ?"
                bargs = (*bargs, BEFORE)
            buckets = self._db.execute(
                f"SELECT inferences, errors, last_success, hist, model_hists FROM bucket {bwhere}", bargs).fetchall()
            return raw, buckets, self._meta("dropped_rows")

    def counts(self) -> dict[str, int]:
        """Rows held, folded and pending, for `state`, tests and benchmarks."""
        self.flush()
        with self._lock:
            q = self._db.execute
            return {"inference_rows": q("SELECT COUNT(*) FROM inference").fetchone()[0],
                    "event_rows": q("SELECT COUNT(*) FROM event").fetchone()[0],
                    "buckets": q("SELECT COUNT(*) FROM bucket").fetchone()[0],
                    "pending_reports": q("SELECT COUNT(*) FROM outbox").fetchone()[0],
                    "dropped_rows": self._meta("dropped_rows"),
                    "dropped_reports": self._meta("dropped_reports")}

    def file_bytes(self) -> int:
        """Bytes on disk: the database and its WAL."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                   if p.exists())

    # -- outbox ------------------------------------------------------------------------------

    def next_counter(self) -> int:
        """The next report counter, persisted before it is returned: never reused."""
        with self._lock, _transaction(self._db, durable=True):
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'counter'")
            return self._meta("counter")

    def enqueue_report(self, counter: int, envelope: bytes) -> None:
        """Keep a signed report until it is delivered; durable once this returns."""
        if not isinstance(envelope, bytes) or len(envelope) > MAX_ENVELOPE:
            raise TelemetryError("E671", f"a report envelope is bytes, at most {MAX_ENVELOPE}")
        with self._lock, _transaction(self._db, durable=True):
            old = self._db.execute("SELECT envelope FROM outbox WHERE counter = ?", (counter,)).fetchone()
            if old is not None and bytes(old[0]) != envelope:
                raise TelemetryError("E671", f"report {counter} is already queued with other content")
            self._db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?)", (counter, envelope, to_us(None)))
            self._bound_outbox()

    def pending_reports(self) -> list[tuple[int, bytes]]:
        """Undelivered reports, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT counter, envelope FROM outbox ORDER BY counter").fetchall()
        return [(c, bytes(e)) for c, e in rows]

    def mark_delivered(self, counters) -> None:
        counters = [int(c) for c in counters]
        with self._lock, _transaction(self._db, durable=True):
            self._db.executemany("DELETE FROM outbox WHERE counter = ?", [(c,) for c in counters])

    # -- internals (called with the lock held) ------------------------------------------------

    def _meta(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _row_budget(self) -> int:
        """Bytes for telemetry rows. The bound is shared: rows 1/4, outbox 1/2, WAL 1/8, buckets 1/8."""
        return self.max_bytes // 4

    def _row_bytes(self) -> int:
        """Live pages of the database, less what the outbox holds."""
        q = self._db.execute
        page = q("PRAGMA page_size").fetchone()[0]
        live = (q("PRAGMA page_count").fetchone()[0] - q("PRAGMA freelist_count").fetchone()[0]) * page
        return live - q("SELECT COALESCE(SUM(LENGTH(envelope)), 0) FROM outbox").fetchone()[0]

    def _fold(self, n: int) -> None:
        """Fold the `n` oldest rows (inferences and events together) into hourly buckets."""
        inf = self._db.execute("SELECT id, at, latency_ms, ok, model FROM inference ORDER BY at, id LIMIT ?",
                               (n,)).fetchall()
        ev = self._db.execute("SELECT id, at FROM event ORDER BY at, id LIMIT ?", (n,)).fetchall()
        # The n oldest of both tables by time.
        merged = sorted([(r[1], 0, r) for r in inf] + [(r[1], 1, r) for r in ev], key=lambda t: (t[0], t[1]))[:n]
        folded: dict[int, list] = {}
        for at, table, row in merged:
            b = folded.setdefault(_hour(at), [0, 0, 0, None, [0] * (len(EDGES) + 1), {}])
            if table == 1:
                b[2] += 1
                continue
            b[0] += 1
            if row[3]:
                b[3] = max(b[3] or 0, at)
                b[4][_bin(row[2])] += 1
                if row[4] is not None:
                    b[5].setdefault(row[4], [0] * (len(EDGES) + 1))[_bin(row[2])] += 1
            else:
                b[1] += 1
        for start, (infs, errs, evs, last_ok, hist, model_hists) in folded.items():
            self._merge_bucket(start, infs, errs, evs, last_ok, hist, model_hists)
        inf_ids = [(row[0],) for _, table, row in merged if table == 0]
        ev_ids = [(row[0],) for _, table, row in merged if table == 1]
        self._db.executemany("DELETE FROM inference WHERE id = ?", inf_ids)
        self._db.executemany("DELETE FROM event WHERE id = ?", ev_ids)
        self._db.execute("UPDATE meta SET value = value - ? WHERE key = 'rows'", (len(merged),))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_rows'", (len(merged),))
        extra = self._db.execute("SELECT COUNT(*) FROM bucket").fetchone()[0] - self.max_buckets
        if extra > 0:
            old = self._db.execute("SELECT start, inferences, errors, events, last_success, hist, model_hists "
                                   "FROM bucket WHERE start <> ? ORDER BY start LIMIT ?",
                                   (BEFORE, extra + 1)).fetchall()
            self._db.executemany("DELETE FROM bucket WHERE start = ?", [(r[0],) for r in old])
            for _, infs, errs, evs, last_ok, hist, model_hists in old:
                self._merge_bucket(BEFORE, infs, errs, evs, last_ok, _hist_list(hist), _model_hists(model_hists))

    def _merge_bucket(self, start: int, infs: int, errs: int, evs: int, last_ok: int | None, hist: list[int],
                      model_hists: dict[str, list[int]]) -> None:
        row = self._db.execute("SELECT inferences, errors, events, last_success, hist, model_hists FROM bucket "
                               "WHERE start = ?", (start,)).fetchone()
        if row:
            infs, errs, evs = infs + row[0], errs + row[1], evs + row[2]
            last_ok = max(x for x in (last_ok, row[3], -1) if x is not None)
            last_ok = None if last_ok == -1 else last_ok
            hist = [a + b for a, b in zip(hist, _hist_list(row[4]))]
            for model, other in _model_hists(row[5]).items():
                mine = model_hists.setdefault(model, [0] * (len(EDGES) + 1))
                model_hists[model] = [a + b for a, b in zip(mine, other)]
        self._db.execute("INSERT OR REPLACE INTO bucket VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (start, infs, errs, evs, last_ok, _hist_text(hist),
                          json.dumps({m: json.loads(_hist_text(h)) for m, h in sorted(model_hists.items())},
                                     separators=(",", ":")) if model_hists else None))

    def _bound_outbox(self) -> None:
        budget = self.max_bytes // 2
        while True:
            count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(envelope)), 0) FROM outbox").fetchone()
            if count <= 1 or (count <= self.max_reports and size <= budget):
                return
            self._db.execute("DELETE FROM outbox WHERE counter = (SELECT MIN(counter) FROM outbox)")
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'dropped_reports'")

    def _compact(self) -> None:
        """Give freed pages back to the file system and truncate the WAL."""
        with self._lock:
            try:
                self._db.execute("PRAGMA incremental_vacuum")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass  # busy: the next round compacts


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); `durable` commits with synchronous=FULL."""

    def __init__(self, db: sqlite3.Connection, durable: bool = False):
        self.db, self.durable = db, durable

    def __enter__(self):
        try:
            if self.durable:
                self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise TelemetryError("E670", f"the telemetry database cannot be written: {exc}") from exc
        return self.db

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error as commit_error:
                    self.db.execute("ROLLBACK")
                    raise TelemetryError("E670", f"the telemetry database cannot be written: "
                                                 f"{commit_error}") from commit_error
            else:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):  # e.g. SQLITE_FULL: the disk (or the file's cap) is full
                    raise TelemetryError("E670", f"the telemetry database cannot be written: {exc}") from exc
        finally:
            if self.durable:
                self.db.execute("PRAGMA synchronous=NORMAL")


def _hist_text(hist: list[int]) -> str:
    """A histogram as sparse JSON ({"bin": count} of the non-empty bins): most buckets use few bins."""
    return json.dumps({str(i): n for i, n in enumerate(hist) if n}, separators=(",", ":"))


def _model_hists(text: str | None) -> dict[str, list[int]]:
    """A bucket's per-model histograms ({model: sparse histogram} JSON; NULL before the column existed)."""
    return {model: _hist_list(hist) for model, hist in json.loads(text or "{}").items()}


def _percentiles(exact: list[float], hists: list[list[int]]) -> Latency | None:
    """p50/p95/p99 of exact latencies plus folded histograms: exact while nothing is folded."""
    if not hists:
        return _exact_percentiles(sorted(exact))
    hist = [0] * (len(EDGES) + 1)
    for lat in exact:
        hist[_bin(lat)] += 1
    for other in hists:
        for i, n in enumerate(other):
            hist[i] += n
    return _hist_percentiles(hist)


def _hist_list(text: str | dict) -> list[int]:
    hist = [0] * (len(EDGES) + 1)
    for i, n in (json.loads(text) if isinstance(text, str) else text).items():
        hist[int(i)] = n
    return hist


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("not a database", "malformed", "damage", "corrupt"))


def _window(lo: int | None, hi: int | None, column: str = "at") -> tuple[str, tuple]:
    parts, args = [], []
    if lo is not None:
        parts.append(f"{column} >= ?")
        args.append(lo)
    if hi is not None:
        parts.append(f"{column} < ?")
        args.append(hi)
    return ("WHERE " + " AND ".join(parts) if parts else ""), tuple(args)


def _hour(us: int) -> int:
    return max(us - us % _HOUR_US, BEFORE + 1)


def _bin(latency_ms: float) -> int:
    return bisect.bisect_left(EDGES, latency_ms)


def _exact_percentiles(values: list[float]) -> Latency | None:
    if not values:
        return None

    def pick(q: float) -> float:  # nearest-rank percentile
        return round(values[max(0, math.ceil(q * len(values)) - 1)], 3)
    return Latency(p50=pick(0.50), p95=pick(0.95), p99=pick(0.99))


def _hist_percentiles(hist: list[int]) -> Latency | None:
    total = sum(hist)
    if not total:
        return None

    def pick(q: float) -> float:  # the upper edge of the bin holding the nearest rank
        rank, seen = max(1, math.ceil(q * total)), 0
        for i, n in enumerate(hist):
            seen += n
            if seen >= rank:
                return EDGES[min(i, len(EDGES) - 1)]
        return EDGES[-1]
    return Latency(p50=pick(0.50), p95=pick(0.95), p99=pick(0.99))


def resource_snapshot(path: Path | None = None) -> Resources:
    """CPU, memory, disk (of `path`), load and temperature, where the OS shows them.

    psutil when it is installed (small, in the project's preferred list), else /proc and
    os.statvfs; any value the OS does not show stays null rather than guessed.
    """
    values: dict = {}
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        vm = psutil.virtual_memory()
        values.update(cpu_percent=float(psutil.cpu_percent(interval=None)), memory_percent=float(vm.percent),
                      memory_available_bytes=int(vm.available))
        try:
            temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
            readings = [t.current for group in temps.values() for t in group
                        if t.current is not None and math.isfinite(t.current)]
            if readings:
                values["temperature_c"] = float(max(readings))
        except (OSError, AttributeError):
            pass
    else:
        values.update(_proc_meminfo())
    try:
        values["load_1m"] = float(os.getloadavg()[0])
    except OSError:
        pass
    if path is not None:
        try:
            usage = shutil.disk_usage(path)
            values["disk_free_bytes"] = int(usage.free)
            values["disk_percent"] = round(100.0 * (usage.total - usage.free) / usage.total, 1) if usage.total else None
        except OSError:
            pass
    return Resources(**{k: v for k, v in values.items() if v is not None})


def _proc_meminfo() -> dict:
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024
        total, available = fields["MemTotal"], fields["MemAvailable"]
        return {"memory_available_bytes": available, "memory_percent": round(100.0 * (total - available) / total, 1)}
    except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError):
        return {}
