"""Algo (conditional) orders: Binance USD-M's Algo Order API (``/fapi/v1/algoOrder``).

Since 2025-12-09 the conditional types (STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT,
TRAILING_STOP_MARKET) live in Binance's Algo Service, not in the matching engine: an algo order
waits, untouched by margin checks, until its trigger price is reached, then places an ordinary
order (MARKET for the ``*_MARKET`` types, LIMIT at ``price`` for STOP / TAKE_PROFIT) in the
matching engine. Its life: NEW -> TRIGGERING -> TRIGGERED (the order is in the engine) ->
FINISHED (that order filled, canceled or expired); or NEW -> CANCELED; or REJECTED when the
engine refused the order at trigger time (reason in ``rm``).

Trigger rules (Binance's New-Algo-Order page), on the working type's price (MARK_PRICE: the mark;
CONTRACT_PRICE: the last trade price):
  STOP, STOP_MARKET:               BUY when price >= triggerPrice, SELL when price <= triggerPrice
  TAKE_PROFIT, TAKE_PROFIT_MARKET: BUY when price <= triggerPrice, SELL when price >= triggerPrice

This module holds the order object and its JSON shapes; :mod:`venue` places and triggers them.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .filters import SymbolSpec
from .matching import Order, avg_price

ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT")
MARKET_KINDS = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
WORKING_TYPES = ("MARK_PRICE", "CONTRACT_PRICE")
ALGO_OPEN = ("NEW",)


@dataclass
class AlgoOrder:
    """One algo order, as the venue keeps it (prices and quantities in units, see filters)."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str              # STOP_MARKET | TAKE_PROFIT_MARKET | STOP | TAKE_PROFIT
    tif: str
    qty: int                     # 0 with closePosition
    price: int                   # limit price of STOP / TAKE_PROFIT, else 0
    trigger: int
    working_type: str
    close_position: bool
    reduce_only: bool
    price_protect: bool
    create_time: int
    update_time: int
    status: str = "NEW"
    trigger_time: int = 0
    actual_order_id: int = 0
    reason: str = ""

    @property
    def open(self) -> bool:
        return self.status in ALGO_OPEN

    def triggered_by(self, price: int) -> bool:
        """Whether ``price`` (of the working type) meets the trigger condition."""
        stop = self.order_type in ("STOP", "STOP_MARKET")
        if (self.side == "BUY") == stop:
            return price >= self.trigger
        return price <= self.trigger

    def to_state(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_state(cls, d: dict) -> "AlgoOrder":
        return cls(**d)


def algo_json(spec: SymbolSpec, a: AlgoOrder, order: Order | None = None,
              query: bool = True) -> dict:
    """The algo order object: POST answers without the actual order's fields (``query=False``),
    GET /fapi/v1/algoOrder and openAlgoOrders with them."""
    d = {
        "algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "algoType": "CONDITIONAL",
        "orderType": a.order_type, "symbol": a.symbol, "side": a.side, "positionSide": "BOTH",
        "timeInForce": a.tif, "quantity": spec.fmt_qty(a.qty), "algoStatus": a.status,
    }
    if query:
        d["actualOrderId"] = str(a.actual_order_id) if a.actual_order_id else ""
        d["actualPrice"] = _avg(spec, order)
    d.update({
        "triggerPrice": spec.fmt_price(a.trigger), "price": spec.fmt_price(a.price),
        "icebergQuantity": None,
    })
    if query:
        zero = spec.fmt_price(0)
        d.update({"tpTriggerPrice": zero, "tpPrice": zero, "slTriggerPrice": zero,
                  "slPrice": zero, "tpOrderType": ""})
    d.update({
        "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": a.working_type,
        "priceMatch": "NONE", "closePosition": a.close_position, "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
    })
    if not query:
        d.update({"activatePrice": "", "callbackRate": ""})
    d.update({"createTime": a.create_time, "updateTime": a.update_time,
              "triggerTime": a.trigger_time, "goodTillDate": 0})
    return d


def _avg(spec: SymbolSpec, order: Order | None) -> str:
    if order is None or not order.executed:
        return f"{Decimal(0):.{spec.pp + 3}f}"
    return f"{avg_price(order, spec.qp):.{spec.pp + 3}f}"


def algo_update(spec: SymbolSpec, a: AlgoOrder, now: int, order: Order | None = None) -> dict:
    """An ALGO_UPDATE user-stream event (Binance's Event-Algo-Order-Update)."""
    o = {
        "caid": a.client_algo_id, "aid": a.algo_id, "at": "CONDITIONAL", "o": a.order_type,
        "s": a.symbol, "S": a.side, "ps": "BOTH", "f": a.tif, "q": spec.fmt_qty(a.qty),
        "X": a.status, "ai": str(a.actual_order_id) if a.actual_order_id else "",
        "ap": _avg(spec, order),
        "aq": spec.fmt_qty(order.executed) if order is not None else spec.fmt_qty(0),
        "act": order.type if order is not None else "0",
        "tp": spec.fmt_price(a.trigger), "p": spec.fmt_price(a.price), "V": "EXPIRE_MAKER",
        "wt": a.working_type, "pm": "NONE", "cp": a.close_position, "pP": a.price_protect,
        "R": a.reduce_only, "tt": a.trigger_time, "gtd": 0,
    }
    if a.reason:
        o["rm"] = a.reason
    return {"e": "ALGO_UPDATE", "T": now, "E": now, "o": o}
