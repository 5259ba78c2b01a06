"""The signals of catalog rows (:class:`daemons.marketdata.rows.Rows`), vectorized: the same records
as :meth:`SignalCore.process` over the same records in the same order, bit for bit.

numpy does the per-event work (the 1e-8 quantities, the CKS and multi-level terms, the interval
of each event, the sums per interval); each interval's record is then made by
:meth:`SignalCore.close_sums`, the code that closes the daemon's intervals (cvd, z windows,
fusion, mid and spread rounding). See :mod:`.core` for the definitions; the points that decide
the arrays here:

- the interval of an event is the running maximum of ``t // interval`` in merge order (a late
  record counts in the open interval); non-MARKET trades take no part at all;
- the CKS term is between consecutive book rows, the multi-level term between consecutive depth
  rows where the earlier one is a ``depth`` or ``snapshot`` row and the later a ``depth`` row;
- mid and spread come from the last book row at or before the end of the interval.
"""
from __future__ import annotations

import numpy as np

from ..marketdata.rows import BOOK, DEPTH, DEPTH_ROW, GAP_ROW, TRADE, Rows
from .core import SCALE, SignalCore, _Symbol


def scaled(qty) -> np.ndarray:
    """Quantities in 1e-8 units, as the core's ``round(qty * SCALE)`` (both round half even)."""
    x = np.multiply(qty, SCALE)
    np.rint(x, out=x)
    return x.astype(np.int64)


def _cks(e, bid, qb, ask, qa) -> None:
    """``e[1:]`` (zeros) += the CKS term of each row against the previous one, in place:
    ``1{Pb>=Pb'}·Qb − 1{Pb<=Pb'}·Qb' − 1{Pa<=Pa'}·Qa + 1{Pa>=Pa'}·Qa'``."""
    d = e[1:]
    b, pb, a, pa = bid[1:], bid[:-1], ask[1:], ask[:-1]
    np.copyto(d, qb[1:], where=b >= pb)
    np.subtract(d, qb[:-1], out=d, where=b <= pb)
    np.subtract(d, qa[1:], out=d, where=a <= pa)
    np.add(d, qa[:-1], out=d, where=a >= pa)


def cks_terms(bid, bid_qty, ask, ask_qty) -> np.ndarray:
    """The CKS term of each book row against the previous one (the first counts 0)."""
    e = np.zeros(len(bid), np.int64)
    if len(bid) > 1:
        _cks(e, bid, scaled(bid_qty), ask, scaled(ask_qty))
    return e


def depth_terms(typ, bid_px, bid_qty, ask_px, ask_qty) -> np.ndarray:
    """The multi-level term of each depth row (rows x levels arrays, missing levels at
    -inf / +inf with qty 0): against the previous row when that one set a baseline."""
    n = len(typ)
    e = np.zeros(n, np.int64)
    if n < 2:
        return e
    per_level = np.zeros(bid_px.shape, np.int64, order="F")
    _cks(per_level, bid_px, scaled(bid_qty), ask_px, scaled(ask_qty))
    counts = (typ[1:] == DEPTH_ROW) & (typ[:-1] != GAP_ROW)
    np.copyto(e[1:], per_level[1:].sum(axis=1), where=counts)
    return e


class Signals:
    """The signal records of ``rows`` and where in the merged sequence each was closed:
    ``closed_at[i]`` is the index of the event that closed ``records[i]`` (``len(rows)`` for
    the ones the end of the input closes), as :meth:`SignalCore.process` / ``flush`` do."""

    def __init__(self, records: list[dict], closed_at: np.ndarray):
        self.records = records
        self.closed_at = closed_at


def signals(rows: Rows, core: SignalCore) -> Signals:
    """Every interval's signal of ``rows`` (one symbol, merge order) through ``core``, which
    must not have seen the symbol yet; its z windows and cvd continue afterwards."""
    stream = SignalStream(core, rows.symbol)
    out = stream.feed(rows)
    last = stream.finish()
    if last:
        out.records.append(last)
        out.closed_at = np.append(out.closed_at, len(rows.kind))
    return out


class SignalStream:
    """:func:`signals` a piece at a time: :meth:`feed` consecutive :class:`Rows` of one symbol
    (as :func:`~daemons.tools.catalog.read.iter_symbol` cuts them), then :meth:`finish`. The records
    are those of the whole: the open interval's sums, the last book row (CKS term, mid) and the
    last depth row (multi-level term) carry over from a piece to the next."""

    def __init__(self, core: SignalCore, symbol: str):
        if symbol in core.symbols:
            raise ValueError(f"the core has already seen {symbol}")
        self.core = core
        self.sym = symbol
        self.st = None
        self.open = None    # the open interval: [bucket, ofi1, ofi5, buy, sell, trades, books]
        self.book = None    # the last book row: bid, bid_qty, ask, ask_qty (1-element arrays)
        self.depth = None   # the last depth row: type, bid_px, bid_qty, ask_px, ask_qty

    def feed(self, rows: Rows) -> Signals:
        """The intervals this piece closes (all but its last, which stays open); ``closed_at``
        indexes ``rows``."""
        kind = rows.kind
        tr, bk, dp = rows.trades, rows.book, rows.depth
        # events that count: everything but non-MARKET trades
        if len(tr["t"]) and not tr["market"].all():
            market = tr["market"]
            keep = np.ones(len(kind), bool)
            keep[kind == TRADE] = market
            ev_idx = np.flatnonzero(keep)
            ev_kind = kind[ev_idx]
            ev_t = rows.t[ev_idx]
            tr = {k: tr[k][market] for k in ("qty", "is_buy")}
        else:
            ev_idx = None
            ev_kind = kind
            ev_t = rows.t
        if not len(ev_t):
            return Signals([], np.zeros(0, np.int64))
        interval = self.core.interval
        bucket = np.maximum.accumulate(ev_t // interval)
        if self.open is not None:   # the running maximum goes on from the open interval
            np.maximum(bucket, self.open[0], out=bucket)
            b0 = self.open[0]
        else:
            b0 = int(bucket[0])
        b1 = int(bucket[-1])
        bounds = np.arange(b0, b1 + 2, dtype=np.int64)   # interval j is [bounds[j], bounds[j+1])

        # rows of each kind per interval (bucket never goes down): where each interval's rows
        # of a kind start among that kind's rows
        per_kind = np.bincount((bucket - b0) * 3 + ev_kind, minlength=3 * (b1 - b0 + 1))
        starts = np.zeros((b1 - b0 + 2, 3), np.int64)
        np.cumsum(per_kind.reshape(-1, 3), axis=0, out=starts[1:])

        def edges_of(k: int):
            """Where each interval's rows of one kind start (rows in merge order)."""
            return starts[:, k]

        def per_interval(values, edges):
            """Per-interval sums of one kind's values (in merge order)."""
            cs = np.zeros(len(values) + 1, np.int64)
            np.cumsum(values, out=cs[1:])
            return cs[edges[1:]] - cs[edges[:-1]]

        q = scaled(tr["qty"])
        buy = np.where(tr["is_buy"], q, 0)
        tedges = edges_of(TRADE)
        buys = per_interval(buy, tedges)
        sells = per_interval(q - buy, tedges)
        book = (bk["bid"], bk["bid_qty"], bk["ask"], bk["ask_qty"])
        bedges = edges_of(BOOK)
        ofi1 = per_interval(_continued(cks_terms, self.book, book), bedges)
        depth = (dp["type"], dp["bid_px"], dp["bid_qty"], dp["ask_px"], dp["ask_qty"])
        ofi5 = per_interval(_continued(depth_terms, self.depth, depth), edges_of(DEPTH))
        ntrades = np.diff(tedges)
        nbooks = np.diff(bedges)
        sums = [ofi1, ofi5, buys, sells, ntrades, nbooks]
        if self.open is not None:   # interval 0 is the open one: add what it had
            for arr, carried in zip(sums, self.open[1:]):
                arr[0] += carried
        # the last book row at or before each interval's end (this piece's, else the carried)
        last_book = bedges[1:] - 1
        n = len(bk["bid"])
        if n:
            lb = np.maximum(last_book, 0)
            pbs, pas = bk["bid"][lb], bk["ask"][lb]
        else:
            pbs = pas = np.zeros(len(last_book))
        if self.book is not None:
            before = last_book < 0
            pbs = np.where(before, self.book[0][0], pbs)
            pas = np.where(before, self.book[2][0], pas)
            has_book = np.ones(len(last_book), bool)
        else:
            has_book = last_book >= 0

        if self.st is None:
            self.st = self.core.symbols[self.sym] = _Symbol()
        st, sym, close = self.st, self.sym, self.core.close_sums
        records = []
        append = records.append
        last = len(bounds) - 2        # the last interval stays open
        for j, (o1, o5, by, sl, nt, nb, hb, pb, pa) in enumerate(zip(
                ofi1[:last].tolist(), ofi5[:last].tolist(), buys[:last].tolist(),
                sells[:last].tolist(), ntrades[:last].tolist(), nbooks[:last].tolist(),
                has_book[:last].tolist(), pbs[:last].tolist(), pas[:last].tolist())):
            if hb:
                append(close(sym, st, b0 + j, o1, o5, by, sl, nt, nb, pb, pa))
            else:
                append(close(sym, st, b0 + j, o1, o5, by, sl, nt, nb, None, None))
        self.open = [b1] + [int(a[last]) for a in sums]
        if n:
            self.book = tuple(a[-1:] for a in book)
        if len(dp["t"]):
            self.depth = tuple(a[-1:] for a in depth)
        # interval j closes at the first event of a later interval
        closed = np.searchsorted(bucket, bounds[1:-1], side="left")
        if ev_idx is not None:
            closed = ev_idx[closed]
        return Signals(records, closed)

    def finish(self) -> dict | None:
        """The end of the input closes the open interval: its record (None if nothing came)."""
        if self.open is None:
            return None
        b, o1, o5, by, sl, nt, nb = self.open
        self.open = None
        st = self.st
        if self.book is not None:
            pb, pa = self.book[0][0].item(), self.book[2][0].item()
            rec = self.core.close_sums(self.sym, st, b, o1, o5, by, sl, nt, nb, pb, pa)
            st.pb, st.pa = pb, pa
            return rec
        return self.core.close_sums(self.sym, st, b, o1, o5, by, sl, nt, nb, None, None)


def _continued(terms, prev, cur: tuple) -> np.ndarray:
    """``terms`` of ``cur``'s rows, the first against ``prev`` (the last row of the piece
    before, if any) instead of nothing."""
    e = terms(*cur)
    if prev is not None and len(e):
        e[0] = terms(*(np.concatenate([p, c[:1]]) for p, c in zip(prev, cur)))[1]
    return e
