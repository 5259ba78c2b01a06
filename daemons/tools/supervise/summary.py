"""The end-of-run summary: records per topic, orders, fills, PnL, restarts, latency.

Built from the spools alone, so it says what actually reached the bus.
"""
from __future__ import annotations

import os

from bus import open_bus

from ... import config as configmod
from ...report.metrics import funding_by_symbol
from ...runtime import read_json


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def order_latencies_ms(intents: list[dict], orders: list[dict]) -> list[float]:
    """Intent written -> order acknowledged by the venue (status NEW or a fill), per order."""
    intent_ts = {i.get("client_order_id"): i["ts"] for i in intents if i.get("type") == "intent"}
    acked = {}
    for o in orders:
        cid = o.get("client_order_id")
        if cid in intent_ts and cid not in acked and o.get("status") in (
                "NEW", "PARTIALLY_FILLED", "FILLED"):
            acked[cid] = o["ts"] - intent_ts[cid]
    return list(acked.values())


def summarize(cfg: dict, programs: list[str] | None = None) -> dict:
    """The summary of the home's spools (see the module docstring)."""
    home = str(configmod.home_of(cfg))
    bus = open_bus(home, sink=cfg["sink"])
    try:
        stats = bus.stats()
        intents = bus.read_all("intents")
        orders = bus.read_all("orders")
        fills = bus.read_all("fills")
        positions = bus.read_all("positions")
        funding = bus.read_all("funding")
    finally:
        bus.close()
    final = {}
    for o in orders:
        if o.get("client_order_id"):
            final[o["client_order_id"]] = o.get("status")
    by_status: dict[str, int] = {}
    for status in final.values():
        by_status[status] = by_status.get(status, 0) + 1
    realized = sum(float(f.get("realized_pnl") or 0) for f in fills)
    fees = sum(float(f.get("fee") or 0) for f in fills)
    last_pos = {}
    for p in positions:
        last_pos[p.get("symbol")] = p
    unrealized = sum(float(p.get("unrealized_pnl") or 0) for p in last_pos.values())
    paid = sum(funding_by_symbol(funding).values())
    lat = order_latencies_ms(intents, orders)
    restarts = read_json(os.path.join(home, "run", "restarts.json")) or {}
    return {
        "home": home,
        "records": {t: s["records"] for t, s in stats["topics"].items()},
        "orders": len(final),
        "orders_by_status": by_status,
        "fills": len(fills),
        "pnl": {"realized": round(realized, 6), "fees": round(fees, 6),
                "funding": round(paid, 6), "unrealized": round(unrealized, 6),
                "net": round(realized - fees + paid + unrealized, 6)},
        "positions": {s: p.get("qty") for s, p in last_pos.items()},
        "restarts": restarts,
        "latency_ms": {"intent_to_ack_p50": percentile(lat, 0.5),
                       "intent_to_ack_p99": percentile(lat, 0.99), "n": len(lat)},
    }


def format_summary(s: dict) -> str:
    """Human-readable lines of a summary."""
    lines = ["summary:"]
    rec = ", ".join(f"{t} {n}" for t, n in s["records"].items()) or "none"
    lines.append(f"  records    {rec}")
    st = ", ".join(f"{k} {v}" for k, v in sorted(s["orders_by_status"].items())) or "-"
    lines.append(f"  orders     {s['orders']} ({st}); fills {s['fills']}")
    p = s["pnl"]
    lines.append(f"  pnl        realized {p['realized']:.4f}, fees {p['fees']:.4f}, "
                 f"unrealized {p['unrealized']:.4f}, net {p['net']:.4f} USDT")
    lines.append(f"  restarts   {sum(s['restarts'].values()) if s['restarts'] else 0} "
                 f"{s['restarts'] or ''}".rstrip())
    lat = s["latency_ms"]
    if lat["n"]:
        lines.append(f"  latency    intent->ack p50 {lat['intent_to_ack_p50']} ms, "
                     f"p99 {lat['intent_to_ack_p99']} ms (n={lat['n']})")
    if s.get("ready_s"):
        lines.append("  ready      " + ", ".join(f"{k} {v}s" for k, v in s["ready_s"].items()))
    if s.get("stop_order"):
        lines.append("  stopped    " + " -> ".join(s["stop_order"]))
    if s.get("report"):
        lines.append(f"  report     {s['report']}")
    return "\n".join(lines)
