"""Start-up reconciliation: the venue's open orders, recent fills and positions vs the journal.

Pure: given the journal and what the venue reports, it says which fills are missing (and may be
recorded: they belong to our orders), which orders must be looked up, and which differences
cannot be explained. Any unexplained difference makes the broker set HALTED with the reason.

=====================================================  ==========================================
difference                                             explained as
=====================================================  ==========================================
venue fill of one of our orders, not in ``fills``      missed while down: record it
venue open order, ours, not open in the journal        a missed status report: apply it
journal open order, not open at the venue              closed while down: query it
venue open order with an unknown client order id       UNEXPLAINED (someone else trades here)
venue fill of an order we never sent                   UNEXPLAINED
venue position != journal position (after the above)   UNEXPLAINED
=====================================================  ==========================================
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .binance.schemas import VenueOrder
from .journal import Journal

QTY_TOLERANCE = 1e-8


@dataclass
class Reconciliation:
    missing_fills: list[dict] = field(default_factory=list)
    reports: list[VenueOrder] = field(default_factory=list)
    to_query: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: symbol -> its entry in ``problems`` when the venue position differs
    position_problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def reconcile(journal: Journal, symbols, open_orders: dict[str, list[VenueOrder]],
              trades: dict[str, list[dict]], positions: dict[str, float],
              since_ms: int | None = None) -> Reconciliation:
    """Compare; ``trades`` older than ``since_ms`` (before our journal began) are not ours to explain."""
    r = Reconciliation()
    for symbol in symbols:
        venue_open = {o.client_order_id: o for o in open_orders.get(symbol, [])}
        for cid, vo in venue_open.items():
            mine = journal.orders.get(cid)
            if mine is None:
                r.problems.append(f"{symbol}: open order {cid} (id {vo.order_id}) at the venue "
                                  f"is not in the journal")
            elif mine.status != vo.status or mine.filled_qty < vo.executed_qty:
                r.reports.append(vo)
        for o in journal.open_orders():
            if o.symbol == symbol and o.client_order_id not in venue_open:
                r.to_query.append(o.client_order_id)
        for t in sorted(trades.get(symbol, []), key=lambda t: t["trade_id"]):
            if journal.has_fill(symbol, t["trade_id"]):
                continue
            if since_ms is not None and t.get("T") is not None and t["T"] < since_ms:
                continue
            cid = t.get("client_order_id") or journal.client_id_of(symbol, t.get("order_id"))
            if cid is None or cid not in journal.orders:
                r.problems.append(f"{symbol}: fill {t['trade_id']} of order {t.get('order_id')} "
                                  f"at the venue belongs to no order in the journal")
                continue
            r.missing_fills.append({**t, "client_order_id": cid})
    # positions after the missing fills are counted
    expected = {s: journal.book.get(s).qty for s in symbols}
    for f in r.missing_fills:
        q = float(f["qty"])
        expected[f["symbol"]] += q if f["side"] == "BUY" else -q
    for symbol in symbols:
        venue_qty = float(positions.get(symbol, 0.0))
        if abs(venue_qty - expected[symbol]) > QTY_TOLERANCE:
            r.position_problems[symbol] = (f"{symbol}: venue position {venue_qty:g} differs "
                                           f"from the journal's {expected[symbol]:g}")
            r.problems.append(r.position_problems[symbol])
    return r
