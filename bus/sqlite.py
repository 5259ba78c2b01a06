"""The SQLite sink: one WAL-mode database per topic, ``<home>/bus/<topic>/records.db``.

Table ``records(seq INTEGER PRIMARY KEY, ts, type, body)``; ``body`` is the whole record as the
same JSON text the JSONL sink would store, so both sinks deliver identical records. SQLite's
transactions make every append all-or-nothing, so a killed writer never leaves a torn record.

Readers wake on the directory's inotify events. SQLite publishes a commit in the mmap'd ``-shm``
file, which raises no event, *after* it wrote the ``-wal`` frames, so a reader woken by the
``-wal`` write may look too early. The writer therefore touches ``bell`` after each commit: that
write comes after publication and wakes readers at the right moment.
"""
from __future__ import annotations

import os
import sqlite3
import time

import orjson
import sqlite_utils

from .durability import SyncPolicy
from .errors import BadRecord
from .lock import TopicLock
from .records import decode, envelope, now_ms

DB = "records.db"
BELL = "bell"


def has_topic(topic_dir: str) -> bool:
    return os.path.exists(os.path.join(topic_dir, DB))


def _connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def ensure_schema(path: str) -> None:
    """Create the database and its table with sqlite-utils (idempotent)."""
    db = sqlite_utils.Database(path)
    db.conn.execute("PRAGMA journal_mode=WAL")
    db["records"].create({"seq": int, "ts": int, "type": str, "body": str}, pk="seq",
                         not_null={"ts", "type", "body"}, if_not_exists=True)
    db.conn.close()


def last_seq_in(topic_dir: str) -> int:
    path = os.path.join(topic_dir, DB)
    if not os.path.exists(path):
        return 0
    conn = _connect(path, readonly=True)
    try:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
    finally:
        conn.close()


class SqliteWriter:
    """Appends records to one topic's database; same API as :class:`bus.jsonl.JsonlWriter`."""

    def __init__(self, topic_dir: str, topic: str, *, retention_bytes: int = 0,
                 retention_hours: float = 0, sync: SyncPolicy | None = None,
                 shared: bool = False, **_ignored):
        self.dir = topic_dir
        self.topic = topic
        self.shared = shared
        self.retention_hours = float(retention_hours)
        self.retention_bytes = int(retention_bytes)
        self.sync = sync or SyncPolicy()
        os.makedirs(topic_dir, exist_ok=True)
        self._lock = TopicLock(topic_dir, topic)
        if not shared:
            self._lock.acquire()
        path = os.path.join(topic_dir, DB)
        ensure_schema(path)
        self._conn = _connect(path)
        # "record" durability means a sync per commit (FULL); otherwise WAL's NORMAL, which
        # never loses a committed row to a process crash, only possibly to a power cut.
        full = self.sync.mode == "record"
        self._conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
        self._bell = os.open(os.path.join(topic_dir, BELL), os.O_WRONLY | os.O_CREAT, 0o644)
        self.seq = last_seq_in(topic_dir)
        self._pending = 0
        self._last_sync = time.monotonic()
        self._last_retention = 0.0

    def append(self, payload: dict, ts: int | None = None) -> dict:
        """Append one record; returns it with its ``seq`` and ``ts``."""
        if self.shared:
            with self._lock:
                self.seq = last_seq_in(self.dir)
                return self._insert([payload], ts)[0]
        return self._insert([payload], ts)[0]

    def append_many(self, payloads: list[dict], ts: int | None = None) -> int:
        """Append a batch in one transaction; returns the last seq."""
        if payloads:
            if self.shared:
                with self._lock:
                    self.seq = last_seq_in(self.dir)
                    self._insert(payloads, ts)
            else:
                self._insert(payloads, ts)
        return self.seq

    def _insert(self, payloads: list[dict], ts: int | None) -> list[dict]:
        ts = now_ms() if ts is None else ts
        seq = self.seq
        recs, rows = [], []
        dumps = orjson.dumps
        for p in payloads:
            seq += 1
            rec = envelope(seq, ts, p)
            recs.append(rec)
            rows.append((seq, ts, rec["type"], dumps(rec).decode()))
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO records (seq, ts, type, body) VALUES (?,?,?,?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.seq = seq
        self._after_commit(len(rows))
        return recs

    def _after_commit(self, count: int) -> None:
        os.pwrite(self._bell, b"\n", 0)
        mode = self.sync.mode
        if mode in ("batch", "interval"):
            self._pending += count
            now = time.monotonic()
            if ((mode == "batch" and self._pending >= self.sync.every)
                    or (mode == "interval" and now - self._last_sync >= self.sync.interval_ns / 1e9)):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._pending = 0
                self._last_sync = now
        if self.retention_hours > 0 and time.monotonic() - self._last_retention > 60:
            self.apply_retention()

    def apply_retention(self) -> int:
        """Delete rows older than the retention age (numbering is never changed)."""
        self._last_retention = time.monotonic()
        if self.retention_hours <= 0:
            return 0
        cutoff = now_ms() - int(self.retention_hours * 3600 * 1000)
        # keep the last row so that the numbering can always be read back
        cur = self._conn.execute("DELETE FROM records WHERE ts < ? AND seq < ?", (cutoff, self.seq))
        return cur.rowcount

    def close(self) -> None:
        """Checkpoint, close and release the topic."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        self._conn.close()
        os.close(self._bell)
        self._lock.release()


class SqliteReader:
    """Reads a topic's rows in seq order; a position is ``{"seq": last delivered seq}``."""

    def __init__(self, topic_dir: str, position: dict | None = None, start: str = "beginning"):
        self.dir = topic_dir
        self.path = os.path.join(topic_dir, DB)
        self._conn = None
        if position:
            self.seq = int(position.get("seq", 0))
        elif start == "end":
            self.seq = last_seq_in(topic_dir)
        else:
            self.seq = 0

    @property
    def position(self) -> dict:
        return {"seq": self.seq}

    def read(self, max_records: int = 5000) -> list[tuple[dict | BadRecord, dict]]:
        """Up to ``max_records`` (record or BadRecord, position after it), oldest first."""
        if self._conn is None:
            if not os.path.exists(self.path):
                return []
            self._conn = _connect(self.path, readonly=True)
        rows = self._conn.execute(
            "SELECT seq, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (self.seq, max_records)).fetchall()
        out = []
        for seq, body in rows:
            self.seq = seq
            try:
                rec = decode(body)
            except BadRecord as bad:
                out.append((bad, {"seq": seq}))
                continue
            out.append((rec, {"seq": seq}))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
