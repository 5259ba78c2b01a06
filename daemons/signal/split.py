"""The two-process fast path of ``ofi signals``: the depth stream in a worker process.

Book sync and the multi-level OFI terms are the dearest part of a recording and depend on the
depth stream only, so a forked worker reads the same files, parses only the depth lines (and
the untagged ones, e.g. REST snapshots) and sends the depth items (:class:`.depth_terms.DepthTerms`)
in batches through a pipe; the main process skips the depth lines by a bytes check on the
stream name and merges the items in exactly as the one-process path does.

Only for hftbacktest recordings (``<local_ts> <json>``): every line has its own receive time,
so neither process needs the lines the other one owns.
"""
from __future__ import annotations

import orjson

from ..marketdata.forked import DepthWorkerError, Worker, fork
from ..marketdata.formats import (FormatError, bad_line, iter_blocks, iter_line_chunks,
                                  open_binary, stamp_divisor)
from ..marketdata.merge import STALL_MS
from .depth_terms import DepthTerms

# a combined-stream message starts with this; a depth stream's name holds DEPTH_TAG
STREAM_TAG = b'{"stream":"'
DEPTH_TAG = b"@depth"
NAME_AT = len(STREAM_TAG) + 1  # the stream name's start, counted from the stamp's space


#: items either process may hold before it waits for the other: memory stays bounded whichever
#: of the two runs ahead
MAX_PENDING = 50_000


def has_depth(path: str, peek: int = 1 << 16) -> bool:
    """Whether the start of ``path`` holds depth diffs or a depth snapshot."""
    try:
        with open_binary(path) as f:
            head = f.read(peek)
    except (OSError, EOFError):
        return False
    return DEPTH_TAG in head or b'"lastUpdateId"' in head


class RemoteDepth(Worker):
    """The main process's side: the depth items received so far, as :class:`DepthTerms` has
    them (``items``, ``frontier``; ``gaps`` and ``prev`` once the worker is done)."""

    def __init__(self, proc, conn):
        super().__init__(proc, conn)
        self.items: list = []
        self.frontier = float("-inf")
        self.gaps = 0
        self.prev = None
        self.stalls: list[dict] = []
        self.newest = float("-inf")   # the latest receive time the worker read
        self.done = False

    # the main process skips depth lines; untagged ones (snapshots) are the worker's too
    def snapshot(self, snap, recv) -> None:
        pass

    def diff(self, d, recv) -> None:
        pass

    def poll(self, limit: int = MAX_PENDING) -> None:
        """Take the batches that have arrived while fewer than ``limit`` items wait here
        (never blocks; a worker that runs ahead then waits on the full pipe)."""
        conn = self.conn
        while not self.done and len(self.items) < limit and conn.poll():
            self._take(self.recv())

    def wait(self) -> None:
        """Take the next batch, waiting for it (the main process has run ahead)."""
        if not self.done:
            self._take(self.recv())

    def finish(self) -> None:
        """Wait for the rest of the items and the worker's totals."""
        while not self.done:
            self._take(self.recv())
        self.proc.join(5)

    def _take(self, msg) -> None:
        tag = msg[0]
        if tag == "d":
            self.items += msg[1]
            self.frontier = msg[2]
        elif tag == "end":
            self.gaps, self.prev, self.stalls, self.newest = msg[1], msg[2], msg[3], msg[4]
            self.done = True
        elif tag == "format":
            raise FormatError(msg[1])
        else:
            raise DepthWorkerError(msg[1])


def start(paths: list[str], symbol: str, levels: int, prev,
          stall_ms: int = STALL_MS) -> RemoteDepth | None:
    """Fork the depth worker; None when processes cannot be forked here (run in one then)."""
    w = fork(_send_depth, (list(paths), symbol, levels, prev, stall_ms), "ofi-signals-depth",
             errors={FormatError: "format"})
    return None if w is None else RemoteDepth(w.proc, w.conn)


def _send_depth(conn, paths, symbol, levels, prev, stall_ms) -> None:
    """The depth lines of ``paths`` -> batches ``("d", items, frontier)``, one per chunk read,
    then ``("end", gaps, prev, stalls, newest)``. Same digestion as :meth:`OfflineRun._fast`
    does in process. ``frontier`` includes the silence floor (the latest receive time read,
    from the chunk's last line, minus ``stall_ms``): the main process may release below it."""
    want = symbol.upper()
    file_symbol = symbol
    fast = _fast_book(levels)
    depth = DepthTerms(levels, prev, stall_ms, book=fast[0](levels=levels) if fast else None)
    with_levels = fast[1] if fast else None
    message = fast[3] if fast else None
    stall = depth.stall_ms
    newest = float("-inf")
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    tag, dtag, name = STREAM_TAG, DEPTH_TAG, NAME_AT
    sent_frontier = depth.frontier
    scan = fast[2] if fast else None
    for path in paths:
        div = None
        for lines, nos, last in _chunks(path, scan):
            for j, line in enumerate(lines):
                sp = line.find(b" ")
                # a stream other than depth: the main process's (the first line sets `div`)
                if sp > 0 and div is not None and line.startswith(tag, sp + 1) \
                        and line.find(dtag, sp + name, line.find(b'"', sp + name)) < 0:
                    continue
                if sp <= 0:
                    bad_line(path, nos.number(j), line)
                    continue
                try:
                    ts = int(line[:sp])
                except ValueError:
                    bad_line(path, nos.number(j), line)
                    continue
                if div is None:
                    div = stamp_divisor(ts)
                recv = ts // div
                if message is not None and line.startswith(tag, sp + 1):
                    data = message(line, sp + 1)   # a plain diff, read without orjson
                    if data is not None:
                        s = data.get("s")
                        if (file_symbol if s is None else s) == want:
                            depth.diff(data, recv)
                        continue
                body = line[sp + 1:]
                try:
                    msg = loads(body)
                except decode_error:
                    bad_line(path, nos.number(j), line)
                    continue
                stream = msg.get("stream")
                data = msg["data"] if stream is not None else msg
                s = data.get("s")
                if s is None:
                    s = file_symbol
                if s == want:
                    e = data.get("e")
                    if e is None:
                        if "lastUpdateId" in data:
                            depth.snapshot(data, recv)
                    elif e == "depthUpdate":
                        depth.diff(data if with_levels is None
                                   else with_levels(data, line, sp + 1), recv)
            if div is not None:
                newest = max(newest, _last_stamp(last(), div))
            frontier = max(depth.frontier, newest - stall)
            if depth.items or frontier != sent_frontier:
                conn.send(("d", depth.items, frontier))
                depth.items = []
                sent_frontier = frontier
    if newest - stall > depth.frontier != float("-inf"):  # silent to the end
        depth.stalls.append({"stream": "depth", "t": depth.frontier, "until": None})
    conn.send(("end", depth.gaps, depth.prev, depth.stalls, newest))


def _fast_book(levels: int):
    """(ArrayBook, with_levels, scan_block, depth_message) of
    :mod:`daemons.marketdata.fastbook` (the depth book in arrays, diffs applied by compiled
    code; lines classified and plain diffs read by compiled code), or None without numba."""
    try:
        from ..marketdata.fastbook import ArrayBook, depth_message, scan_block, with_levels
    except ImportError:   # numba missing or unusable here: the dict book, every line read
        return None
    return ArrayBook, with_levels, scan_block, depth_message


def _chunks(path: str, scan=None):
    """The lines of ``path`` a read chunk at a time, as ``(lines, numbers, last)``: with
    ``scan`` (:func:`~daemons.marketdata.fastbook.scan_block`) only the lines the depth worker
    reads (the ones not of another stream, and the file's first non-blank line, which sets the
    stamp's unit), with their 0-based numbers in the chunk; else every line (``numbers``
    None). ``last()``: the chunk's last lines, for :func:`_last_stamp`. Line numbers count
    from the file's start (:meth:`_Numbers.number`)."""
    if scan is None:
        lineno = 0
        for lines in iter_line_chunks(path):
            yield lines, _Numbers(lineno, None), lambda lines=lines: lines
            lineno += len(lines)
        return
    import numpy as np

    from ..marketdata.fastbook import OTHER_STREAM, UNTAGGED

    lineno = 0
    first = True
    for block in iter_blocks(path):
        starts, ends, _stamps, kinds = scan(block)
        if first:   # the file's first non-blank line is read whatever it is
            for j, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
                if block[a:b].strip():
                    kinds[j] = UNTAGGED
                    first = False
                    break
        idx = np.flatnonzero(kinds != OTHER_STREAM).tolist()
        sl = starts.tolist()
        el = ends.tolist()
        lines = [block[sl[j]:el[j]] for j in idx]

        def last(block=block, sl=sl, el=el):
            out = []   # back to the last line with a stamp (all that _last_stamp reads)
            for a, b in zip(reversed(sl), reversed(el)):
                out.append(block[a:b])
                if out[-1].find(b" ") > 0:
                    break
            return out[::-1]
        yield lines, _Numbers(lineno, idx), last
        lineno += len(sl)


class _Numbers:
    """Where a chunk's lines are in their file (see :func:`_chunks`)."""

    __slots__ = ("start", "idx")

    def __init__(self, start: int, idx):
        self.start = start
        self.idx = idx

    def number(self, j: int) -> int:
        """The 1-based line number in its file of the chunk's ``j``-th line."""
        return self.start + (j if self.idx is None else self.idx[j]) + 1


def _last_stamp(lines: list, div: int) -> float:
    """The receive time (ms) of the last stamped line of a chunk (-inf if none)."""
    for line in reversed(lines):
        sp = line.find(b" ")
        if sp > 0:
            try:
                return int(line[:sp]) // div
            except ValueError:
                return float("-inf")   # the main process reports the bad line
    return float("-inf")
