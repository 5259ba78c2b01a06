"""exchangeInfo filters applied before an order is sent (so the venue never has to refuse it).

Rules (Binance USD-M common-definition): PRICE_FILTER ``price`` on the tick grid from minPrice,
within [minPrice, maxPrice]; LOT_SIZE / MARKET_LOT_SIZE ``qty`` on the step grid, within
[minQty, maxQty]; MIN_NOTIONAL ``price * qty >= notional`` (mark price for MARKET; reduce-only
orders are exempt); PERCENT_PRICE BUY ``price <= mark * multiplierUp``, SELL ``price >= mark *
multiplierDown``. A value of 0 disables its rule.

Quantities are rounded down to the step (never trade more than asked); prices are rounded to the
tick away from the market (down for BUY, up for SELL) so a limit order is never more aggressive
than the strategy asked for.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .errors import FilterRejected
from .schemas import SymbolFilters


def _d(x) -> Decimal:
    return Decimal(str(x))


def _to_grid(value: Decimal, base: Decimal, step: Decimal, rounding) -> Decimal:
    if step <= 0:
        return value
    n = ((value - base) / step).to_integral_value(rounding=rounding)
    return base + n * step


def _plain(d: Decimal) -> str:
    s = format(d.normalize(), "f")
    return s


def apply_filters(f: SymbolFilters | None, side: str, order_type: str, qty: float,
                  price: float | None, mark_price: float | None = None,
                  reduce_only: bool = False) -> tuple[str, str | None]:
    """(quantity, price) as decimal strings that pass the filters, or :class:`FilterRejected`."""
    q = _d(qty)
    p = None if price is None else _d(price)
    if f is None:
        return _plain(q), None if p is None else _plain(p)
    if f.status not in ("TRADING", ""):
        raise FilterRejected(f"{f.symbol} is not trading (status {f.status})")
    market = order_type == "MARKET"
    step = _d(f.market_step_size if market and _d(f.market_step_size) > 0 else f.step_size)
    min_qty = _d(f.market_min_qty if market and _d(f.market_min_qty) > 0 else f.min_qty)
    max_qty = _d(f.market_max_qty if market and _d(f.market_max_qty) > 0 else f.max_qty)
    q = _to_grid(q, min_qty if step > 0 else Decimal(0), step, ROUND_FLOOR)
    if q <= 0 or (min_qty > 0 and q < min_qty):
        raise FilterRejected(f"quantity {qty} is below the minimum {f.min_qty} after rounding "
                             f"to step {step}")
    if max_qty > 0 and q > max_qty:
        raise FilterRejected(f"quantity {qty} is above the maximum {max_qty}")
    if p is not None:
        tick = _d(f.tick_size)
        min_p, max_p = _d(f.min_price), _d(f.max_price)
        p = _to_grid(p, min_p if tick > 0 else Decimal(0), tick,
                     ROUND_FLOOR if side == "BUY" else ROUND_CEILING)
        if min_p > 0 and p < min_p:
            raise FilterRejected(f"price {price} is below the minimum {f.min_price}")
        if max_p > 0 and p > max_p:
            raise FilterRejected(f"price {price} is above the maximum {f.max_price}")
        if mark_price:
            up, down = _d(f.multiplier_up), _d(f.multiplier_down)
            mark = _d(mark_price)
            if side == "BUY" and up > 0 and p > mark * up:
                raise FilterRejected(f"price {p} is above mark {mark_price} x {f.multiplier_up}")
            if side == "SELL" and down > 0 and p < mark * down:
                raise FilterRejected(f"price {p} is below mark {mark_price} x {f.multiplier_down}")
    notional_price = p if p is not None else (_d(mark_price) if mark_price else None)
    min_notional = _d(f.min_notional)
    if (not reduce_only and min_notional > 0 and notional_price is not None
            and q * notional_price < min_notional):
        raise FilterRejected(f"notional {_plain(q * notional_price)} is below the minimum "
                             f"{f.min_notional}")
    return _plain(q), None if p is None else _plain(p)


def stop_price(f: SymbolFilters | None, side: str, price: float) -> str:
    """A stop's trigger price on the tick grid, rounded away from the market: a SELL stop (below
    a long) down, a BUY stop (above a short) up, so it never fires sooner than asked."""
    p = _d(price)
    if f is not None and _d(f.tick_size) > 0:
        p = _to_grid(p, _d(f.min_price), _d(f.tick_size),
                     ROUND_FLOOR if side == "SELL" else ROUND_CEILING)
    return _plain(p)
