"""The matching engine's pure part: orders, book sweeps, time-in-force outcomes, fees.

Prices and quantities are integer units (see filters). Nothing here does I/O or reads a clock:
callers pass the book levels and the time.

A taker order walks the opposite side of the public book level by level (best first) up to its
limit price. A resting limit order fills as maker, at its own price, only by what the market
actually trades through it: a print strictly beyond its price (a buy: below, a sell: above) fills
at most the print's quantity, shared among the resting orders it went through in price-time
priority (:func:`maker_allocation`), one fill per order and print; the rest stays open
(PARTIALLY_FILLED). A print exactly at its price does not fill it (its place in the queue is
unknown, so stay conservative), and neither does a quote that merely reaches it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal

MAKER_FEE = Decimal("0.0002")
TAKER_FEE = Decimal("0.0005")

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


@dataclass
class Order:
    """One order, as the venue keeps it."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str                    # BUY | SELL
    type: str                    # LIMIT | MARKET
    tif: str                     # GTC | IOC | FOK | GTX (MARKET: GTC, as Binance reports it)
    qty: int
    price: int                   # 0 for MARKET
    reduce_only: bool
    time: int
    update_time: int
    status: str = "NEW"
    executed: int = 0
    cum_quote: Decimal = field(default_factory=Decimal)
    position_side: str = "BOTH"
    # an order placed by a triggered algo order: its type there, trigger price, working type
    orig_type: str = ""          # "" = same as type
    stop_price: int = 0
    working_type: str = "CONTRACT_PRICE"
    close_position: bool = False

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> int:
        return self.qty - self.executed

    def to_state(self) -> dict:
        d = dict(self.__dict__)
        d["cum_quote"] = str(self.cum_quote)
        return d

    @classmethod
    def from_state(cls, d: dict) -> "Order":
        d = dict(d)
        d["cum_quote"] = Decimal(d["cum_quote"])
        return cls(**d)


@dataclass(frozen=True)
class Plan:
    """What happens to a new order: taker fills, then ``rest`` / ``expire`` / a rejection."""

    fills: tuple[tuple[int, int], ...]    # (price units, qty units), in execution order
    then: str                             # "rest" | "expire" | "done" | "reject_fok" | "reject_gtx"

    @property
    def filled(self) -> int:
        return sum(q for _, q in self.fills)


def sign(side: str) -> int:
    return 1 if side == "BUY" else -1


def crosses(side: str, price: int, opposite_best: int | None) -> bool:
    """Whether a limit price would trade against the opposite best price."""
    if opposite_best is None:
        return False
    return price >= opposite_best if side == "BUY" else price <= opposite_best


def sweep(levels, qty: int, side: str, limit: int | None = None) -> list[tuple[int, int]]:
    """Take ``qty`` from ``levels`` (opposite side, best first), not beyond ``limit``."""
    fills: list[tuple[int, int]] = []
    left = qty
    for price, avail in levels:
        if left <= 0:
            break
        if limit is not None and not crosses(side, limit, price):
            break
        take = min(left, avail)
        if take > 0:
            fills.append((price, take))
            left -= take
    return fills


def plan_new(order_type: str, tif: str, side: str, qty: int, price: int, levels) -> Plan:
    """Decide a new order's taker fills and what becomes of the remainder (see :class:`Plan`)."""
    levels = iter(levels)
    head = next(levels, None)
    best = head[0] if head else None
    levels = itertools.chain([head] if head else [], levels)
    if order_type == "MARKET":
        fills = sweep(levels, qty, side)
        left = qty - sum(q for _, q in fills)
        return Plan(tuple(fills), "expire" if left else "done")
    if tif == "GTX":
        if crosses(side, price, best):
            return Plan((), "reject_gtx")
        return Plan((), "rest")
    fills = sweep(levels, qty, side, limit=price)
    left = qty - sum(q for _, q in fills)
    if tif == "FOK":
        return Plan(tuple(fills), "done") if left == 0 else Plan((), "reject_fok")
    if left == 0:
        return Plan(tuple(fills), "done")
    return Plan(tuple(fills), "expire" if tif == "IOC" else "rest")


def traded_through(order: Order, trade_price: int) -> bool:
    """Whether a market print at ``trade_price`` went through a resting limit order's price."""
    if not order.open or order.type != "LIMIT":
        return False
    return trade_price < order.price if order.side == "BUY" else trade_price > order.price


def maker_queue(orders, trade_price: int) -> list[Order]:
    """The resting ``orders`` (one side) that a print at ``trade_price`` traded through, in
    price-time priority: a buy's highest price first, a sell's lowest; then the oldest order id."""
    hit = [o for o in orders if traded_through(o, trade_price)]
    hit.sort(key=lambda o: (-o.price if o.side == "BUY" else o.price, o.order_id))
    return hit


def maker_allocation(orders, trade_price: int, trade_qty: int) -> list[tuple[Order, int]]:
    """Share one print among the resting ``orders`` (one side) it traded through: in
    :func:`maker_queue` order, each at most its remaining quantity, all together at most
    ``trade_qty``."""
    out, left = [], trade_qty
    for o in maker_queue(orders, trade_price):
        if left <= 0:
            break
        take = min(left, o.remaining)
        if take > 0:
            out.append((o, take))
            left -= take
    return out


def fee(notional: Decimal, maker: bool) -> Decimal:
    """Commission in quote currency (maker 0.02 %, taker 0.05 %), 8 decimals."""
    return (notional * (MAKER_FEE if maker else TAKER_FEE)).quantize(Decimal("1e-8"))


def apply_fill(order: Order, qty: int, notional: Decimal, now: int) -> None:
    """Add one execution to an order and move its status (FILLED or PARTIALLY_FILLED)."""
    order.executed += qty
    order.cum_quote += notional
    order.update_time = now
    order.status = "FILLED" if order.executed >= order.qty else "PARTIALLY_FILLED"


def avg_price(order: Order, qty_scale: int) -> Decimal:
    """Average fill price (cum quote / executed qty), 0 when nothing filled."""
    if not order.executed:
        return Decimal(0)
    return order.cum_quote / (Decimal(order.executed).scaleb(-qty_scale))
