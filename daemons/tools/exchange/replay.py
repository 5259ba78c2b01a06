"""Replay of recorded market data: re-publishes the real messages, paced by their receive time.

Reads every format the project's shared reader :mod:`daemons.marketdata.formats` knows (gzip or
plain): hftbacktest recordings, raw websocket JSON lines, and data.binance.vision aggTrades /
trades / bookTicker CSV. The reader turns CSV rows into the websocket payloads Binance sends
(``aggTrade`` / ``trade`` / ``bookTicker``, decimals as strings, times in ms), so every message
goes out as is, on its own stream (``<s>@aggTrade``, ``<s>@trade``, ``<s>@bookTicker``).
Several files are merged by receive time (CSV: the event time), ties in the given file order.

Book sync: a symbol whose sources hold a REST depth snapshot (seen in the first messages of its
files) is *gated*: before its book is synchronized (snapshot + the diff that bridges its
``lastUpdateId``) nothing of that symbol is published; from the bridging diff on, every depth
diff goes out unchanged (its ``U``/``u``/``pu`` included), so the REST snapshot the venue serves
(``lastUpdateId`` = ``u`` of the last diff applied) always continues the published chain.

Sources without depth (CSV, or recordings without a snapshot) are not gated: their trades and
book tickers go out from the first message, there is no depth stream, and the venue's book is
the last book ticker (one level a side, ``lastUpdateId`` = its ``u``), or empty for trades-only
sources (the REST depth then answers an empty book with ``lastUpdateId`` 0). Diffs that no
snapshot synchronizes are not published (no client could sync them).
"""
from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from decimal import ROUND_HALF_EVEN, Decimal

from ...marketdata import formats
from ...marketdata.formats import AGG_TRADE, BOOK_TICKER, DEPTH, SNAPSHOT, TRADE
from .book import Book
from .filters import SymbolSpec, spec_for

SCAN_MESSAGES = 20000     # messages read ahead per file for its symbols, snapshot and decimals
MAX_PENDING = 50000       # diffs buffered per symbol while waiting for a snapshot


def _decimals(text: str) -> int:
    _, _, frac = text.partition(".")
    return len(frac.rstrip("0"))


def _units(text: str, prec: int, keep_nonzero: bool = False) -> int:
    """A decimal string in units of 10^-prec; rounds what the spec cannot hold (rare: the
    precision is widened from the data's first messages, see :func:`scan`)."""
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) <= prec:
        return int(whole or "0") * 10 ** prec + (int(frac.ljust(prec, "0")) if prec else 0)
    u = int(Decimal(text).scaleb(prec).quantize(Decimal(1), ROUND_HALF_EVEN))
    return max(u, 1) if keep_nonzero and Decimal(text) > 0 else u


class FileInfo:
    """What the first messages of one file tell: symbols, snapshots, decimals of prices/qtys."""

    def __init__(self):
        self.symbols: list[str] = []
        self.snapshot_symbols: set[str] = set()
        self.pp: dict[str, int] = {}
        self.qp: dict[str, int] = {}

    def _see(self, sym: str, prices=(), qtys=()) -> None:
        if sym not in self.pp:
            self.symbols.append(sym)
            self.pp[sym] = self.qp[sym] = 0
        for p in prices:
            self.pp[sym] = max(self.pp[sym], _decimals(p))
        for q in qtys:
            self.qp[sym] = max(self.qp[sym], _decimals(q))


def scan(path: str, symbol: str | None = None, limit: int = SCAN_MESSAGES) -> FileInfo:
    """Read ahead the first ``limit`` messages of ``path`` (raises formats.FormatError)."""
    info = FileInfo()
    for n, (kind, _, sym, data, _) in enumerate(formats.read_tuples(path, symbol)):
        if n >= limit:
            break
        if not sym:
            continue
        sym = sym.upper()
        if kind in (TRADE, AGG_TRADE):
            info._see(sym, (data["p"],), (data["q"],))
        elif kind == BOOK_TICKER:
            info._see(sym, (data["b"], data["a"]), (data["B"], data["A"]))
        elif kind in (DEPTH, SNAPSHOT):
            levels = [lv for key in ("b", "a", "bids", "asks") for lv in data.get(key, ())]
            info._see(sym, [p for p, _ in levels], [q for _, q in levels])
            if kind == SNAPSHOT:
                info.snapshot_symbols.add(sym)
        else:
            info._see(sym)
    return info


def widen(spec: SymbolSpec, pp: int, qp: int) -> SymbolSpec:
    """``spec`` with at least ``pp``/``qp`` decimals (spot data is finer than the futures
    rules); tick, step and limits keep their values, in the finer units."""
    dp, dq = max(0, pp - spec.pp), max(0, qp - spec.qp)
    if not dp and not dq:
        return spec
    fp, fq = 10 ** dp, 10 ** dq
    return dataclasses.replace(
        spec, pp=spec.pp + dp, qp=spec.qp + dq, tick=spec.tick * fp,
        min_price=spec.min_price * fp, max_price=spec.max_price * fp, step=spec.step * fq,
        min_qty=spec.min_qty * fq, max_qty=spec.max_qty * fq,
        market_max_qty=spec.market_max_qty * fq)


def _tagged(path: str, index: int, symbol: str | None, errors: list):
    try:
        for n, msg in enumerate(formats.read_tuples(path, symbol)):
            yield msg[1], index, n, msg
    except formats.FormatError as exc:   # a bad line ends that file, not the venue
        errors.append(str(exc))


class _SymbolState:
    def __init__(self, spec: SymbolSpec, gated: bool):
        self.spec = spec
        self.gated = gated                  # wait for the snapshot before publishing anything
        self.book = Book()
        self.synced = False
        self.pending: deque = deque(maxlen=MAX_PENDING)   # diffs buffered before the snapshot
        self.snapshot_id: int | None = None
        self.mark: int | None = None
        self.last_price: int | None = None
        self.gaps = 0
        self.unsynced_diffs = 0


class ReplayFeed:
    """Recorded files as a market feed (same interface as :class:`market.SimFeed`).

    ``symbol`` names the symbol of files that carry none (CSV whose name does not start with
    one). ``specs`` (when given) limits the replay to those symbols.
    """

    live = False

    def __init__(self, paths: list[str], specs: dict[str, SymbolSpec] | None = None,
                 speed: float = 1.0, start_ms: int = 0, symbol: str | None = None):
        self.paths = list(paths)
        self.symbol_hint = [None if formats.symbol_from_path(p) else symbol for p in paths]
        infos = [scan(p, h) for p, h in zip(paths, self.symbol_hint)]
        given = dict(specs or {})
        self.specs: dict[str, SymbolSpec] = {}
        for info in infos:
            for s in info.symbols:
                if given and s not in given:
                    continue
                spec = self.specs.get(s) or given.get(s) or spec_for(s)
                self.specs[s] = widen(spec, info.pp[s], info.qp[s])
        for s, spec in given.items():
            self.specs.setdefault(s, spec)
        gated = set().union(*(i.snapshot_symbols for i in infos)) if infos else set()
        self.state = {s: _SymbolState(spec, s in gated) for s, spec in self.specs.items()}
        self.books = {s: st.book for s, st in self.state.items()}
        self.speed = speed
        self.errors: list[str] = []
        self._events = heapq.merge(*[_tagged(p, i, h, self.errors)
                                     for i, (p, h) in enumerate(zip(paths, self.symbol_hint))])
        self._ready: deque = deque()
        self._t0_rec: int | None = None
        self._t0_wall = start_ms
        self.finished = False
        self.published = 0

    def start_clock(self, now_ms: int) -> None:
        """Pace from ``now_ms`` on (before the first :meth:`advance`)."""
        self._t0_wall = now_ms

    def market_ms(self, now_ms: int) -> int:
        """The recording's time at wall time ``now_ms`` (what the venue stamps events with)."""
        if self._t0_rec is None:
            return now_ms
        if self.speed <= 0:      # as fast as possible: the newest record taken
            return self._last_rec
        return int(self._t0_rec + (now_ms - self._t0_wall) * self.speed)

    def _due_ms(self, rec_ms: int) -> float:
        if self._t0_rec is None:
            self._t0_rec = rec_ms
        self._last_rec = rec_ms
        if self.speed <= 0:
            return self._t0_wall
        return self._t0_wall + (rec_ms - self._t0_rec) / self.speed

    def advance(self, now_ms: int, max_events: int = 2000) -> list[tuple]:
        """Publishable events whose recorded time is due by ``now_ms``."""
        out: list[tuple] = []
        while len(out) < max_events:
            if self._ready:
                due, msg = self._ready[0]
                if due > now_ms:
                    break
                self._ready.popleft()
                out.extend(self._apply(msg))
                continue
            nxt = next(self._events, None)
            if nxt is None:
                self.finished = True
                break
            self._ready.append((self._due_ms(nxt[0]), nxt[3]))
        self.published += len(out)
        return out

    def seconds_to_next(self, now_ms: int) -> float:
        if self._ready:
            return max(0.0, (self._ready[0][0] - now_ms) / 1000)
        return 0.0 if not self.finished else 1.0

    def _apply(self, msg: tuple) -> list[tuple]:
        kind, _, sym, data, _ = msg
        st = self.state.get((sym or "").upper())
        if st is None:
            return []
        sym = st.spec.symbol
        if kind == SNAPSHOT:
            return self._snapshot(st, data)
        if kind == DEPTH:
            if not st.synced:
                st.pending.append(data)
                st.unsynced_diffs += 1
                return []
            return self._diff(st, data)
        if st.gated and not st.synced:
            return []
        if kind == BOOK_TICKER:
            if not st.synced:
                self._top_of_book(st, data)
            return [("bookTicker", sym, data)]
        if kind == TRADE or kind == AGG_TRADE:
            st.last_price = _units(data["p"], st.spec.pp)
            return [(kind, sym, data)]
        if data.get("e") == "markPriceUpdate":
            try:
                st.mark = _units(str(round(float(data["p"]), st.spec.pp)), st.spec.pp)
            except (KeyError, ValueError):
                pass
            return [("markPrice", sym, data)]
        return []

    def _top_of_book(self, st: _SymbolState, data: dict) -> None:
        """Without depth, the venue's book is the last book ticker (one level a side)."""
        book, spec = st.book, st.spec
        book.clear()
        book.set("b", _units(data["b"], spec.pp), _units(data["B"], spec.qp, True))
        book.set("a", _units(data["a"], spec.pp), _units(data["A"], spec.qp, True))
        if data.get("u") is not None:
            book.last_update_id = int(data["u"])

    def _snapshot(self, st: _SymbolState, snap: dict) -> list[tuple]:
        if st.synced:
            return []
        book, spec = st.book, st.spec
        book.clear()
        for side, key in (("b", "bids"), ("a", "asks")):
            for p, q in snap.get(key, []):
                book.set(side, _units(p, spec.pp), _units(q, spec.qp, True))
        L = int(snap["lastUpdateId"])
        book.last_update_id = L
        st.snapshot_id = L
        st.synced = True
        out = []
        for d in st.pending:
            if d["u"] < L:
                continue
            out.extend(self._diff(st, d))
        st.pending.clear()
        return out

    def _diff(self, st: _SymbolState, d: dict) -> list[tuple]:
        book = st.book
        if "pu" not in d:          # spot-style diff: chain by U == prev u + 1
            d = dict(d, pu=d["U"] - 1)
        if d["pu"] != book.last_update_id and book.last_update_id != st.snapshot_id:
            st.gaps += 1
        st.snapshot_id = None
        spec = st.spec
        for side in ("b", "a"):
            for p, q in d.get(side, []):
                book.set(side, _units(p, spec.pp), _units(q, spec.qp, True))
        book.last_update_id = d["u"]
        return [("depth", spec.symbol, d)]

    def take(self, symbol: str, side: str, fills, now_ms: int) -> list[tuple]:
        """Recorded markets do not react to the venue's clients."""
        return []

    def mark(self, symbol: str) -> int:
        """The recorded mark price, else the book's mid, else the last trade, else a default."""
        st = self.state[symbol]
        if st.mark:
            return st.mark
        m2 = st.book.mid2()
        if m2 is not None:
            return m2 // 2
        if st.last_price is not None:
            return st.last_price
        return st.spec.price_units(st.spec.start_price)
