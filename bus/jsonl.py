"""The JSONL sink: a topic is a directory of append-only segment files of JSON Lines.

Layout of ``<home>/bus/<topic>/``::

    00000000000000000001.jsonl   segment whose first record has seq 1
    00000000000000052311.jsonl   the next one (rotation by size or age)
    current.jsonl -> ...         symlink to the active segment, for ``tail -F``
    writer.lock                  flock held by the one writer

Every append is one ``write(2)`` of whole lines, and readers deliver only lines that end in a
newline, so a writer killed at any instant leaves at most a torn tail that nobody has seen; the
next writer cuts it off and continues the numbering from the last whole line. (A kill in the
middle of a large batch may leave its first lines whole: they are records like any other.)

A segment is finished before the next one is created, and ``current.jsonl`` is pointed at a new
segment before anything is written to it: a reader at the end of its segment looks for a later
one only when the symlink has moved, which costs one ``readlink`` instead of a directory listing.
"""
from __future__ import annotations

import os
import time

import orjson

from .durability import SyncPolicy
from .errors import BadRecord
from .lock import TopicLock
from .records import decode, decode_run, encode_lines, now_ms, record_and_line

SUFFIX = ".jsonl"
CURRENT = "current.jsonl"
CHUNK = 1 << 15            # bytes a reader takes per read(2): ~200 records, decoded together
MAX_LINE = 64 << 20        # longer lines are dead-lettered unread
RETENTION_CHECK_S = 10.0   # how often a busy writer applies age retention between rotations


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
        step = 4096
        while True:
            nl = tail.rfind(b"\n")
            if nl >= 0:
                prev = tail.rfind(b"\n", 0, nl)
                if prev >= 0 or pos == 0:
                    return pos + nl + 1, tail[prev + 1:nl]
            if pos == 0:
                return 0, None
            start = max(0, pos - step)
            step = min(step * 4, 1 << 20)
            f.seek(start)
            tail = f.read(pos - start) + tail
            pos = start


def last_seq_in(topic_dir: str) -> int:
    """The seq of the last complete record of a topic (0 if none), read from its tail."""
    for first in reversed(list_segments(topic_dir)):
        seq = _scan_back_for_seq(os.path.join(topic_dir, segment_name(first)))
        if seq:
            return seq
    return 0


def _scan_back_for_seq(path: str) -> int:
    """Last parseable seq in a segment, skipping garbage lines from the end."""
    try:
        complete, line = _last_line(path)
    except FileNotFoundError:
        return 0
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


def _first_ts(path: str) -> int | None:
    """``ts`` of a segment's first record (None if it has none)."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return int(orjson.loads(line)["ts"]) if line.endswith(b"\n") else None
    except Exception:
        return None


class JsonlWriter:
    """Appends records to one topic; see the module docstring for the guarantees.

    ``shared=True`` (used for ``deadletter`` only) lets several processes append: each append
    takes the lock, repairs and re-reads the tail for the last seq, writes and releases.
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
        self._syncing = self.sync.mode != "none"
        self.shared = shared
        self.removed: list[str] = []     # segments this writer deleted under retention
        self.repaired = 0                # bytes of torn tail cut off when opening
        os.makedirs(topic_dir, exist_ok=True)
        self._lock = TopicLock(topic_dir, topic)
        self._fd = -1
        self._seg_first = 0
        self._seg_bytes = 0
        self._seg_deadline = 0.0         # monotonic time when the active segment is too old
        self._next_retention = 0.0
        self.seq = 0
        if not shared:
            self._lock.acquire()
            try:
                self._open_tail()
                self.apply_retention()
            except BaseException:
                self._close_fd()
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
        size = os.path.getsize(path)
        if size != complete:
            # a torn tail from a writer that died mid-line: nobody read it, cut it off
            with open(path, "r+b") as f:
                f.truncate(complete)
            self.repaired += size - complete
        self.seq = last_seq_in(self.dir)
        if complete == 0 and first != self.seq + 1:
            # an empty segment whose name does not fit the numbering (never written to):
            # replace it, since readers locate records by segment names
            os.unlink(path)
            self._start_segment(self.seq + 1)
            return
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._seg_first = first
        self._seg_bytes = complete
        first_ts = _first_ts(path)
        age = max(0.0, (now_ms() - first_ts) / 1000) if first_ts is not None else 0.0
        self._seg_deadline = time.monotonic() - age + self.segment_seconds
        self._point_current(first)

    def _start_segment(self, first_seq: int) -> None:
        path = os.path.join(self.dir, segment_name(first_seq))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._seg_first = first_seq
        self._seg_bytes = os.fstat(self._fd).st_size
        self._seg_deadline = time.monotonic() + self.segment_seconds
        # before anything is written to it (see the module docstring)
        self._point_current(first_seq)

    def _point_current(self, first_seq: int) -> None:
        link = os.path.join(self.dir, CURRENT)
        name = segment_name(first_seq)
        try:
            if os.readlink(link) == name:
                return
        except OSError:
            pass
        tmp = os.path.join(self.dir, f".{CURRENT}.{os.getpid()}")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(name, tmp)
        os.replace(tmp, link)

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
        rec, line = record_and_line(seq, now_ms() if ts is None else ts, payload)
        self._write(line, 1)
        self.seq = seq
        return rec

    def append_many(self, payloads: list[dict], ts: int | None = None) -> int:
        """Append a batch with one write; returns the last seq."""
        if not payloads:
            return self.seq
        if self.shared:
            with self._lock:
                self._open_tail()
                try:
                    lines = encode_lines(self.seq + 1, now_ms() if ts is None else ts, payloads)
                    self._write(b"".join(lines), len(lines))
                    self.seq += len(lines)
                finally:
                    self._close_fd()
            return self.seq
        lines = encode_lines(self.seq + 1, now_ms() if ts is None else ts, payloads)
        self._write(b"".join(lines), len(lines))
        self.seq += len(lines)
        return self.seq

    def _write(self, data: bytes, count: int) -> None:
        """Write whole lines with one ``write(2)``, rotating first if the segment is full."""
        size = len(data)
        if self._seg_bytes and (self._seg_bytes + size > self.segment_bytes
                                or time.monotonic() >= self._seg_deadline):
            self._rotate()
        elif self._next_retention and time.monotonic() >= self._next_retention:
            self.apply_retention()
        try:
            n = os.write(self._fd, data)
            while n < size:  # short writes only happen on a full disk or a signal
                n += os.write(self._fd, data[n:])
        except BaseException:
            # Part of the data may be stored, and its whole lines read already: keep them,
            # cut a torn tail and continue the numbering after them, as a restart would.
            os.close(self._fd)
            self._fd = -1
            self._open_tail()
            raise
        self._seg_bytes += size
        if self._syncing:
            self.sync.after_append(self._fd, count)

    # -- rotation and retention --------------------------------------------------------------
    def _rotate(self) -> None:
        self.sync.flush(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._start_segment(self.seq + 1)
        self.apply_retention()

    def apply_retention(self) -> list[str]:
        """Delete old segments beyond the age or size limit (never the active one)."""
        removed = []
        if self.retention_bytes <= 0 and self.retention_hours <= 0:
            return removed
        if self.retention_hours > 0:
            self._next_retention = time.monotonic() + min(RETENTION_CHECK_S,
                                                          self.retention_hours * 3600 / 10)
        segs = [s for s in list_segments(self.dir) if s != self._seg_first]
        if not segs:
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
            if first > self._seg_first:
                break
            path = os.path.join(self.dir, segment_name(first))
            try:
                too_old = (self.retention_hours > 0
                           and now - os.path.getmtime(path) > self.retention_hours * 3600)
            except FileNotFoundError:
                continue
            too_big = self.retention_bytes > 0 and total > self.retention_bytes
            if not (too_old or too_big):
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            total -= sizes[first]
            removed.append(path)
        self.removed.extend(removed)
        return removed

    def _close_fd(self) -> None:
        if self._fd >= 0:
            self.sync.flush(self._fd)
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Sync what is pending and release the topic."""
        self._close_fd()
        self.sync.close()
        self._lock.release()


class JsonlReader:
    """Reads a topic's records in order from a position, across segments.

    A position is ``{"seq": last delivered seq, "segment": first seq of its segment, "offset":
    byte offset to resume from}``. The offset is at or before the end of record ``seq``: a
    reader resuming there skips records up to ``seq``, so a position inside a run of records
    read together may point at the run's start. Only whole lines are delivered. A bare
    ``{"seq": N}`` starts in the segment holding record N + 1.
    """

    def __init__(self, topic_dir: str, position: dict | None = None, start: str = "beginning",
                 raw: bool = False):
        self.dir = topic_dir
        self.raw = raw             # items are (record, position, stored line) triples
        self._link = os.path.join(topic_dir, CURRENT)
        self._fd = -1
        self._items: list = []     # decoded (record, position) not yet handed out
        self._next = 0             # index of the next one
        self._at_end = False       # the last read(2) reached the end of the file
        self.bad_seen = 0          # BadRecords produced so far (lets callers skip a scan)
        self.skipped = 0           # records removed by retention before this reader got to them
        segs = list_segments(topic_dir)
        if position:
            seq = int(position.get("seq", 0))
            if position.get("segment") is None:
                segment = max((s for s in segs if s <= seq + 1), default=segs[0] if segs else 1)
                offset = 0
            else:
                segment, offset = int(position["segment"]), int(position.get("offset", 0))
            if segs and segment not in segs:
                # its segment was removed by retention: go on from the oldest that is left
                later = [s for s in segs if s > segment]
                segment, offset = (later[0] if later else segs[-1]), 0
        elif start == "end":
            segment = segs[-1] if segs else 1
            offset = _last_line(os.path.join(topic_dir, segment_name(segment)))[0] if segs else 0
            seq = last_seq_in(topic_dir)
        else:
            segment, offset, seq = (segs[0] if segs else 1), 0, 0
        self.segment = segment      # the segment being read
        self._read_off = offset     # where the next read(2) starts
        self._dseq = seq            # last seq decoded
        self._pos = {"seq": seq, "segment": segment, "offset": offset}

    @property
    def position(self) -> dict:
        """Position after the last record handed out."""
        return dict(self._pos)

    @property
    def seq(self) -> int:
        return self._pos["seq"]

    def read(self, max_records: int = 5000, greedy: bool = True
             ) -> list[tuple[dict | BadRecord, dict]]:
        """Up to ``max_records`` (record or BadRecord, position after it), oldest first, up to
        the end of what is written now; [] when nothing is new. ``greedy=False`` stops after
        one chunk (~32 KiB of lines), so that a consumer with a backlog gets its first records
        after one chunk's decoding, not after its whole batch's.

        With ``raw``, each item has a third member: the line as stored (bytes, no newline).
        """
        out: list = []
        while len(out) < max_records:
            items, i = self._items, self._next
            if i >= len(items):
                # a run that ended at the end of the file was all there was: stop there, or
                # a busy writer would keep this loop going until max_records
                if (out and (not greedy or self._at_end)) or not self._fill():
                    break
                continue
            want = max_records - len(out)
            if i or want < len(items):
                take = items[i:i + want]
                self._next = i + len(take)
            else:  # hand the whole run over without copying it
                take = items
                self._items, self._next = [], 0
            if out:
                out.extend(take)
            else:
                out = take
        if out:
            self._pos = out[-1][1]
        return out

    # -- filling the buffer ------------------------------------------------------------------
    def _fill(self) -> bool:
        """Read and decode the next run of whole lines; False when there is none yet."""
        while True:
            if self._fd < 0 and not self._open():
                return False
            data = os.pread(self._fd, CHUNK, self._read_off)
            self._at_end = len(data) < CHUNK
            end = data.rfind(b"\n") + 1
            if end == 0 and len(data) == CHUNK:
                data, end = self._long_line()
            if end:
                off = self._read_off
                self._read_off = off + end
                self._decode(data[:end] if end < len(data) else data, off)
                return True
            moved = self._next_segment() if self._next >= len(self._items) else False
            if self._next < len(self._items):
                return True  # a bad line was handed out on the way
            if not moved:
                return False

    def _long_line(self) -> tuple[bytes, int]:
        size = CHUNK
        while size < MAX_LINE:
            size *= 2
            data = os.pread(self._fd, size, self._read_off)
            end = data.rfind(b"\n") + 1
            if end or len(data) < size:
                return data, end
        # a line too long to hold: dead-letter its head, skip to its end once that is written
        head = data[:200].decode("utf-8", "replace")
        off = self._read_off + size
        while True:
            more = os.pread(self._fd, CHUNK, off)
            nl = more.find(b"\n")
            if nl >= 0:
                self._read_off = off + nl + 1
                self._hand_out_bad(BadRecord(f"line longer than {MAX_LINE} bytes", head))
                return b"", 0
            if len(more) < CHUNK:
                return b"", 0
            off += len(more)

    def _open(self) -> bool:
        while True:
            try:
                self._fd = os.open(os.path.join(self.dir, segment_name(self.segment)),
                                   os.O_RDONLY)
                return True
            except FileNotFoundError:
                later = [s for s in list_segments(self.dir) if s > self.segment]
                if not later:
                    return False
                self.segment, self._read_off = later[0], 0

    def _next_segment(self) -> bool:
        """Move to the next segment if the writer has started one; True if moved."""
        try:
            if os.readlink(self._link) == segment_name(self.segment):
                return False
        except OSError:
            pass  # no symlink (an old or foreign spool): list the directory instead
        later = [s for s in list_segments(self.dir) if s > self.segment]
        if not later:
            return False
        # the writer finished this segment before it started the next: read its last lines
        rest = os.pread(self._fd, CHUNK, self._read_off)
        if b"\n" in rest:
            return True
        if rest:
            self._hand_out_bad(BadRecord("torn line at the end of a finished segment",
                                         rest[:1000].decode("utf-8", "replace")))
        os.close(self._fd)
        self._fd = -1
        self.segment, self._read_off = later[0], 0
        return True

    def _hand_out_bad(self, bad: BadRecord) -> None:
        self.bad_seen += 1
        pos = {"seq": self._dseq, "segment": self.segment, "offset": self._read_off}
        self._items = [(bad, pos, bad.raw.encode()) if self.raw else (bad, pos)]
        self._next = 0

    def _decode(self, chunk: bytes, off: int) -> None:
        """Decode whole lines read at ``off`` into the buffer of records to hand out."""
        run = None if self.raw else decode_run(chunk[:-1].replace(b"\n", b","), self._dseq)
        seg = self.segment
        if run is not None:
            recs, seqs = run
            if self._dseq and seqs[0] > self._dseq + 1:
                self.skipped += seqs[0] - self._dseq - 1
            self._dseq = seqs[-1]
            pos = [{"seq": s, "segment": seg, "offset": off} for s in seqs]
            pos[-1]["offset"] = off + len(chunk)
            self._items = list(zip(recs, pos))
            self._next = 0
            return
        # something in the run is suspect: go line by line, with exact offsets
        items = []
        end = off
        keep = self.raw
        for line in chunk[:-1].split(b"\n"):
            end += len(line) + 1
            try:
                rec = decode(line)
            except BadRecord as bad:
                self.bad_seen += 1
                pos = {"seq": self._dseq, "segment": seg, "offset": end}
                items.append((bad, pos, line) if keep else (bad, pos))
                continue
            seq = rec["seq"]
            if seq <= self._dseq:
                continue  # delivered before this position (resuming inside a run)
            if self._dseq and seq > self._dseq + 1:
                self.skipped += seq - self._dseq - 1
            self._dseq = seq
            pos = {"seq": seq, "segment": seg, "offset": end}
            items.append((rec, pos, line) if keep else (rec, pos))
        self._items = items
        self._next = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
