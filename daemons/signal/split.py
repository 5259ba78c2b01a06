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

from itertools import repeat

import orjson

from ..marketdata.forked import DepthWorkerError, Worker, fork
from ..marketdata.formats import (FormatError, bad_line, iter_blocks, iter_line_chunks,
                                  open_binary, stamp_divisor)
from ..marketdata.merge import STALL_MS
from .core import DEPTH
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
    from the chunk's last line, minus ``stall_ms``): the main process may release below it.

    With numba, the diffs that chain on the synchronized book are read and applied a block at
    a time by compiled code (:func:`~daemons.marketdata.fastbook.chained_diffs`); every other
    line is read here, one at a time, on the same state."""
    fast = _fast_book(levels)
    depth = DepthTerms(levels, prev, stall_ms, book=fast[0](levels=levels) if fast else None)
    reader = _Lines(depth, symbol, fast)
    stall = depth.stall_ms
    newest = float("-inf")
    sent_frontier = depth.frontier
    chained = _Chained(depth, symbol, levels) if fast else None
    for path in paths:
        reader.div = None
        for lines, nos, last in (_chunks(path, None) if chained is None
                                 else chained.blocks(path, reader)):
            for j, line in enumerate(lines):
                reader.line(path, nos.number(j), line)
            if reader.div is not None:
                newest = max(newest, _last_stamp(last(), reader.div))
            frontier = max(depth.frontier, newest - stall)
            if depth.items or frontier != sent_frontier:
                conn.send(("d", depth.items, frontier))
                depth.items = []
                sent_frontier = frontier
    if newest - stall > depth.frontier != float("-inf"):  # silent to the end
        depth.stalls.append({"stream": "depth", "t": depth.frontier, "until": None})
    conn.send(("end", depth.gaps, depth.prev, depth.stalls, newest))


class _Lines:
    """The depth worker's reading of one line (the stamp's unit ``div`` is the file's)."""

    def __init__(self, depth: DepthTerms, symbol: str, fast):
        self.depth = depth
        self.want = symbol.upper()
        self.file_symbol = symbol
        self.with_levels = fast[1] if fast else None
        self.message = fast[3] if fast else None
        self.div = None

    def line(self, path: str, number: int, line: bytes) -> None:
        tag, dtag, name = STREAM_TAG, DEPTH_TAG, NAME_AT
        sp = line.find(b" ")
        div = self.div
        # a stream other than depth: the main process's (the first line sets `div`)
        if sp > 0 and div is not None and line.startswith(tag, sp + 1) \
                and line.find(dtag, sp + name, line.find(b'"', sp + name)) < 0:
            return
        if sp <= 0:
            bad_line(path, number, line)
            return
        try:
            ts = int(line[:sp])
        except ValueError:
            bad_line(path, number, line)
            return
        if div is None:
            div = self.div = stamp_divisor(ts)
        recv = ts // div
        depth, want = self.depth, self.want
        message = self.message
        if message is not None and line.startswith(tag, sp + 1):
            data = message(line, sp + 1)   # a plain diff, read without orjson
            if data is not None:
                s = data.get("s")
                if (self.file_symbol if s is None else s) == want:
                    depth.diff(data, recv)
                return
        body = line[sp + 1:]
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            bad_line(path, number, line)
            return
        stream = msg.get("stream")
        data = msg["data"] if stream is not None else msg
        s = data.get("s")
        if s is None:
            s = self.file_symbol
        if s == want:
            e = data.get("e")
            if e is None:
                if "lastUpdateId" in data:
                    depth.snapshot(data, recv)
            elif e == "depthUpdate":
                with_levels = self.with_levels
                depth.diff(data if with_levels is None
                           else with_levels(data, line, sp + 1), recv)


class _Chained:
    """The blocks of a file for the depth worker with numba: the diffs that chain on the
    synchronized book applied by :func:`~daemons.marketdata.fastbook.chained_diffs`, the
    other lines read by :meth:`_Lines.line` (see :meth:`blocks`)."""

    def __init__(self, depth: DepthTerms, symbol: str, levels: int):
        import numpy as np

        from ..marketdata import fastbook

        self.np = np
        self.fb = fastbook
        self.depth = depth
        self.n = levels
        self.want = np.frombuffer(symbol.upper().encode(), np.uint8)
        self.si = np.zeros(7, np.int64)
        self.sf = np.zeros(1)
        self.prev = (np.empty(levels), np.empty(levels, np.int64), np.empty(levels),
                     np.empty(levels, np.int64))
        self.top = (np.empty(levels), np.empty(levels), np.empty(levels, np.int64))
        self.scratch = (np.empty(fastbook._MAX_LEVELS), np.empty(fastbook._MAX_LEVELS),
                        np.empty(fastbook._MAX_LEVELS, np.bool_), np.zeros(12, np.int64),
                        np.empty(fastbook._MAX_LEVELS), np.empty(fastbook._MAX_LEVELS),
                        np.empty(fastbook._MAX_LEVELS, np.bool_))

    def blocks(self, path: str, reader: _Lines):
        """:func:`_chunks` with the scan, the chained diffs of each block applied here: yields
        each block's lines left to ``reader`` (none: they were read here), as ``_chunks``
        does."""
        np = self.np
        fb = self.fb
        lineno = 0
        first = True
        for block in iter_blocks(path):
            starts, ends, stamps, kinds = fb.scan_block(block)
            if first:   # the file's first non-blank line is read whatever it is
                for j, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
                    if block[a:b].strip():
                        kinds[j] = fb.UNTAGGED
                        first = False
                        break
            nl = len(starts)
            buf = np.frombuffer(block, np.uint8)
            out = (np.empty(nl, np.int64), np.empty(nl, np.int64), np.empty(nl, np.int64),
                   np.empty(nl + 1, np.int64), np.empty(nl + 1, np.int64))
            j = 0
            while j < nl:
                if self._ready(reader):
                    j = self._run(buf, starts, ends, stamps, kinds, j, out, reader.div)
                    if j >= nl:
                        break
                if kinds[j] != fb.OTHER_STREAM:
                    reader.line(path, lineno + j + 1, block[starts[j]:ends[j]])
                j += 1
            sl = starts.tolist()
            el = ends.tolist()

            def last(block=block, sl=sl, el=el):
                out = []   # back to the last line with a stamp (all that _last_stamp reads)
                for a, b in zip(reversed(sl), reversed(el)):
                    out.append(block[a:b])
                    if out[-1].find(b" ") > 0:
                        break
                return out[::-1]
            yield (), None, last
            lineno += nl

    def _ready(self, reader: _Lines) -> bool:
        """Whether the next diffs can be applied by the compiled code."""
        depth = self.depth
        book = depth.book
        return (reader.div is not None and depth.prev_is_book and book._bridged
                and book.spot is False)

    def _run(self, buf, starts, ends, stamps, kinds, j: int, out, div: int) -> int:
        fb = self.fb
        depth = self.depth
        book = depth.book
        si, sf = self.si, self.sf
        pbpx, pbqs, papx, paqs = self.prev
        si[fb.CH_LAST_U] = book.last_u
        si[fb.CH_TOUCHED] = 1 if book.touched else 0
        si[fb.CH_NI] = si[fb.CH_NS] = 0
        si[fb.CH_DIV] = div
        nb, na = len(depth.prev_b), len(depth.prev_a)
        si[fb.CH_NPB], si[fb.CH_NPA] = nb, na
        for px, qs, lv in ((pbpx, pbqs, depth.prev_b), (papx, paqs, depth.prev_a)):
            for i, (p, q) in enumerate(lv):
                px[i] = p
                qs[i] = q
        sf[0] = depth.frontier
        bs, as_ = book.bid_side, book.ask_side
        ik, it, ie, st_t, st_until = out
        j = fb.chained_diffs(buf, starts, ends, stamps, kinds, j, self.want, depth.stall_ms,
                             si, sf, bs.keys, bs.used, bs.qf, bs.qs, bs.best, bs.st, bs.edge,
                             as_.keys, as_.used, as_.qf, as_.qs, as_.best, as_.st, as_.edge,
                             self.n, pbpx, pbqs, papx, paqs, *self.top, *self.scratch, ik, it,
                             ie, st_t, st_until)
        m = int(si[fb.CH_NI])
        if m:
            book.last_u = int(si[fb.CH_LAST_U])
            book.touched = bool(si[fb.CH_TOUCHED])
            nb, na = int(si[fb.CH_NPB]), int(si[fb.CH_NPA])
            depth.prev_b = list(zip(pbpx[:nb].tolist(), pbqs[:nb].tolist()))
            depth.prev_a = list(zip(papx[:na].tolist(), paqs[:na].tolist()))
            depth.items.extend(zip(ik[:m].tolist(), repeat(DEPTH, m), it[:m].tolist(),
                                   ie[:m].tolist()))
            f = sf[0]
            depth.frontier = int(f) if f != float("-inf") else f
        ns = int(si[fb.CH_NS])
        if ns:
            for t, until in zip(st_t[:ns].tolist(), st_until[:ns].tolist()):
                depth.stalls.append({"stream": "depth", "t": t, "until": until})
        return j


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
