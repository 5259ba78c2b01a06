"""A synthetic but consistent trading day written through the bus API, with its expected figures.

Two symbols, 120 one-second intervals from 2024-03-05 10:00:00 UTC: signals, book and trades
for each interval; five round trips placed through intents -> orders (NEW, FILLED) -> fills ->
positions; one open ETH position at the end; and a round trip on the previous day that the
report of 2024-03-05 must leave out. ``expected`` holds the figures computed by hand from the
same numbers (plain loops, independent of daemons.report).
"""
from __future__ import annotations

import datetime as dt
import math
import random

from bus import open_bus

DATE = "2024-03-05"
DAY0 = int(dt.datetime(2024, 3, 5, tzinfo=dt.timezone.utc).timestamp() * 1000)
BASE = DAY0 + 10 * 3600 * 1000
N = 120
FEE_RATE = 0.0004
# (symbol, entry interval, exit interval or None, side of entry, qty, entry slip, exit slip)
TRIPS = [
    ("BTCUSDT", 30, 50, "SELL", 0.01, 0.5, 0.25),
    ("BTCUSDT", 55, 85, "BUY", 0.01, 1.0, 0.5),
    ("BTCUSDT", 100, 110, "BUY", 0.01, 0.5, -0.25),
    ("ETHUSDT", 50, 80, "BUY", 0.1, 0.05, 0.02),
    ("ETHUSDT", 85, 95, "SELL", 0.1, 0.01, 0.03),
    ("ETHUSDT", 110, None, "BUY", 0.2, 0.04, None),
]


def nearest_rank(values, q):
    v = sorted(values)
    return v[max(1, math.ceil(q / 100 * len(v))) - 1]


def _mids(sym: str) -> list[float]:
    rnd = random.Random(sym)
    px = 60000.0 if sym == "BTCUSDT" else 3000.0
    out = []
    for i in range(N):
        px += rnd.gauss(0, px * 0.0002) + (px * 0.0003 * math.sin(i / 9))
        out.append(round(px, 2))
    return out


def write(home, sink: str) -> dict:
    """Write the spools under ``home``; return the expected figures."""
    bus = open_bus(home, sink=sink)
    w = {t: bus.writer(t) for t in ("signals", "intents", "orders", "fills", "positions",
                                    "trades", "book", "funding")}
    exp = {"lat": {k: [] for k in ("trades", "book", "signal", "strategy", "broker")},
           "fills": [], "ic": {}}
    pending = []    # (ts, topic, payload) for trading records, written in ts order per topic

    # the previous day: one closed BTC round trip at 23:59 (must not count)
    prev = DAY0 - 60_000
    for k, (side, price, rp) in enumerate((("BUY", 59000.0, 0.0), ("SELL", 59100.0, 1.0))):
        pending.append((prev + k * 1000, "fills", {
            "type": "fill", "symbol": "BTCUSDT", "client_order_id": f"old-{k}", "order_id": 900 + k,
            "trade_id": 9900 + k, "side": side, "qty": 0.01, "price": price, "fee": 0.2,
            "fee_asset": "USDT", "realized_pnl": rp, "maker": False, "T": prev + k * 1000}))
        pending.append((prev + k * 1000 + 1, "positions", {
            "type": "position", "symbol": "BTCUSDT", "qty": 0.01 if k == 0 else 0.0,
            "entry_price": 59000.0 if k == 0 else 0.0, "realized_pnl": rp,
            "unrealized_pnl": 0.0, "mark_price": price}))

    mids = {s: _mids(s) for s in ("BTCUSDT", "ETHUSDT")}
    sig_rows = {}
    for sym in sorted(mids):
        rnd = random.Random("f" + sym)
        rows = []
        for i in range(N):
            b = BASE + i * 1000
            mid = mids[sym][i]
            nxt = mids[sym][i + 1] / mid - 1 if i + 1 < N else 0.0
            fusion = None if i < 30 else round(nxt * 3000 + rnd.gauss(0, 1), 6)
            ts = b + 1000 + 3 + i % 5
            rows.append({"bucket_ms": b, "mid": mid, "fusion": fusion, "ts": ts})
            pending.append((ts, "signals", {
                "type": "signal", "symbol": sym, "bucket_ms": b, "interval_ms": 1000,
                "ofi_l1": 0.0, "ofi_l5": 0.0, "buy_qty": 1.0, "sell_qty": 0.5, "cvd_delta": 0.5,
                "cvd": 0.5 * (i + 1), "trades": 1, "book_updates": 1, "mid": mid,
                "spread": 0.1, "ofi_z": None if fusion is None else fusion,
                "cvd_z": None if fusion is None else fusion, "fusion": fusion}))
            exp["lat"]["signal"].append(3 + i % 5)
            e_book, e_trade = b + 400, b + 600
            lb, lt = 10 + i % 7, 20 + i % 3
            pending.append((e_book + lb + 1, "book", {
                "type": "book", "symbol": sym, "u": i + 1, "E": e_book, "T": e_book - 1,
                "bid": mid - 0.05, "bid_qty": 1.0, "ask": mid + 0.05, "ask_qty": 1.0,
                "recv_ts": e_book + lb}))
            pending.append((e_trade + lt + 1, "trades", {
                "type": "trade", "symbol": sym, "E": e_trade, "T": e_trade - 2, "t": i + 1,
                "price": mid, "qty": 0.5, "side": "buy", "X": "MARKET",
                "recv_ts": e_trade + lt}))
            exp["lat"]["book"].append(lb)
            exp["lat"]["trades"].append(lt)
        sig_rows[sym] = rows

    # trading: intent -> NEW ack -> FILLED + fill -> position
    pos = {"BTCUSDT": [0.0, 0.0], "ETHUSDT": [0.0, 0.0]}   # qty, entry
    legs = []
    for n, (sym, i_in, i_out, side, qty, s_in, s_out) in enumerate(TRIPS):
        legs.append((i_in, sym, side, qty, s_in, "entry", n))
        if i_out is not None:
            legs.append((i_out, sym, "SELL" if side == "BUY" else "BUY", qty, s_out, "exit", n))
    legs.sort()
    last_unreal = {}
    for k, (i, sym, side, qty, slip, reason, n) in enumerate(legs):
        sig = sig_rows[sym][i]
        mid = sig["mid"]
        sign = 1 if side == "BUY" else -1
        price = round(mid + sign * slip, 2)
        coid = f"c{k:03d}"
        t_int = sig["ts"] + 2 + k % 3
        t_ack = t_int + 5 + k % 4
        t_fill = t_ack + 3
        exp["lat"]["strategy"].append(t_int - sig["ts"])
        exp["lat"]["broker"].append(t_ack - t_int)
        q0, entry = pos[sym]
        rp = 0.0
        if q0 * sign < 0:                       # closing
            rp = (price - entry) * abs(q0) * (1 if q0 > 0 else -1)
            pos[sym] = [0.0, 0.0]
        else:
            pos[sym] = [q0 + sign * qty, price]
        fee = round(price * qty * FEE_RATE, 8)
        exp["fills"].append({"symbol": sym, "side": side, "qty": qty, "price": price, "fee": fee,
                             "rp": rp, "mid": mid, "trip": n})
        seq = _signal_seq(sig_rows, sym, i)
        pending.append((t_int, "intents", {
            "type": "intent", "symbol": sym, "side": side, "qty": qty, "order_type": "MARKET",
            "price": None, "reduce_only": reason == "exit", "client_order_id": coid,
            "reason": reason, "signal_seq": seq, "bucket_ms": sig["bucket_ms"],
            "decision_mid": mid, "fusion": sig["fusion"]}))
        base_order = {"type": "order", "client_order_id": coid, "order_id": 1000 + k,
                      "symbol": sym, "side": side, "qty": qty, "price": None, "reason": reason,
                      "intent_seq": k + 1}
        pending.append((t_ack, "orders", {**base_order, "status": "NEW", "prev_status": None,
                                          "event": "ack", "filled_qty": 0.0, "avg_price": None,
                                          "venue_ts": t_ack - 1}))
        pending.append((t_fill, "orders", {**base_order, "status": "FILLED", "prev_status": "NEW",
                                           "event": "fill", "filled_qty": qty, "avg_price": price,
                                           "venue_ts": t_fill - 1}))
        pending.append((t_fill, "fills", {
            "type": "fill", "symbol": sym, "client_order_id": coid, "order_id": 1000 + k,
            "trade_id": 5000 + k, "side": side, "qty": qty, "price": price, "fee": fee,
            "fee_asset": "USDT", "realized_pnl": round(rp, 8), "maker": False, "T": t_ack + 2}))
        q, e = pos[sym]
        pending.append((t_fill + 1, "positions", {
            "type": "position", "symbol": sym, "qty": round(q, 8), "entry_price": e,
            "realized_pnl": 0.0, "unrealized_pnl": 0.0, "mark_price": price}))
    # a final mark of the open ETH position at the last mid
    q, e = pos["ETHUSDT"]
    mark = sig_rows["ETHUSDT"][-1]["mid"]
    last_unreal["ETHUSDT"] = round((mark - e) * q, 8)
    pending.append((BASE + N * 1000 + 50, "positions", {
        "type": "position", "symbol": "ETHUSDT", "qty": q, "entry_price": e, "realized_pnl": 0.0,
        "unrealized_pnl": last_unreal["ETHUSDT"], "mark_price": mark}))

    # funding: one payment the day before (left out), two in the day, one of them recorded twice
    for t, tid, amount in ((DAY0 - 1000, 1, -9.0), (DAY0 + 8 * 3_600_000, 2, -0.75),
                           (DAY0 + 16 * 3_600_000, 3, 0.25), (DAY0 + 16 * 3_600_000 + 5, 3, 0.25)):
        pending.append((t, "funding", {"type": "funding", "symbol": "ETHUSDT", "amount": amount,
                                       "asset": "USDT", "time_ms": t, "tran_id": tid}))
    exp["funding"] = -0.75 + 0.25

    for ts, topic, payload in sorted(pending, key=lambda p: (p[0], p[1])):
        w[topic].append(payload, ts=ts)
    for x in w.values():
        x.close()
    bus.close()

    # -- the figures, by hand ----------------------------------------------------------------
    f = exp["fills"]
    exp["realized"] = sum(x["rp"] for x in f)
    exp["fees"] = sum(x["fee"] for x in f)
    exp["turnover"] = sum(x["qty"] * x["price"] for x in f)
    exp["unreal_end"] = last_unreal["ETHUSDT"]
    exp["net"] = exp["realized"] - exp["fees"] + exp["funding"] + exp["unreal_end"]
    closed = [n for n, t in enumerate(TRIPS) if t[2] is not None]
    nets = {n: sum(x["rp"] - x["fee"] for x in f if x["trip"] == n) for n in closed}
    exp["closed"] = len(closed)
    exp["wins"] = sum(v > 0 for v in nets.values())
    exp["win_rate"] = exp["wins"] / len(closed) * 100
    cost = sum((1 if x["side"] == "BUY" else -1) * (x["price"] - x["mid"]) * x["qty"] for x in f)
    exp["slip_cost"] = cost
    exp["slip_bps"] = cost / sum(x["qty"] * x["mid"] for x in f) * 1e4
    for sym, rows in sig_rows.items():
        xs, ys = [], []
        for a, b in zip(rows, rows[1:]):
            if a["fusion"] is not None:
                xs.append(a["fusion"])
                ys.append(b["mid"] / a["mid"] - 1)
        exp["ic"][sym] = {"pairs": len(xs), "spearman": _corr(_ranks(xs), _ranks(ys)),
                          "pearson": _corr(xs, ys)}
    exp["signals"] = sum(len(r) for r in sig_rows.values())
    return exp


def _signal_seq(sig_rows, sym, i) -> int:
    """seq of the signals record of (sym, i): records are written in ts order, BTC before ETH
    on equal ts (sorted by topic, then insertion order)."""
    keyed = sorted(((r["ts"], s, k) for s, rows in sig_rows.items() for k, r in enumerate(rows)))
    return keyed.index((sig_rows[sym][i]["ts"], sym, i)) + 1


def _ranks(x):
    order = sorted(range(len(x)), key=lambda k: x[k])
    r = [0.0] * len(x)
    for rank, k in enumerate(order, 1):
        r[k] = float(rank)          # the scenario has no ties
    return r


def _corr(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
