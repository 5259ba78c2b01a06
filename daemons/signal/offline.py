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
"""
from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter
from typing import Iterator

import orjson

from ..marketdata.book import APPLIED, BUFFERED, DROPPED, LocalBook, snapshot_top
from ..marketdata.formats import FormatError, iter_line_chunks
from ..marketdata.replay import Replay, chains_of
from .core import BOOK, DEPTH, SCALE, TRADE, SignalCore, side_term

_NEG_INF = float("-inf")
_POS_INF = float("inf")
_FAST_FORMATS = ("hftbacktest", "wsjson")
_KEY = itemgetter(0)


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
    """

    def __init__(self, paths: list[str], symbol: str, core: SignalCore | None = None):
        self.paths = list(paths)
        self.symbol = symbol
        self.core = core or SignalCore()
        groups = chains_of(self.paths)
        self.fast = len(groups) == 1 and groups[0][0] in _FAST_FORMATS
        self._fmt = groups[0][0] if groups else None
        self.replay = None if self.fast else Replay(
            self.paths, symbols={symbol}, symbol=symbol, levels=self.core.levels)
        self._messages = 0
        self._depth: _Depth | None = None

    @property
    def messages(self) -> int:
        return self.replay.messages if self.replay is not None else self._messages

    @property
    def gaps(self) -> int:
        if self.replay is not None:
            return self.replay.gaps
        return self._depth.gaps if self._depth is not None else 0

    def __iter__(self) -> Iterator[dict]:
        if self.replay is not None:
            return _general(self.replay, self.core)
        return self._fast()

    # -- the fast path ---------------------------------------------------------------------
    def _fast(self) -> Iterator[dict]:
        core = self.core
        want = self.symbol.upper()
        file_symbol = self.symbol      # messages without "s" (REST snapshots), as Replay does
        stamped = self._fmt == "hftbacktest"
        st = core.symbols.get(want)
        depth = self._depth = _Depth(core.levels, st.depth if st is not None else None)
        trades: list = []
        books: list = []
        add_trade, add_book = trades.append, books.append
        f_trade = f_book = _NEG_INF    # stream frontiers (-inf: nothing yet)
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
                for line in lines:
                    if stamped:
                        sp = line.find(b" ")
                        if sp <= 0:
                            if not line.strip():
                                count -= 1
                                continue
                            raise FormatError(f"{path}:{lineno + lines.index(line) + 1}: "
                                              "expected '<local_ts> <json>'")
                        try:
                            ts = int(line[:sp])
                        except ValueError:
                            raise FormatError(f"{path}:{lineno + lines.index(line) + 1}: "
                                              "bad local timestamp") from None
                        if div is None:
                            div = 1_000_000 if ts >= 10**17 else 1000 if ts >= 10**14 else 1
                        recv = ts // div
                        body = line[sp + 1:]
                    else:
                        body = line
                    try:
                        msg = loads(body)
                    except decode_error:
                        if not body.strip():
                            count -= 1
                            continue
                        raise FormatError(f"{path}:{lineno + lines.index(line) + 1}: "
                                          "unparseable JSON") from None
                    stream = msg.get("stream")
                    data = msg["data"] if stream is not None else msg
                    if not stamped:  # no local stamp: the event time stands in
                        recv = data.get("E") or data.get("T") or recv
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
                            if t < f_book:
                                t_key = f_book
                            else:
                                t_key = f_book = t
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
                                t_key = f_trade = 0 if f_trade == _NEG_INF else f_trade
                                t = recv
                            else:
                                t = T
                                if T < f_trade:
                                    t_key = f_trade
                                else:
                                    t_key = f_trade = T
                            if data.get("X", "MARKET") == "MARKET":  # others are skipped
                                add_trade((t_key * 4, TRADE, t, round(float(data["q"]) * SCALE),
                                           not data["m"]))
                        elif e == "depthUpdate":
                            depth.diff(data, recv)
                lineno += len(lines)
                self._messages = count
                ready = _release(trades, books, depth.items, f_trade, f_book, depth.frontier)
                if ready:
                    yield from process(want, ready)
        self._messages = count
        ready = _release(trades, books, depth.items, _POS_INF, _POS_INF, _POS_INF)
        if ready:
            yield from process(want, ready)
        st = core.symbols.get(want)
        if st is not None:
            st.depth = depth.prev
        yield from core.flush()


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


class _Depth:
    """Depth diffs and snapshots of the symbol -> depth items (and their multi-level terms)."""

    def __init__(self, levels: int, prev=None):
        self.n = levels
        self.book = LocalBook(levels=levels)
        # the levels the next term compares against, per side (None: no term)
        self.prev_b, self.prev_a = prev if prev is not None else (None, None)
        self.prev_is_book = False  # they are the book's current top (so untouched: term 0)
        self.frontier = _NEG_INF
        self.items: list = []
        self.gaps = 0
        self.qty_memo: dict[str, int] = {}

    @property
    def prev(self):
        return None if self.prev_b is None else (self.prev_b, self.prev_a)

    def _top(self, side) -> list:
        """The side's top levels as the core keeps them: ``(price, qty in 1e-8 units)``."""
        lv = side.levels
        memo = self.qty_memo  # the same quantity strings come back level after level
        out = []
        for p in side.top_prices(self.n):
            q = lv[p]
            v = memo.get(q)
            if v is None:
                if len(memo) > 100_000:
                    memo.clear()
                v = memo[q] = round(float(q) * SCALE)
            out.append((p, v))
        return out

    def _push(self, t, term) -> None:
        key = t if t >= self.frontier else self.frontier
        self.frontier = key
        self.items.append((key * 4 + 2, DEPTH, t, term))

    def _applied(self, t) -> None:
        book = self.book
        n = self.n
        if self.prev_is_book:  # only a touched side can have a non-zero part
            term = 0
            if book.bid_side.touched:
                cur = self._top(book.bid_side)
                term = side_term(self.prev_b, cur, n, True)
                self.prev_b = cur
            if book.ask_side.touched:
                cur = self._top(book.ask_side)
                term += side_term(self.prev_a, cur, n, False)
                self.prev_a = cur
        else:
            bids, asks = self._top(book.bid_side), self._top(book.ask_side)
            if self.prev_b is None:
                term = 0
            else:
                term = side_term(self.prev_b, bids, n, True) + side_term(self.prev_a, asks, n,
                                                                         False)
            self.prev_b, self.prev_a = bids, asks
            self.prev_is_book = True
        self._push(t, term)

    def _gap(self, t) -> None:
        self.gaps += 1
        self.prev_b = self.prev_a = None
        self.prev_is_book = False
        self._push(t, 0)

    def diff(self, d: dict, recv: int) -> None:
        res = self.book.diff(d, recv)
        if res is APPLIED:
            E = d.get("E")
            t = recv if E is None else E
            if self.prev_is_book and not self.book.touched:  # the common untouched case
                key = t if t >= self.frontier else self.frontier
                self.frontier = key
                self.items.append((key * 4 + 2, DEPTH, t, 0))
            else:
                self._applied(t)
        elif res is BUFFERED or res is DROPPED:
            E = d.get("E", recv)  # as Replay: the stream moved on without a record
            if E is not None and E > self.frontier:
                self.frontier = E
        else:
            E = d.get("E")
            self._gap(recv if E is None else E)

    def snapshot(self, snap: dict, recv: int) -> None:
        E = snap.get("E")
        self._push(recv if E is None else E, 0)
        bids, asks = snapshot_top(snap, self.n)
        self.prev_b = [(p, round(q * SCALE)) for p, q in bids]
        self.prev_a = [(p, round(q * SCALE)) for p, q in asks]
        self.prev_is_book = False

        def each(d, res, tag):
            ts = recv if tag is None else tag
            E = d.get("E")
            t = ts if E is None else E
            if res is APPLIED:
                self._applied(t)
            elif res is not BUFFERED and res is not DROPPED:
                self._gap(t)

        self.book.snapshot(snap["lastUpdateId"], snap.get("bids", ()), snap.get("asks", ()),
                           each)
