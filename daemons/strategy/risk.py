"""Pre-trade risk as one pure function: may this order be sent now?

Checks, in order (the first that fails names the denial):

    halted               trading state HALTED: nothing passes
    bad_order            qty or reference price not a positive finite number, side not BUY/SELL
    not_reducing         a reduce-only order that would grow or flip the position
    reducing             trading state REDUCING: only reduce-only orders pass
    rate_limit           ``max_orders_per_minute`` orders were already sent in the last 60 s
    daily_loss           the day's PnL is at or below ``-daily_loss_limit_usdt`` (new exposure only)
    drawdown             the day's PnL is ``max_drawdown_usdt`` or more below its high (new exposure only)
    max_order_notional   qty x price above ``max_order_usdt`` (new exposure only)
    max_position         |position after the order| x price above ``max_position_usdt``
                         (only when the order grows |position|)

Reduce-only orders that pass the first checks are never held back by the size and loss limits: a
limit must not keep a position open. A limit of 0 turns that check off. No I/O, no clock: the
caller passes the trading state, the position, the recent order times and the day's PnL.

The day's PnL is real money (:class:`DayLedger`): per symbol, the broker's realized PnL minus
fees plus funding, all from the venue's fills and payments, plus the unrealized PnL of the
broker's position at the latest price (the venue's mark from the broker, or a fresher signal
mid), less the same at the start of the UTC day.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..trading import HALTED, REDUCING

WINDOW_MS = 60_000
SIDES = {"BUY": 1, "SELL": -1}


@dataclass(frozen=True)
class Limits:
    """The ``risk`` config section (the defaults are in ``etc/defaults.yaml`` alone)."""

    max_position_usdt: float
    max_order_usdt: float
    max_orders_per_minute: int
    daily_loss_limit_usdt: float
    max_drawdown_usdt: float

    @classmethod
    def from_settings(cls, s) -> "Limits":
        """From the typed ``risk`` settings (:class:`daemons.settings.Risk`, ranges checked
        there)."""
        return cls(s.max_position_usdt, s.max_order_usdt, s.max_orders_per_minute,
                   s.daily_loss_limit_usdt, s.max_drawdown_usdt)


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
          orders_last_minute: int, daily_pnl: float, drawdown: float = 0.0) -> Verdict:
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
    if limits.max_drawdown_usdt and drawdown >= limits.max_drawdown_usdt:
        return _deny("drawdown", f"day PnL {drawdown:.2f} below its high "
                                 f"(max {limits.max_drawdown_usdt:g})")
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


@dataclass
class _Money:
    """A symbol's money as the broker's last ``positions`` record has it (cumulative)."""

    realized: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    qty: float = 0.0
    entry: float = 0.0

    def equity(self, price: float | None) -> float:
        unrealized = self.qty * (price - self.entry) if price and self.qty and self.entry else 0.0
        return self.realized - self.fees + self.funding + unrealized


@dataclass
class DayLedger:
    """The UTC day's PnL and drawdown in real money, from the broker's ``positions`` records.

    A symbol's equity is ``realized - fees + funding + qty * (price - entry)``, the first three
    as the broker recorded them from the venue (cumulative), the last at the latest price. The
    day's PnL is the sum over symbols of equity now minus equity when the day began (a symbol
    first seen counts from zero: its whole history, the cautious side); the drawdown is the
    day's highest PnL minus the PnL now. :meth:`pnl` raises the high.
    """

    day: int | None = None
    money: dict[str, _Money] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)
    high: float = 0.0

    @property
    def seen(self) -> bool:
        return bool(self.money)

    def update(self, symbol: str, rec: dict, day: int, prices: dict) -> bool:
        """Fold a ``positions`` record; False when it carries no money (fees, funding)."""
        vals = [rec.get(k) for k in ("realized_pnl", "fees", "funding", "qty")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in vals):
            return False
        self.roll(day, prices)
        entry = rec.get("entry_price")
        self.money[symbol] = _Money(*(float(v) for v in vals),
                                    float(entry) if isinstance(entry, (int, float)) else 0.0)
        self.base.setdefault(symbol, 0.0)
        return True

    def roll(self, day: int, prices: dict) -> None:
        """A new UTC day: today's PnL counts from the equity of now."""
        if self.day is None or day > self.day:
            if self.day is not None:
                self.base = {s: m.equity(prices.get(s)) for s, m in self.money.items()}
                self.high = 0.0
            self.day = day

    def pnl(self, prices: dict) -> float:
        """The day's PnL at ``prices`` (symbol -> latest price)."""
        v = sum(m.equity(prices.get(s)) - self.base.get(s, 0.0) for s, m in self.money.items())
        self.high = max(self.high, v)
        return v

    def drawdown(self, prices: dict) -> float:
        return max(0.0, self.high - self.pnl(prices))

    def to_dict(self) -> dict:
        return {"day": self.day, "high": self.high, "base": dict(self.base),
                "money": {s: [m.realized, m.fees, m.funding, m.qty, m.entry]
                          for s, m in self.money.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "DayLedger":
        return cls(d.get("day"), {s: _Money(*map(float, v)) for s, v in (d.get("money") or {}).items()},
                   {s: float(v) for s, v in (d.get("base") or {}).items()}, float(d.get("high") or 0.0))
