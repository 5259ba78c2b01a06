"""Signals over recorded files: the same :class:`~.core.SignalCore` the daemon runs, closing the
open interval at the end of the input too (SPEC section 5).

Two paths, same results:

- general: :class:`~daemons.marketdata.replay.Replay` (the topic records exactly as harvest
  publishes them, merged by exchange time) into :meth:`SignalCore.process`;
- fast, for one recording (consecutive hftbacktest / websocket JSON files of one symbol prefix,
  the usual case): one loop reads and parses the lines and digests each message straight into a
  compact item for :meth:`SignalCore.process_items`, with no topic records. The OFI terms depend
  only on the order within each stream (book updates, depth), so they are computed while
  reading; the multi-level term is computed only when a diff touched the top levels (otherwise
  every level is unchanged and the term is exactly 0). The three streams are merged as the
  :class:`~daemons.marketdata.merge.Merger` does: by ``(key, stream rank)``, each stream in file
  order, a stream's keys raised to its frontier; items are released in chunks once every stream
  is past them.

By default the depth stream of an hftbacktest recording is digested in a second process
(:mod:`.split`) while this one does the rest; the items and their order are the same, so
are the results. ``workers=1`` keeps it in one process.
"""
from __future__ import annotations

import os
from bisect import bisect_left
from operator import itemgetter
from typing import Iterator

import orjson

from ..marketdata.formats import bad_line, iter_line_chunks, stamp_divisor
from ..marketdata.merge import STALL_MS
from ..marketdata.replay import Replay, chains_of
from . import split
from .core import BOOK, SCALE, TRADE, SignalCore
from .depth_terms import DepthTerms

_NEG_INF = float("-inf")
_POS_INF = float("inf")
_FAST_FORMATS = ("hftbacktest", "wsjson")
_KEY = itemgetter(0)

#: inputs (bytes on disk) from which the two-process path reads the book-ticker and trade
#: lines with compiled code (:mod:`.fastticks`): loading it costs about 0.3 s, which the Python
#: loop spends on about 4 MB of gzipped recording
TICKS_MIN_BYTES = 12 << 20


def run_files(paths: list[str], symbol: str, core: SignalCore | None = None,
              replay: Replay | None = None) -> Iterator[dict]:
    """Signal records (without seq/ts) of ``symbol`` over ``paths``, in order.

    Pass ``replay`` to force the general path and read its counters (messages, gaps)
    afterwards; :class:`OfflineRun` has the counters on either path.
    """
    if replay is not None:
        return _general(replay, core or SignalCore())
    return iter(OfflineRun(paths, symbol, core))


def _general(replay: Replay, core: SignalCore) -> Iterator[dict]:
    process = core.process
    for rec in replay:
        out = process(rec)
        if out:
            yield from out
    yield from core.flush()


class OfflineRun:
    """Iterate the signal records of ``symbol`` over ``paths`` (fast path when it applies).

    ``messages`` (lines read, every symbol) and ``gaps`` (depth chain breaks) count as it goes.
    ``workers``: 2 (the default) digests the depth stream of an hftbacktest recording with depth
    in a second process, 1 keeps everything in this one; ``self.workers`` is what is used.
    """

    def __init__(self, paths: list[str], symbol: str, core: SignalCore | None = None,
                 workers: int = 2, stall_ms: int = STALL_MS):
        self.paths = list(paths)
        self.symbol = symbol
        self.core = core or SignalCore()
        self.stall_ms = int(stall_ms)
        self._stalls: list[dict] = []
        self._peak = 0
        groups = chains_of(self.paths)
        self.fast = len(groups) == 1 and groups[0][0] in _FAST_FORMATS
        self._fmt = groups[0][0] if groups else None
        self.replay = None if self.fast else Replay(
            self.paths, symbols={symbol}, symbol=symbol, levels=self.core.levels,
            stall_ms=self.stall_ms)
        self._messages = 0
        self._depth: DepthTerms | split.RemoteDepth | None = None
        self.workers = 2 if (workers > 1 and self.fast and self._fmt == "hftbacktest"
                             and split.has_depth(self.paths[0])) else 1

    @property
    def messages(self) -> int:
        return self.replay.messages if self.replay is not None else self._messages

    @property
    def gaps(self) -> int:
        if self.replay is not None:
            return self.replay.gaps
        return self._depth.gaps if self._depth is not None else 0

    @property
    def peak_pending(self) -> int:
        """The most items the merge held back at once (bounded by ``stall_ms``, not by the
        input's length)."""
        return self.replay.peak_pending if self.replay is not None else self._peak

    @property
    def stalls(self) -> list[dict]:
        """Streams that fell silent for longer than ``stall_ms`` (as :attr:`Replay.stalls`)."""
        if self.replay is not None:
            return self.replay.stalls
        depth = self._depth.stalls if self._depth is not None else []
        return sorted(self._stalls + depth, key=lambda s: (s["t"], s["stream"]))

    def __iter__(self) -> Iterator[dict]:
        if self.replay is not None:
            return _general(self.replay, self.core)
        return self._fast()

    # -- the fast path ---------------------------------------------------------------------
    def _fast(self) -> Iterator[dict]:
        core = self.core
        want = self.symbol.upper()
        st = core.symbols.get(want)
        prev = st.depth if st is not None else None
        remote = split.start(self.paths, self.symbol, core.levels, prev, self.stall_ms) \
            if self.workers > 1 else None
        if remote is None:
            self.workers = 1
            depth = self._depth = DepthTerms(core.levels, prev, self.stall_ms)
        else:
            depth = self._depth = remote
        try:
            ticks = _ticks() if (remote is not None and self._fmt == "hftbacktest"
                                 and _size(self.paths) >= TICKS_MIN_BYTES) else None
            if ticks is not None:
                yield from self._read_ticks(want, depth, remote, ticks)
            else:
                yield from self._read(want, depth, remote)
        finally:
            if remote is not None:
                remote.close()

    def _read(self, want: str, depth, remote) -> Iterator[dict]:
        core = self.core
        file_symbol = self.symbol      # messages without "s" (REST snapshots), as Replay does
        stamped = self._fmt == "hftbacktest"
        st = core.symbols.get(want)
        skip = remote is not None      # depth lines are the worker's
        tag, dtag, name = split.STREAM_TAG, split.DEPTH_TAG, split.NAME_AT
        trades: list = []
        books: list = []
        add_trade, add_book = trades.append, books.append
        f_trade = f_book = _NEG_INF    # stream frontiers (-inf: nothing yet)
        stall = self.stall_ms
        stalls = self._stalls
        newest = _NEG_INF              # the latest receive time read
        # the previous best bid/ask (as the core has it: a run may continue a used core)
        if st is not None and st.pb is not None:
            pb, pqb, pa, pqa = st.pb, st.qb, st.pa, st.qa
        else:
            pb = pqb = pa = pqa = None
        bid, qb, ask, qa = pb, pqb, pa, pqa
        sb = sB = sa = sA = None       # the strings bid, qb, ask, qa were read from
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        process = core.process_items
        count = 0
        for path in self.paths:
            div = None
            recv = 0
            lineno = 0  # lines of the chunks before this one
            for lines in iter_line_chunks(path):
                count += len(lines)
                for j, line in enumerate(lines):
                    if stamped:
                        sp = line.find(b" ")
                        # a depth stream's line (the first line of a file sets `div`)
                        if skip and sp > 0 and div is not None \
                                and line.startswith(tag, sp + 1) \
                                and line.find(dtag, sp + name,
                                              line.find(b'"', sp + name)) >= 0:
                            continue
                        if sp <= 0:
                            bad_line(path, lineno + j + 1, line)
                            count -= 1   # blank: not a message
                            continue
                        try:
                            ts = int(line[:sp])
                        except ValueError:
                            bad_line(path, lineno + j + 1, line)
                            continue
                        if div is None:
                            div = stamp_divisor(ts)
                        recv = ts // div
                        body = line[sp + 1:]
                    else:
                        body = line
                    try:
                        msg = loads(body)
                    except decode_error:
                        bad_line(path, lineno + j + 1, line, stamped)
                        count -= 1   # blank: not a message
                        continue
                    stream = msg.get("stream")
                    data = msg["data"] if stream is not None else msg
                    if not stamped:  # no local stamp: the event time stands in
                        recv = data.get("E") or data.get("T") or recv
                    if recv > newest:
                        newest = recv
                    s = data.get("s")
                    if s is None:
                        s = file_symbol
                    if s == want:
                        e = data.get("e")
                        if e is None:  # a REST snapshot, a spot bookTicker, or something else
                            if "lastUpdateId" in data:
                                depth.snapshot(data, recv)
                            elif (stream.endswith("@bookTicker") if stream is not None
                                  else "b" in data and "B" in data and "A" in data):
                                e = "bookTicker"  # as formats.classify
                        if e == "bookTicker":
                            E = data.get("E")
                            t = recv if E is None else E
                            if t >= f_book and t >= recv - stall:
                                t_key = f_book = t
                            else:  # late, or after a silence (merge.stalled_key)
                                t_key = f_book = _stalled(t, f_book, recv, stall, "book",
                                                          stalls)
                            # the CKS term; a string equal to the previous one is the same number,
                            # so most updates (one side's size moved) convert one field, not four
                            b, B, a, A = data["b"], data["B"], data["a"], data["A"]
                            if B != sB:
                                qb = round(float(B) * SCALE)
                                sB = B
                            if A != sA:
                                qa = round(float(A) * SCALE)
                                sA = A
                            if b != sb:
                                bid = float(b)
                                sb = b
                            if a != sa:
                                ask = float(a)
                                sa = a
                            if pb is None:  # the first update ever has no term
                                term = 0
                            else:
                                term = 0
                                if bid >= pb:
                                    term = qb
                                if bid <= pb:
                                    term -= pqb
                                if ask <= pa:
                                    term -= qa
                                if ask >= pa:
                                    term += pqa
                            pb, pqb, pa, pqa = bid, qb, ask, qa
                            add_book((t_key * 4 + 1, BOOK, t, term, bid, qb, ask, qa))
                        elif e == "trade" or e == "aggTrade":
                            T = data.get("T")
                            if T is None:
                                T = data.get("E")
                            if T is None:  # as Merger.push does with a missing key
                                t = recv
                                t_key = f_trade = _stalled(
                                    0 if f_trade == _NEG_INF else f_trade, f_trade, recv, stall,
                                    "trades", stalls)
                            else:
                                t = T
                                if T >= f_trade and T >= recv - stall:
                                    t_key = f_trade = T
                                else:
                                    t_key = f_trade = _stalled(T, f_trade, recv, stall, "trades",
                                                               stalls)
                            if data.get("X", "MARKET") == "MARKET":  # others are skipped
                                add_trade((t_key * 4, TRADE, t, round(float(data["q"]) * SCALE),
                                           not data["m"]))
                        elif e == "depthUpdate":
                            depth.diff(data, recv)
                lineno += len(lines)
                self._messages = count
                held = len(trades) + len(books) + len(depth.items)
                if held > self._peak:
                    self._peak = held
                if skip:
                    remote.poll()
                    f_depth = depth.frontier   # the worker's, its own silence floor included
                else:
                    f_depth = max(depth.frontier, newest - stall)
                # no later item sorts below newest - stall (merge.stalled_key)
                ready = _release(trades, books, depth.items, max(f_trade, newest - stall),
                                 max(f_book, newest - stall), f_depth)
                if ready:
                    yield from process(want, ready)
                while skip and len(trades) + len(books) > split.MAX_PENDING and not depth.done:
                    depth.wait()   # ahead of the depth worker: let it catch up
                    ready = _release(trades, books, depth.items, max(f_trade, newest - stall),
                                     max(f_book, newest - stall), depth.frontier)
                    if ready:
                        yield from process(want, ready)
        self._messages = count
        if skip:
            remote.finish()
            newest = max(newest, remote.newest)
        for stream, last in (("trades", f_trade), ("book", f_book)):
            if newest - stall > last != _NEG_INF:  # silent to the end
                stalls.append({"stream": stream, "t": last, "until": None})
        if not skip and newest - stall > depth.frontier != _NEG_INF:  # (the worker's own)
            depth.stalls.append({"stream": "depth", "t": depth.frontier, "until": None})
        ready = _release(trades, books, depth.items, _POS_INF, _POS_INF, _POS_INF)
        if ready:
            yield from process(want, ready)
        st = core.symbols.get(want)
        if st is not None:
            st.depth = depth.prev
        yield from core.flush()


    def _read_ticks(self, want: str, depth, remote, ticks) -> Iterator[dict]:
        """:meth:`_read` with the depth stream in the worker, the book-ticker and trade lines
        read a block at a time by compiled code (:mod:`.fastticks`) into rows, merged and
        summed per interval in arrays; the intervals' records are made by the core
        (:meth:`SignalCore.close_sums`, as :meth:`SignalCore.process_items` closes them)."""
        import numpy as np

        from ..marketdata.formats import iter_blocks

        ft, scan = ticks
        core = self.core
        stall = self.stall_ms
        st = core.symbols.get(want)
        fs = np.array([_NEG_INF, _NEG_INF, _NEG_INF, 0.0, 0.0])
        is_ = np.zeros(7, np.int64)
        flat = np.zeros(ft.NF, np.int64)
        if st is not None and st.pb is not None:
            fs[ft.PB], fs[ft.PA] = st.pb, st.pa
            is_[ft.PQB], is_[ft.PQA], is_[ft.HAS_PREV] = st.qb, st.qa, 1
        want_b = np.frombuffer(want.encode(), np.uint8)
        pend = _Pending(np)
        acc = _Sums(np, core, want)
        stalls = self._stalls
        count = 0
        for path in self.paths:
            is_[ft.DIV] = 0
            lineno = 0   # lines of the blocks before this one
            for block in iter_blocks(path):
                starts, ends, stamps, kinds = scan(block)
                n = len(starts)
                count += n
                buf = np.frombuffer(block, np.uint8)
                tr = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
                      np.empty(n, np.bool_))
                bk = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
                      np.empty(n), np.empty(n, np.int64), np.empty(n), np.empty(n, np.int64))
                sl = (np.empty(n + 1, np.int64), np.empty(n + 1, np.int64),
                      np.empty(n + 1, np.int64))
                is_[ft.NT] = is_[ft.NB] = is_[ft.NS] = 0
                j = 0
                while True:
                    j = ft.tick_lines(buf, starts, ends, stamps, kinds, j, want_b, stall, fs,
                                      is_, flat, *tr, *bk, *sl)
                    if is_[ft.NS]:
                        _take_stalls(sl, int(is_[ft.NS]), stalls)
                        is_[ft.NS] = 0
                    if j >= n:
                        break
                    line = block[starts[j]:ends[j]]
                    count -= self._tick_line(line, path, lineno + j + 1, want, fs, is_, tr,
                                             bk, ft)
                    j += 1
                lineno += n
                pend.add(tr, int(is_[ft.NT]), bk, int(is_[ft.NB]))
                self._messages = count
                held = pend.held() + len(depth.items)
                if held > self._peak:
                    self._peak = held
                remote.poll()
                newest = fs[ft.NEWEST]
                bounds = (max(fs[ft.F_TRADE], newest - stall), max(fs[ft.F_BOOK], newest - stall),
                          depth.frontier)
                yield from acc.feed(pend.release(depth.items, *bounds))
                while pend.books_trades() > split.MAX_PENDING and not depth.done:
                    depth.wait()   # ahead of the depth worker: let it catch up
                    bounds = bounds[:2] + (depth.frontier,)
                    yield from acc.feed(pend.release(depth.items, *bounds))
        self._messages = count
        remote.finish()
        newest = max(fs[ft.NEWEST], remote.newest)
        for stream, last in (("trades", fs[ft.F_TRADE]), ("book", fs[ft.F_BOOK])):
            if newest - stall > last != _NEG_INF:  # silent to the end
                stalls.append({"stream": stream, "t": int(last), "until": None})
        yield from acc.feed(pend.release(depth.items, _POS_INF, _POS_INF, _POS_INF))
        acc.done(is_, ft)
        st = core.symbols.get(want)
        if st is not None:
            st.depth = depth.prev
        yield from core.flush()

    def _tick_line(self, line: bytes, path: str, number: int, want: str, fs, is_, tr, bk,
                   ft) -> int:
        """One line :func:`.fastticks.tick_lines` left, read as :meth:`_read` reads it (the
        depth stream's lines are the worker's), its row into ``tr`` / ``bk``; 1 when it is not
        a message (blank), else 0."""
        sp = line.find(b" ")
        div = int(is_[ft.DIV]) or None
        if sp > 0 and div is not None and line.startswith(split.STREAM_TAG, sp + 1) \
                and line.find(split.DEPTH_TAG, sp + split.NAME_AT,
                              line.find(b'"', sp + split.NAME_AT)) >= 0:
            return 0
        if sp <= 0:
            bad_line(path, number, line)
            return 1   # blank: not a message
        try:
            ts = int(line[:sp])
        except ValueError:
            bad_line(path, number, line)
            return 0
        if div is None:
            div = stamp_divisor(ts)
            is_[ft.DIV] = div
        recv = ts // div
        try:
            msg = orjson.loads(line[sp + 1:])
        except orjson.JSONDecodeError:
            bad_line(path, number, line, True)
            return 1   # blank: not a message
        stream = msg.get("stream")
        data = msg["data"] if stream is not None else msg
        if recv > fs[ft.NEWEST]:
            fs[ft.NEWEST] = recv
        s = data.get("s")
        if s is None:
            s = self.symbol
        if s != want:
            return 0
        e = data.get("e")
        if e is None and "lastUpdateId" not in data and (
                stream.endswith("@bookTicker") if stream is not None
                else "b" in data and "B" in data and "A" in data):
            e = "bookTicker"  # as formats.classify
        stall = self.stall_ms
        if e == "bookTicker":
            E = data.get("E")
            t = recv if E is None else E
            f_book = _frontier(fs[ft.F_BOOK])
            if t >= f_book and t >= recv - stall:
                t_key = t
            else:
                t_key = _stalled(t, f_book, recv, stall, "book", self._stalls)
            fs[ft.F_BOOK] = t_key
            qb = round(float(data["B"]) * SCALE)
            qa = round(float(data["A"]) * SCALE)
            bid = float(data["b"])
            ask = float(data["a"])
            term = 0
            if is_[ft.HAS_PREV]:
                pb, pqb, pa, pqa = float(fs[ft.PB]), int(is_[ft.PQB]), float(fs[ft.PA]), \
                    int(is_[ft.PQA])
                if bid >= pb:
                    term = qb
                if bid <= pb:
                    term -= pqb
                if ask <= pa:
                    term -= qa
                if ask >= pa:
                    term += pqa
            fs[ft.PB], fs[ft.PA] = bid, ask
            is_[ft.PQB], is_[ft.PQA], is_[ft.HAS_PREV] = qb, qa, 1
            r = int(is_[ft.NB])
            for a, x in zip(bk, (t_key * 4 + 1, t, term, bid, qb, ask, qa)):
                a[r] = x
            is_[ft.NB] = r + 1
        elif e == "trade" or e == "aggTrade":
            f_trade = _frontier(fs[ft.F_TRADE])
            T = data.get("T")
            if T is None:
                T = data.get("E")
            if T is None:  # as Merger.push does with a missing key
                t = recv
                t_key = _stalled(0 if f_trade == _NEG_INF else f_trade, f_trade, recv, stall,
                                 "trades", self._stalls)
            else:
                t = T
                if T >= f_trade and T >= recv - stall:
                    t_key = T
                else:
                    t_key = _stalled(T, f_trade, recv, stall, "trades", self._stalls)
            fs[ft.F_TRADE] = t_key
            if data.get("X", "MARKET") == "MARKET":  # others are skipped
                r = int(is_[ft.NT])
                for a, x in zip(tr, (t_key * 4, t, round(float(data["q"]) * SCALE),
                                     not data["m"])):
                    a[r] = x
                is_[ft.NT] = r + 1
        return 0



def _stalled(t, frontier, recv, stall: int, stream: str, stalls: list):
    """:func:`~daemons.marketdata.merge.stalled_key`, noting a silence in ``stalls``."""
    floor = recv - stall
    if floor > frontier != _NEG_INF:
        stalls.append({"stream": stream, "t": frontier, "until": t})
    key = frontier if frontier > floor else floor
    return t if t > key else key


def _release(trades: list, books: list, depth: list, f_trade, f_book, f_depth) -> list:
    """Take the items no stream can still precede, merged by ``(key, rank)``, FIFO per stream.

    A stream's later items have keys at or above its frontier, so everything that sorts below
    ``(frontier, rank)`` of every stream is final (a stream with nothing yet holds all back).
    """
    bound = min(f_trade * 4, f_book * 4 + 1, f_depth * 4 + 2)
    if bound == _NEG_INF:
        return []
    parts = []
    for items in (trades, books, depth):
        if items:
            i = len(items) if bound == _POS_INF else bisect_left(items, bound, key=_KEY)
            if i:
                parts.append(items[:i])
                del items[:i]
    if not parts:
        return []
    if len(parts) == 1:
        return parts[0]
    merged = parts[0]
    for p in parts[1:]:
        merged += p
    merged.sort(key=_KEY)  # stable: equal keys stay in stream order; ranks differ across
    return merged


def _ticks():
    """(:mod:`.fastticks`, ``fastbook.scan_block``), or None without numba."""
    try:
        from ..marketdata.fastbook import scan_block
        from . import fastticks
    except ImportError:   # numba missing or unusable here: the Python loop
        return None
    return fastticks, scan_block


def _size(paths: list[str]) -> int:
    total = 0
    for p in paths:
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


def _frontier(f):
    """A frontier kept as a float: the int it is (-inf stays)."""
    return _NEG_INF if f == _NEG_INF else int(f)


def _take_stalls(sl, n: int, stalls: list) -> None:
    names = ("trades", "book")
    for s, t, until in zip(sl[0][:n].tolist(), sl[1][:n].tolist(), sl[2][:n].tolist()):
        stalls.append({"stream": names[s], "t": t, "until": until})


class _Pending:
    """The trade and book rows read but not yet released (arrays, each stream in order)."""

    def __init__(self, np):
        self.np = np
        self.tr = tuple(np.empty(0, d) for d in (np.int64, np.int64, np.int64, np.bool_))
        self.bk = tuple(np.empty(0, d) for d in (np.int64, np.int64, np.int64, np.float64,
                                                   np.int64, np.float64, np.int64))

    def add(self, tr, nt: int, bk, nb: int) -> None:
        cat = self.np.concatenate
        if nt:
            self.tr = tuple(cat((a, b[:nt])) if len(a) else b[:nt].copy()
                            for a, b in zip(self.tr, tr))
        if nb:
            self.bk = tuple(cat((a, b[:nb])) if len(a) else b[:nb].copy()
                            for a, b in zip(self.bk, bk))

    def books_trades(self) -> int:
        return len(self.tr[0]) + len(self.bk[0])

    def held(self) -> int:
        return self.books_trades()

    def release(self, depth: list, f_trade, f_book, f_depth):
        """The rows no stream can still precede (as :func:`_release`), merged by key: (kind,
        t, value, is_buy, bid, ask, bid qty, ask qty) arrays, or None."""
        np = self.np
        bound = min(f_trade * 4, f_book * 4 + 1, f_depth * 4 + 2)
        if bound == _NEG_INF:
            return None
        it = len(self.tr[0]) if bound == _POS_INF else int(
            np.searchsorted(self.tr[0], bound, "left"))
        ib = len(self.bk[0]) if bound == _POS_INF else int(
            np.searchsorted(self.bk[0], bound, "left"))
        idp = len(depth) if bound == _POS_INF else bisect_left(depth, bound, key=_KEY)
        if not (it or ib or idp):
            return None
        tr = tuple(a[:it] for a in self.tr)
        self.tr = tuple(a[it:] for a in self.tr)
        bk = tuple(a[:ib] for a in self.bk)
        self.bk = tuple(a[ib:] for a in self.bk)
        if idp:
            dkey, _k, dt, dv = (np.array(c, np.int64) for c in zip(*depth[:idp]))
            del depth[:idp]
        else:
            dkey = dt = dv = np.empty(0, np.int64)
        n = it + ib + idp
        key = np.concatenate((tr[0], bk[0], dkey))
        kind = np.concatenate((np.zeros(it, np.int8), np.ones(ib, np.int8),
                               np.full(idp, 2, np.int8)))
        t = np.concatenate((tr[1], bk[1], dt))
        v = np.concatenate((tr[2], bk[2], dv))
        buy = np.zeros(n, np.bool_)
        buy[:it] = tr[3]
        bid = np.zeros(n)
        bid[it:it + ib] = bk[3]
        ask = np.zeros(n)
        ask[it:it + ib] = bk[5]
        qb = np.zeros(n, np.int64)
        qb[it:it + ib] = bk[4]
        qa = np.zeros(n, np.int64)
        qa[it:it + ib] = bk[6]
        if (it and ib) or (it and idp) or (ib and idp):
            order = np.argsort(key, kind="stable")   # equal keys: one stream, in its order
            kind, t, v, buy, bid, ask, qb, qa = (a[order] for a in (kind, t, v, buy, bid, ask,
                                                                    qb, qa))
        return kind, t, v, buy, bid, ask, qb, qa


class _Sums:
    """:meth:`SignalCore.process_items` over merged row arrays: the per-row work in
    :func:`.fastticks.accumulate`, each closed interval's record by the core."""

    def __init__(self, np, core: SignalCore, sym: str):
        self.np = np
        self.core = core
        self.sym = sym
        self.st = None   # the symbol's state, made (if new) by the first rows, as process_items

    def _start(self) -> None:
        from .core import _Symbol

        np, core, sym = self.np, self.core, self.sym
        st = core.symbols.get(sym)
        if st is None:
            st = core.symbols[sym] = _Symbol()
        self.st = st
        self.si = np.zeros(11, np.int64)
        self.sf = np.zeros(2)
        self.si[0] = -1 if st.bucket is None else st.bucket
        self.si[1:7] = (st.ofi1, st.ofi5, st.buy, st.sell, st.trades, st.books)
        if st.pb is not None:
            self.si[7] = 1
            self.sf[:] = (st.pb, st.pa)

    def feed(self, rows) -> list[dict]:
        if rows is None:
            return []
        if self.st is None:
            self._start()
        np = self.np
        from .fastticks import accumulate

        n = len(rows[0])
        ci = np.empty((n, 8), np.int64)
        cf = np.empty((n, 2))
        st = self.st
        if st.bucket is None:
            st.bucket = int(rows[1][0] // self.core.interval)
        nc = accumulate(*rows, self.core.interval, self.si, self.sf, ci, cf)
        out = []
        close, sym = self.core.close_sums, self.sym
        for (b, o1, o5, by, sl, nt, nb, hp), (pb, pa) in zip(ci[:nc].tolist(),
                                                              cf[:nc].tolist()):
            if not hp:
                pb = pa = None
            bucket = st.bucket
            while bucket < b:   # SignalCore._close_until: the open one, then the empty ones
                out.append(close(sym, st, bucket, o1, o5, by, sl, nt, nb, pb, pa))
                st.late = 0
                o1 = o5 = by = sl = nt = nb = 0
                bucket += 1
            st.bucket = bucket
        return out

    def done(self, is_, ft) -> None:
        """Leave the open interval's sums and the last book in the core's state."""
        if self.st is None:
            return
        st, si = self.st, self.si.tolist()
        st.ofi1, st.ofi5, st.buy, st.sell, st.trades, st.books = si[1:7]
        if si[7]:
            st.pb, st.pa = self.sf.tolist()
        if si[10]:
            st.qb, st.qa = si[8], si[9]
