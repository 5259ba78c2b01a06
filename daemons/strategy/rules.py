"""The default OFI/CVD strategy as pure functions: (params, view, signal) -> decision.

Per symbol the strategy keeps a :class:`View`: its signed position (the broker's position plus
the orders not yet done, see ``core.py``), the entry mid and time, the last exit time, the last
fusion seen and the day's paper PnL.

    flat      enter when ``fusion`` crosses ``entry_threshold`` (up: BUY, down through
              ``-entry_threshold``: SELL) with ``ofi_z`` and ``cvd_z`` of the same sign, outside
              the cooldown after the last exit; size = ``notional_usdt / mid`` rounded down to the
              symbol's step
    holding   exit (reduce-only, the whole position) on, in this order of precedence:
              stop  the position lost ``stop_loss_bps`` against the entry mid
              reversal  fusion crossed back through ``exit_threshold`` (long: fusion <= +x,
                        short: fusion >= -x)
              time  the position is older than ``max_hold_s``

:func:`decide` runs on each signal, with the signal's time (the end of its interval, exchange
time), so a replay of the same signals makes the same decisions. :func:`decide_timer` runs the
exits that need no signal (stop and time) on a clock and the latest known price, so they fire
when signals stop coming. No I/O here: the core (``core.py``) and tests call it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

# trigger -> one-letter code used in client order ids
CODES = {"cross": "E", "stop": "S", "reversal": "R", "time": "T"}
#: prefix of the code of an exit decided by the timer (WS, WT): its ids never equal a signal's
TIMER_CODE = "W"

#: step (quantity) and tick (price) sizes used when the config names none for a symbol
DEFAULT_INSTRUMENTS = {"BTCUSDT": (0.001, 0.1), "ETHUSDT": (0.001, 0.01)}
FALLBACK_INSTRUMENT = (0.001, 0.01)


class ParamsError(ValueError):
    """A strategy setting is out of range (one-line message naming the key)."""


@dataclass(frozen=True)
class Instrument:
    """Quantity step and price tick of one symbol (Binance LOT_SIZE / PRICE_FILTER)."""

    step: float
    tick: float


@dataclass(frozen=True)
class Params:
    """The strategy's settings (``strategy`` section of the config; the defaults are in
    ``etc/defaults.yaml`` alone)."""

    entry_threshold: float
    exit_threshold: float
    notional_usdt: float
    max_hold_s: float
    stop_loss_bps: float
    cooldown_s: float
    order_type: str
    exit_order_type: str
    instruments: dict

    @classmethod
    def from_settings(cls, s) -> "Params":
        """From the typed ``strategy`` settings (:class:`daemons.settings.Strategy`, which
        checks the ranges); raises :class:`ParamsError` for a bad ``instruments`` entry."""
        instruments = {sym: Instrument(*v) for sym, v in DEFAULT_INSTRUMENTS.items()}
        for i, item in enumerate(s.instruments or []):
            try:
                sym = str(item["symbol"]).upper()
                step, tick = float(item["step"]), float(item["tick"])
            except (TypeError, KeyError, ValueError):
                raise ParamsError(f"strategy.instruments[{i}] needs symbol, step and tick") \
                    from None
            if not (step > 0 and tick > 0):
                raise ParamsError(f"strategy.instruments[{i}] ({sym}): step and tick must be > 0")
            instruments[sym] = Instrument(step, tick)
        return cls(entry_threshold=s.entry_threshold, exit_threshold=s.exit_threshold,
                   notional_usdt=s.notional_usdt, max_hold_s=s.max_hold_s,
                   stop_loss_bps=s.stop_loss_bps, cooldown_s=s.cooldown_s,
                   order_type=s.order_type, exit_order_type=s.exit_order_type,
                   instruments=instruments)

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments.get(symbol) or Instrument(*FALLBACK_INSTRUMENT)


@dataclass(frozen=True)
class View:
    """What the strategy believes about one symbol (see the module docstring)."""

    qty: float = 0.0                  # signed position
    entry_mid: float | None = None
    entry_ms: int | None = None
    last_exit_ms: int | None = None
    last_fusion: float | None = None
    last_mid: float | None = None
    day: int = 0                      # UTC day number of ``realized``
    realized: float = 0.0             # the day's realized paper PnL (USDT, at decision mids)

    def unrealized(self) -> float:
        if not self.qty or self.entry_mid is None or self.last_mid is None:
            return 0.0
        return (self.last_mid - self.entry_mid) * self.qty

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "View":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Decision:
    """An order the strategy wants: side BUY/SELL, positive qty, why."""

    symbol: str
    side: str
    qty: float
    reduce_only: bool
    reason: str                       # "entry" | "exit"
    trigger: str                      # "cross" | "stop" | "reversal" | "time"
    order_type: str
    price: float | None
    now_ms: int
    mid: float | None
    fusion: float | None
    timer: bool = False               # decided by the timer (no signal), see decide_timer

    @property
    def code(self) -> str:
        return TIMER_CODE + CODES[self.trigger] if self.timer else CODES[self.trigger]

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side == "BUY" else -self.qty


def signal_time(signal: dict) -> int:
    """The exchange time a signal is known: the end of its interval (ms)."""
    return int(signal["bucket_ms"]) + int(signal.get("interval_ms") or 0)


def signal_mid(signal: dict) -> float | None:
    """The signal's mid when it is a positive number."""
    mid = _num(signal.get("mid"))
    return mid if mid is not None and mid > 0 else None


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def round_step(value: float, step: float) -> float:
    """``value`` rounded down to a multiple of ``step`` (exact in decimal)."""
    s = Decimal(repr(step))
    q = (Decimal(repr(value)) / s).to_integral_value(rounding=ROUND_DOWN) * s
    return float(q)


def round_tick(price: float, tick: float, side: str) -> float:
    """A limit price on the tick grid, on the passive side (BUY down, SELL up)."""
    t = Decimal(repr(tick))
    mode = ROUND_FLOOR if side == "BUY" else ROUND_CEILING
    return float((Decimal(repr(price)) / t).to_integral_value(rounding=mode) * t)


def decide(p: Params, view: View, signal: dict) -> Decision | None:
    """The order (if any) that ``signal`` calls for, given the current ``view``."""
    symbol = signal["symbol"]
    now = signal_time(signal)
    fusion, mid = _num(signal.get("fusion")), signal_mid(signal)
    inst = p.instrument(symbol)

    def order(side, qty, reduce_only, reason, trigger, order_type):
        price = None
        if order_type == "LIMIT":
            if mid is None:
                return None
            price = round_tick(mid, inst.tick, side)
        return Decision(symbol, side, qty, reduce_only, reason, trigger, order_type, price,
                        now, mid, fusion)

    if view.qty:
        trigger = exit_trigger(p, view, now, mid, fusion)
        if trigger is None:
            return None
        side = "SELL" if view.qty > 0 else "BUY"
        return order(side, abs(view.qty), True, "exit", trigger, p.exit_order_type)

    if fusion is None or mid is None:
        return None
    if view.last_exit_ms is not None and now - view.last_exit_ms < p.cooldown_s * 1000:
        return None
    direction = 1 if fusion >= p.entry_threshold else -1 if fusion <= -p.entry_threshold else 0
    if not direction:
        return None
    prev = view.last_fusion
    crossed = prev is None or (prev < p.entry_threshold if direction > 0
                               else prev > -p.entry_threshold)
    ofi_z, cvd_z = _num(signal.get("ofi_z")), _num(signal.get("cvd_z"))
    agree = ofi_z is not None and cvd_z is not None \
        and _sign(ofi_z) == direction and _sign(cvd_z) == direction
    if not (crossed and agree):
        return None
    qty = round_step(p.notional_usdt / mid, inst.step)
    if qty <= 0:
        return None
    return order("BUY" if direction > 0 else "SELL", qty, False, "entry", "cross", p.order_type)


def exit_trigger(p: Params, view: View, now: int, mid: float | None,
                 fusion: float | None) -> str | None:
    """Which exit the position of ``view`` calls for at ``now`` and ``mid`` (None: none);
    without a ``fusion`` (the timer) there is no reversal."""
    d = _sign(view.qty)
    if not d:
        return None
    if p.stop_loss_bps > 0 and mid is not None and view.entry_mid:
        loss_bps = -d * (mid / view.entry_mid - 1.0) * 1e4
        if loss_bps >= p.stop_loss_bps - 1e-9:   # at the level counts (float noise)
            return "stop"
    if fusion is not None and (fusion <= p.exit_threshold if d > 0
                               else fusion >= -p.exit_threshold):
        return "reversal"
    if p.max_hold_s > 0 and view.entry_ms is not None \
            and now - view.entry_ms >= p.max_hold_s * 1000:
        return "time"
    return None


def decide_timer(p: Params, view: View, symbol: str, now: int,
                 price: float | None) -> Decision | None:
    """The exit (stop or time) the position calls for at ``now`` (ms, the clock of
    ``view.entry_ms``) and the latest known ``price``, with no signal."""
    if price is not None and not price > 0:
        price = None
    trigger = exit_trigger(p, view, now, price, None)
    if trigger is None:
        return None
    side = "SELL" if view.qty > 0 else "BUY"
    limit = None
    if p.exit_order_type == "LIMIT":
        if price is None:
            return None
        limit = round_tick(price, p.instrument(symbol).tick, side)
    return Decision(symbol, side, abs(view.qty), True, "exit", trigger, p.exit_order_type, limit,
                    now, price, None, timer=True)


def observe(view: View, signal: dict) -> View:
    """The view after seeing ``signal`` (last fusion and mid; the day's PnL rolls at 00:00 UTC)."""
    now = signal_time(signal)
    day = now // 86_400_000
    fusion, mid = _num(signal.get("fusion")), _num(signal.get("mid"))
    if mid is None or not mid > 0:
        mid = view.last_mid
    new_day = day != view.day
    # built field by field: this runs on every signal, and dataclasses.replace costs 4x more
    return View(view.qty, view.entry_mid, view.entry_ms, view.last_exit_ms, fusion, mid,
                day if new_day else view.day, 0.0 if new_day else view.realized)


def _position(v: View, qty: float, entry_mid, entry_ms, last_exit_ms, realized: float) -> View:
    """``v`` with its position fields set (``dataclasses.replace`` costs 4x more, on every
    intent and position report)."""
    return View(qty, entry_mid, entry_ms, last_exit_ms, v.last_fusion, v.last_mid, v.day,
                realized)


def apply(view: View, d: Decision) -> View:
    """The view after ``d`` was sent, assuming it fills at the decision mid."""
    v = view
    new_qty = v.qty + d.signed_qty
    if abs(new_qty) < 1e-12:
        new_qty = 0.0
    if d.reduce_only or (v.qty and _sign(new_qty) != _sign(v.qty)):
        pnl = 0.0
        if d.mid is not None and v.entry_mid is not None:
            closed = min(abs(d.qty), abs(v.qty)) * _sign(v.qty)
            pnl = (d.mid - v.entry_mid) * closed
        if new_qty == 0.0:
            return _position(v, 0.0, None, None, d.now_ms, v.realized + pnl)
        if _sign(new_qty) != _sign(v.qty):  # flipped: the rest is a new position
            return _position(v, new_qty, d.mid, d.now_ms, v.last_exit_ms, v.realized + pnl)
        return _position(v, new_qty, v.entry_mid, v.entry_ms, v.last_exit_ms, v.realized + pnl)
    return _position(v, new_qty, d.mid if v.entry_mid is None else v.entry_mid,
                     d.now_ms if v.entry_ms is None else v.entry_ms, v.last_exit_ms, v.realized)


def correct(view: View, qty: float, entry_price: float | None, now_ms: int | None) -> View:
    """The view after the broker reported the real position ``qty`` (signed)."""
    v = view
    if abs(qty - v.qty) < 1e-12:
        return v
    if qty == 0:
        return _position(v, 0.0, None, None, now_ms if v.qty else v.last_exit_ms, v.realized)
    entry = entry_price if entry_price and entry_price > 0 else (v.entry_mid or v.last_mid)
    if not v.qty or _sign(qty) != _sign(v.qty):
        return _position(v, qty, entry, now_ms, v.last_exit_ms, v.realized)
    return _position(v, qty, entry, v.entry_ms, v.last_exit_ms, v.realized)
