"""The depth stream of one symbol -> compact depth items for :meth:`SignalCore.process_items`.

Each applied diff, snapshot and gap becomes ``(key * 4 + 2, DEPTH, t, term)``: ``t`` its event
time, ``term`` its multi-level OFI term (1e-8 units), ``key`` ``t`` raised to the stream's
frontier and to ``recv - stall_ms`` (merge order, see :func:`~daemons.marketdata.merge.stalled_key`). Used in process by the fast offline path and in
the depth worker of the two-process path (:mod:`.split`).
"""
from __future__ import annotations

from ..marketdata.book import APPLIED, BUFFERED, DROPPED, LocalBook, snapshot_top
from ..marketdata.merge import STALL_MS
from .core import DEPTH, SCALE, side_term

_NEG_INF = float("-inf")


class DepthTerms:
    """Depth diffs and snapshots of the symbol -> depth items (and their multi-level terms)."""

    def __init__(self, levels: int, prev=None, stall_ms: int = STALL_MS, book=None):
        self.n = levels
        self.stall_ms = int(stall_ms)
        self.stalls: list[dict] = []   # silences of the stream (as Replay.stalls)
        # a LocalBook, or a marketdata.fastbook.ArrayBook (the same levels, in arrays)
        self.book = book if book is not None else LocalBook(levels=levels)
        self._array = not isinstance(getattr(self.book.bid_side, "levels", None), dict)
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
        if self._array:
            px, _qf, qs = side.top(self.n)
            return list(zip(px, qs))
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

    def _key(self, t, recv):
        """``t`` raised to the frontier and to ``recv - stall_ms``; the new frontier."""
        f = self.frontier
        floor = recv - self.stall_ms
        if t >= f and t >= floor:
            self.frontier = t
            return t
        key = f if f > floor else floor
        if t > key:
            key = t
        if floor > f != _NEG_INF:
            self.stalls.append({"stream": "depth", "t": f, "until": t})
        self.frontier = key
        return key

    def _push(self, t, term, recv) -> None:
        self.items.append((self._key(t, recv) * 4 + 2, DEPTH, t, term))

    def _applied(self, t, recv) -> None:
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
        self._push(t, term, recv)

    def _gap(self, t, recv) -> None:
        self.gaps += 1
        self.prev_b = self.prev_a = None
        self.prev_is_book = False
        self._push(t, 0, recv)

    def diff(self, d: dict, recv: int) -> None:
        res = self.book.diff(d, recv)
        if res is APPLIED:
            E = d.get("E")
            t = recv if E is None else E
            if self.prev_is_book and not self.book.touched:  # the common untouched case
                self.items.append((self._key(t, recv) * 4 + 2, DEPTH, t, 0))
            else:
                self._applied(t, recv)
        elif res is BUFFERED or res is DROPPED:
            E = d.get("E", recv)  # as Replay: the stream moved on without a record
            if E is not None and E > self.frontier:
                self.frontier = E
        else:
            E = d.get("E")
            self._gap(recv if E is None else E, recv)

    def snapshot(self, snap: dict, recv: int) -> None:
        E = snap.get("E")
        self._push(recv if E is None else E, 0, recv)
        bids, asks = snapshot_top(snap, self.n)
        self.prev_b = [(p, round(q * SCALE)) for p, q in bids]
        self.prev_a = [(p, round(q * SCALE)) for p, q in asks]
        self.prev_is_book = False

        def each(d, res, tag):
            ts = recv if tag is None else tag
            E = d.get("E")
            t = ts if E is None else E
            if res is APPLIED:
                self._applied(t, ts)
            elif res is not BUFFERED and res is not DROPPED:
                self._gap(t, ts)

        self.book.snapshot(snap["lastUpdateId"], snap.get("bids", ()), snap.get("asks", ()),
                           each)
