"""The SQLite sink: one WAL-mode database per topic, ``<home>/bus/<topic>/records.db``.

Table ``records(seq INTEGER PRIMARY KEY, ts, type, body)``; ``body`` is the whole record as the
same JSON text the JSONL sink would store, so both sinks deliver identical records. SQLite's
transactions make every append all-or-nothing, so a killed writer never leaves a torn record.
Inspect a spool with sqlite-utils, e.g. ``sqlite-utils rows records.db records --limit 5``.

The writer checkpoints the WAL into the database from a background thread with its own
connection, instead of SQLite's automatic checkpoint inside a commit: a checkpoint syncs the
disk twice (milliseconds), and inside a commit that stalls the writer and the bell that wakes
readers. SQLite lets a checkpoint run beside the writer and the readers. The WAL restarts from
its beginning once a checkpoint has caught up with it, which happens whenever the writer
pauses; during an unbroken burst it grows, and past ``WAL_LIMIT`` the writer checkpoints it
itself (a stall of milliseconds, once per ``WAL_LIMIT`` bytes of commits).

Readers wake on the directory's inotify events. SQLite publishes a commit in the mmap'd ``-shm``
file, which raises no event, *after* it wrote the ``-wal`` frames, so a reader woken by the
``-wal`` write may look too early. The writer therefore touches ``bell`` after each commit: that
write comes after publication, and readers wake on it only (see :mod:`bus.wake`).
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from itertools import count, repeat
from operator import itemgetter

from .durability import SyncPolicy
from .errors import BadRecord
from .lock import TopicLock
from .records import decode, decode_run, encode_lines, now_ms, record_and_line

DB = "records.db"
BELL = "bell"
RETENTION_CHECK_S = 10.0   # how often a writer applies retention while appending
READ_ROWS = 256            # rows a reader takes per query (like a JSONL reader's chunk)
CHECKPOINT_PAGES = 250     # WAL pages (about) after which the background checkpoint runs;
                           # small, so that each one syncs little (a long sync stalls appends)
WAL_LIMIT = 256 << 20      # a WAL this big is checkpointed by the writer itself (see below)
WAL_KEEP = 16 << 20        # what a restarted WAL is truncated to (journal_size_limit)
_get_type = itemgetter("type")
_get_body = itemgetter(1)


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
    """Create the database and its table with sqlite-utils, unless they exist."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'"
                        ).fetchone():
            return
        import sqlite_utils  # only here: it takes ~150 ms to import (numpy)

        sqlite_utils.Database(conn)["records"].create(
            {"seq": int, "ts": int, "type": str, "body": str}, pk="seq",
            not_null={"ts", "type", "body"}, if_not_exists=True)
    finally:
        conn.close()


def last_seq_in(topic_dir: str) -> int:
    path = os.path.join(topic_dir, DB)
    if not os.path.exists(path):
        return 0
    conn = _connect(path, readonly=True)
    try:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
    finally:
        conn.close()


def count_in(topic_dir: str) -> int:
    """Records held (rows between the oldest and the newest; seqs have no gaps)."""
    path = os.path.join(topic_dir, DB)
    if not os.path.exists(path):
        return 0
    conn = _connect(path, readonly=True)
    try:
        lo, hi = conn.execute("SELECT min(seq), max(seq) FROM records").fetchone()
        return hi - lo + 1 if hi else 0
    finally:
        conn.close()


class SqliteWriter:
    """Appends records to one topic's database; same API as :class:`bus.jsonl.JsonlWriter`.

    Durability: ``record`` commits with ``synchronous=FULL``; ``batch`` and ``interval`` fsync
    the ``-wal`` file on the policy's schedule; ``none`` leaves WAL's ``NORMAL`` (a committed
    row survives any process crash, a power cut may lose the last ones).
    """

    def __init__(self, topic_dir: str, topic: str, *, retention_bytes: int = 0,
                 retention_hours: float = 0, sync: SyncPolicy | None = None,
                 shared: bool = False, **_ignored):
        self.dir = topic_dir
        self.topic = topic
        self.shared = shared
        self.retention_hours = float(retention_hours)
        self.retention_bytes = int(retention_bytes)
        self.sync = sync or SyncPolicy()
        self.path = os.path.join(topic_dir, DB)
        self.removed_rows = 0
        os.makedirs(topic_dir, exist_ok=True)
        self._lock = TopicLock(topic_dir, topic)
        self._conn = None
        self._bell = -1
        self._lock.acquire(blocking=shared)
        try:
            ensure_schema(self.path)
            self._conn = _connect(self.path)
            full = self.sync.mode == "record"
            self._conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self.sync.set_syncer(self._sync_wal)
            self._bell = os.open(os.path.join(topic_dir, BELL), os.O_WRONLY | os.O_CREAT, 0o644)
            self._checkpointer = None if shared else Checkpointer(self.path)
            if self._checkpointer is not None:
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
                self._conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")
            self._wal_pages = 0
            self.seq = self._max_seq()
            self._next_retention = 0.0
            if not shared:
                self.apply_retention()
        except BaseException:
            self._release()
            raise
        finally:
            if shared:
                self._lock.release()

    def _max_seq(self) -> int:
        return self._conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]

    def append(self, payload: dict, ts: int | None = None) -> dict:
        """Append one record; returns it with its ``seq`` and ``ts``."""
        if ts is None:
            ts = now_ms()
        if self.shared:
            with self._lock:
                self.seq = self._max_seq()
                rec = self._commit_one(payload, ts)
        else:
            rec = self._commit_one(payload, ts)
        return rec

    def _commit_one(self, payload: dict, ts: int) -> dict:
        seq = self.seq + 1
        rec, line = record_and_line(seq, ts, payload)
        # autocommit: one statement is one transaction
        self._conn.execute("INSERT INTO records (seq, ts, type, body) VALUES (?,?,?,?)",
                           (seq, ts, rec["type"], line[:-1].decode()))
        self.seq = seq
        self._after_commit(1)
        return rec

    def append_many(self, payloads: list[dict], ts: int | None = None) -> int:
        """Append a batch in one transaction; returns the last seq."""
        if not payloads:
            return self.seq
        if ts is None:
            ts = now_ms()
        if self.shared:
            with self._lock:
                self.seq = self._max_seq()
                self._commit_many(payloads, ts)
        else:
            self._commit_many(payloads, ts)
        return self.seq

    def _commit_many(self, payloads: list[dict], ts: int) -> None:
        first = self.seq + 1
        lines = encode_lines(first, ts, payloads)
        rows = zip(count(first), repeat(ts), map(_get_type, payloads),
                   [line[:-1].decode() for line in lines])
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO records (seq, ts, type, body) VALUES (?,?,?,?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.seq = first + len(lines) - 1
        self._after_commit(len(lines))

    def _after_commit(self, count: int) -> None:
        os.pwrite(self._bell, b"\n", 0)
        if self._checkpointer is not None:
            # a commit appends a page per ~16 rows of ~250 bytes, and at least one
            self._wal_pages += 1 + count // 16
            if self._wal_pages >= CHECKPOINT_PAGES:
                self._wal_pages = 0
                self._checkpointer.request()
                try:
                    if os.path.getsize(self.path + "-wal") > WAL_LIMIT:
                        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except OSError:
                    pass
        if self.sync.mode in ("batch", "interval"):
            self.sync.after_append(-1, count)
        if self._next_retention and time.monotonic() >= self._next_retention:
            self.apply_retention()

    def _sync_wal(self) -> None:
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: the rows are in the database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def apply_retention(self) -> int:
        """Delete the oldest rows beyond the age or size limit (never renumbers; keeps the
        newest row so that the numbering can always be read back). Returns rows deleted."""
        if self.retention_hours <= 0 and self.retention_bytes <= 0:
            return 0
        self._next_retention = time.monotonic() + RETENTION_CHECK_S
        conn = self._conn
        deleted = 0
        if self.retention_hours > 0:
            cutoff = now_ms() - int(self.retention_hours * 3600 * 1000)
            deleted += conn.execute("DELETE FROM records WHERE ts < ? AND seq < ?",
                                    (cutoff, self.seq)).rowcount
        if self.retention_bytes > 0:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            used = (conn.execute("PRAGMA page_count").fetchone()[0]
                    - conn.execute("PRAGMA freelist_count").fetchone()[0]) * page
            if used > self.retention_bytes:
                lo, hi = conn.execute("SELECT min(seq), max(seq) FROM records").fetchone()
                if hi:
                    rows = hi - lo + 1
                    # drop the share of rows the excess stands for (rows are about equal)
                    drop = min(rows - 1, int(rows * (1 - self.retention_bytes / used)) + 1)
                    deleted += conn.execute("DELETE FROM records WHERE seq < ?",
                                            (lo + drop,)).rowcount
        self.removed_rows += deleted
        return deleted

    def _release(self) -> None:
        if getattr(self, "_checkpointer", None) is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._bell >= 0:
            os.close(self._bell)
            self._bell = -1
        self.sync.close()
        self._lock.release()

    def close(self) -> None:
        """Checkpoint, close and release the topic."""
        if self._conn is not None:
            self.sync.flush(-1)
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
        self._release()


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on request, from its own thread and connection
    (sqlite3 releases the GIL while SQLite works, so the writer goes on meanwhile)."""

    def __init__(self, path: str):
        self.path = path
        self.runs = 0
        self._due = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bus-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._due.set()

    def _run(self) -> None:
        conn = _connect(self.path)
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._closed:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self.runs += 1
                except sqlite3.Error:
                    pass  # busy: the next request retries
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._due.set()
        self._thread.join(10)


class SqliteReader:
    """Reads a topic's rows in seq order; a position is ``{"seq": last delivered seq}``."""

    def __init__(self, topic_dir: str, position: dict | None = None, start: str = "beginning",
                 raw: bool = False):
        self.dir = topic_dir
        self.raw = raw             # items are (record, position, stored body) triples
        self.path = os.path.join(topic_dir, DB)
        self._conn = None
        self.bad_seen = 0
        self.skipped = 0
        if position:
            self._seq = int(position.get("seq", 0))
        elif start == "end":
            self._seq = last_seq_in(topic_dir)
        else:
            self._seq = 0

    @property
    def position(self) -> dict:
        return {"seq": self._seq}

    @property
    def seq(self) -> int:
        return self._seq

    def read(self, max_records: int = 5000, greedy: bool = True
             ) -> list[tuple[dict | BadRecord, dict]]:
        """Up to ``max_records`` (record or BadRecord, position after it), oldest first;
        [] when nothing is new. ``greedy=False`` stops after one query of ``READ_ROWS``.

        With ``raw``, each item has a third member: the body as stored (text).
        """
        if self._conn is None:
            if not os.path.exists(self.path):
                return []
            self._conn = _connect(self.path, readonly=True)
        out: list = []
        while len(out) < max_records:
            limit = min(max_records - len(out), READ_ROWS)
            got = self._query(limit)
            if out:
                out.extend(got)
            else:
                out = got
            # fewer rows than asked: that was the end, so stop (a busy writer would
            # otherwise keep this loop going, a row or two per query, until max_records)
            if not greedy or len(got) < limit:
                break
        return out

    def _query(self, limit: int) -> list:
        after = self._seq
        rows = self._conn.execute(
            "SELECT seq, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit)).fetchall()
        if not rows:
            return []
        first, last = rows[0][0], rows[-1][0]
        if after and first > after + 1:
            self.skipped += first - after - 1
        self._seq = last
        run = None
        # One row (the usual case of a tailing reader: it is woken per commit) costs less
        # through the per-row path below; the run decoder pays off from two rows on.
        if not self.raw and len(rows) > 1:
            try:
                run = decode_run(",".join(map(_get_body, rows)), after, len(rows))
            except TypeError:  # a body that is not text (a hand-made row)
                pass
        if run is not None and run[1][0] == first and run[1][-1] == last:
            return list(zip(run[0], [{"seq": s} for s in run[1]]))
        out = []
        for seq, body in rows:
            try:
                if not isinstance(body, (str, bytes)):
                    raise BadRecord("body is not text", repr(body))
                rec = decode(body)
                if rec["seq"] != seq:
                    raise BadRecord(f"record says seq {rec['seq']} in row {seq}", body)
            except BadRecord as bad:
                self.bad_seen += 1
                rec = bad
            out.append((rec, {"seq": seq}, body) if self.raw else (rec, {"seq": seq}))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
