"""Pre-trade risk as one pure function: may this order be sent now?

Checks, in order (the first that fails names the denial):

    halted               trading state HALTED: nothing passes
    bad_order            qty or reference price not a positive finite number, side not BUY/SELL
    not_reducing         a reduce-only order that would grow or flip the position
    reducing             trading state REDUCING: only reduce-only orders pass
    rate_limit           ``max_orders_per_minute`` orders were already sent in the last 60 s
    daily_loss           the day's PnL is at or below ``-daily_loss_limit_usdt`` (new exposure only)
    max_order_notional   qty x price above ``max_order_usdt`` (new exposure only)
    max_position         |position after the order| x price above ``max_position_usdt``
                         (only when the order grows |position|)

Reduce-only orders that pass the first checks are never held back by the size and loss limits: a
limit must not keep a position open. A limit of 0 turns that check off. No I/O, no clock: the
caller passes the trading state, the position, the recent order times and the day's PnL.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .state import HALTED, REDUCING

WINDOW_MS = 60_000
SIDES = {"BUY": 1, "SELL": -1}


@dataclass(frozen=True)
class Limits:
    """The ``risk`` config section."""

    max_position_usdt: float = 1000.0
    max_order_usdt: float = 500.0
    max_orders_per_minute: int = 30
    daily_loss_limit_usdt: float = 200.0

    @classmethod
    def from_config(cls, section: dict) -> "Limits":
        lim = cls(float(section["max_position_usdt"]), float(section["max_order_usdt"]),
                  int(section["max_orders_per_minute"]), float(section["daily_loss_limit_usdt"]))
        for key in cls.__dataclass_fields__:
            if getattr(lim, key) < 0:
                raise ValueError(f"risk.{key} must be >= 0 (0 turns the check off)")
        return lim


@dataclass(frozen=True)
class Order:
    """What risk needs to know of an order: ``price`` is the reference (mid or limit) price."""

    symbol: str
    side: str
    qty: float
    price: float
    reduce_only: bool = False

    @property
    def signed_qty(self) -> float:
        return self.qty * SIDES.get(self.side, 0)

    @property
    def notional(self) -> float:
        return abs(self.qty * self.price)


@dataclass(frozen=True)
class Verdict:
    """``approved`` or the denial ``code`` with a one-line ``detail``."""

    approved: bool
    code: str = "ok"
    detail: str = ""


APPROVED = Verdict(True)


def _deny(code: str, detail: str) -> Verdict:
    return Verdict(False, code, detail)


def orders_in_window(times_ms, now_ms: int) -> int:
    """How many of ``times_ms`` fall in the 60 s before ``now_ms`` (inclusive of now)."""
    return sum(1 for t in times_ms if now_ms - WINDOW_MS < t <= now_ms)


def check(limits: Limits, trading_state: str, position_qty: float, order: Order,
          orders_last_minute: int, daily_pnl: float) -> Verdict:
    """Approve or deny ``order`` given the symbol's signed ``position_qty`` (see module doc)."""
    if trading_state == HALTED:
        return _deny("halted", "trading is HALTED")
    if order.side not in SIDES or not _positive(order.qty) or not _positive(order.price):
        return _deny("bad_order", f"side {order.side!r}, qty {order.qty!r}, price {order.price!r}")
    new_pos = position_qty + order.signed_qty
    if order.reduce_only:
        same_side = math.copysign(1, order.signed_qty) == math.copysign(1, position_qty)
        if position_qty == 0 or same_side or order.qty > abs(position_qty):
            return _deny("not_reducing", f"reduce-only {order.side} {order.qty} against "
                                         f"position {position_qty}")
    elif trading_state == REDUCING:
        return _deny("reducing", "trading is REDUCING: only reduce-only orders pass")
    if limits.max_orders_per_minute and orders_last_minute >= limits.max_orders_per_minute:
        return _deny("rate_limit", f"{orders_last_minute} orders in the last minute "
                                   f"(max {limits.max_orders_per_minute})")
    if order.reduce_only:
        return APPROVED
    if limits.daily_loss_limit_usdt and daily_pnl <= -limits.daily_loss_limit_usdt:
        return _deny("daily_loss", f"day PnL {daily_pnl:.2f} <= -{limits.daily_loss_limit_usdt:g}")
    if limits.max_order_usdt and order.notional > limits.max_order_usdt:
        return _deny("max_order_notional", f"order notional {order.notional:.2f} > "
                                           f"{limits.max_order_usdt:g}")
    if limits.max_position_usdt and abs(new_pos) > abs(position_qty) \
            and abs(new_pos) * order.price > limits.max_position_usdt:
        return _deny("max_position", f"position notional {abs(new_pos) * order.price:.2f} > "
                                     f"{limits.max_position_usdt:g}")
    return APPROVED


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
