"""The built-in stochastic market: a seeded zero-intelligence order-flow model per symbol.

Each step draws a Poisson number of order-book events: limit orders joining near the touch
(sometimes inside the spread), cancellations (mostly near the top), and taker orders that sweep
the touch with persistent direction (so order-flow imbalance and CVD carry information). The
event sequence depends only on the seed and the number of steps, so two runs with the same seed
publish the same trades, quotes and depth diffs (timestamps aside).

Feeds share one interface (also :class:`daemons.tools.exchange.replay.ReplayFeed`):
``advance(now_ms) -> events``, ``take(symbol, side, fills, now_ms) -> events``, ``books``,
``specs``, ``mark(symbol)``. An event is ``(kind, symbol, payload)`` with kind ``depth``,
``trade`` or ``bookTicker`` and the payload in Binance's wire format.
"""
from __future__ import annotations

import math
import random

from .book import Book
from .filters import SymbolSpec

STEP_MS = 50                     # one simulation step per 50 ms of wall time
EVENTS_PER_STEP = 2.5            # mean book events per step and symbol
P_ADD, P_CANCEL = 0.47, 0.40     # the rest are taker orders
LEVELS = 400                     # price levels kept per side
LEVEL_NOTIONAL = 30000.0         # mean resting notional per level (USDT)
TAKER_NOTIONAL = 4000.0          # median taker order notional (USDT)
PERSISTENCE = 0.68               # probability that a taker order keeps the previous side
VOL_PER_MINUTE = 0.0004          # standard deviation of the fair-value walk per minute (fraction)


class SimSymbol:
    """The simulated market of one symbol."""

    def __init__(self, spec: SymbolSpec, rng: random.Random, first_update_id: int):
        self.spec = spec
        self.rng = rng
        self.book = Book()
        self.book.last_update_id = first_update_id
        self.trade_id = first_update_id // 1000
        self.last_taker = "BUY"
        price = spec.price_units(spec.start_price)
        self.unit_price = float(spec.price_dec(price))
        qty_scale = 10 ** spec.qp
        self.level_qty = max(spec.min_qty, int(LEVEL_NOTIONAL / self.unit_price * qty_scale))
        self.taker_qty = max(spec.min_qty, int(TAKER_NOTIONAL / self.unit_price * qty_scale))
        tick = spec.tick
        mid = price - price % tick
        for i in range(LEVELS):
            for side, px in (("b", mid - tick * (i + 1)), ("a", mid + tick * i)):
                if i < 3 or rng.random() < 0.75:
                    self.book.set(side, px, self._level_size(i))
        self._last_top = self._top()
        self.fair = float(mid)
        self.fair_sd = float(mid) * VOL_PER_MINUTE / math.sqrt(60000 / STEP_MS)

    # --- random draws ------------------------------------------------------------------------
    def _level_size(self, distance: int) -> int:
        mean = self.level_qty * (0.3 + min(distance, 50) / 25)
        q = int(self.rng.lognormvariate(math.log(mean), 0.8))
        return self._lot(max(q, self.spec.min_qty))

    def _lot(self, q: int) -> int:
        step = self.spec.step
        return max(self.spec.min_qty, q - (q - self.spec.min_qty) % step)

    def _geometric(self, p: float) -> int:
        return int(math.log(1.0 - self.rng.random()) / math.log(1.0 - p))

    def _top(self):
        return self.book.best_bid(), self.book.best_ask()

    # --- one step ----------------------------------------------------------------------------
    def step(self, now: int) -> list[tuple]:
        changes: dict[tuple[str, int], int] = {}
        trades: list[tuple[str, int, int]] = []
        self.fair += self.rng.gauss(0.0, self.fair_sd)
        n = self._poisson(EVENTS_PER_STEP)
        for _ in range(n):
            r = self.rng.random()
            if r < P_ADD:
                self._add(changes)
            elif r < P_ADD + P_CANCEL:
                self._cancel(changes)
            else:
                self._taker(changes, trades)
        self._maintain(changes)
        return self._events(now, changes, trades)

    def take(self, side: str, fills, now: int) -> list[tuple]:
        """A venue client's taker order consumed these levels: publish the trades and the diff."""
        changes: dict[tuple[str, int], int] = {}
        trades = []
        book_side = "a" if side == "BUY" else "b"
        levels = self.book.asks if book_side == "a" else self.book.bids
        for price, qty in fills:
            left = levels.get(price, 0) - qty
            self.book.set(book_side, price, max(left, 0))
            changes[(book_side, price)] = max(left, 0)
            trades.append((side, price, qty))
        self._maintain(changes)
        return self._events(now, changes, trades)

    def _poisson(self, lam: float) -> int:
        k, p, L = 0, 1.0, math.exp(-lam)
        while True:
            p *= self.rng.random()
            if p <= L:
                return k
            k += 1

    def _set(self, changes, side, price, qty):
        self.book.set(side, price, qty)
        changes[(side, price)] = max(qty, 0)

    def _add(self, changes) -> None:
        side = "b" if self.rng.random() < 0.5 else "a"
        bb, ba = self.book.best_bid(), self.book.best_ask()
        tick = self.spec.tick
        if bb is None or ba is None:
            return
        spread_ticks = (ba[0] - bb[0]) // tick
        if spread_ticks > 1 and self.rng.random() < 0.6:
            k = 1 + self.rng.randrange(spread_ticks - 1)
            price = bb[0] + k * tick if side == "b" else ba[0] - k * tick
            dist = 0
        else:
            dist = self._geometric(0.22)
            price = bb[0] - dist * tick if side == "b" else ba[0] + dist * tick
        levels = self.book.bids if side == "b" else self.book.asks
        self._set(changes, side, price, levels.get(price, 0) + self._level_size(dist) // 2 + 1)

    def _cancel(self, changes) -> None:
        side = "b" if self.rng.random() < 0.5 else "a"
        depth = self.book.depth(side)
        if depth <= 5:
            return
        k = min(self._geometric(0.15), depth - 1)
        price, qty = self.book.top(side, k + 1)[k]
        frac = self.rng.random()
        left = 0 if frac < 0.35 else self._lot(int(qty * frac)) if qty > self.spec.min_qty else 0
        if left >= qty:
            left = 0
        self._set(changes, side, price, left)

    def _taker(self, changes, trades) -> None:
        m2 = self.book.mid2()
        if m2 is not None and self.rng.random() < 0.5:
            # takers chase the fair value: that is what moves the price
            gap = (self.fair - m2 / 2) / self.spec.tick
            side = "BUY" if self.rng.random() < 1 / (1 + math.exp(-max(-50, min(50, gap / 2)))) else "SELL"
        else:
            side = self.last_taker if self.rng.random() < PERSISTENCE else (
                "SELL" if self.last_taker == "BUY" else "BUY")
        self.last_taker = side
        qty = self._lot(int(self.rng.lognormvariate(math.log(self.taker_qty), 1.1)))
        book_side = "a" if side == "BUY" else "b"
        levels = self.book.top(book_side, 3)
        qty = min(qty, sum(q for _, q in levels))
        for price, avail in levels:
            if qty <= 0:
                break
            take = min(qty, avail)
            self._set(changes, book_side, price, avail - take)
            trades.append((side, price, take))
            qty -= take

    def _maintain(self, changes) -> None:
        """Keep about LEVELS levels a side: refill the far end, trim beyond it."""
        tick = self.spec.tick
        for side in ("b", "a"):
            while self.book.depth(side) > LEVELS + 20:
                self._set(changes, side, self.book.worst(side), 0)
            if self.book.depth(side) < LEVELS - 20:
                worst = self.book.worst(side)
                if worst is None:
                    other = self.book.best_ask() if side == "b" else self.book.best_bid()
                    worst = other[0] if other else self.spec.price_units(self.spec.start_price)
                for i in range(1, 21):
                    px = worst - i * tick if side == "b" else worst + i * tick
                    if px > 0:
                        self._set(changes, side, px, self._level_size(LEVELS))
            if self.book.depth(side) == 0:
                other = self.book.best_ask() if side == "b" else self.book.best_bid()
                px = other[0] - tick if side == "b" else other[0] + tick
                self._set(changes, side, px, self._level_size(0))

    # --- wire events -------------------------------------------------------------------------
    def _events(self, now: int, changes: dict, trades: list) -> list[tuple]:
        spec, sym, out = self.spec, self.spec.symbol, []
        for side, price, qty in trades:
            self.trade_id += 1
            out.append(("trade", sym, {
                "e": "trade", "E": now, "T": now, "s": sym, "t": self.trade_id,
                "p": spec.fmt_price(price), "q": spec.fmt_qty(qty), "X": "MARKET",
                "m": side == "SELL"}))
        if changes:
            prev = self.book.last_update_id
            U = prev + 1
            u = prev + len(changes)
            self.book.last_update_id = u
            bids = sorted(((p, q) for (s, p), q in changes.items() if s == "b"), reverse=True)
            asks = sorted((p, q) for (s, p), q in changes.items() if s == "a")
            out.append(("depth", sym, {
                "e": "depthUpdate", "E": now, "T": now, "s": sym, "U": U, "u": u, "pu": prev,
                "b": [[spec.fmt_price(p), spec.fmt_qty(q)] for p, q in bids],
                "a": [[spec.fmt_price(p), spec.fmt_qty(q)] for p, q in asks]}))
            top = self._top()
            if top != self._last_top and top[0] and top[1]:
                self._last_top = top
                (bp, bq), (ap, aq) = top
                out.append(("bookTicker", sym, {
                    "e": "bookTicker", "u": u, "s": sym, "b": spec.fmt_price(bp),
                    "B": spec.fmt_qty(bq), "a": spec.fmt_price(ap), "A": spec.fmt_qty(aq),
                    "T": now, "E": now}))
        return out


class SimFeed:
    """All simulated symbols, stepped on wall-clock time (one step per STEP_MS)."""

    live = True

    @staticmethod
    def market_ms(now_ms: int) -> int:
        """The market's time at wall time ``now_ms``: the wall clock itself."""
        return now_ms

    def __init__(self, specs: dict[str, SymbolSpec], seed: int, start_ms: int):
        self.specs = specs
        self.symbols = {}
        for i, sym in enumerate(sorted(specs)):
            rng = random.Random(f"{seed}:{sym}")
            self.symbols[sym] = SimSymbol(specs[sym], rng, 5_000_000_000 + i * 10_000_000)
        self.books = {s: m.book for s, m in self.symbols.items()}
        self.next_step = start_ms
        self.steps = 0

    def advance(self, now_ms: int, max_steps: int = 40) -> list[tuple]:
        """Run the steps due by ``now_ms`` (at most ``max_steps``; skip the backlog beyond)."""
        out: list[tuple] = []
        n = 0
        while self.next_step <= now_ms and n < max_steps:
            for sym in sorted(self.symbols):
                out.extend(self.symbols[sym].step(now_ms))
            self.next_step += STEP_MS
            self.steps += 1
            n += 1
        if self.next_step <= now_ms:
            self.next_step = now_ms + STEP_MS
        return out

    def seconds_to_next(self, now_ms: int) -> float:
        return max(0.0, (self.next_step - now_ms) / 1000)

    def take(self, symbol: str, side: str, fills, now_ms: int) -> list[tuple]:
        return self.symbols[symbol].take(side, fills, now_ms)

    def mark(self, symbol: str) -> int:
        """Mark price in price units (the mid, rounded down to a tick)."""
        book = self.books[symbol]
        m2 = book.mid2()
        if m2 is None:
            return self.specs[symbol].price_units(self.specs[symbol].start_price)
        return m2 // 2
