"""Helpers of the signal tests: a plain, non-incremental re-implementation of SPEC section 5."""
from __future__ import annotations

import math


def event_time(r):
    t = r.get("T") if r["type"] == "trade" else r.get("E")
    return r.get("recv_ts") if t is None else t


def cks(cur, prev):
    """CKS term of (bid, bid_qty, ask, ask_qty) against the previous tuple."""
    b, qb, a, qa = cur
    pb, pqb, pa, pqa = prev
    return ((qb if b >= pb else 0) - (pqb if b <= pb else 0)
            - (qa if a <= pa else 0) + (pqa if a >= pa else 0))


def level(side, i, bid):
    if i < len(side):
        return side[i][0], side[i][1]
    return (-math.inf if bid else math.inf), 0.0


def reference_signals(records, interval=1000, z_window=300, min_periods=30, w_ofi=0.6,
                      w_cvd=0.4, levels=5, close_last=True):
    """Signals of one symbol's records (already in merge order), computed plainly."""
    buckets = {}
    order = []
    prev_book = None
    prev_depth = None
    last_bbo_at = []  # (bucket, bid, ask) of every book update
    for r in records:
        if r["type"] == "trade" and r.get("X", "MARKET") != "MARKET":
            continue
        b = event_time(r) // interval
        if order and b < order[-1]:
            b = order[-1]  # late: counted in the open interval
        if not order or b > order[-1]:
            order.append(b)
        acc = buckets.setdefault(b, {"ofi_l1": 0.0, "ofi_l5": 0.0, "buy": 0.0, "sell": 0.0,
                                     "trades": 0, "books": 0})
        if r["type"] == "book":
            cur = (r["bid"], r["bid_qty"], r["ask"], r["ask_qty"])
            if prev_book is not None:
                acc["ofi_l1"] += cks(cur, prev_book)
            prev_book = cur
            acc["books"] += 1
            last_bbo_at.append((b, r["bid"], r["ask"]))
        elif r["type"] == "trade":
            acc["buy" if r["side"] == "buy" else "sell"] += r["qty"]
            acc["trades"] += 1
        elif r["type"] == "depth":
            if prev_depth is not None:
                for i in range(levels):
                    pb, qb = level(r["bids"], i, True)
                    ppb, pqb = level(prev_depth["bids"], i, True)
                    pa, qa = level(r["asks"], i, False)
                    ppa, pqa = level(prev_depth["asks"], i, False)
                    acc["ofi_l5"] += cks((pb, qb, pa, qa), (ppb, pqb, ppa, pqa))
            prev_depth = r
        elif r["type"] == "snapshot":
            prev_depth = r
        elif r["type"] == "gap":
            prev_depth = None
    if not order:
        return []
    last = order[-1] if close_last else order[-1] - 1
    out = []
    ofis, deltas = [], []
    cvd = 0.0
    j = 0
    bbo = None
    for b in range(order[0], last + 1):
        acc = buckets.get(b, {"ofi_l1": 0.0, "ofi_l5": 0.0, "buy": 0.0, "sell": 0.0,
                              "trades": 0, "books": 0})
        while j < len(last_bbo_at) and last_bbo_at[j][0] <= b:
            bbo = last_bbo_at[j][1:]
            j += 1
        delta = acc["buy"] - acc["sell"]
        cvd += delta
        oz = zscore(acc["ofi_l1"], ofis[-z_window:], min_periods)
        cz = zscore(delta, deltas[-z_window:], min_periods)
        out.append({
            "bucket_ms": b * interval, "ofi_l1": acc["ofi_l1"], "ofi_l5": acc["ofi_l5"],
            "buy_qty": acc["buy"], "sell_qty": acc["sell"], "cvd_delta": delta, "cvd": cvd,
            "trades": acc["trades"], "book_updates": acc["books"],
            "mid": (bbo[0] + bbo[1]) / 2 if bbo else None,
            "spread": bbo[1] - bbo[0] if bbo else None,
            "ofi_z": oz, "cvd_z": cz,
            "fusion": w_ofi * oz + w_cvd * cz if oz is not None and cz is not None else None,
        })
        ofis.append(acc["ofi_l1"])
        deltas.append(delta)
    return out


def zscore(x, hist, min_periods):
    if len(hist) < min_periods:
        return None
    mean = sum(hist) / len(hist)
    var = sum((h - mean) ** 2 for h in hist) / len(hist)
    if var <= 1e-18 * max(1.0, mean * mean):
        return None
    return (x - mean) / math.sqrt(var)


def assert_signals_match(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["bucket_ms"] == w["bucket_ms"]
        for k in ("trades", "book_updates"):
            assert g[k] == w[k], (k, g, w)
        for k in ("ofi_l1", "ofi_l5", "buy_qty", "sell_qty", "cvd_delta", "cvd", "mid", "spread"):
            close(g[k], w[k], 1e-6, k, g)
        for k in ("ofi_z", "cvd_z", "fusion"):
            close(g[k], w[k], 1e-6, k, g)


def close(a, b, tol, k, ctx):
    if a is None or b is None:
        assert a is None and b is None, (k, a, b, ctx)
        return
    assert abs(a - b) <= tol * max(1.0, abs(b)), (k, a, b, ctx)
