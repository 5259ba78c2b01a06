"""Binance USD-M JSON shapes for orders, trades, positions, accounts and user-stream events.

Decimals are strings, ids integers, times epoch milliseconds. Pure functions of venue objects.
"""
from __future__ import annotations

from decimal import Decimal

from .accounts import Account, Position, liquidation_estimate, MAINT_RATIO
from .filters import SymbolSpec
from .matching import Order, avg_price

Q8 = Decimal("1e-8")


def dec(x: Decimal, places: int = 8) -> str:
    """A Decimal as a fixed-point string with ``places`` decimals."""
    return f"{x:.{places}f}"


def avg_str(spec: SymbolSpec, order: Order) -> str:
    return dec(avg_price(order, spec.qp), spec.pp + 3) if order.executed else dec(Decimal(0), spec.pp)


def order_json(spec: SymbolSpec, o: Order, with_time: bool = True) -> dict:
    """The order object of POST/GET/DELETE /fapi/v1/order, openOrders, allOrders."""
    d = {
        "orderId": o.order_id, "symbol": o.symbol, "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": spec.fmt_price(o.price), "avgPrice": avg_str(spec, o),
        "origQty": spec.fmt_qty(o.qty), "executedQty": spec.fmt_qty(o.executed),
        "cumQty": spec.fmt_qty(o.executed), "cumQuote": dec(o.cum_quote, spec.pp + spec.qp),
        "timeInForce": o.tif, "type": o.type, "reduceOnly": o.reduce_only,
        "closePosition": o.close_position, "side": o.side, "positionSide": o.position_side,
        "stopPrice": spec.fmt_price(o.stop_price), "workingType": o.working_type,
        "priceProtect": False, "origType": o.orig_type or o.type, "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0, "updateTime": o.update_time,
    }
    if with_time:
        d["time"] = o.time
    return d


def order_update(spec: SymbolSpec, o: Order, x: str, now: int, last_qty: int = 0,
                 last_price: int = 0, fee: Decimal | None = None, trade_id: int = 0,
                 maker: bool = False, realized: Decimal = Decimal(0), er: str = "0") -> dict:
    """An ORDER_TRADE_UPDATE user-stream event (cumulative ``z``, last fill ``l``/``L``)."""
    o_ = {
        "s": o.symbol, "c": o.client_order_id, "S": o.side, "o": o.type, "f": o.tif,
        "q": spec.fmt_qty(o.qty), "p": spec.fmt_price(o.price), "ap": avg_str(spec, o),
        "sp": spec.fmt_price(o.stop_price), "x": x, "X": o.status, "i": o.order_id,
        "l": spec.fmt_qty(last_qty), "z": spec.fmt_qty(o.executed), "L": spec.fmt_price(last_price),
        "T": now, "t": trade_id, "b": "0", "a": "0", "m": maker, "R": o.reduce_only,
        "wt": o.working_type, "ot": o.orig_type or o.type, "ps": o.position_side,
        "cp": o.close_position,
        "rp": dec(realized), "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE",
        "gtd": 0, "er": er,
    }
    if fee is not None:
        o_["N"] = "USDT"
        o_["n"] = dec(fee)
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": o_}


def position_v2(spec: SymbolSpec, pos: Position, acct: Account, mark: Decimal) -> dict:
    q = spec.qty_dec(pos.qty)
    notional = q * mark
    return {
        "symbol": spec.symbol, "positionAmt": spec.fmt_qty(pos.qty),
        "entryPrice": dec(pos.entry, spec.pp + 5) if pos.qty else "0.0",
        "breakEvenPrice": dec(_break_even(pos), spec.pp + 5) if pos.qty else "0.0",
        "markPrice": dec(mark), "unRealizedProfit": dec(pos.unrealized(spec, mark)),
        "liquidationPrice": dec(liquidation_estimate(spec, pos, acct.balance)),
        "leverage": str(acct.lev(spec.symbol)), "maxNotionalValue": _max_notional(acct.lev(spec.symbol)),
        "marginType": "isolated" if acct.isolated(spec.symbol) else "cross",
        "isolatedMargin": "0.00000000", "isAutoAddMargin": "false",
        "positionSide": "BOTH", "notional": dec(notional), "isolatedWallet": "0",
        "updateTime": pos.update_time,
    }


def position_v3(spec: SymbolSpec, pos: Position, acct: Account, mark: Decimal,
                order_im: Decimal, bid_notional: Decimal, ask_notional: Decimal) -> dict:
    q = spec.qty_dec(pos.qty)
    notional = q * mark
    im = abs(notional) / acct.lev(spec.symbol)
    return {
        "symbol": spec.symbol, "positionSide": "BOTH", "positionAmt": spec.fmt_qty(pos.qty),
        "entryPrice": dec(pos.entry, spec.pp + 5) if pos.qty else "0.0",
        "breakEvenPrice": dec(_break_even(pos), spec.pp + 5) if pos.qty else "0.0",
        "markPrice": dec(mark), "unRealizedProfit": dec(pos.unrealized(spec, mark)),
        "liquidationPrice": dec(liquidation_estimate(spec, pos, acct.balance)),
        "isolatedMargin": "0", "notional": dec(notional), "marginAsset": "USDT",
        "isolatedWallet": "0", "initialMargin": dec(im + order_im),
        "maintMargin": dec(abs(notional) * MAINT_RATIO), "positionInitialMargin": dec(im),
        "openOrderInitialMargin": dec(order_im), "adl": 0,
        "bidNotional": dec(bid_notional), "askNotional": dec(ask_notional),
        "updateTime": pos.update_time,
    }


def _break_even(pos: Position) -> Decimal:
    # entry moved by the taker fees of opening and closing
    fee = Decimal("0.0005") * 2
    return pos.entry * (1 + fee) if pos.qty > 0 else pos.entry * (1 - fee)


def _max_notional(lev: int) -> str:
    for cap_lev, cap in ((125, 50000), (100, 600000), (75, 3000000), (50, 12000000),
                         (25, 70000000), (20, 100000000), (10, 230000000), (5, 480000000)):
        if lev >= cap_lev:
            return str(cap)
    return "1800000000"


def account_update(acct: Account, positions: list[tuple[SymbolSpec, Position, Decimal]],
                   now: int, reason: str = "ORDER", bc: Decimal = Decimal(0)) -> dict:
    """An ACCOUNT_UPDATE user-stream event (changed positions only; ``bc``: the balance change
    other than PnL and commission, e.g. a funding fee)."""
    return {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
        "m": reason,
        "B": [{"a": "USDT", "wb": dec(acct.balance), "cw": dec(acct.balance),
               "bc": dec(bc) if bc else "0"}],
        "P": [{"s": spec.symbol, "pa": spec.fmt_qty(pos.qty),
               "ep": dec(pos.entry, spec.pp + 5) if pos.qty else "0",
               "bep": dec(_break_even(pos), spec.pp + 5) if pos.qty else "0",
               "cr": dec(pos.realized), "up": dec(pos.unrealized(spec, mark)),
               "mt": "isolated" if acct.isolated(spec.symbol) else "cross",
               "iw": "0", "ps": "BOTH"} for spec, pos, mark in positions],
    }}


LEVERAGE_BRACKETS = [
    (1, 125, 50000, 0, "0.004", 0), (2, 100, 600000, 50000, "0.005", 50),
    (3, 75, 3000000, 600000, "0.0065", 950), (4, 50, 12000000, 3000000, "0.01", 11450),
    (5, 25, 70000000, 12000000, "0.02", 131450), (6, 20, 100000000, 70000000, "0.025", 481450),
    (7, 10, 230000000, 100000000, "0.05", 2981450), (8, 5, 480000000, 230000000, "0.1", 14481450),
    (9, 4, 600000000, 480000000, "0.125", 26481450), (10, 3, 800000000, 600000000, "0.15", 41481450),
    (11, 2, 1200000000, 800000000, "0.25", 121481450),
    (12, 1, 1800000000, 1200000000, "0.5", 421481450),
]


def leverage_bracket(symbol: str) -> dict:
    return {"symbol": symbol, "notionalCoef": 1.0, "brackets": [
        {"bracket": b, "initialLeverage": lev, "notionalCap": cap, "notionalFloor": floor,
         "maintMarginRatio": float(mmr), "cum": float(cum)}
        for b, lev, cap, floor, mmr, cum in LEVERAGE_BRACKETS]}


def income_row(tran_id: int, symbol: str, kind: str, amount: Decimal, now: int,
               trade_id: str = "") -> dict:
    """One GET /fapi/v1/income row."""
    return {"symbol": symbol, "incomeType": kind, "income": dec(amount), "asset": "USDT",
            "info": kind, "time": now, "tranId": tran_id, "tradeId": trade_id}
