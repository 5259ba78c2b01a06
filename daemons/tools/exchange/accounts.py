"""Accounts: USDT wallet, one-way positions with entry price, realized/unrealized PnL, margin.

Cross margin, single asset (USDT). Initial margin is notional / leverage at the mark price;
maintenance margin uses the first bracket's ratio. Liquidation is not simulated (the account
can go negative; ``liquidationPrice`` is reported as an estimate).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .filters import SymbolSpec

DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125
MAINT_RATIO = Decimal("0.004")
Q8 = Decimal("1e-8")


@dataclass
class Position:
    """A one-way position: signed qty (units), entry price, realized PnL."""

    qty: int = 0
    entry: Decimal = field(default_factory=Decimal)
    realized: Decimal = field(default_factory=Decimal)
    update_time: int = 0

    def unrealized(self, spec: SymbolSpec, mark: Decimal) -> Decimal:
        return spec.qty_dec(self.qty) * (mark - self.entry)


@dataclass
class Account:
    """One API key's account."""

    balance: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    update_time: int = 0
    margin_type: dict[str, str] = field(default_factory=dict)   # symbol -> ISOLATED (CROSSED: absent)
    dual_side: bool = False                                       # hedge mode flag (stored only)

    def isolated(self, symbol: str) -> bool:
        return self.margin_type.get(symbol) == "ISOLATED"

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position()
        return pos

    def lev(self, symbol: str) -> int:
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def fill(self, spec: SymbolSpec, side: str, qty: int, price: int, fee: Decimal,
             now: int) -> Decimal:
        """Apply one execution; returns the realized PnL of the trade (before fee)."""
        pos = self.position(spec.symbol)
        signed = qty if side == "BUY" else -qty
        px = spec.price_dec(price)
        realized = Decimal(0)
        if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            total = abs(pos.qty) + qty
            pos.entry = (pos.entry * abs(pos.qty) + px * qty) / total
            pos.qty += signed
        else:
            closed = min(qty, abs(pos.qty))
            direction = 1 if pos.qty > 0 else -1
            realized = spec.qty_dec(closed) * (px - pos.entry) * direction
            pos.qty += signed
            if pos.qty == 0:
                pos.entry = Decimal(0)
            elif (pos.qty > 0) != (direction > 0):
                pos.entry = px            # flipped through zero: the rest opens at this price
        pos.entry = pos.entry.quantize(Decimal("1e-8")) if pos.entry else Decimal(0)
        realized = realized.quantize(Q8)
        pos.realized += realized
        pos.update_time = now
        self.balance += realized - fee
        self.update_time = now
        return realized

    def opening_qty(self, symbol: str, side: str, qty: int) -> int:
        """The part of an order that would increase exposure (the rest reduces the position)."""
        pos = self.positions.get(symbol)
        cur = pos.qty if pos else 0
        if cur == 0 or (cur > 0) == (side == "BUY"):
            return qty
        return max(0, qty - abs(cur))

    def margins(self, specs: dict, marks: dict, open_orders) -> dict:
        """Wallet, unrealized PnL, position/order initial margin, maintenance, available."""
        upnl = Decimal(0)
        pos_im = Decimal(0)
        maint = Decimal(0)
        for sym, pos in self.positions.items():
            if not pos.qty:
                continue
            spec = specs[sym]
            mark = marks.get(sym) or pos.entry
            notional = abs(spec.qty_dec(pos.qty) * mark)
            upnl += pos.unrealized(spec, mark)
            pos_im += notional / self.lev(sym)
            maint += notional * MAINT_RATIO
        order_im = Decimal(0)
        for o in open_orders:
            spec = specs[o.symbol]
            opening = self.opening_qty(o.symbol, o.side, o.remaining)
            if opening:
                order_im += spec.notional(o.price, opening) / self.lev(o.symbol)
        available = self.balance + upnl - pos_im - order_im
        return {"wallet": self.balance, "upnl": upnl, "position_im": pos_im, "order_im": order_im,
                "maint": maint, "available": available}

    def to_state(self) -> dict:
        return {"balance": str(self.balance), "update_time": self.update_time,
                "leverage": dict(self.leverage), "margin_type": dict(self.margin_type),
                "dual_side": self.dual_side,
                "positions": {s: {"qty": p.qty, "entry": str(p.entry), "realized": str(p.realized),
                                  "update_time": p.update_time}
                              for s, p in self.positions.items()}}

    @classmethod
    def from_state(cls, d: dict) -> "Account":
        acct = cls(balance=Decimal(d["balance"]), leverage=dict(d.get("leverage", {})),
                   update_time=d.get("update_time", 0),
                   margin_type=dict(d.get("margin_type", {})), dual_side=d.get("dual_side", False))
        for s, p in d.get("positions", {}).items():
            acct.positions[s] = Position(qty=p["qty"], entry=Decimal(p["entry"]),
                                         realized=Decimal(p["realized"]),
                                         update_time=p.get("update_time", 0))
        return acct


def liquidation_estimate(spec: SymbolSpec, pos: Position, wallet: Decimal) -> Decimal:
    """Cross-margin liquidation price if this were the only position (0 when none)."""
    if not pos.qty:
        return Decimal(0)
    q = spec.qty_dec(pos.qty)
    # wallet + q*(L - entry) = |q|*L*maint  ->  L = (q*entry - wallet) / (q - |q|*maint)
    denom = q - abs(q) * MAINT_RATIO
    if denom == 0:
        return Decimal(0)
    liq = (q * pos.entry - wallet) / denom
    return max(liq, Decimal(0))
