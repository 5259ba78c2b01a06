"""The broker's durable memory, rebuilt from its own topics on every start.

``orders`` holds every transition of every order (the last record of a client order id is its
state) and ``fills`` every fill (keyed by symbol and trade id). Both are written *before* the
venue is asked anything that depends on them: the PENDING record of an order is on disk
before the order is sent. So after a crash the broker knows every client order id it may have
sent, and every fill it has already published.

:class:`Journal` is the in-memory fold of those records; :class:`PositionBook` folds fills into
positions. Both are pure: no bus, no clock.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import orders as fsm
from .orders import Order

EPS = 1e-9


@dataclass
class Position:
    symbol: str
    qty: float = 0.0
    entry_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0             # commissions paid (quote asset), all fills so far
    funding: float = 0.0          # funding received (< 0: paid), all payments so far

    def payload(self, mark_price: float | None = None) -> dict:
        upnl = None
        if mark_price and self.qty:
            upnl = round((mark_price - self.entry_price) * self.qty, 8)
        return {"type": "position", "symbol": self.symbol, "qty": round(self.qty, 12),
                "entry_price": round(self.entry_price, 10) if self.qty else 0.0,
                "realized_pnl": round(self.realized_pnl, 8), "unrealized_pnl": upnl,
                "mark_price": mark_price, "fees": round(self.fees, 8),
                "funding": round(self.funding, 8)}


class PositionBook:
    """Net positions from fills (one-way mode): average entry, realized PnL on reduction."""

    def __init__(self):
        self.positions: dict[str, Position] = {}

    def get(self, symbol: str) -> Position:
        p = self.positions.get(symbol)
        if p is None:
            p = self.positions[symbol] = Position(symbol)
        return p

    def apply(self, fill: dict) -> Position:
        p = self.get(fill["symbol"])
        qty = float(fill["qty"])
        price = float(fill["price"])
        signed = qty if fill["side"] == "BUY" else -qty
        p.fees += float(fill.get("fee") or 0.0)
        if abs(p.qty) < EPS or (p.qty > 0) == (signed > 0):
            total = abs(p.qty) + qty
            p.entry_price = (abs(p.qty) * p.entry_price + qty * price) / total if total else 0.0
            p.qty += signed
        else:
            closing = min(abs(p.qty), qty)
            p.realized_pnl += closing * (price - p.entry_price) * (1 if p.qty > 0 else -1)
            p.qty += signed
            if abs(p.qty) < EPS:
                p.qty = 0.0
                p.entry_price = 0.0
            elif (p.qty > 0) == (signed > 0):   # flipped through zero
                p.entry_price = price
        return p


class Journal:
    """Orders by client order id, fills by trade id, positions: the broker's state."""

    def __init__(self):
        self.orders: dict[str, Order] = {}
        self.by_order_id: dict[tuple[str, int], str] = {}
        self.fill_keys: set[tuple[str, int]] = set()
        self.filled: dict[str, float] = {}     # client order id -> qty of the fills recorded
        self.notional: dict[str, float] = {}   # client order id -> sum of qty * price of those
        self.book = PositionBook()
        self.first_ts: int | None = None        # ts of the first orders record (ms)

    # -- folding records -------------------------------------------------------------------------
    def load_order_record(self, rec: dict) -> None:
        if rec.get("type") != "order" or not rec.get("client_order_id"):
            return
        if self.first_ts is None:
            self.first_ts = rec.get("ts")
        self.put(fsm.order_from_record(rec))

    def put(self, order: Order) -> None:
        self.orders[order.client_order_id] = order
        if order.order_id is not None:
            self.by_order_id[(order.symbol, int(order.order_id))] = order.client_order_id

    def has_fill(self, symbol: str, trade_id) -> bool:
        return (symbol, int(trade_id)) in self.fill_keys

    def load_fill(self, fill: dict) -> bool:
        """Fold one fill in; False if its trade id was already known (a duplicate)."""
        if fill.get("type") != "fill" or fill.get("trade_id") is None:
            return False
        key = (fill["symbol"], int(fill["trade_id"]))
        if key in self.fill_keys:
            return False
        self.fill_keys.add(key)
        cid = fill.get("client_order_id") or self.client_id_of(fill["symbol"], fill.get("order_id"))
        if cid:
            self.filled[cid] = self.filled.get(cid, 0.0) + float(fill["qty"])
            self.notional[cid] = self.notional.get(cid, 0.0) + float(fill["qty"]) * float(fill["price"])
        self.book.apply(fill)
        return True

    def client_id_of(self, symbol: str, order_id) -> str | None:
        if order_id is None:
            return None
        return self.by_order_id.get((symbol, int(order_id)))

    # -- questions ---------------------------------------------------------------------------
    def fill_deficit(self, cid: str) -> float:
        """How much the venue says is filled beyond the fills recorded (>0: fetch trades)."""
        o = self.orders.get(cid)
        if o is None:
            return 0.0
        return o.filled_qty - self.filled.get(cid, 0.0)

    def avg_fill_price(self, cid: str) -> float | None:
        q = self.filled.get(cid, 0.0)
        return round(self.notional[cid] / q, 10) if q > EPS else None

    def unresolved(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status in fsm.UNRESOLVED]

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.status in fsm.OPEN]

    def active(self) -> list[Order]:
        """Every order not terminal (pending, unknown or open)."""
        return [o for o in self.orders.values() if not o.is_terminal]

    def last_trade_id(self, symbol: str) -> int | None:
        ids = [t for s, t in self.fill_keys if s == symbol]
        return max(ids) if ids else None
