"""Wire shapes -> domain dicts, only through the ``parse_*`` functions.

Domain shapes are the bus schemas agreed for the project (fills, positions) and
:class:`VenueOrder` for what the venue says about one order.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def _f(value, default: float = 0.0) -> float:
    if value is None or value == "":
        return default
    return float(value)


@dataclass(frozen=True)
class VenueOrder:
    """One order as the venue reports it (REST order object or ORDER_TRADE_UPDATE)."""

    client_order_id: str
    order_id: int | None
    symbol: str
    side: str
    status: str
    qty: float
    price: float | None
    executed_qty: float
    avg_price: float | None
    order_type: str = "MARKET"
    reduce_only: bool = False
    update_time: int | None = None
    fills: tuple = field(default=(), compare=False)   # fills known with the report (mock, stream)
    orig_type: str = ""            # the type it was placed as (STOP_MARKET: a triggered stop's)
    close_position: bool = False   # placed by a closePosition stop


def parse_order(d: dict) -> VenueOrder:
    """A REST order object (new order RESULT/ACK, query, cancel, openOrders, allOrders)."""
    price = _f(d.get("price"))
    avg = _f(d.get("avgPrice"))
    return VenueOrder(
        client_order_id=d.get("clientOrderId", ""), order_id=d.get("orderId"),
        symbol=d.get("symbol", ""), side=d.get("side", ""), status=d.get("status", "NEW"),
        qty=_f(d.get("origQty")), price=price or None, executed_qty=_f(d.get("executedQty")),
        avg_price=avg or None, order_type=d.get("type") or d.get("origType") or "MARKET",
        reduce_only=bool(d.get("reduceOnly", False)),
        update_time=d.get("updateTime") or d.get("time"), orig_type=d.get("origType") or "",
        close_position=bool(d.get("closePosition", False)))


def parse_trade(d: dict, client_order_id: str | None = None) -> dict:
    """A ``userTrades`` row -> a ``fills`` payload."""
    return {
        "type": "fill", "symbol": d["symbol"], "client_order_id": client_order_id,
        "order_id": d.get("orderId"), "trade_id": d["id"], "side": d.get("side"),
        "qty": _f(d.get("qty")), "price": _f(d.get("price")), "fee": _f(d.get("commission")),
        "fee_asset": d.get("commissionAsset"), "realized_pnl": _f(d.get("realizedPnl")),
        "maker": bool(d.get("maker", False)), "T": d.get("time"),
    }


def parse_order_update(event: dict) -> tuple[VenueOrder, dict | None]:
    """An ORDER_TRADE_UPDATE event -> (the order's report, its fill if it is a TRADE)."""
    o = event["o"]
    order = VenueOrder(
        client_order_id=o.get("c", ""), order_id=o.get("i"), symbol=o.get("s", ""),
        side=o.get("S", ""), status=o.get("X", "NEW"), qty=_f(o.get("q")),
        price=_f(o.get("p")) or None, executed_qty=_f(o.get("z")),
        avg_price=_f(o.get("ap")) or None, order_type=o.get("o") or "MARKET",
        reduce_only=bool(o.get("R", False)), update_time=o.get("T") or event.get("T"),
        orig_type=o.get("ot") or "", close_position=bool(o.get("cp", False)))
    fill = None
    if o.get("x") == "TRADE" and _f(o.get("l")) > 0:
        fill = {
            "type": "fill", "symbol": order.symbol, "client_order_id": order.client_order_id,
            "order_id": order.order_id, "trade_id": o.get("t"), "side": order.side,
            "qty": _f(o.get("l")), "price": _f(o.get("L")), "fee": _f(o.get("n")),
            "fee_asset": o.get("N"), "realized_pnl": _f(o.get("rp")), "maker": bool(o.get("m")),
            "T": o.get("T") or event.get("T"),
        }
    return order, fill


@dataclass(frozen=True)
class VenueStop:
    """One algo (conditional) order as the venue reports it: REST algo order object or
    ALGO_UPDATE. ``status``: NEW (waiting), TRIGGERING, TRIGGERED (its order is in the engine:
    ``order_id``), FINISHED, CANCELED, REJECTED, EXPIRED."""

    client_algo_id: str
    algo_id: int | None
    symbol: str
    side: str
    status: str
    order_type: str
    trigger_price: float
    close_position: bool
    order_id: int | None = None
    reason: str = ""


def parse_algo_order(d: dict) -> VenueStop:
    """A REST algo order object (POST / GET /fapi/v1/algoOrder, openAlgoOrders)."""
    actual = d.get("actualOrderId")
    return VenueStop(
        client_algo_id=d.get("clientAlgoId", ""), algo_id=d.get("algoId"),
        symbol=d.get("symbol", ""), side=d.get("side", ""), status=d.get("algoStatus", "NEW"),
        order_type=d.get("orderType", ""), trigger_price=_f(d.get("triggerPrice")),
        close_position=bool(d.get("closePosition", False)),
        order_id=int(actual) if actual not in (None, "", 0, "0") else None)


def parse_algo_update(event: dict) -> VenueStop:
    """An ALGO_UPDATE user-stream event."""
    o = event["o"]
    actual = o.get("ai")
    return VenueStop(
        client_algo_id=o.get("caid", ""), algo_id=o.get("aid"), symbol=o.get("s", ""),
        side=o.get("S", ""), status=o.get("X", "NEW"), order_type=o.get("o", ""),
        trigger_price=_f(o.get("tp")), close_position=bool(o.get("cp", False)),
        order_id=int(actual) if actual not in (None, "", 0, "0") else None,
        reason=o.get("rm") or "")


def parse_position_risk(d: dict) -> dict:
    """A ``positionRisk`` row -> a ``positions`` payload (one-way mode)."""
    return {
        "type": "position", "symbol": d["symbol"], "qty": _f(d.get("positionAmt")),
        "entry_price": _f(d.get("entryPrice")), "realized_pnl": None,
        "unrealized_pnl": _f(d.get("unRealizedProfit")), "mark_price": _f(d.get("markPrice")) or None,
    }


def is_funding_update(event: dict) -> bool:
    """An ACCOUNT_UPDATE pushed for a funding payment (its reason ``a.m`` is FUNDING_FEE; a
    cross-margin one carries the balance only, no symbol: ``/fapi/v1/income`` says which)."""
    return event.get("e") == "ACCOUNT_UPDATE" and (event.get("a") or {}).get("m") == "FUNDING_FEE"


def parse_funding(row: dict) -> dict:
    """A ``/fapi/v1/income`` FUNDING_FEE row -> a ``funding`` payload (amount signed: < 0 paid)."""
    return {"type": "funding", "symbol": row["symbol"], "amount": _f(row.get("income")),
            "asset": row.get("asset") or "", "time_ms": int(row["time"]),
            "tran_id": int(row["tranId"])}


@dataclass(frozen=True)
class SymbolFilters:
    """The exchangeInfo filters of one symbol (0 disables a rule, as on the venue)."""

    symbol: str
    tick_size: str = "0"
    min_price: str = "0"
    max_price: str = "0"
    step_size: str = "0"
    min_qty: str = "0"
    max_qty: str = "0"
    market_step_size: str = "0"
    market_min_qty: str = "0"
    market_max_qty: str = "0"
    min_notional: str = "0"
    multiplier_up: str = "0"
    multiplier_down: str = "0"
    status: str = "TRADING"


def parse_exchange_info(d: dict) -> tuple[dict[str, SymbolFilters], list[dict]]:
    """exchangeInfo -> ({symbol: filters}, rateLimits)."""
    out = {}
    for s in d.get("symbols") or []:
        kw: dict = {"symbol": s["symbol"], "status": s.get("status", "TRADING")}
        for f in s.get("filters") or []:
            t = f.get("filterType")
            if t == "PRICE_FILTER":
                kw.update(tick_size=f.get("tickSize", "0"), min_price=f.get("minPrice", "0"),
                          max_price=f.get("maxPrice", "0"))
            elif t == "LOT_SIZE":
                kw.update(step_size=f.get("stepSize", "0"), min_qty=f.get("minQty", "0"),
                          max_qty=f.get("maxQty", "0"))
            elif t == "MARKET_LOT_SIZE":
                kw.update(market_step_size=f.get("stepSize", "0"),
                          market_min_qty=f.get("minQty", "0"), market_max_qty=f.get("maxQty", "0"))
            elif t == "MIN_NOTIONAL":
                kw.update(min_notional=str(f.get("notional", f.get("minNotional", "0"))))
            elif t == "PERCENT_PRICE":
                kw.update(multiplier_up=f.get("multiplierUp", "0"),
                          multiplier_down=f.get("multiplierDown", "0"))
        out[s["symbol"]] = SymbolFilters(**{k: str(v) if k != "status" else v for k, v in kw.items()})
    return out, list(d.get("rateLimits") or [])
