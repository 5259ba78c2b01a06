"""Crash safety of the bus with real processes and real files: writers killed with SIGKILL at
random instants, a torn tail written by hand, consumers stopped by SIGTERM and SIGKILL.

Run as a script, this file is the child process the tests start (``writer`` / ``consumer`` /
``hold-transaction``); see :func:`child_main`.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import read_line as _read_line
from bus import BadRecord, open_bus

HERE = os.path.abspath(__file__)
SINKS = ["jsonl", "sqlite"]


# -- child processes -------------------------------------------------------------------------
def _last_counter(bus, topic: str) -> int:
    """The payload counter ``n`` of the topic's last record (-1 if none)."""
    last = bus.last_seq(topic)
    if not last:
        return -1
    reader = bus.reader(topic, position={"seq": last - 1})
    try:
        items = reader.read(10)
        return items[-1][0]["n"]
    finally:
        reader.close()


def child_writer(home: str, sink: str, total: int, seed: int) -> None:
    """Append records numbered by ``n`` until ``total``, resuming after the last one stored;
    singles and batches of several sizes, small segments so that kills hit rotations too."""
    bus = open_bus(home, sink=sink, segment_bytes=64 << 10)
    w = bus.writer("trades")
    n = _last_counter(bus, "trades") + 1
    print(f"ready {n} {getattr(w, 'repaired', 0)}", flush=True)
    rng = random.Random(seed)
    while n < total:
        k = min(total - n, rng.choice((1, 1, 1, 5, 40, 400, 3000)))
        pad = "x" * rng.randrange(0, 200)
        if k == 1:
            w.append({"type": "tick", "n": n, "pad": pad})
        else:
            w.append_many([{"type": "tick", "n": n + i, "pad": pad} for i in range(k)])
        n += k
    w.close()
    print("done", flush=True)


def child_big_batch(home: str, sink: str, size: int) -> None:
    """Append one batch of ``size`` records after the stored ones, saying ``writing`` on
    stdout right before the write(2) (JSONL) or the transaction (SQLite) starts."""
    from bus import jsonl

    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    n = _last_counter(bus, "trades") + 1
    print(f"ready {n} {getattr(w, 'repaired', 0)}", flush=True)
    batch = [{"type": "tick", "n": n + i, "pad": "y" * 100} for i in range(size)]
    if sink == "jsonl":
        class _AnnouncingOs:      # os for bus.jsonl, announcing the big write(2)
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def write(fd, data):
                print("writing", flush=True)
                return os.write(fd, data)
        jsonl.os = _AnnouncingOs()
    else:
        print("writing", flush=True)
    w.append_many(batch)
    print("done", flush=True)


def child_consumer(home: str, sink: str, total: int, crash_after: int) -> None:
    """Process ``trades`` at least once; effects go to a log (one line per delivery) and to an
    idempotent store keyed by seq. SIGTERM: finish the record in hand, commit, exit 0.
    ``crash_after`` > 0: SIGKILL itself after that many records of a batch, before commit."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    bus = open_bus(home, sink=sink)
    bus.watch("trades")
    c = bus.consumer("trades", "worker")
    log = os.open(os.path.join(home, "effects.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    store = sqlite3.connect(os.path.join(home, "effects.db"), isolation_level=None)
    store.execute("CREATE TABLE IF NOT EXISTS done (seq INTEGER PRIMARY KEY, n INTEGER)")
    print("ready", flush=True)
    handled = 0
    while not stop:
        batch = c.poll(50)
        if not batch:
            if c.position.get("seq", 0) >= total:
                break
            bus.wait(0.2)
            continue
        store.execute("BEGIN")
        for rec, pos in batch:
            os.write(log, b"%d\n" % rec["seq"])
            store.execute("INSERT OR IGNORE INTO done VALUES (?, ?)", (rec["seq"], rec["n"]))
            c.mark(pos)
            handled += 1
            if crash_after and handled == crash_after:
                store.execute("COMMIT")
                os.kill(os.getpid(), signal.SIGKILL)
            if stop:
                break
        store.execute("COMMIT")
        c.commit()
    c.close()
    bus.close()
    print("done", flush=True)


def child_hold_transaction(home: str) -> None:
    """Open the SQLite topic as its writer, insert a row inside a transaction, never commit."""
    bus = open_bus(home, sink="sqlite")
    w = bus.writer("trades")
    conn = w._conn
    conn.execute("BEGIN")
    conn.execute("INSERT INTO records (seq, ts, type, body) VALUES (?,?,?,?)",
                 (w.seq + 1, 1, "tick", '{"seq":%d,"ts":1,"type":"tick","n":-1}' % (w.seq + 1)))
    print("ready", flush=True)
    time.sleep(60)


def child_main(argv: list[str]) -> None:
    role = argv[0]
    if role == "writer":
        child_writer(argv[1], argv[2], int(argv[3]), int(argv[4]))
    elif role == "big-batch":
        child_big_batch(argv[1], argv[2], int(argv[3]))
    elif role == "consumer":
        child_consumer(argv[1], argv[2], int(argv[3]), int(argv[4]))
    elif role == "hold-transaction":
        child_hold_transaction(argv[1])


# -- helpers -----------------------------------------------------------------------------------
def _start(procs, *args):
    return procs([sys.executable, HERE, *map(str, args)], stdout=subprocess.PIPE)


def _all_records(home, sink):
    bus = open_bus(home, sink=sink)
    reader = bus.reader("trades")
    out = []
    try:
        while True:
            items = reader.read(10000)
            if not items:
                return out
            out.extend(items)
    finally:
        reader.close()
        bus.close()


def _assert_complete(items, total):
    bad = [rec for rec, _ in items if isinstance(rec, BadRecord)]
    assert not bad, f"undecodable records: {bad[:3]}"
    seqs = [rec["seq"] for rec, _ in items]
    counters = [rec["n"] for rec, _ in items]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has gaps or repeats"
    assert counters == list(range(total)), "payloads lost, repeated or out of order"


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("sink", SINKS)
def test_bus_writer_sigkilled_repeatedly_no_torn_duplicate_or_renumbered_record(home, procs, sink):
    total = 400_000
    rng = random.Random(7)
    seen = []                 # what a reader in this process saw while the kills went on
    bus = open_bus(home, sink=sink)
    reader = None
    repaired = kills = 0
    for i in range(20):
        p = _start(procs, "writer", home, sink, total, i)
        first_n, cut = map(int, _read_line(p).split()[1:])
        repaired += cut
        time.sleep(rng.uniform(0.0, 0.03))    # a random instant in the middle of writing
        p.kill()
        p.wait(10)
        kills += p.returncode == -signal.SIGKILL
        if reader is None and bus.last_seq("trades"):
            reader = bus.reader("trades")
        if reader is not None:
            seen.extend(reader.read(1_000_000))
    p = _start(procs, "writer", home, sink, total, 99)
    assert _read_line(p).startswith("ready")
    assert _read_line(p, 60) == "done"
    assert p.wait(10) == 0
    assert kills >= 15, "the writer finished before it could be killed"

    items = _all_records(home, sink)
    _assert_complete(items, total)
    # what was read while writers were dying is exactly what is stored, in place
    assert seen, "nothing was written before the kills"
    stored = [(r["seq"], r["n"]) for r, _ in items[:len(seen)]]
    assert [(r["seq"], r["n"]) for r, _ in seen] == stored
    if sink == "jsonl":   # -s shows how often a kill landed inside a write(2)
        print(f"torn tails repaired: {repaired} bytes over {kills} kills")
    reader.close()
    bus.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sink", SINKS)
def test_bus_writer_sigkilled_inside_large_write_leaves_whole_records_only(home, procs, sink):
    repaired = 0
    rng = random.Random(11)
    for _ in range(3):
        p = _start(procs, "big-batch", home, sink, 200_000)
        repaired += int(_read_line(p).split()[2])
        assert _read_line(p, 30) == "writing"
        time.sleep(rng.uniform(0.0, 0.005))   # the write(2) of ~30 MB is under way
        p.kill()
        p.wait(10)
        items = _all_records(home, sink)
        _assert_complete(items, len(items))      # whole records only: a prefix of each batch
    total = len(items) + 2_000
    p = _start(procs, "writer", home, sink, total, 1)
    repaired += int(_read_line(p).split()[2])
    assert _read_line(p, 30) == "done"
    _assert_complete(_all_records(home, sink), total)
    if sink == "jsonl":
        assert repaired > 0, "no kill landed inside a write: the torn tail path went untested"


def test_bus_torn_tail_jsonl_never_delivered_and_repaired(home):
    bus = open_bus(home, sink="jsonl")
    w = bus.writer("trades")
    for n in range(3):
        w.append({"type": "tick", "n": n})
    w.close()
    seg = os.path.join(home, "bus", "trades", "00000000000000000001.jsonl")
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(b'{"seq":4,"ts":1,"type":"tick","n":"TORN')     # a writer died here
    reader = bus.reader("trades")
    assert [r["n"] for r, _ in reader.read()] == [0, 1, 2]
    assert reader.read() == []                                     # the torn line: never
    assert bus.last_seq("trades") == 3

    w = bus.writer("trades")                                       # repairs, continues
    assert w.repaired == len(b'{"seq":4,"ts":1,"type":"tick","n":"TORN')
    assert os.path.getsize(seg) == size
    rec = w.append({"type": "tick", "n": 3})
    assert rec["seq"] == 4
    items = reader.read()
    assert [(r["seq"], r["n"]) for r, _ in items] == [(4, 3)]
    assert not any(isinstance(r, BadRecord) for r, _ in items)
    w.close()
    reader.close()
    bus.close()


def test_bus_torn_tail_sqlite_uncommitted_row_never_delivered(home, procs):
    bus = open_bus(home, sink="sqlite")
    w = bus.writer("trades")
    w.append_many([{"type": "tick", "n": n} for n in range(3)])
    w.close()
    p = _start(procs, "hold-transaction", home)
    assert _read_line(p) == "ready"
    reader = bus.reader("trades")
    assert [r["n"] for r, _ in reader.read()] == [0, 1, 2]
    p.kill()                                              # dies inside its transaction
    p.wait(10)
    assert reader.read() == []
    w = bus.writer("trades")
    assert w.append({"type": "tick", "n": 3})["seq"] == 4
    assert [(r["seq"], r["n"]) for r, _ in reader.read()] == [(4, 3)]
    w.close()
    reader.close()
    bus.close()


def _fill_topic(home, sink, total):
    bus = open_bus(home, sink=sink, segment_bytes=32 << 10)
    w = bus.writer("trades")
    for start in range(0, total, 500):
        w.append_many([{"type": "tick", "n": n} for n in range(start, min(total, start + 500))])
    w.close()
    bus.close()


def _effects(home):
    with open(os.path.join(home, "effects.log")) as f:
        log = [int(x) for x in f.read().split()]
    store = sqlite3.connect(os.path.join(home, "effects.db"))
    done = store.execute("SELECT seq, n FROM done ORDER BY seq").fetchall()
    store.close()
    return log, done


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sink", SINKS)
def test_bus_consumer_sigterm_restarts_neither_lose_nor_repeat(home, procs, sink):
    total = 20_000
    _fill_topic(home, sink, total)
    rng = random.Random(3)
    for _ in range(6):
        p = _start(procs, "consumer", home, sink, total, 0)
        assert _read_line(p) == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    assert 0 < len(_effects(home)[0]) < total            # the stops came mid-stream
    p = _start(procs, "consumer", home, sink, total, 0)
    assert _read_line(p) == "ready"
    assert _read_line(p, 30) == "done"
    log, done = _effects(home)
    assert log == list(range(1, total + 1))              # every record once, in order
    assert done == [(s, s - 1) for s in range(1, total + 1)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sink", SINKS)
def test_bus_consumer_sigkill_at_least_once_idempotent_exactly_once(home, procs, sink):
    total = 20_000
    _fill_topic(home, sink, total)
    rng = random.Random(5)
    for i in range(6):
        # half the kills come from outside at random, half from inside between effect and commit
        crash_after = 0 if i % 2 else rng.randrange(1, 40)
        p = _start(procs, "consumer", home, sink, total, crash_after)
        assert _read_line(p) == "ready"
        if not crash_after:
            time.sleep(rng.uniform(0.0, 0.05))
            p.kill()
        p.wait(10)
        assert p.returncode == -signal.SIGKILL
    assert 0 < len(set(_effects(home)[0])) < total       # the kills came mid-stream
    p = _start(procs, "consumer", home, sink, total, 0)
    assert _read_line(p) == "ready"
    assert _read_line(p, 30) == "done"
    log, done = _effects(home)
    assert set(log) == set(range(1, total + 1))          # nothing lost
    assert len(log) > total                              # some delivered twice (at least once)
    assert done == [(s, s - 1) for s in range(1, total + 1)]   # effects exactly once


if __name__ == "__main__":
    child_main(sys.argv[1:])
