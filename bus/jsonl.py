"""The JSONL sink: a topic is a directory of append-only segment files of JSON Lines.

Layout of ``<home>/bus/<topic>/``::

    00000000000000000001.jsonl   segment whose first record has seq 1
    00000000000000052311.jsonl   the next one (rotation by size or age)
    current.jsonl -> ...         symlink to the active segment, for ``tail -F``
    writer.lock                  flock held by the one writer

Every record is written with one ``write(2)`` of whole lines, and readers deliver only lines
that end in a newline, so a writer killed at any instant leaves at most a torn tail that nobody
has seen; the next writer cuts it off and continues the numbering from the last whole line.
"""
from __future__ import annotations

import os
import time

import orjson

from .durability import SyncPolicy
from .errors import BadRecord
from .lock import TopicLock
from .records import decode, envelope, now_ms

SUFFIX = ".jsonl"
CURRENT = "current.jsonl"


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def list_segments(topic_dir: str) -> list[int]:
    """First seqs of the topic's segments, oldest first."""
    try:
        names = os.listdir(topic_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-len(SUFFIX)]) for n in names
                  if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit())


def has_topic(topic_dir: str) -> bool:
    return bool(list_segments(topic_dir))


def _last_line(path: str) -> tuple[int, bytes | None]:
    """(offset after the last complete line, that line) of a file; cuts nothing."""
    with open(path, "rb") as f:
        pos = f.seek(0, 2)      # file offset where ``tail`` starts
        tail = b""
        while True:
            nl = tail.rfind(b"\n")
            if nl >= 0:
                prev = tail.rfind(b"\n", 0, nl)
                if prev >= 0 or pos == 0:
                    return pos + nl + 1, tail[prev + 1:nl]
            if pos == 0:
                return 0, None
            start = max(0, pos - 65536)
            f.seek(start)
            tail = f.read(pos - start) + tail
            pos = start


def last_seq_in(topic_dir: str) -> int:
    """The seq of the last complete record of a topic (0 if none), read from its tail."""
    for first in reversed(list_segments(topic_dir)):
        path = os.path.join(topic_dir, segment_name(first))
        seq = _scan_back_for_seq(path)
        if seq:
            return seq
    return 0


def _scan_back_for_seq(path: str) -> int:
    """Last parseable seq in a segment, skipping garbage lines from the end."""
    complete, line = _last_line(path)
    if line is None:
        return 0
    try:
        return int(orjson.loads(line)["seq"])
    except Exception:
        pass
    # rare: the last whole line is damaged; read the file to find the last good record
    seq = 0
    with open(path, "rb") as f:
        for raw in f.read(complete).split(b"\n"):
            try:
                seq = int(orjson.loads(raw)["seq"])
            except Exception:
                continue
    return seq


class JsonlWriter:
    """Appends records to one topic; see the module docstring for the guarantees.

    ``shared=True`` (used for ``deadletter`` only) lets several processes append: each append
    takes the lock, re-reads the tail for the last seq, writes and releases.
    """

    def __init__(self, topic_dir: str, topic: str, *, segment_bytes: int = 64 << 20,
                 segment_seconds: float = 3600, retention_bytes: int = 0,
                 retention_hours: float = 0, sync: SyncPolicy | None = None,
                 shared: bool = False):
        self.dir = topic_dir
        self.topic = topic
        self.segment_bytes = int(segment_bytes)
        self.segment_seconds = float(segment_seconds)
        self.retention_bytes = int(retention_bytes)
        self.retention_hours = float(retention_hours)
        self.sync = sync or SyncPolicy()
        self.shared = shared
        os.makedirs(topic_dir, exist_ok=True)
        self._lock = TopicLock(topic_dir, topic)
        self._fd = -1
        self.seq = 0
        if not shared:
            self._lock.acquire()
            try:
                self._open_tail()
            except BaseException:
                self._lock.release()
                raise

    # -- opening and repair ------------------------------------------------------------------
    def _open_tail(self) -> None:
        segs = list_segments(self.dir)
        if not segs:
            self.seq = 0
            self._start_segment(1)
            return
        first = segs[-1]
        path = os.path.join(self.dir, segment_name(first))
        complete, _ = _last_line(path)
        if os.path.getsize(path) != complete:
            # a torn tail from a writer that died mid-line: nobody read it, cut it off
            with open(path, "r+b") as f:
                f.truncate(complete)
        self.seq = last_seq_in(self.dir)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._seg_first = first
        self._seg_bytes = complete
        self._seg_started = time.monotonic() - self._age_of(path)
        self._point_current(first)

    @staticmethod
    def _age_of(path: str) -> float:
        try:
            return max(0.0, time.time() - os.stat(path).st_ctime)
        except OSError:
            return 0.0

    def _start_segment(self, first_seq: int) -> None:
        path = os.path.join(self.dir, segment_name(first_seq))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._seg_first = first_seq
        self._seg_bytes = os.fstat(self._fd).st_size
        self._seg_started = time.monotonic()
        self._point_current(first_seq)

    def _point_current(self, first_seq: int) -> None:
        tmp = os.path.join(self.dir, f".{CURRENT}.{os.getpid()}")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(segment_name(first_seq), tmp)
        os.replace(tmp, os.path.join(self.dir, CURRENT))

    # -- appending ---------------------------------------------------------------------------
    def append(self, payload: dict, ts: int | None = None) -> dict:
        """Append one record; returns it with its ``seq`` and ``ts``."""
        if self.shared:
            with self._lock:
                self._open_tail()
                try:
                    return self._append_one(payload, ts)
                finally:
                    self._close_fd()
        return self._append_one(payload, ts)

    def _append_one(self, payload: dict, ts: int | None) -> dict:
        seq = self.seq + 1
        rec = envelope(seq, now_ms() if ts is None else ts, payload)
        data = orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
        self._write(data)
        self.seq = seq
        self.sync.after_append(self._fd)
        self._seg_bytes += len(data)
        if self._seg_bytes >= self.segment_bytes or (
                time.monotonic() - self._seg_started >= self.segment_seconds):
            self._rotate()
        return rec

    def append_many(self, payloads: list[dict], ts: int | None = None) -> int:
        """Append a batch with one write; returns the last seq."""
        if not payloads:
            return self.seq
        if self.shared:
            for p in payloads:
                self.append(p, ts)
            return self.seq
        ts = now_ms() if ts is None else ts
        seq = self.seq
        dumps = orjson.dumps
        opt = orjson.OPT_APPEND_NEWLINE
        chunks = []
        for p in payloads:
            seq += 1
            rec = {"seq": seq, "ts": ts}
            rec.update(p)
            rec["seq"] = seq
            rec["ts"] = ts
            chunks.append(dumps(rec, option=opt))
        data = b"".join(chunks)
        self._write(data)
        self.sync.after_append(self._fd, len(payloads))
        self.seq = seq
        self._seg_bytes += len(data)
        if self._seg_bytes >= self.segment_bytes or (
                time.monotonic() - self._seg_started >= self.segment_seconds):
            self._rotate()
        return seq

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    # -- rotation and retention --------------------------------------------------------------
    def _rotate(self) -> None:
        self.sync.flush(self._fd)
        os.close(self._fd)
        self._start_segment(self.seq + 1)
        self.apply_retention()

    def apply_retention(self) -> list[str]:
        """Delete old segments beyond the age or size limit (never the active one)."""
        removed = []
        segs = list_segments(self.dir)[:-1]
        if not segs or (self.retention_bytes <= 0 and self.retention_hours <= 0):
            return removed
        now = time.time()
        sizes = {}
        for first in segs:
            try:
                sizes[first] = os.path.getsize(os.path.join(self.dir, segment_name(first)))
            except FileNotFoundError:
                sizes[first] = 0
        total = sum(sizes.values()) + self._seg_bytes
        for first in segs:
            path = os.path.join(self.dir, segment_name(first))
            too_old = (self.retention_hours > 0
                       and now - os.path.getmtime(path) > self.retention_hours * 3600)
            too_big = self.retention_bytes > 0 and total > self.retention_bytes
            if not (too_old or too_big):
                break
            os.unlink(path)
            total -= sizes[first]
            removed.append(path)
        return removed

    def _close_fd(self) -> None:
        if self._fd >= 0:
            self.sync.flush(self._fd)
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Sync what is pending and release the topic."""
        self._close_fd()
        self._lock.release()


class JsonlReader:
    """Reads a topic's records in order from a position, across segments.

    A position is ``{"seq": last delivered seq, "segment": first seq of its segment,
    "offset": byte offset after it}``. Only whole lines are delivered.
    """

    def __init__(self, topic_dir: str, position: dict | None = None, start: str = "beginning"):
        self.dir = topic_dir
        self._f = None
        self._buf_offset = 0
        if position:
            self.seq = int(position.get("seq", 0))
            self.segment = int(position.get("segment", 1))
            self.offset = int(position.get("offset", 0))
            segs = list_segments(topic_dir)
            if segs and self.segment not in segs:
                # its segment was removed by retention: go on from the oldest that is left
                later = [s for s in segs if s > self.segment]
                self.segment, self.offset = (later[0] if later else segs[-1]), 0
        elif start == "end":
            segs = list_segments(topic_dir)
            self.segment = segs[-1] if segs else 1
            path = os.path.join(topic_dir, segment_name(self.segment))
            self.offset = _last_line(path)[0] if segs else 0
            self.seq = last_seq_in(topic_dir)
        else:
            segs = list_segments(topic_dir)
            self.segment = segs[0] if segs else 1
            self.offset = 0
            self.seq = 0

    @property
    def position(self) -> dict:
        return {"seq": self.seq, "segment": self.segment, "offset": self.offset}

    def _open(self) -> bool:
        if self._f is None:
            try:
                self._f = open(os.path.join(self.dir, segment_name(self.segment)), "rb")
            except FileNotFoundError:
                segs = list_segments(self.dir)
                later = [s for s in segs if s > self.segment]
                if not later:
                    return False
                self.segment, self.offset = later[0], 0
                return self._open()
        return True

    def read(self, max_records: int = 5000) -> list[tuple[dict | BadRecord, dict]]:
        """Up to ``max_records`` (record or BadRecord, position after it), oldest first."""
        out = []
        while len(out) < max_records:
            if not self._open():
                return out
            self._f.seek(self.offset)
            data = self._f.read(1 << 20)
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) >= 1 << 20:
                    raise BadRecord("line longer than 1 MiB", data[:200].decode(errors="replace"))
                # nothing whole here; move on only once a newer segment exists and this one
                # is fully read (the writer finishes a segment before it starts the next)
                if not self._advance_segment():
                    return out
                continue
            pos = self.offset
            for raw in data[:end].split(b"\n"):
                pos += len(raw) + 1
                if len(out) >= max_records:
                    break
                try:
                    rec = decode(raw)
                except BadRecord as bad:
                    self.offset = pos
                    out.append((bad, self.position))
                    continue
                seq = rec["seq"]
                self.offset = pos
                if seq <= self.seq:
                    continue  # already delivered (never expected; guards replays)
                self.seq = seq
                out.append((rec, {"seq": seq, "segment": self.segment, "offset": pos}))
        return out

    def _advance_segment(self) -> bool:
        later = [s for s in list_segments(self.dir) if s > self.segment]
        if not later:
            return False
        # re-check the current segment after seeing the new one: its last lines may be new
        self._f.seek(self.offset)
        if self._f.read(1):
            return True
        self._f.close()
        self._f = None
        self.segment, self.offset = later[0], 0
        return True

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
