"""The mock gateway: fills every order at once, in process, and keeps ``<home>/mock_orders.jsonl``.

Each order is one line of that file in the venue's order format (Binance order object fields:
orderId, clientOrderId, symbol, side, type, origQty, price, executedQty, avgPrice, status,
reduceOnly, updateTime) plus the ``fills`` it produced (userTrades rows). The file is its
durable state: on start it is read back, so a restarted broker can query earlier orders by
client order id and reconcile positions, exactly as against a venue.
"""
from __future__ import annotations

import os
import threading
import time
from decimal import Decimal

import orjson

from .binance.errors import NotFound, Rejected
from .binance.schemas import VenueOrder, parse_order, parse_trade
from .orders import Order


class MockGateway:
    """Same interface as :class:`daemons.broker.gateway.BinanceGateway`; see that module."""

    name = "mock"

    def __init__(self, home: str, exec_log=None, limiter=None, fee_bps: float = 4.0, clock=time.time):
        self.path = os.path.join(home, "mock_orders.jsonl")
        self.exec_log = exec_log
        self.limiter = limiter
        self.fee_bps = fee_bps
        self.clock = clock
        self.orders: dict[str, dict] = {}
        self.trades_by_symbol: dict[str, list[dict]] = {}
        self.stream = None
        self._lock = threading.Lock()
        self._next_order_id = 1
        self._next_trade_id = 1

    def connect(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue   # a torn last line from a crash: that order never happened
                    self._remember(row)
        except FileNotFoundError:
            pass

    def _remember(self, row: dict) -> None:
        self.orders[row["clientOrderId"]] = row
        self._next_order_id = max(self._next_order_id, int(row["orderId"]) + 1)
        for t in row.get("fills", []):
            self.trades_by_symbol.setdefault(row["symbol"], []).append(t)
            self._next_trade_id = max(self._next_trade_id, int(t["id"]) + 1)

    def start_stream(self, wake):
        return None

    def keepalive(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass

    def _log(self, action: str, t0: float, **fields) -> None:
        if self.exec_log is not None:
            self.exec_log.write(action, ms=round((time.perf_counter() - t0) * 1000, 3), **fields)

    def place(self, order: Order, mark_price: float | None = None) -> VenueOrder:
        t0 = time.perf_counter()
        log = {"symbol": order.symbol, "client_order_id": order.client_order_id}
        price = order.price if order.price else mark_price
        if not price or price <= 0:
            self._log("place", t0, outcome="rejected", error="no price to fill at", **log)
            raise Rejected("mock: no price to fill at (send price or decision_mid)", -1102, 400)
        with self._lock:
            if order.client_order_id in self.orders:
                self._log("place", t0, outcome="rejected", code=-4116, **log)
                raise Rejected("clientOrderId is duplicated", -4116, 400)
            now = int(self.clock() * 1000)
            oid = self._next_order_id
            tid = self._next_trade_id
            self._next_order_id += 1
            self._next_trade_id += 1
            fee = order.qty * price * self.fee_bps / 10_000
            realized = _realized(self.trades_by_symbol.get(order.symbol, []), order.side,
                                 str(order.qty), str(price))
            trade = {"symbol": order.symbol, "id": tid, "orderId": oid, "side": order.side,
                     "price": str(price), "qty": str(order.qty), "realizedPnl": f"{realized:.8f}",
                     "quoteQty": str(order.qty * price), "commission": f"{fee:.8f}",
                     "commissionAsset": "USDT", "time": now, "buyer": order.side == "BUY",
                     "maker": False, "positionSide": "BOTH"}
            row = {"orderId": oid, "clientOrderId": order.client_order_id, "symbol": order.symbol,
                   "side": order.side, "type": order.order_type, "origQty": str(order.qty),
                   "price": str(order.price or 0), "executedQty": str(order.qty),
                   "cumQuote": str(order.qty * price), "avgPrice": str(price), "status": "FILLED",
                   "reduceOnly": order.reduce_only, "timeInForce": "GTC", "positionSide": "BOTH",
                   "updateTime": now, "fills": [trade]}
            # durable before it is acknowledged: the file is the mock venue's state
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, orjson.dumps(row) + b"\n")
            finally:
                os.close(fd)
            self._remember(row)
        self._log("place", t0, outcome="ok", status="FILLED", order_id=oid, **log)
        vo = parse_order(row)
        return VenueOrder(**{**vo.__dict__, "fills": (parse_trade(trade, order.client_order_id),)})

    def cancel(self, symbol: str, client_order_id: str) -> VenueOrder:
        t0 = time.perf_counter()
        self._log("cancel", t0, outcome="not_found", code=-2011, symbol=symbol,
                  client_order_id=client_order_id)
        raise NotFound("Unknown order sent.", -2011, 400)   # mock orders are filled at once

    def query(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        t0 = time.perf_counter()
        row = self.orders.get(client_order_id)
        self._log("query", t0, outcome="ok" if row else "not_found", symbol=symbol,
                  client_order_id=client_order_id)
        return parse_order(row) if row else None

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        return []

    def all_orders(self, symbol: str) -> list[VenueOrder]:
        return [parse_order(r) for r in self.orders.values() if r["symbol"] == symbol]

    def trades(self, symbol: str, order_id: int | None = None,
               from_id: int | None = None) -> list[dict]:
        t0 = time.perf_counter()
        cid_of = {r["orderId"]: cid for cid, r in self.orders.items()}
        out = [parse_trade(t, cid_of.get(t["orderId"])) for t in self.trades_by_symbol.get(symbol, [])
               if (order_id is None or t["orderId"] == order_id)
               and (from_id is None or t["id"] >= from_id)]
        self._log("user_trades", t0, outcome="ok", symbol=symbol, order_id=order_id)
        return out

    def positions(self, symbols) -> list[dict]:
        out = []
        for s in symbols:
            qty = 0.0
            for t in self.trades_by_symbol.get(s, []):
                q = float(t["qty"])
                qty += q if t["side"] == "BUY" else -q
            out.append({"type": "position", "symbol": s, "qty": round(qty, 12), "entry_price": None,
                        "realized_pnl": None, "unrealized_pnl": None, "mark_price": None})
        return out


def _realized(trades, side: str, qty: str, price: str) -> Decimal:
    """The realized PnL of a new fill against the one-way position that ``trades`` (oldest
    first) built, as the venue computes it: the closed quantity times the move from the
    position's average entry price (a flip opens the rest at the fill price)."""
    pos, entry = Decimal(0), Decimal(0)
    for t in trades:
        q = Decimal(t["qty"]) * (1 if t["side"] == "BUY" else -1)
        pos, entry, _ = _apply(pos, entry, q, Decimal(t["price"]))
    q = Decimal(qty) * (1 if side == "BUY" else -1)
    return _apply(pos, entry, q, Decimal(price))[2].quantize(Decimal("1e-8"))


def _apply(pos: Decimal, entry: Decimal, q: Decimal, px: Decimal):
    """(position, entry, realized) after a signed fill ``q`` at ``px``."""
    if pos == 0 or (pos > 0) == (q > 0):
        total = abs(pos) + abs(q)
        return pos + q, (entry * abs(pos) + px * abs(q)) / total, Decimal(0)
    closed = min(abs(q), abs(pos))
    realized = closed * (px - entry) * (1 if pos > 0 else -1)
    new = pos + q
    if new == 0:
        return new, Decimal(0), realized
    if (new > 0) != (pos > 0):
        return new, px, realized
    return new, entry, realized
