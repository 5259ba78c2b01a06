"""The signal core: OFI (L1 and multi-level), CVD and their z-score fusion (SPEC section 5).

Pure and incremental: ``SignalCore.process(record) -> [signal, ...]`` takes one ``trades`` /
``book`` / ``depth`` topic record (COMMON schemas) and returns the signals of the intervals it
closed, usually none. ``flush()`` closes the open intervals at the end of the input.
``state()`` / ``SignalCore.from_state()`` round-trip everything through JSON, so a restarted
daemon continues exactly where it stopped. O(1) per event (running sums for the z windows).

Definitions (per symbol; ``interval`` = ``interval_ms``):

- time of a record: :func:`daemons.marketdata.merge.event_time` (trade ``T``; book and depth
  ``E``; spot bookTicker has no ``E``: its local ``recv_ts``). bucket = floor(t / interval).
  Records must come in time order (the merge does that); a record older than the open
  interval is counted in the open interval: closed intervals are never reopened. In the daemon
  (``count_late``), which closes intervals by watermark (:meth:`SignalCore.advance`) too, such a
  record is *late*, and the ``late`` field of the interval that counted it says how many there
  were. Offline ``late`` is 0: there, an older record comes from streams on different clocks
  (a spot bookTicker's receive time), the files being merged whole.
- one signal per interval from the symbol's first to its last, empty ones included.
- ``ofi_l1``: Cont-Kukanov-Stoikov term of each book update against the previous one of the
  symbol (the first ever counts 0)::

      e = 1{Pb>=Pb'}·Qb − 1{Pb<=Pb'}·Qb' − 1{Pa<=Pa'}·Qa + 1{Pa>=Pa'}·Qa'

- ``ofi_l5``: the same term at each level i < ``levels`` of the depth records (the synchronized
  local book's top levels after each applied diff): the i-th best bid / ask price and qty against
  the i-th level of the previous depth record of the symbol, summed over levels and records.
  A level missing from a thin book counts as price -inf (bid) / +inf (ask) with qty 0, so a
  vanished level counts as its depth removed. A ``snapshot`` record (a (re)sync) sets the
  baseline without counting; a ``gap`` record clears it (the next depth record counts 0).
- ``buy_qty`` / ``sell_qty``: taker volume by trade time ``T``; trades with ``X`` other than
  ``MARKET`` are skipped entirely. ``cvd_delta = buy − sell``; ``cvd`` its running sum.
- ``trades``, ``book_updates``: counts (MARKET trades, book records).
- ``mid``, ``spread``: from the last best bid/ask at or before the interval end (null before).
- ``ofi_z`` / ``cvd_z``: z-score of ``ofi_l1`` / ``cvd_delta`` against the previous intervals
  (at most ``z_window``; population std); null below ``min_periods`` intervals or std 0.
- ``fusion = w_ofi·ofi_z + w_cvd·cvd_z``, null when either is null.

Quantities are summed as integers in units of 1e-8 (Binance's finest lot step), so sums, the
z windows' running sums and the "std is 0" test are exact and independent of summation order;
the fields are converted back to floats when a signal is written.
"""
from __future__ import annotations

import math
from collections import deque

from ..marketdata.merge import event_time

SCALE = 100_000_000  # quantities in 1e-8 units
_NEG_INF = float("-inf")
_POS_INF = float("inf")

#: kinds of the compact items of :meth:`SignalCore.process_items`
TRADE, BOOK, DEPTH = 0, 1, 2

#: the core's settings (keys of the ``signal`` config section)
PARAMS = ("interval_ms", "z_window", "min_periods", "w_ofi", "w_cvd", "levels")


class _Symbol:
    """Per-symbol state (open interval accumulators, last book, z windows)."""

    __slots__ = ("bucket", "ofi1", "ofi5", "buy", "sell", "trades", "books", "cvd",
                 "pb", "qb", "pa", "qa", "depth", "zo", "so", "qo", "zc", "sc", "qc", "late")

    def __init__(self):
        self.bucket = None          # open interval index (floor(t / interval))
        self.late = 0               # records of closed intervals counted in the open one
        self.ofi1 = self.ofi5 = self.buy = self.sell = 0
        self.trades = self.books = 0
        self.cvd = 0
        self.pb = self.pa = None    # previous best bid / ask price (floats)
        self.qb = self.qa = 0       # previous best bid / ask qty (scaled ints)
        self.depth = None           # previous depth levels: (bids, asks) of (price, scaled qty)
        self.zo, self.zc = deque(), deque()   # z windows: ofi_l1 and cvd_delta (scaled ints)
        self.so = self.qo = self.sc = self.qc = 0  # their sums and sums of squares


def _levels(side, n: int) -> list:
    return [(float(p), round(float(q) * SCALE)) for p, q in side[:n]]


class SignalCore:
    """Per-symbol OFI/CVD intervals; see the module docstring."""

    def __init__(self, interval_ms: int | None = None, z_window: int | None = None,
                 min_periods: int | None = None, w_ofi: float | None = None,
                 w_cvd: float | None = None, levels: int | None = None):
        """A setting left out (None) is ``etc/defaults.yaml``'s, the one place defaults live."""
        if None in (interval_ms, z_window, min_periods, w_ofi, w_cvd, levels):
            from ..config import defaults

            d = defaults()["signal"]
            interval_ms = d["interval_ms"] if interval_ms is None else interval_ms
            z_window = d["z_window"] if z_window is None else z_window
            min_periods = d["min_periods"] if min_periods is None else min_periods
            w_ofi = d["w_ofi"] if w_ofi is None else w_ofi
            w_cvd = d["w_cvd"] if w_cvd is None else w_cvd
            levels = d["levels"] if levels is None else levels
        if interval_ms <= 0 or z_window <= 0 or min_periods < 1 or levels < 1:
            raise ValueError("interval_ms, z_window, levels must be > 0 and min_periods >= 1")
        self.interval = int(interval_ms)
        self.z_window = int(z_window)
        self.min_periods = int(min_periods)
        self.w_ofi = float(w_ofi)
        self.w_cvd = float(w_cvd)
        self.levels = int(levels)
        self.symbols: dict[str, _Symbol] = {}
        #: count records of closed intervals in ``late`` (the daemon; offline, a record older
        #: than the open interval comes from streams on different clocks, not from lateness)
        self.count_late = False

    @classmethod
    def from_settings(cls, s) -> "SignalCore":
        """A core from the typed ``signal`` settings (:class:`daemons.settings.Signal`)."""
        return cls(**{k: getattr(s, k) for k in PARAMS})

    # -- events ----------------------------------------------------------------------------
    def process(self, rec: dict) -> list[dict]:
        """Account one topic record; returns the signals of the intervals it closed."""
        typ = rec["type"]
        if typ == "trade" and rec.get("X", "MARKET") != "MARKET":
            return []
        sym = rec["symbol"]
        st = self.symbols.get(sym)
        if st is None:
            st = self.symbols[sym] = _Symbol()
        # inline event_time() (hot path): trade T, else E, else the local recv_ts
        t = rec.get("T") if typ == "trade" else rec.get("E")
        if t is None:
            t = event_time(rec)
        b = t // self.interval
        if type(b) is not int:
            b = int(b)
        out = ()
        if st.bucket is None:
            st.bucket = b
        elif b > st.bucket:
            out = self._close_until(sym, st, b)
        elif b < st.bucket and self.count_late:
            st.late += 1
        if typ == "book":
            bid = rec["bid"]
            ask = rec["ask"]
            qb = round(rec["bid_qty"] * SCALE)
            qa = round(rec["ask_qty"] * SCALE)
            pb = st.pb
            if pb is not None:
                pa = st.pa
                e = 0
                if bid >= pb:
                    e += qb
                if bid <= pb:
                    e -= st.qb
                if ask <= pa:
                    e -= qa
                if ask >= pa:
                    e += st.qa
                st.ofi1 += e
            st.pb, st.qb, st.pa, st.qa = bid, qb, ask, qa
            st.books += 1
        elif typ == "trade":
            q = round(rec["qty"] * SCALE)
            if rec["side"] == "buy":
                st.buy += q
            else:
                st.sell += q
            st.trades += 1
        elif typ == "depth":
            n = self.levels
            cur = (_levels(rec["bids"], n), _levels(rec["asks"], n))
            prev = st.depth
            if prev is not None:
                st.ofi5 += multi_level_ofi(prev, cur, n)
            st.depth = cur
        elif typ == "snapshot":
            st.depth = (_levels(rec["bids"], self.levels), _levels(rec["asks"], self.levels))
        elif typ == "gap":
            st.depth = None
        return out or []

    def process_items(self, sym: str, items) -> list[dict]:
        """Account compact records of ``sym`` (in merge order); the signals they closed.

        The offline fast path digests the input itself: the OFI terms depend only on the order
        within each stream, so they come precomputed, and what is left here is the bucketing.
        Items (the first element is the caller's, e.g. a merge key; quantities and terms in
        1e-8 units): ``(_, TRADE, t, qty, is_buy)`` a MARKET trade; ``(_, BOOK, t, e, bid,
        bid_qty, ask, ask_qty)`` a book update with its CKS term ``e``; ``(_, DEPTH, t, e)`` a
        depth, snapshot or gap record with its multi-level term. Same result as
        :meth:`process` with the full records (``t``: their :func:`event_time`).
        """
        if not items:
            return []
        st = self.symbols.get(sym)
        if st is None:
            st = self.symbols[sym] = _Symbol()
        interval = self.interval
        if st.bucket is None:
            b = items[0][2] // interval
            st.bucket = b if type(b) is int else int(b)
        end = (st.bucket + 1) * interval  # the first time of a later interval
        out = []
        ofi1, ofi5, buy, sell, trades, books = st.ofi1, st.ofi5, st.buy, st.sell, st.trades, \
            st.books
        pb, pa = st.pb, st.pa
        last_book = None
        for it in items:
            t = it[2]
            if t >= end:
                st.ofi1, st.ofi5, st.buy, st.sell, st.trades, st.books = \
                    ofi1, ofi5, buy, sell, trades, books
                st.pb, st.pa = pb, pa
                b = t // interval
                out.extend(self._close_until(sym, st, b if type(b) is int else int(b)))
                end = (st.bucket + 1) * interval
                ofi1 = ofi5 = buy = sell = trades = books = 0
            kind = it[1]
            if kind == BOOK:
                ofi1 += it[3]
                pb = it[4]
                pa = it[6]
                books += 1
                last_book = it
            elif kind == TRADE:
                if it[4]:
                    buy += it[3]
                else:
                    sell += it[3]
                trades += 1
            else:
                ofi5 += it[3]
        st.ofi1, st.ofi5, st.buy, st.sell, st.trades, st.books = \
            ofi1, ofi5, buy, sell, trades, books
        st.pb, st.pa = pb, pa
        if last_book is not None:
            st.qb, st.qa = last_book[5], last_book[7]
        return out

    def advance(self, t_ms) -> list[dict]:
        """Close, for every symbol, the intervals that end at or before ``t_ms`` (a watermark:
        no record older than it is expected any more); returns their signals."""
        out = []
        interval = self.interval
        b = int(t_ms // interval)
        for sym, st in self.symbols.items():
            if st.bucket is not None and b > st.bucket:
                out.extend(self._close_until(sym, st, b))
        return out

    def next_close_ms(self):
        """The end of the earliest open interval (epoch ms), or None when none is open."""
        b = min((st.bucket for st in self.symbols.values() if st.bucket is not None),
                default=None)
        return None if b is None else (b + 1) * self.interval

    def flush(self) -> list[dict]:
        """Close every open interval (end of input)."""
        out = []
        for sym, st in self.symbols.items():
            if st.bucket is not None:
                out.append(self._close(sym, st))
                st.bucket = None
        return out

    # -- intervals -------------------------------------------------------------------------
    def _close_until(self, sym: str, st: _Symbol, b: int) -> list[dict]:
        """Close the open interval and the empty ones before ``b``; ``b`` becomes open."""
        out = [self._close(sym, st)]
        st.bucket += 1
        while st.bucket < b:
            out.append(self._close(sym, st))
            st.bucket += 1
        return out

    def _close(self, sym: str, st: _Symbol) -> dict:
        sig = self.close_sums(sym, st, st.bucket, st.ofi1, st.ofi5, st.buy, st.sell,
                              st.trades, st.books, st.pb, st.pa)
        st.ofi1 = st.ofi5 = st.buy = st.sell = 0
        st.trades = st.books = st.late = 0
        return sig

    def close_sums(self, sym: str, st: _Symbol, bucket: int, ofi1: int, ofi5: int, buy: int,
                   sell: int, trades: int, books: int, pb, pa) -> dict:
        """The signal of interval ``bucket`` from its sums (ints in 1e-8 units) and the last
        best bid/ask at its end (None before any); advances ``st``'s cvd and z windows.
        :meth:`_close` and the columnar path (:mod:`.columnar`) both close intervals here."""
        delta = buy - sell
        st.cvd += delta
        ofi_z = self._z(ofi1, st.zo, st.so, st.qo)
        cvd_z = self._z(delta, st.zc, st.sc, st.qc)
        # slide the windows (the current interval joins the history of the next ones)
        st.zo.append(ofi1)
        st.so += ofi1
        st.qo += ofi1 * ofi1
        st.zc.append(delta)
        st.sc += delta
        st.qc += delta * delta
        if len(st.zo) > self.z_window:
            old = st.zo.popleft()
            st.so -= old
            st.qo -= old * old
            old = st.zc.popleft()
            st.sc -= old
            st.qc -= old * old
        if pb is not None:
            mid = round((pb + pa) / 2, 10)
            spread = round(pa - pb, 10)
        else:
            mid = spread = None
        return {
            "type": "signal", "symbol": sym, "bucket_ms": bucket * self.interval,
            "interval_ms": self.interval, "ofi_l1": ofi1 / SCALE, "ofi_l5": ofi5 / SCALE,
            "buy_qty": buy / SCALE, "sell_qty": sell / SCALE, "cvd_delta": delta / SCALE,
            "cvd": st.cvd / SCALE, "trades": trades, "book_updates": books, "late": st.late,
            "mid": mid, "spread": spread, "ofi_z": ofi_z, "cvd_z": cvd_z,
            "fusion": (self.w_ofi * ofi_z + self.w_cvd * cvd_z
                       if ofi_z is not None and cvd_z is not None else None),
        }

    def _z(self, x: int, window: deque, s: int, q: int):
        n = len(window)
        if n < self.min_periods:
            return None
        var_n2 = n * q - s * s  # n² · population variance, exact
        if var_n2 <= 0:
            return None
        return (n * x - s) / math.sqrt(var_n2)

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue, as JSON-able data."""
        syms = {}
        for sym, st in self.symbols.items():
            syms[sym] = {
                "bucket": st.bucket, "ofi1": st.ofi1, "ofi5": st.ofi5, "buy": st.buy,
                "sell": st.sell, "trades": st.trades, "books": st.books, "cvd": st.cvd,
                "pb": st.pb, "qb": st.qb, "pa": st.pa, "qa": st.qa,
                "depth": [list(map(list, st.depth[0])), list(map(list, st.depth[1]))]
                if st.depth is not None else None,
                "zo": list(st.zo), "zc": list(st.zc), "late": st.late,
            }
        return {"params": {"interval_ms": self.interval, "z_window": self.z_window,
                           "min_periods": self.min_periods, "w_ofi": self.w_ofi,
                           "w_cvd": self.w_cvd, "levels": self.levels},
                "symbols": syms}

    @classmethod
    def from_state(cls, data: dict) -> "SignalCore":
        """The core :meth:`state` described."""
        core = cls(**data["params"])
        for sym, d in data["symbols"].items():
            st = _Symbol()
            for k in ("bucket", "ofi1", "ofi5", "buy", "sell", "trades", "books", "cvd",
                      "pb", "qb", "pa", "qa"):
                setattr(st, k, d[k])
            if d["depth"] is not None:
                st.depth = ([tuple(x) for x in d["depth"][0]], [tuple(x) for x in d["depth"][1]])
            st.zo, st.zc = deque(d["zo"]), deque(d["zc"])
            st.late = d.get("late", 0)
            st.so, st.qo = sum(st.zo), sum(x * x for x in st.zo)
            st.sc, st.qc = sum(st.zc), sum(x * x for x in st.zc)
            core.symbols[sym] = st
        return core


def multi_level_ofi(prev, cur, n: int) -> int:
    """Sum over levels i < n of the CKS term between the i-th levels of two depth records."""
    pbids, pasks = prev
    bids, asks = cur
    e = 0
    for i in range(n):
        if i < len(bids):
            pb, qb = bids[i]
        else:
            pb, qb = _NEG_INF, 0
        if i < len(pbids):
            ppb, pqb = pbids[i]
        else:
            ppb, pqb = _NEG_INF, 0
        if i < len(asks):
            pa, qa = asks[i]
        else:
            pa, qa = _POS_INF, 0
        if i < len(pasks):
            ppa, pqa = pasks[i]
        else:
            ppa, pqa = _POS_INF, 0
        if pb >= ppb:
            e += qb
        if pb <= ppb:
            e -= pqb
        if pa <= ppa:
            e -= qa
        if pa >= ppa:
            e += pqa
    return e


def side_term(prev: list, cur: list, n: int, bid: bool) -> int:
    """One side's part of :func:`multi_level_ofi` (the two parts add up to it): bids
    ``1{P>=P'}·Q − 1{P<=P'}·Q'``, asks ``−1{P<=P'}·Q + 1{P>=P'}·Q'`` over levels i < n."""
    if len(prev) != n or len(cur) != n:  # a thin side: missing levels are at -inf / +inf
        pad = [(_NEG_INF if bid else _POS_INF, 0)] * n
        prev = (list(prev) + pad)[:n]
        cur = (list(cur) + pad)[:n]
    e = 0
    if bid:
        for (p, q), (pp, pq) in zip(cur, prev):
            if p >= pp:
                e += q
            if p <= pp:
                e -= pq
    else:
        for (p, q), (pp, pq) in zip(cur, prev):
            if p <= pp:
                e -= q
            if p >= pp:
                e += pq
    return e
