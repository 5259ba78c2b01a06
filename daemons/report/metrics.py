"""Pure computations of a report: PnL, fees, turnover, round trips, slippage, IC, latency.

Conventions (written in the report too):
- a fill's time is its venue trade time ``T`` (else the record ``ts``);
- fees count in PnL when paid in the symbol's quote asset (``BTCUSDT`` and ``USDT``); others are
  listed apart;
- funding: the payments of the period's ``funding`` records (negative: paid), quote asset;
- net PnL = realized − fees + funding + (unrealized at the end − unrealized at the start);
- a round trip runs from flat to flat per symbol; it wins when its realized PnL minus its fees is
  positive; win rate = wins / closed round trips;
- slippage of a fill in bps = s·(price − decision_mid)/decision_mid·1e4, s = +1 for a buy and
  −1 for a sell (a positive number is a cost); averages are weighted by qty·decision_mid;
- IC = Spearman rank correlation (average ranks for ties) of ``fusion`` at interval t with the
  mid return from the end of t to the end of t+1, per symbol; Pearson is given beside it;
- percentiles are nearest-rank.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from itertools import repeat

EPS = 1e-12

LATENCY_STAGES = (
    ("harvest (trades)", "exchange event time E → recv_ts"),
    ("harvest (book)", "exchange event time E → recv_ts"),
    ("signal", "interval end (bucket_ms + interval_ms) → signals ts"),
    ("strategy", "signals ts → intents ts (via signal_seq)"),
    ("broker", "intents ts → orders ts of the NEW ack (via client_order_id)"),
    ("end to end", "interval end → NEW ack"),
)


def num(x) -> bool:
    """A finite int or float (not a bool)."""
    t = type(x)
    if t is float:   # the common cases first (a report calls this for every record's fields)
        return x - x == 0.0   # False for inf and nan, as math.isfinite
    if t is int:
        return math.isfinite(x)
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def side_sign(side) -> int:
    s = str(side or "").upper()
    return 1 if s in ("BUY", "LONG") else -1 if s in ("SELL", "SHORT") else 0


def fill_time(f: dict) -> int:
    return int(f["T"]) if num(f.get("T")) else int(f["ts"])


def quote_fee(f: dict) -> bool:
    """Whether a fill's fee is paid in its symbol's quote asset (missing asset: assume so)."""
    asset = f.get("fee_asset")
    return not asset or str(f.get("symbol", "")).endswith(str(asset))


def percentile(values, q: float) -> float | None:
    """Nearest-rank percentile (None when empty)."""
    v = sorted(values)
    if not v:
        return None
    k = max(1, math.ceil(q / 100.0 * len(v)))
    return float(v[k - 1])


def pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    dx = [a - mx for a in x]
    dy = [b - my for b in y]
    sxy = sum(map(operator.mul, dx, dy))   # the same sums, in the same order, as a loop's
    sxx = sum(map(pow, dx, repeat(2, n)))
    syy = sum(map(pow, dy, repeat(2, n)))
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def ranks(x: list[float]) -> list[float]:
    """Ranks from 1, ties given their average rank."""
    n = len(x)
    order = sorted(range(n), key=x.__getitem__)
    v = [x[k] for k in order]
    out = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and v[j + 1] == v[i]:
            j += 1
        if j == i:
            out[order[i]] = i + 1.0   # (i + i) / 2 + 1, exactly
        else:
            r = (i + j) / 2 + 1
            for k in range(i, j + 1):
                out[order[k]] = r
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    return pearson(ranks(x), ranks(y)) if len(x) >= 3 else None


# -- fills, round trips, PnL ---------------------------------------------------------------------
def unique_fills(fills: list[dict]) -> list[dict]:
    """Fills in time order, a fill repeated by an at-least-once replay counted once."""
    seen = set()
    out = []
    for f in sorted(fills, key=lambda r: (fill_time(r), r["seq"])):
        if not (isinstance(f.get("symbol"), str) and num(f.get("qty")) and num(f.get("price"))
                and side_sign(f.get("side"))):
            continue
        key = (f["symbol"], f.get("order_id"), f.get("trade_id")) \
            if f.get("trade_id") is not None else ("seq", f["seq"])
        if key in seen:
            continue
        seen.add(key)
        out.append(f)
    return out


@dataclass
class Trip:
    """A round trip: from flat to flat on one symbol."""

    symbol: str
    direction: str          # LONG | SHORT
    opened_ms: int
    closed_ms: int | None = None
    max_qty: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    fills: int = 0

    @property
    def net(self) -> float:
        return self.realized - self.fees


@dataclass
class Book:
    """Per-symbol ledger built from the fills."""

    realized: float = 0.0
    fees: float = 0.0
    turnover: float = 0.0
    volume: float = 0.0
    fills: int = 0
    buys: int = 0
    sells: int = 0
    other_fees: dict[str, float] = field(default_factory=dict)


def ledger(fills: list[dict],
           start_positions: dict[str, dict]) -> tuple[dict[str, Book], list[Trip]]:
    """Per-symbol totals and the round trips of ``fills`` (from :func:`unique_fills`).

    A fill without ``realized_pnl`` gets it from an average-cost position (seeded by the last
    position before the period).
    """
    books: dict[str, Book] = {}
    trips: list[Trip] = []
    pos: dict[str, float] = {}
    avg: dict[str, float] = {}
    open_trip: dict[str, Trip] = {}
    for sym, p in start_positions.items():
        if num(p.get("qty")) and abs(p["qty"]) > EPS:
            pos[sym] = float(p["qty"])
            avg[sym] = float(p["entry_price"]) if num(p.get("entry_price")) else 0.0
            open_trip[sym] = Trip(sym, "LONG" if p["qty"] > 0 else "SHORT", int(p["ts"]),
                                  max_qty=abs(float(p["qty"])))
    for f in fills:
        sym, qty, price = f["symbol"], float(f["qty"]), float(f["price"])
        sign = side_sign(f["side"])
        b = books.setdefault(sym, Book())
        fee = float(f["fee"]) if num(f.get("fee")) else 0.0
        before = pos.get(sym, 0.0)
        after = before + sign * qty
        # realized PnL: as reported, else from the average cost of the closed part
        closed = min(qty, abs(before)) if before * sign < 0 else 0.0
        if num(f.get("realized_pnl")):
            rpnl = float(f["realized_pnl"])
        else:
            rpnl = closed * (price - avg.get(sym, price)) * (1 if before > 0 else -1)
        if abs(after) <= EPS:
            avg.pop(sym, None)
        elif before * after <= 0:
            avg[sym] = price                      # opened or flipped
        elif abs(after) > abs(before):
            avg[sym] = (avg.get(sym, price) * abs(before) + price * qty) / abs(after)
        pos[sym] = after if abs(after) > EPS else 0.0

        b.realized += rpnl
        b.turnover += abs(qty * price)
        b.volume += qty
        b.fills += 1
        b.buys += sign > 0
        b.sells += sign < 0
        if quote_fee(f):
            b.fees += fee
        else:
            asset = str(f["fee_asset"])
            b.other_fees[asset] = b.other_fees.get(asset, 0.0) + fee

        t = fill_time(f)
        trip = open_trip.get(sym)
        if trip is None:
            trip = open_trip[sym] = Trip(sym, "LONG" if sign > 0 else "SHORT", t)
        trip.fills += 1
        trip.realized += rpnl
        trip.fees += fee if quote_fee(f) else 0.0
        if before * after <= 0 and abs(before) > EPS:   # closed, or flipped
            trip.max_qty = max(trip.max_qty, abs(before))
            trip.closed_ms = t
            trips.append(trip)
            del open_trip[sym]
            if abs(after) > EPS:                   # flipped: the rest opens a new trip
                open_trip[sym] = Trip(sym, "LONG" if after > 0 else "SHORT", t,
                                      max_qty=abs(after))
        else:
            trip.max_qty = max(trip.max_qty, abs(after))
    trips.extend(sorted(open_trip.values(), key=lambda tr: (tr.opened_ms, tr.symbol)))
    return books, trips


def last_positions(positions: list[dict]) -> dict[str, dict]:
    """The last positions record of each symbol."""
    out: dict[str, dict] = {}
    for p in positions:
        if isinstance(p.get("symbol"), str):
            out[p["symbol"]] = p
    return out


def unrealized(p: dict | None) -> float:
    return float(p["unrealized_pnl"]) if p and num(p.get("unrealized_pnl")) else 0.0


# -- slippage ------------------------------------------------------------------------------------
@dataclass
class Slippage:
    fills: int = 0
    weight: float = 0.0      # sum of qty * decision_mid
    cost: float = 0.0        # sum of sign * (price - mid) * qty, in quote
    bps: list[float] = field(default_factory=list)

    @property
    def avg_bps(self) -> float | None:
        return self.cost / self.weight * 1e4 if self.weight > 0 else None


def slippage(fills: list[dict], intents_by_coid: dict[str, dict]) -> dict[str, Slippage]:
    """Per symbol (and ``"all"``): slippage against the intent's decision mid."""
    out: dict[str, Slippage] = {}
    for f in fills:
        intent = intents_by_coid.get(f.get("client_order_id"))
        mid = intent.get("decision_mid") if intent else None
        if not num(mid) or mid <= 0:
            continue
        sign = side_sign(f["side"])
        qty, price = float(f["qty"]), float(f["price"])
        for key in (f["symbol"], "all"):
            s = out.setdefault(key, Slippage())
            s.fills += 1
            s.weight += qty * mid
            s.cost += sign * (price - mid) * qty
            s.bps.append(sign * (price - mid) / mid * 1e4)
    return out


# -- signals -------------------------------------------------------------------------------------
def signals_by_symbol(signals: list[dict]) -> dict[str, list[dict]]:
    """Signal records per symbol in bucket order, a replayed bucket counted once."""
    out: dict[str, dict[int, dict]] = {}
    for s in signals:
        if s.get("type") != "signal" or not isinstance(s.get("symbol"), str) \
                or not num(s.get("bucket_ms")):
            continue
        out.setdefault(s["symbol"], {}).setdefault(int(s["bucket_ms"]), s)
    return {sym: [b[k] for k in sorted(b)] for sym, b in sorted(out.items())}


@dataclass
class IC:
    intervals: int
    with_fusion: int
    pairs: int
    spearman: float | None
    pearson: float | None
    mean_abs_fusion: float | None


def information_coefficient(rows: list[dict]) -> IC:
    """Fusion at t against the mid return from t to t+1 (consecutive intervals only)."""
    xs, ys = [], []
    fus = [r["fusion"] for r in rows if num(r.get("fusion"))]
    for a, b in zip(rows, rows[1:]):
        step = a.get("interval_ms")
        if not (num(a.get("fusion")) and num(a.get("mid")) and num(b.get("mid")) and a["mid"] > 0):
            continue
        if num(step) and b["bucket_ms"] - a["bucket_ms"] != step:
            continue
        xs.append(float(a["fusion"]))
        ys.append(b["mid"] / a["mid"] - 1.0)
    return IC(len(rows), len(fus), len(xs), spearman(xs, ys), pearson(xs, ys),
              sum(abs(v) for v in fus) / len(fus) if fus else None)


# -- latency -------------------------------------------------------------------------------------
def latencies(signals: list[dict], intents: list[dict], orders: list[dict],
              lookback_signals: list[dict], lookback_intents: list[dict],
              feed_latency: dict[str, list[float]]) -> dict[str, list[float]]:
    """Samples (ms) per stage of :data:`LATENCY_STAGES`."""
    out: dict[str, list[float]] = {name: [] for name, _ in LATENCY_STAGES}
    out["harvest (trades)"] = list(feed_latency.get("trades", []))
    out["harvest (book)"] = list(feed_latency.get("book", []))
    sig_by_seq = {s["seq"]: s for s in lookback_signals + signals}
    for s in signals:
        if num(s.get("bucket_ms")) and num(s.get("interval_ms")):
            out["signal"].append(s["ts"] - (s["bucket_ms"] + s["interval_ms"]))
    intent_by_coid: dict = {}
    for i in lookback_intents + intents:
        intent_by_coid.setdefault(i.get("client_order_id"), i)
    for i in intents:
        sig = sig_by_seq.get(i.get("signal_seq"))
        if sig is not None:
            out["strategy"].append(i["ts"] - sig["ts"])
    acked = set()
    for o in orders:
        coid = o.get("client_order_id")
        if o.get("status") != "NEW" or coid in acked:
            continue
        acked.add(coid)
        intent = intent_by_coid.get(coid)
        if intent is None:
            continue
        out["broker"].append(o["ts"] - intent["ts"])
        sig = sig_by_seq.get(intent.get("signal_seq"))
        if sig is not None and num(sig.get("bucket_ms")) and num(sig.get("interval_ms")):
            out["end to end"].append(o["ts"] - (sig["bucket_ms"] + sig["interval_ms"]))
    return out


# -- orders --------------------------------------------------------------------------------------
def order_outcomes(orders: list[dict]) -> dict[str, dict[str, int]]:
    """Per symbol: distinct client order ids by their last status."""
    last: dict[str, dict] = {}
    for o in orders:
        if o.get("client_order_id") is not None:
            last[o["client_order_id"]] = o
    out: dict[str, dict[str, int]] = {}
    for o in last.values():
        counts = out.setdefault(str(o.get("symbol")), {})
        status = str(o.get("status"))
        counts[status] = counts.get(status, 0) + 1
    return out


# -- series for the charts -----------------------------------------------------------------------
def equity_series(fills: list[dict], positions: list[dict],
                  start_positions: dict[str, dict]) -> list[tuple[int, float]]:
    """Net PnL over time: realized − fees + change of unrealized since the start."""
    base = sum(unrealized(p) for p in start_positions.values())
    unreal = {s: unrealized(p) for s, p in start_positions.items()}
    events = [(fill_time(f), 0, f["seq"], f) for f in fills] + \
             [(int(p["ts"]), 1, p["seq"], p) for p in positions if isinstance(p.get("symbol"), str)]
    events.sort(key=lambda e: e[:3])
    cum = 0.0
    # start at the first event rather than at the period's start: a chart of a day whose
    # trading happened in an hour would otherwise be a flat line and a sliver
    out = [(events[0][0], 0.0)] if events else []
    for t, kind, _seq, r in events:
        if kind == 0:
            rp = float(r["realized_pnl"]) if num(r.get("realized_pnl")) else 0.0
            cum += rp - (float(r["fee"]) if num(r.get("fee")) and quote_fee(r) else 0.0)
        else:
            unreal[r["symbol"]] = unrealized(r)
        out.append((t, cum + sum(unreal.values()) - base))
    return out


def position_series(fills: list[dict], positions: list[dict],
                    start_positions: dict[str, dict]) -> dict[str, list[tuple[int, float]]]:
    """Signed position per symbol over time (positions records, else the fills)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for p in positions:
        if isinstance(p.get("symbol"), str) and num(p.get("qty")):
            out.setdefault(p["symbol"], []).append((int(p["ts"]), float(p["qty"])))
    by_fill: dict[str, list[tuple[int, float]]] = {}
    running: dict[str, float] = {}
    for f in fills:
        sym = f["symbol"]
        if sym in out:
            continue
        if sym not in by_fill:
            q0 = start_positions.get(sym, {}).get("qty")
            running[sym] = float(q0) if num(q0) else 0.0
        running[sym] += side_sign(f["side"]) * float(f["qty"])
        by_fill.setdefault(sym, []).append((fill_time(f), running[sym]))
    out.update(by_fill)
    for sym, series in out.items():
        q0 = start_positions.get(sym, {}).get("qty")
        series.insert(0, (series[0][0], float(q0) if num(q0) else 0.0))
    return dict(sorted(out.items()))


def price_series(sig_rows: dict[str, list[dict]], book_px: dict[str, dict[int, float]],
                 trade_px: dict[str, dict[int, float]]) -> dict[str, list[tuple[int, float]]]:
    """Mid per symbol: signal mids at interval ends, else book mids, else trade prices."""
    out: dict[str, list[tuple[int, float]]] = {}
    for sym in sorted(set(sig_rows) | set(book_px) | set(trade_px)):
        rows = [(int(r["bucket_ms"] + (r.get("interval_ms") or 0)), float(r["mid"]))
                for r in sig_rows.get(sym, []) if num(r.get("mid"))]
        if not rows:
            px = book_px.get(sym) or trade_px.get(sym) or {}
            rows = sorted(px.items())
        if rows:
            out[sym] = rows
    return out


def funding_by_symbol(records) -> dict[str, float]:
    """The funding payments of ``funding`` records summed per symbol (each ``tran_id`` once)."""
    seen, out = set(), {}
    for r in records:
        tid, sym, amount = r.get("tran_id"), r.get("symbol"), r.get("amount")
        if tid in seen or not isinstance(sym, str) or not isinstance(amount, (int, float)):
            continue
        seen.add(tid)
        out[sym] = out.get(sym, 0.0) + float(amount)
    return out
