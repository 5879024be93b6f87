"""Telemetry buffer and report outbox: bounded in rows and bytes, durable across SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from edgefleet.agent.telemetry import TelemetryError, TelemetryStore, from_us

BASE_US = 1_780_000_000 * 1_000_000  # 2026-05-28


def test_ten_times_the_row_bound_stays_bounded_and_every_inference_still_counts(tmp_path):
    max_rows, max_bytes = 200, 256 * 1024
    store = TelemetryStore(tmp_path / "t.db", max_rows=max_rows, max_bytes=max_bytes)
    total = 10 * max_rows
    for i in range(total):
        # Half an hour apart: the folded rows land in many hourly buckets.
        store.record_inference(1.0 + i % 40, ok=i % 7 != 0, at=from_us(BASE_US + i * 1_800_000_000))
        if i % 3 == 0:
            store.record_event("update", f"Committed meter-digits 1.1.0 #{i}", at=from_us(BASE_US + i * 1_800_000_000))
    counts = store.counts()
    events = len(range(0, total, 3))
    assert counts["inference_rows"] + counts["event_rows"] <= max_rows
    assert counts["dropped_rows"] == total + events - counts["inference_rows"] - counts["event_rows"]
    assert counts["buckets"] <= store.max_buckets + 1
    assert store.file_bytes() <= max_bytes + 64 * 1024, store.file_bytes()
    summary = store.summary()
    assert summary.inferences == total
    assert summary.errors == len(range(0, total, 7))
    assert summary.dropped_rows == counts["dropped_rows"] > 0
    assert summary.last_success == from_us(BASE_US + (total - 1) * 1_800_000_000)
    assert summary.latency_ms is not None and 1.0 <= summary.latency_ms.p50 <= summary.latency_ms.p99 <= 40 * 1.26  # bins 26% wide
    store.close()
    with sqlite3.connect(tmp_path / "t.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_byte_bound_holds_with_large_rows(tmp_path):
    max_bytes = 256 * 1024
    store = TelemetryStore(tmp_path / "t.db", max_rows=1_000_000, max_bytes=max_bytes)
    for i in range(2700):  # ~2.7 MB of event text, 10x the byte bound
        store.record_event("error", "x" * 1000, at=from_us(BASE_US + i * 1_000_000))
    assert store.file_bytes() <= max_bytes + 128 * 1024, store.file_bytes()
    assert store.counts()["dropped_rows"] > 0
    assert store.last_event("error") == (from_us(BASE_US + 2699 * 1_000_000), "x" * 1000)


def test_summary_window_and_exact_percentiles(tmp_path):
    store = TelemetryStore(tmp_path / "t.db", max_rows=1000, max_bytes=1024 * 1024)
    for i in range(100):
        store.record_inference(float(i + 1), ok=True, at=from_us(BASE_US + i * 1_000_000))
    store.record_inference(500.0, ok=False, at=from_us(BASE_US + 200 * 1_000_000))
    s = store.summary(since=from_us(BASE_US), until=from_us(BASE_US + 100 * 1_000_000))
    assert (s.inferences, s.errors) == (100, 0)
    assert (s.latency_ms.p50, s.latency_ms.p95, s.latency_ms.p99) == (50.0, 95.0, 99.0)
    assert s.since == from_us(BASE_US) and s.last_success == from_us(BASE_US + 99 * 1_000_000)
    everything = store.summary()
    assert (everything.inferences, everything.errors) == (101, 1)
    assert store.summary(since=from_us(BASE_US + 10**12)).latency_ms is None


@pytest.mark.parametrize("latency", [float("nan"), float("inf"), -1.0, "3"])
def test_bad_latencies_are_refused(tmp_path, latency):
    store = TelemetryStore(tmp_path / "t.db")
    with pytest.raises(TelemetryError) as err:
        store.record_inference(latency, ok=True)
    assert err.value.code == "E671"


def test_outbox_and_counter_survive_reopening(tmp_path):
    path = tmp_path / "t.db"
    with TelemetryStore(path) as store:
        counters = [store.next_counter() for _ in range(3)]
        for c in counters:
            store.enqueue_report(c, b"report-%d" % c)
        store.enqueue_report(counters[0], b"report-%d" % counters[0])  # re-queue is idempotent
        with pytest.raises(TelemetryError):
            store.enqueue_report(counters[0], b"something else")
        store.mark_delivered(counters[:1])
    with TelemetryStore(path) as store:
        assert store.pending_reports() == [(c, b"report-%d" % c) for c in counters[1:]]
        assert store.next_counter() == counters[-1] + 1
    assert counters == sorted(counters) and len(set(counters)) == 3
    # A fresh database starts near the clock, so a lost database does not reuse counters.
    with TelemetryStore(tmp_path / "fresh.db") as fresh:
        assert fresh.next_counter() > counters[-1] - 10_000


def test_the_outbox_is_bounded_and_keeps_the_newest(tmp_path):
    with TelemetryStore(tmp_path / "t.db", max_reports=10) as store:
        counters = [store.next_counter() for _ in range(25)]
        for c in counters:
            store.enqueue_report(c, b"r")
        assert [c for c, _ in store.pending_reports()] == counters[-10:]
        assert store.counts()["dropped_reports"] == 15


WRITER = textwrap.dedent("""
    import sys
    from edgefleet.agent.telemetry import TelemetryStore
    store = TelemetryStore(sys.argv[1], max_rows=200, max_bytes=4 << 20, max_reports=100_000)
    i = 0
    while True:
        c = store.next_counter()
        store.enqueue_report(c, (b"%d:" % c) * 10)
        print(c, flush=True)            # acknowledged: durable from here on
        store.record_inference(1.5, ok=True)
        store.record_event("update", "x" * 200)
        i += 1
        if i % 5 == 0:
            store.mark_delivered([c - 1])
""")


@pytest.mark.slow
def test_sigkill_mid_write_loses_no_acknowledged_report_and_reuses_no_counter(tmp_path):
    path = tmp_path / "t.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(9)
    acknowledged: list[int] = []
    delivered: set[int] = set()
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()  # started and writing: kill it at a random moment from here
            time.sleep(rng.random() * 0.5)
            os.kill(proc.pid, signal.SIGKILL)
            # Read through the same buffered file as readline (communicate() would bypass its buffer).
            out = first + proc.stdout.read()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        got = [int(line) for line in out.split()]
        assert got, "the writer made no progress before the kill"
        acknowledged += got
        delivered |= {c - 1 for i, c in enumerate(got, 1) if i % 5 == 0}
        with TelemetryStore(path, max_rows=200, max_bytes=4 << 20, max_reports=100_000) as store:
            pending = dict(store.pending_reports())
            lost = [c for c in got if c not in delivered and pending.get(c) != (b"%d:" % c) * 10]
            assert not lost, (round_, lost, got, sorted(pending)[:3], sorted(pending)[-3:], store.counts())
            assert store.next_counter() > max(acknowledged)
            assert store.counts()["inference_rows"] + store.counts()["event_rows"] <= 200
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(acknowledged) == len(set(acknowledged)), "a counter was handed out twice"
    assert acknowledged == sorted(acknowledged)


@pytest.mark.parametrize("damage", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 8000],
                         ids=["garbage", "torn-header"])
def test_a_damaged_database_is_moved_aside_and_the_agent_carries_on(tmp_path, damage):
    path = tmp_path / "t.db"
    with TelemetryStore(path) as store:
        last = store.next_counter()
    path.write_bytes(damage)
    for extra in ("-wal", "-shm"):
        if (tmp_path / f"t.db{extra}").exists():
            (tmp_path / f"t.db{extra}").unlink()
    with TelemetryStore(path) as store:
        assert store.recovered_from is not None and store.recovered_from.read_bytes() == damage
        assert store.last_event("telemetry")[1].startswith("E670")
        assert store.next_counter() > last  # the clock-seeded counter does not go back
        store.record_inference(1.0, ok=True)
        assert store.summary().inferences == 1


def test_a_full_database_is_a_clear_error_and_keeps_what_it_had(tmp_path):
    """SQLITE_FULL for real: the file is capped with max_page_count (standing in for a full disk)."""
    store = TelemetryStore(tmp_path / "t.db", max_rows=1_000_000, max_bytes=64 << 20)
    c = store.next_counter()
    store.enqueue_report(c, b"kept")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 2}")
    with pytest.raises(TelemetryError) as err:
        for i in range(10_000):
            store.record_event("error", "y" * 1000)
    assert err.value.code == "E670" and "full" in err.value.message
    with pytest.raises(TelemetryError):
        store.enqueue_report(c + 1, b"z" * 60_000)
    assert store.pending_reports() == [(c, b"kept")]
    assert store.next_counter() == c + 1  # counters still work: an update in place needs no new page


def test_many_serving_threads_record_at_once(tmp_path):
    import threading
    store = TelemetryStore(tmp_path / "t.db", max_rows=300, max_bytes=1 << 20)

    def work(n):
        for i in range(150):
            store.record_inference(float(n + 1), ok=i % 10 != 0)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = store.summary()
    assert (summary.inferences, summary.errors) == (900, 90)
    assert store.counts()["inference_rows"] <= 300


@pytest.mark.parametrize("psutil_present", [True, False], ids=["psutil", "proc"])
def test_resource_pressure_from_psutil_or_proc(tmp_path, monkeypatch, psutil_present):
    import sys
    from edgefleet.agent.telemetry import resource_snapshot
    if not psutil_present:
        monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    elif "psutil" not in sys.modules:
        pytest.importorskip("psutil")
    res = resource_snapshot(tmp_path)
    assert 0 <= res.memory_percent <= 100 and res.memory_available_bytes > 0
    assert res.disk_free_bytes > 0 and 0 <= res.disk_percent <= 100
    assert res.load_1m is not None and res.load_1m >= 0
    assert (res.cpu_percent is not None) == psutil_present


# -- latency per model: a device serving several models reports each one's own -------------------

def test_latency_per_model_exact_and_after_folding(tmp_path):
    store = TelemetryStore(tmp_path / "t.db", max_rows=200, max_bytes=256 * 1024)
    for i in range(100):
        at = from_us(BASE_US + i * 1_000_000)
        store.record_inference(1.0 + i % 10, ok=True, at=at, model="meter-digits")   # 1..10 ms
        store.record_inference(100.0 + i, ok=True, at=at, model="ocr-reader")        # 100..199 ms
    by_model = store.latency_by_model()
    assert (by_model["meter-digits"].p50, by_model["meter-digits"].p99) == (5.0, 10.0)
    assert (by_model["ocr-reader"].p50, by_model["ocr-reader"].p99) == (149.0, 198.0)
    assert store.summary().latency_ms.p50 == 10.0  # the device-wide figure mixes both
    # Ten times the row bound: most rows fold into hourly buckets, each model keeps its own histogram.
    for i in range(100, 2000):
        at = from_us(BASE_US + i * 1_000_000)
        store.record_inference(1.0 + i % 10, ok=True, at=at, model="meter-digits")
        store.record_inference(100.0 + i % 100, ok=True, at=at, model="ocr-reader")
    assert store.counts()["buckets"] > 0 and store.counts()["inference_rows"] <= 200
    folded = store.latency_by_model()
    assert 4.0 <= folded["meter-digits"].p50 <= 10 * 1.26 and folded["meter-digits"].p99 <= 10 * 1.26
    assert 100.0 <= folded["ocr-reader"].p50 <= 200 * 1.26 and folded["ocr-reader"].p50 > 10 * 1.26
    window = store.latency_by_model(since=from_us(BASE_US + 1990 * 1_000_000))  # rows only: exact
    assert set(window) == {"meter-digits", "ocr-reader"} and window["ocr-reader"].p99 == 199.0
    assert store.summary().inferences == 4000
    store.close()


def test_an_existing_database_gains_the_model_columns_and_keeps_its_rows(tmp_path):
    """A device upgraded from an agent whose telemetry had no model column: the file is migrated
    in place (ALTER TABLE), its old inferences still count, and only new ones carry a model."""
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:  # the schema as the first release wrote it
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE inference (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, latency_ms REAL NOT NULL,
                                    ok INTEGER NOT NULL);
            CREATE TABLE event (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
            CREATE TABLE bucket (start INTEGER PRIMARY KEY, inferences INTEGER NOT NULL, errors INTEGER NOT NULL,
                                 events INTEGER NOT NULL, last_success INTEGER, hist TEXT NOT NULL);
            CREATE TABLE outbox (counter INTEGER PRIMARY KEY, envelope BLOB NOT NULL, enqueued_at INTEGER NOT NULL);
            INSERT INTO meta VALUES ('counter', 41), ('dropped_rows', 7), ('dropped_reports', 0), ('rows', 2);
            """)
        db.executemany("INSERT INTO inference (at, latency_ms, ok) VALUES (?, ?, 1)",
                       [(BASE_US, 3.0), (BASE_US + 1_000_000, 4.0)])
        db.execute("INSERT INTO bucket VALUES (?, 7, 0, 0, ?, ?)", (BASE_US - 7_200_000_000, BASE_US - 7_200_000_000,
                                                                    '{"30":7}'))
        db.execute("INSERT INTO outbox VALUES (41, x'7b7d', 0)")
    store = TelemetryStore(path, max_rows=200, max_bytes=256 * 1024)
    assert store.next_counter() == 42 and store.pending_reports() == [(41, b"{}")]  # nothing lost
    assert store.summary().inferences == 9 and store.latency_by_model() == {}
    store.record_inference(9.0, ok=True, at=from_us(BASE_US + 2_000_000), model="meter-digits")
    assert store.latency_by_model()["meter-digits"].p50 == 9.0
    assert store.summary().inferences == 10
    store.close()
    with sqlite3.connect(path) as db:
        assert [r[1] for r in db.execute("PRAGMA table_info(inference)")][-1] == "model"
        assert [r[1] for r in db.execute("PRAGMA table_info(bucket)")][-1] == "model_hists"
    TelemetryStore(path, max_rows=200, max_bytes=256 * 1024).close()  # opening again adds nothing twice


@pytest.mark.parametrize("model", ["", "x" * 64, 7])
def test_a_bad_model_name_is_refused(tmp_path, model):
    store = TelemetryStore(tmp_path / "t.db", max_rows=1000, max_bytes=1024 * 1024)
    with pytest.raises(TelemetryError) as err:
        store.record_inference(1.0, ok=True, model=model)
    assert err.value.code == "E671"
    store.close()
