"""Replay of recorded market data: re-publishes the real messages, paced by their receive time.

Reads hftbacktest raw-feed recordings (``<local_ts> <json>`` lines, gzip or plain): combined
stream messages ``{"stream": ..., "data": ...}`` and the REST depth snapshot line. Before a
symbol's book is synchronized (snapshot + the diff that bridges its ``lastUpdateId``) nothing of
that symbol is published; from the bridging diff on, every depth diff goes out unchanged (its
``U``/``u``/``pu`` included), so the REST snapshot the venue serves (``lastUpdateId`` = ``u`` of the
last diff applied) always continues the published chain. Trades and book tickers go out as recorded.

(The project's shared reader ``daemons/marketdata/formats.py`` did not exist when this was written;
this module carries its own small reader of the format.)
"""
from __future__ import annotations

import gzip
import heapq
import os
from collections import deque

import orjson

from .book import Book
from .filters import SymbolSpec, spec_for


def _to_ns(ts: int) -> int:
    """Local timestamps are ns (2024 files) or µs (2023 files); ms for other recorders."""
    if ts >= 10 ** 17:
        return ts
    if ts >= 10 ** 14:
        return ts * 1000
    return ts * 1_000_000


def iter_recording(path: str):
    """(local receive time in ns, parsed JSON) for every line of a recording."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ts, _, body = line.partition(b" ")
            try:
                yield _to_ns(int(ts)), orjson.loads(body)
            except (ValueError, orjson.JSONDecodeError):
                continue


def _tagged(path: str, index: int):
    for n, (ts, obj) in enumerate(iter_recording(path)):
        yield ts, index, n, obj


def recording_symbol(path: str) -> str | None:
    """The symbol of a recording (from its first stream message)."""
    for n, (_, obj) in enumerate(iter_recording(path)):
        data = obj.get("data") if "stream" in obj else None
        sym = data.get("s") if isinstance(data, dict) else None
        if sym:
            return sym.upper()
        if n > 1000:
            break
    return None


class _SymbolState:
    def __init__(self, spec: SymbolSpec):
        self.spec = spec
        self.book = Book()
        self.synced = False
        self.pending: list[dict] = []       # diffs buffered before the snapshot
        self.snapshot_id: int | None = None
        self.mark: int | None = None
        self.gaps = 0


class ReplayFeed:
    """Recorded files as a market feed (same interface as :class:`market.SimFeed`)."""

    live = False

    def __init__(self, paths: list[str], specs: dict[str, SymbolSpec] | None = None,
                 speed: float = 1.0, start_ms: int = 0):
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(p)
        # a snapshot line names no symbol: it belongs to the symbol of its file
        self.file_symbol = [recording_symbol(p) for p in paths]
        self.specs = dict(specs or {})
        for s in self.file_symbol:
            if s:
                self.specs.setdefault(s, spec_for(s))
        self.state = {s: _SymbolState(spec) for s, spec in self.specs.items()}
        self.books = {s: st.book for s, st in self.state.items()}
        self.speed = speed
        self._events = heapq.merge(*[_tagged(p, i) for i, p in enumerate(paths)])
        self._ready: deque = deque()
        self._t0_rec: int | None = None
        self._t0_wall = start_ms
        self.finished = False
        self.published = 0

    def _due_ms(self, rec_ns: int) -> float:
        if self._t0_rec is None:
            self._t0_rec = rec_ns
        if self.speed <= 0:
            return self._t0_wall
        return self._t0_wall + (rec_ns - self._t0_rec) / 1e6 / self.speed

    def advance(self, now_ms: int, max_events: int = 2000) -> list[tuple]:
        """Publishable events whose recorded time is due by ``now_ms``."""
        out: list[tuple] = []
        while len(out) < max_events:
            if self._ready:
                due, ev = self._ready[0]
                if due > now_ms:
                    break
                self._ready.popleft()
                out.extend(self._apply(ev))
                continue
            nxt = next(self._events, None)
            if nxt is None:
                self.finished = True
                break
            ts, idx, _, obj = nxt
            if "stream" not in obj:
                obj = dict(obj, _symbol=self.file_symbol[idx])
            self._ready.append((self._due_ms(ts), obj))
        self.published += len(out)
        return out

    def seconds_to_next(self, now_ms: int) -> float:
        if self._ready:
            return max(0.0, (self._ready[0][0] - now_ms) / 1000)
        return 0.0 if not self.finished else 1.0

    def _apply(self, obj: dict) -> list[tuple]:
        if "stream" not in obj:
            return self._snapshot(obj)
        data = obj.get("data") or {}
        stream = obj.get("stream", "")
        sym = (data.get("s") or stream.split("@", 1)[0]).upper()
        st = self.state.get(sym)
        if st is None:
            return []
        kind = data.get("e") or ("bookTicker" if "@bookTicker" in stream else "")
        if kind == "depthUpdate":
            if not st.synced:
                st.pending.append(data)
                return []
            return self._diff(st, data)
        if not st.synced:
            return []
        if kind == "bookTicker":
            return [("bookTicker", sym, data)]
        if kind == "trade":
            return [("trade", sym, data)]
        if kind == "markPriceUpdate":
            try:
                st.mark = st.spec.price_units(str(round(float(data["p"]), st.spec.pp)))
            except Exception:
                pass
            return [("markPrice", sym, data)]
        return []

    def _snapshot(self, snap: dict) -> list[tuple]:
        st = self.state.get(snap.get("_symbol") or "")
        if "lastUpdateId" not in snap or st is None:
            return []
        if not st.synced:
            book = st.book
            book.clear()
            for side, key in (("b", "bids"), ("a", "asks")):
                for p, q in snap.get(key, []):
                    book.set(side, st.spec.price_units(p), st.spec.qty_units(q))
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
        return []

    def _diff(self, st: _SymbolState, d: dict) -> list[tuple]:
        book = st.book
        if "pu" not in d:          # spot-style diff: chain by U == prev u + 1
            d = dict(d, pu=d["U"] - 1)
        if d["pu"] != book.last_update_id and book.last_update_id != st.snapshot_id:
            st.gaps += 1
        st.snapshot_id = None
        spec = st.spec
        for side, key in (("b", "b"), ("a", "a")):
            for p, q in d.get(key, []):
                book.set(side, spec.price_units(p), spec.qty_units(q))
        book.last_update_id = d["u"]
        return [("depth", st.spec.symbol, d)]

    def take(self, symbol: str, side: str, fills, now_ms: int) -> list[tuple]:
        """Recorded markets do not react to the venue's clients."""
        return []

    def mark(self, symbol: str) -> int:
        st = self.state[symbol]
        if st.mark:
            return st.mark
        m2 = st.book.mid2()
        if m2 is None:
            return st.spec.price_units(st.spec.start_price)
        return m2 // 2
