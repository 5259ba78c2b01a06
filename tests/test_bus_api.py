"""The bus contract through its public API, on real files: envelope and numbering, the writer
lock, consumer starts and positions, dead-letters, rotation and retention."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import orjson
import pytest

from bus import BadRecord, BusError, WriterLockedError, jsonl, open_bus

SINKS = ["jsonl", "sqlite"]


def _drain(reader_or_consumer, batch: int = 1000) -> list:
    read = getattr(reader_or_consumer, "poll", None) or reader_or_consumer.read
    out = []
    while True:
        items = read(batch)
        if not items:
            return out
        out.extend(items)


def _segments(home, topic="trades"):
    return jsonl.list_segments(os.path.join(home, "bus", topic))


# -- envelope and numbering ----------------------------------------------------------------------
@pytest.mark.parametrize("sink", SINKS)
def test_bus_envelope_seq_from_one_continues_across_restarts(home, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    before = int(time.time() * 1000)
    rec = w.append({"type": "trade", "price": 1.5, "seq": 99, "ts": 5})
    assert rec["seq"] == 1 and before <= rec["ts"] <= before + 5000 and rec["price"] == 1.5
    assert w.append_many([{"type": "trade", "i": i} for i in range(10)]) == 11
    w.close()
    w = bus.writer("trades")                           # a restart continues the numbering
    assert w.seq == 11 and w.append({"type": "trade"})["seq"] == 12
    w.close()
    recs = [r for r, _ in _drain(bus.reader("trades"))]
    assert [r["seq"] for r in recs] == list(range(1, 13))
    assert list(recs[0])[:3] == ["seq", "ts", "type"]  # envelope first, payload beside it
    assert recs[0]["seq"] == 1 and recs[0]["ts"] != 5  # a payload's own seq/ts are replaced
    assert [r["i"] for r in recs[1:11]] == list(range(10))
    assert bus.last_seq("trades") == 12
    bus.close()


@pytest.mark.parametrize("sink", SINKS)
def test_bus_append_without_type_refused_nothing_written(home, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    with pytest.raises(BadRecord):
        w.append({"price": 1})
    with pytest.raises(BadRecord):
        w.append_many([{"type": "ok"}, ["not", "an", "object"]])
    assert w.append({"type": "ok"})["seq"] == 1
    w.close()
    assert len(_drain(bus.reader("trades"))) == 1
    bus.close()


def test_bus_jsonl_failed_write_keeps_whole_lines_numbering_goes_on(home, monkeypatch):
    bus = open_bus(home, sink="jsonl")
    w = bus.writer("trades")
    w.append({"type": "t", "n": 0})
    real_write = os.write

    def half_then_full_disk(fd, data):        # a disk that fills up in the middle of a batch
        monkeypatch.setattr(jsonl.os, "write", fail)
        return real_write(fd, data[:len(data) // 2 + 7])

    def fail(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonl.os, "write", half_then_full_disk)
    with pytest.raises(OSError):
        w.append_many([{"type": "t", "n": n} for n in range(1, 11)])
    monkeypatch.setattr(jsonl.os, "write", real_write)
    kept = w.seq
    assert 1 < kept < 11                        # the batch's whole lines are kept ...
    assert w.append({"type": "t", "n": 99})["seq"] == kept + 1    # ... and numbered after
    w.close()
    recs = [r for r, _ in _drain(bus.reader("trades"))]
    assert [r["seq"] for r in recs] == list(range(1, kept + 2))
    assert [r["n"] for r in recs] == list(range(kept)) + [99]
    bus.close()


def test_bus_jsonl_spool_is_plain_json_lines(home):
    bus = open_bus(home, sink="jsonl")
    w = bus.writer("signals")
    w.append_many([{"type": "signal", "fusion": 0.25, "name": "é"}] * 3)
    w.close()
    path = os.path.join(home, "bus", "signals", "current.jsonl")
    lines = open(path, "rb").read().splitlines()
    assert [orjson.loads(x)["seq"] for x in lines] == [1, 2, 3]
    assert lines[0].startswith(b'{"seq":1,"ts":')
    bus.close()


def test_bus_sqlite_spool_has_schema_readable_by_sqlite_utils(home):
    import sqlite_utils

    bus = open_bus(home, sink="sqlite")
    w = bus.writer("fills")
    w.append({"type": "fill", "qty": 2.0})
    w.close()
    db = sqlite_utils.Database(os.path.join(home, "bus", "fills", "records.db"))
    assert db["records"].pks == ["seq"]
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = next(db["records"].rows)
    assert row["type"] == "fill" and orjson.loads(row["body"])["qty"] == 2.0
    bus.close()


# -- one writer per topic ------------------------------------------------------------------------
@pytest.mark.parametrize("sink", SINKS)
def test_bus_second_writer_other_process_fails_clearly(home, procs, sink):
    code = ("import sys, bus; b = bus.open_bus(sys.argv[1], sink=sys.argv[2]); "
            "w = b.writer('trades'); print('ready', flush=True); sys.stdin.read()")
    p = procs([sys.executable, "-c", code, str(home), sink], stdin=subprocess.PIPE,
              stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    bus = open_bus(home, sink=sink)
    held = rf"topic 'trades' already has a writer \(pid {p.pid}\)"
    with pytest.raises(WriterLockedError, match=held):
        bus.writer("trades")
    p.stdin.close()                       # the holder exits: the topic is free again
    p.wait(10)
    bus.writer("trades").close()
    bus.close()


def test_bus_second_writer_same_process_fails_and_other_sink_refused(home):
    bus = open_bus(home, sink="jsonl")
    w = bus.writer("trades")
    with pytest.raises(WriterLockedError):
        bus.writer("trades")
    w.append({"type": "t"})
    w.close()
    with pytest.raises(BusError, match="already holds jsonl spools"):
        open_bus(home, sink="sqlite").writer("trades")
    bus.close()


@pytest.mark.parametrize("sink", SINKS)
def test_bus_deadletter_shared_by_processes(home, procs, sink):
    code = ("import sys, bus; b = bus.open_bus(sys.argv[1], sink=sys.argv[2]); "
            "[b.deadletter('r', str(i), source='x', stage=sys.argv[3]) for i in range(200)]")
    ps = [procs([sys.executable, "-c", code, str(home), sink, f"s{i}"]) for i in range(3)]
    bus = open_bus(home, sink=sink)
    w = bus.writer("deadletter")          # held here too: deadletter takes the lock per append
    for i in range(200):
        w.append({"type": "deadletter", "reason": "r", "raw": str(i), "stage": "main"})
    assert [p.wait(30) for p in ps] == [0, 0, 0]
    w.close()
    recs = [r for r, _ in _drain(bus.reader("deadletter"))]
    assert [r["seq"] for r in recs] == list(range(1, 801))
    assert sorted(r["stage"] for r in recs).count("s1") == 200
    bus.close()


# -- consumers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sink", SINKS)
def test_bus_consumer_starts_beginning_saved_or_end(home, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    w.append_many([{"type": "t", "n": n} for n in range(10)])
    c = bus.consumer("trades", "a")
    items = c.poll(4)
    assert [r["n"] for r, _ in items] == [0, 1, 2, 3]
    c.mark(items[-1][1])
    c.close()
    end = bus.consumer("trades", "b", start="end")
    assert end.poll() == []
    w.append({"type": "t", "n": 10})
    assert [r["n"] for r, _ in bus.consumer("trades", "a").poll()] == list(range(4, 11))
    assert [r["n"] for r, _ in end.poll()] == [10]
    assert [r["n"] for r, _ in bus.consumer("trades", "a", start="beginning").poll()][:1] == [0]
    lag = {c["consumer"]: c["lag"] for c in bus.stats()["consumers"]}
    assert lag["a"] == 7
    with pytest.raises(BusError):
        bus.consumer("trades", "x", start="middle")
    w.close()
    bus.close()


@pytest.mark.parametrize("sink", SINKS)
def test_bus_consumer_resume_inside_read_run_no_repeat(home, sink):
    bus = open_bus(home, sink=sink, segment_bytes=4000)
    w = bus.writer("trades")
    w.append_many([{"type": "t", "n": n} for n in range(3000)])
    w.close()
    # stop at many places, in the middle of what was read at once and across segments
    seen = []
    for step in (1, 7, 333, 50, 1000, 2000):
        c = bus.consumer("trades", "r")
        items = c.poll(step)
        seen.extend(r["n"] for r, _ in items)
        if items:
            c.mark(items[-1][1])
        c.close()
    c = bus.consumer("trades", "r")
    seen.extend(r["n"] for r, _ in _drain(c))
    assert seen == list(range(3000))
    bus.close()


# -- dead-letters --------------------------------------------------------------------------------
def _inject(home, sink, bad: str) -> None:
    """Put a bad line (JSONL) or row (SQLite) after the stored records, by hand."""
    d = os.path.join(home, "bus", "trades")
    if sink == "jsonl":
        with open(os.path.join(d, "current.jsonl"), "ab") as f:
            f.write(bad.encode() + b"\n")
    else:
        conn = sqlite3.connect(os.path.join(d, "records.db"))
        seq = conn.execute("SELECT max(seq) FROM records").fetchone()[0] + 1
        conn.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (seq, 1, "t", bad))
        conn.commit()
        conn.close()


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("bad,reason", [
    ("this is not json", "unparseable JSON"),
    ('{"ts": 1, "type": "t", "n": 99}', "missing or invalid seq"),
    ('["a", "list"]', "not a JSON object"),
])
def test_bus_bad_record_goes_to_deadletter_consumer_continues(home, sink, bad, reason):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    w.append_many([{"type": "t", "n": n} for n in range(3)])
    w.close()
    _inject(home, sink, bad)
    w = bus.writer("trades")
    w.append_many([{"type": "t", "n": n} for n in range(3, 5)])
    w.close()

    c = bus.consumer("trades", "signal")
    items = c.poll()
    assert [r["n"] for r, _ in items] == [0, 1, 2, 3, 4]       # the consumer kept going
    for _, pos in items:
        c.mark(pos)
    c.close()
    dead = [r for r, _ in _drain(bus.reader("deadletter"))]
    assert len(dead) == 1
    d = dead[0]
    assert reason in d["reason"] and d["raw"] == bad and d["source"] == "trades"
    assert d["stage"] == "signal" and d["position"]["seq"] >= 3
    # the position saved after the bad line: a restart neither repeats nor re-dead-letters it
    assert bus.consumer("trades", "signal").poll() == []
    assert bus.last_seq("deadletter") == 1
    bus.close()


def test_bus_sqlite_tailing_reader_one_row_at_a_time(home):
    """A reader that tails (one new row per read) delivers what a reader of the whole spool
    delivers, and dead-letters a bad row that comes alone just the same."""
    bus = open_bus(home, sink="sqlite")
    w = bus.writer("trades")
    w.append({"type": "t", "n": 0})
    c = bus.consumer("trades", "tail")
    got = []
    for n, bad in enumerate(["not json", '{"ts": 1, "type": "t"}', 42, b"\xff"], 1):
        items = c.poll()
        assert len(items) == 1
        got.extend(items)
        c.mark(items[-1][1])
        conn = sqlite3.connect(w.path)
        conn.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (w.seq + 1, 1, "t", bad))
        conn.commit()
        conn.close()
        assert c.poll() == [] and c.deadlettered == n
        w.seq += 1                                  # the writer goes on after the bad row
        w.append({"type": "t", "n": n})
    got.extend(c.poll())
    w.close()
    assert [r["n"] for r, _ in got] == [0, 1, 2, 3, 4]
    whole = bus.reader("trades").read()
    assert [r for r, _ in whole if not isinstance(r, BadRecord)] == [r for r, _ in got]
    assert [p["seq"] for r, p in whole if isinstance(r, BadRecord)] == [2, 4, 6, 8]
    assert [d["raw"] for d in bus.read_all("deadletter")] == [
        "not json", '{"ts": 1, "type": "t"}', "42", "\ufffd"]
    c.close()
    bus.close()


def test_bus_bad_line_before_anything_marked_is_skipped_on_commit(home):
    bus = open_bus(home, sink="jsonl")
    bus.writer("trades").close()
    _inject(home, "jsonl", "garbage")
    c = bus.consumer("trades", "x")
    assert c.poll() == [] and c.deadlettered == 1
    c.close()
    assert bus.consumer("trades", "x").poll() == []
    assert bus.last_seq("deadletter") == 1
    bus.close()


# -- rotation and retention ----------------------------------------------------------------------
def test_bus_rotation_by_size_readers_cross_segments(home):
    bus = open_bus(home, sink="jsonl", segment_bytes=2000)
    w = bus.writer("trades")
    for n in range(300):
        w.append({"type": "t", "n": n})
    w.append_many([{"type": "t", "n": n} for n in range(300, 400)])
    w.close()
    segs = _segments(home)
    assert len(segs) > 5
    d = os.path.join(home, "bus", "trades")
    sizes = [os.path.getsize(os.path.join(d, jsonl.segment_name(s))) for s in segs]
    assert max(sizes[:-2]) <= 2000                  # the big batch may exceed on its own
    recs = [r for r, _ in _drain(bus.reader("trades"), 7)]
    assert [r["n"] for r in recs] == list(range(400))
    # each segment is named after its first record
    for s in segs:
        with open(os.path.join(d, jsonl.segment_name(s)), "rb") as f:
            assert orjson.loads(f.readline())["seq"] == s
    assert os.readlink(os.path.join(d, "current.jsonl")) == jsonl.segment_name(segs[-1])
    bus.close()


def test_bus_rotation_by_time_live_reader_follows(home):
    bus = open_bus(home, sink="jsonl", segment_seconds=0.05)
    w = bus.writer("trades")
    reader = bus.reader("trades")
    got, n = [], 0
    deadline = time.monotonic() + 10
    while len(_segments(home)) < 3 and time.monotonic() < deadline:
        w.append({"type": "t", "n": n})
        n += 1
        got.extend(r["n"] for r, _ in reader.read())
        time.sleep(0.01)
    assert len(_segments(home)) >= 3, "no rotation by age"
    w.close()
    got.extend(r["n"] for r, _ in reader.read())
    assert got == list(range(n))
    bus.close()


def test_bus_retention_by_size_keeps_newest(home):
    bus = open_bus(home, sink="jsonl", segment_bytes=1000, retention_bytes=5000)
    w = bus.writer("trades")
    for n in range(500):
        w.append({"type": "t", "n": n})
    d = os.path.join(home, "bus", "trades")
    total = sum(os.path.getsize(os.path.join(d, jsonl.segment_name(s))) for s in _segments(home))
    assert total <= 5000 + 1000 and w.removed
    recs = [r for r, _ in _drain(bus.reader("trades"))]
    assert recs[-1]["n"] == 499 and recs[0]["seq"] == _segments(home)[0]
    assert [r["seq"] for r in recs] == list(range(recs[0]["seq"], 501))
    w.close()
    bus.close()


def test_bus_retention_by_age_consumer_whose_segment_went_goes_on(home):
    bus = open_bus(home, sink="jsonl", segment_bytes=1000)
    w = bus.writer("trades")
    for n in range(100):
        w.append({"type": "t", "n": n})
    w.close()
    c = bus.consumer("trades", "slow")
    items = c.poll(3)
    c.mark(items[-1][1])
    c.close()
    live = bus.reader("trades")                  # holds the first segment open
    assert [r["n"] for r, _ in live.read(2)] == [0, 1]
    old = time.time() - 7200
    segs = _segments(home)
    for s in segs[:3]:                            # make the first three segments 2 h old
        os.utime(os.path.join(home, "bus", "trades", jsonl.segment_name(s)), (old, old))
    bus2 = open_bus(home, sink="jsonl", segment_bytes=1000, retention_hours=1.0)
    w = bus2.writer("trades")                     # applies retention when it opens
    assert len(w.removed) == 3 and _segments(home) == segs[3:]
    w.append({"type": "t", "n": 100})
    w.close()
    c = bus.consumer("trades", "slow")            # its segment is gone: from the oldest left
    recs = [r for r, _ in _drain(c)]
    assert recs[0]["seq"] == segs[3] and recs[-1]["n"] == 100
    assert c.skipped == segs[3] - 4               # seqs 4 .. segs[3]-1 were never delivered
    # a reader inside a removed segment finishes it (the open file stays readable), then
    # goes on from the oldest segment left
    rest = [r["n"] for r, _ in _drain(live)]
    assert rest == list(range(2, segs[1] - 1)) + list(range(segs[3] - 1, 101))
    assert live.skipped == segs[3] - segs[1]
    bus.close()


def test_bus_sqlite_retention_by_age_and_size(home):
    bus = open_bus(home, sink="sqlite")
    w = bus.writer("trades")
    old = int(time.time() * 1000) - 3 * 3600 * 1000
    w.append_many([{"type": "t", "n": n} for n in range(100)], ts=old)
    w.append_many([{"type": "t", "n": n} for n in range(100, 200)])
    c = bus.consumer("trades", "c")
    items = c.poll(10)
    c.mark(items[-1][1])
    c.close()
    w.close()
    w = open_bus(home, sink="sqlite", retention_hours=1.0).writer("trades")
    assert w.removed_rows == 100
    recs = [r for r, _ in _drain(bus.consumer("trades", "c"))]
    assert recs[0]["seq"] == 101 and len(recs) == 100   # the consumer goes on after the gap
    pad = "z" * 500
    for _ in range(20):
        w.append_many([{"type": "t", "pad": pad}] * 500)
    w.close()
    w = open_bus(home, sink="sqlite", retention_bytes=1 << 20).writer("trades")
    db = os.path.join(home, "bus", "trades", "records.db")
    conn = sqlite3.connect(db)
    lo, hi = conn.execute("SELECT min(seq), max(seq) FROM records").fetchone()
    held = conn.execute("SELECT sum(length(body)) FROM records").fetchone()[0]
    conn.close()
    assert hi == 10200 and lo > 101 and held <= 1 << 20
    assert w.append({"type": "t"})["seq"] == 10201             # numbering never changes
    w.close()
    bus.close()


def test_bus_sqlite_checkpoints_in_background_wal_restarts(home):
    bus = open_bus(home, sink="sqlite")
    w = bus.writer("trades")
    for n in range(4000):                        # single-row commits: a WAL page each
        w.append({"type": "t", "n": n})
    deadline = time.monotonic() + 10
    while w._checkpointer.runs < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w._checkpointer.runs >= 3             # by the thread, not inside commits
    # with the writer quiet, a checkpoint catches up; the next commit restarts the WAL
    w._checkpointer.request()
    db = os.path.join(home, "bus", "trades", "records.db")
    conn = sqlite3.connect(db)
    while time.monotonic() < deadline:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log == done:
            break
        time.sleep(0.01)
    w.append({"type": "t", "n": 4000})
    assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] <= 3
    conn.close()
    w.close()
    assert [r["n"] for r, _ in _drain(bus.reader("trades"))] == list(range(4001))
    bus.close()


@pytest.mark.parametrize("mode", ["record", "batch", "interval"])
@pytest.mark.parametrize("sink", SINKS)
def test_bus_fsync_modes_sync(home, sink, mode):
    bus = open_bus(home, sink=sink, fsync=mode, fsync_every=10, fsync_interval_ms=20)
    w = bus.writer("orders")
    for n in range(30):
        w.append({"type": "order", "n": n})
    w.append_many([{"type": "order", "n": n} for n in range(30, 60)])
    if mode == "interval":                      # a quiet writer is synced in the background
        deadline = time.monotonic() + 5
        while (w.sync._pending or not w.sync.syncs) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not w.sync._pending
    if sink == "jsonl" or mode != "record":     # SQLite FULL syncs inside SQLite
        assert w.sync.syncs >= 1
    w.close()
    assert bus.last_seq("orders") == 60
    bus.close()
