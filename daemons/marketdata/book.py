"""The local order book, synchronized the way Binance documents it, and the depth records.

Sync (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/How-to-manage-a-local-order-book-correctly,
and the spot page of the same name):

1. Buffer the diff events (``depthUpdate``) from the start.
2. Apply a REST snapshot (``lastUpdateId``, bids, asks).
3. Drop buffered diffs that the snapshot already contains: ``u < lastUpdateId`` (USD-M),
   ``u <= lastUpdateId`` (spot).
4. The first diff applied must bracket the snapshot: ``U <= lastUpdateId <= u`` (USD-M),
   ``U <= lastUpdateId + 1 <= u`` (spot).
5. Each later diff must chain: ``pu == previous u`` (USD-M), ``U == previous u + 1`` (spot).
   A break is a gap: the book is cleared and buffers again until the caller brings a new snapshot.

Quantities are absolute; a quantity of 0 removes the level. Each side is a dict keyed by the
price (float) holding the quantity string as Binance sends it, plus a small sorted cache of the
best prices (:class:`_Side`): only the top levels are ever read (the depth records, ``ofi_l5``),
so a diff is applied with a few bulk dict operations, and only the levels that fall within the
cache are placed by binary search; the cache is refilled from the dict in the rare case that
removals empty it. :attr:`LocalBook.touched` tells whether the last applied diff changed
anything at or above the ``levels``-th best price of a side (when false, the top ``levels``
levels, prices and quantities, are exactly as before).

:class:`LocalBook` is pure (no I/O). :class:`DepthFeed` wraps one and turns diffs and snapshots
into the ``depth`` topic records (COMMON schema)::

    {type:"depth", symbol, E, T, U, u, pu, bids:[[p,q],...N], asks:[...N], recv_ts}
    {type:"snapshot", symbol, lastUpdateId, E, T, bids, asks, recv_ts}   # a (re)sync completed
    {type:"gap", symbol, expected_pu, got_pu, u, reason, E, recv_ts}     # the chain broke
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from heapq import nlargest, nsmallest
from typing import NamedTuple

#: diffs kept while waiting for a snapshot (about 200 s of a 100 ms depth stream)
MAX_BUFFER = 2_000

APPLIED = "applied"
BUFFERED = "buffered"
DROPPED = "dropped"

_NEG_INF = float("-inf")
_POS_INF = float("inf")


class Gap(NamedTuple):
    """A break in the diff chain (or a snapshot older than every diff): re-sync needed."""

    expected_pu: int | None  #: the previous ``u`` (or ``lastUpdateId``) the diff had to follow
    got_pu: int | None       #: what the diff said it follows (``pu``; spot: ``U - 1``)
    u: int                   #: the diff's final update id
    reason: str


# the ways Binance writes a zero quantity ("0.000", "0.00000000", ...); 0 covers numbers
_ZEROS = frozenset(["0", "0.0"] + ["0." + "0" * k for k in range(2, 17)] + [0])


class _Side:
    """One side of the book: ``levels`` (price -> qty string) and ``best``, a sorted cache.

    ``best`` (ascending; the best bid is last, the best ask first) holds exactly the live
    prices at or better than ``edge`` (``edge`` is -inf / +inf when it holds all of them), at
    least ``n`` of them when the side has that many, at most ``2 * cache``.
    """

    __slots__ = ("levels", "best", "edge", "bid", "n", "cache", "touched")

    def __init__(self, bid: bool, n: int):
        self.levels: dict[float, str] = {}
        self.best: list[float] = []
        self.bid = bid
        self.edge = _NEG_INF if bid else _POS_INF
        self.n = n                     # levels that are read (``touched`` watches them)
        self.cache = max(32, 4 * n)    # prices kept in ``best`` after a refill or trim
        self.touched = False           # did the last ``apply`` change the top ``n``?

    def clear(self) -> None:
        self.levels.clear()
        self.best = []
        self.edge = _NEG_INF if self.bid else _POS_INF
        self.touched = True

    def load(self, raw) -> None:
        """Replace the side by snapshot levels ``[[price, qty], ...]``."""
        self.clear()
        levels = self.levels
        for p, q in raw:
            if float(q) > 0.0:
                levels[float(p)] = str(q)
        self._refill()

    def apply(self, raw) -> bool:
        """Apply diff levels ``[[price, qty], ...]``; true if the top ``n`` may have changed."""
        if not raw:
            self.touched = False
            return False
        levels = self.levels
        best = self.best
        edge = self.edge
        n = self.n
        zero = _ZEROS
        touched = False
        # one plain loop: cheaper here than bulk dict/set operations (fewer passes per level)
        if self.bid:
            nth = best[-n] if len(best) >= n else _NEG_INF
            for p, q in raw:
                f = float(p)
                if q in zero:
                    if levels.pop(f, None) is not None and f >= edge:
                        del best[bisect_left(best, f)]
                        if f >= nth:
                            touched = True
                elif f >= edge:
                    if f not in levels:
                        best.insert(bisect_left(best, f), f)
                    levels[f] = q
                    if f >= nth:
                        touched = True
                else:
                    levels[f] = q
        else:
            nth = best[n - 1] if len(best) >= n else _POS_INF
            for p, q in raw:
                f = float(p)
                if q in zero:
                    if levels.pop(f, None) is not None and f <= edge:
                        del best[bisect_left(best, f)]
                        if f <= nth:
                            touched = True
                elif f <= edge:
                    if f not in levels:
                        best.insert(bisect_left(best, f), f)
                    levels[f] = q
                    if f <= nth:
                        touched = True
                else:
                    levels[f] = q
        if len(best) < n and len(levels) > len(best):
            self._refill()
        elif len(best) > 2 * self.cache:
            k = self.cache
            if self.bid:
                del best[:-k]
                self.edge = best[0]
            else:
                del best[k:]
                self.edge = best[-1]
        self.touched = touched
        return touched

    def _refill(self) -> None:
        levels = self.levels
        k = self.cache
        if len(levels) <= k:
            self.best = sorted(levels)
            self.edge = _NEG_INF if self.bid else _POS_INF
        elif self.bid:
            self.best = best = sorted(nlargest(k, levels))
            self.edge = best[0]
        else:
            self.best = best = nsmallest(k, levels)
            self.edge = best[-1]

    def top_prices(self, n: int) -> list[float]:
        """The best ``n`` prices, best first."""
        best = self.best
        if n > len(best) and len(self.levels) > len(best):  # deeper than the cache
            return nlargest(n, self.levels) if self.bid else nsmallest(n, self.levels)
        return best[:-n - 1:-1] if self.bid else best[:n]


class LocalBook:
    """One symbol's book; ``spot=True`` switches to the spot sync rules.

    Use: :meth:`diff` for every diff event (returns APPLIED, BUFFERED, DROPPED or a :class:`Gap`),
    :meth:`snapshot` with a REST depth body when :attr:`synced` is false (returns the outcome of
    each buffered diff it replays), :meth:`top` for the best levels. ``levels``: how many top
    levels :attr:`touched` watches (any number can be read; deeper reads cost more).
    """

    def __init__(self, spot: bool | None = None, max_buffer: int = MAX_BUFFER, levels: int = 5):
        self.spot = spot  # None: decided by the first diff (USD-M diffs carry "pu", spot ones not)
        self.max_buffer = max_buffer
        self.bid_side = _Side(True, levels)
        self.ask_side = _Side(False, levels)
        self.bids: dict[float, str] = self.bid_side.levels   # price -> qty string
        self.asks: dict[float, str] = self.ask_side.levels
        #: did the last applied diff change anything at or above the ``levels``-th level?
        self.touched = True
        self.synced = False
        self.last_u: int | None = None
        self.snapshot_id: int | None = None
        self._bridged = False          # has the first diff after the snapshot been applied?
        # (diff, tag) waiting for a snapshot; bounded: a chain that never re-syncs must not
        # hold the rest of a recording (the oldest diffs go first, a later snapshot that
        # needed them is then a gap, as it would be live)
        self.buffer: deque[tuple[dict, object]] = deque(maxlen=max_buffer)

    # -- feeding ---------------------------------------------------------------------------
    def diff(self, d: dict, tag=None):
        """Feed one diff payload (keys ``U``, ``u``, ``pu`` (USD-M), ``b``, ``a``).

        ``tag`` is kept with a buffered diff and handed back by :meth:`snapshot`'s ``each``.
        """
        if self._bridged:  # in sync, chained: the common case, checked first
            last = self.last_u
            if (d["U"] == last + 1 and d["u"] > last) if self.spot else d.get("pu") == last:
                tb = self.bid_side.apply(d["b"])
                ta = self.ask_side.apply(d["a"])
                self.touched = tb or ta
                self.last_u = d["u"]
                return APPLIED
        if self.spot is None:
            self.spot = "pu" not in d
        if not self.synced:
            self.buffer.append((d, tag))
            return BUFFERED
        return self._chain(d)

    def snapshot(self, last_update_id: int, bids, asks, each=None) -> list[tuple[dict, object]]:
        """Load a REST snapshot and replay the buffered diffs on it.

        Returns ``[(diff, outcome), ...]`` for the replayed diffs, in order; it stops at the
        first :class:`Gap` (the diffs from the gap on stay buffered for the next snapshot).
        ``each(diff, outcome, tag)``, if given, is called right after each replayed diff (to
        read the book as it is then).
        """
        self.bid_side.load(bids)
        self.ask_side.load(asks)
        self.touched = True
        self.snapshot_id = int(last_update_id)
        self.last_u = self.snapshot_id
        self.synced = True
        self._bridged = False
        pending, self.buffer = self.buffer, deque(maxlen=self.max_buffer)
        out = []
        while pending:
            d, tag = pending.popleft()
            res = self._chain(d)
            out.append((d, res))
            if each is not None:
                each(d, res, tag)
            if isinstance(res, Gap):
                self.buffer.clear()           # the gap diff (with its tag) waits again
                self.buffer.append((d, tag))
                self.buffer.extend(pending)
                break
        return out

    def reset(self) -> None:
        """Forget the book (e.g. after a reconnect); buffers until the next snapshot."""
        self._clear()
        self.synced = False
        self.last_u = None
        self._bridged = False
        self.buffer.clear()

    # -- reading ---------------------------------------------------------------------------
    def top(self, n: int) -> tuple[list[list[float]], list[list[float]]]:
        """The best ``n`` bids (highest first) and asks (lowest first) as ``[price, qty]``."""
        b, a = self.bids, self.asks
        return ([[p, float(b[p])] for p in self.bid_side.top_prices(n)],
                [[p, float(a[p])] for p in self.ask_side.top_prices(n)])

    def best(self) -> tuple[float | None, float | None]:
        """Best bid and best ask prices (None on an empty side)."""
        b, a = self.bid_side.best, self.ask_side.best
        return (b[-1] if b else None, a[0] if a else None)

    # -- internals -------------------------------------------------------------------------
    def _clear(self) -> None:
        self.bid_side.clear()
        self.ask_side.clear()
        self.touched = True

    def _chain(self, d: dict):
        u = d["u"]
        last = self.last_u
        if not self._bridged:
            # the snapshot already holds diffs up to lastUpdateId
            if (u <= last) if self.spot else (u < last):
                return DROPPED
            U = d["U"]
            target = last + 1 if self.spot else last
            if not U <= target <= u:
                return self._gap(d, "snapshot does not bridge the first diff")
            self._bridged = True
        elif self.spot:
            U = d["U"]
            if u <= last:
                return DROPPED  # a replayed, already applied diff
            if U != last + 1:
                return self._gap(d, "U != previous u + 1")
        else:
            if u <= last and d.get("pu") != last:
                return DROPPED
            if d.get("pu") != last:
                return self._gap(d, "pu != previous u")
        # both sides always (no short cut: each side must be applied)
        tb = self.bid_side.apply(d["b"])
        ta = self.ask_side.apply(d["a"])
        self.touched = tb or ta
        self.last_u = u
        return APPLIED

    def _gap(self, d: dict, reason: str) -> Gap:
        expected = self.last_u
        got = d.get("pu") if not self.spot else d["U"] - 1
        self._clear()
        self.synced = False
        self._bridged = False
        self.last_u = None
        self.buffer.clear()
        self.buffer.append((d, None))
        return Gap(expected, got, d["u"], reason)


class DepthFeed:
    """Diffs and snapshots of one symbol -> ``depth`` topic records (see the module docstring).

    ``needs_snapshot`` tells the caller (harvest) to fetch a REST snapshot; it is true at the
    start and after every gap.
    """

    def __init__(self, symbol: str, levels: int = 5, spot: bool | None = None):
        self.symbol = symbol
        self.levels = levels
        self.book = LocalBook(spot=spot, levels=levels)
        self.applied = 0
        self.gaps = 0

    @property
    def needs_snapshot(self) -> bool:
        return not self.book.synced

    def on_diff(self, d: dict, recv_ts: int) -> list[dict]:
        """Records caused by one diff payload: ``[depth]``, ``[gap]`` or ``[]`` (buffered)."""
        res = self.book.diff(d, recv_ts)
        if res is APPLIED:
            self.applied += 1
            return [self._depth(d, recv_ts)]
        if isinstance(res, Gap):
            return [self._gap_record(res, d, recv_ts)]
        return []

    def on_snapshot(self, snap: dict, recv_ts: int) -> list[dict]:
        """Records caused by a REST snapshot: ``snapshot`` then the replayed diffs' records."""
        out: list[dict] = []

        def each(d, res, diff_recv_ts):
            ts = recv_ts if diff_recv_ts is None else diff_recv_ts
            if res is APPLIED:
                self.applied += 1
                out.append(self._depth(d, ts))
            elif isinstance(res, Gap):
                out.append(self._gap_record(res, d, ts))

        self.book.snapshot(snap["lastUpdateId"], snap.get("bids", ()), snap.get("asks", ()),
                           each)
        bids, asks = self._snapshot_top(snap)
        return [{"type": "snapshot", "symbol": self.symbol, "lastUpdateId": snap["lastUpdateId"],
                 "E": snap.get("E"), "T": snap.get("T"), "bids": bids, "asks": asks,
                 "recv_ts": recv_ts}] + out

    def _snapshot_top(self, snap: dict):
        return snapshot_top(snap, self.levels)

    def _depth(self, d: dict, recv_ts: int) -> dict:
        bids, asks = self.book.top(self.levels)
        return {"type": "depth", "symbol": self.symbol, "E": d.get("E"), "T": d.get("T"),
                "U": d["U"], "u": d["u"], "pu": d.get("pu"), "bids": bids, "asks": asks,
                "recv_ts": recv_ts}

    def _gap_record(self, g: Gap, d: dict, recv_ts: int) -> dict:
        self.gaps += 1
        return {"type": "gap", "symbol": self.symbol, "expected_pu": g.expected_pu,
                "got_pu": g.got_pu, "u": g.u, "reason": g.reason, "E": d.get("E"),
                "recv_ts": recv_ts}


def snapshot_top(snap: dict, n: int) -> tuple[list[list[float]], list[list[float]]]:
    """A REST snapshot's own best ``n`` bids and asks as ``[price, qty]`` floats (the book
    itself has moved on by the diffs replayed on it)."""
    bids = sorted(([float(p), float(q)] for p, q in snap.get("bids", ()) if float(q) > 0),
                  reverse=True)[:n]
    asks = sorted([float(p), float(q)] for p, q in snap.get("asks", ()) if float(q) > 0)[:n]
    return bids, asks
