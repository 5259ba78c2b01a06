"""A price-level order book in integer units (the public market the venue shows and trades on).

Levels are absolute quantities; a quantity of 0 removes the level. ``last_update_id`` is the
``u`` of the last diff applied, which is what the REST snapshot reports as ``lastUpdateId``.
"""
from __future__ import annotations

from bisect import bisect_left, insort


class Book:
    """Bids and asks as {price_units: qty_units} with sorted price lists."""

    def __init__(self):
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._bid_px: list[int] = []   # ascending; best bid is the last
        self._ask_px: list[int] = []   # ascending; best ask is the first
        self.last_update_id = 0

    def set(self, side: str, price: int, qty: int) -> None:
        """Set the absolute quantity of a level (``side`` is "b" or "a")."""
        levels, keys = (self.bids, self._bid_px) if side == "b" else (self.asks, self._ask_px)
        if qty <= 0:
            if levels.pop(price, None) is not None:
                i = bisect_left(keys, price)
                del keys[i]
            return
        if price not in levels:
            insort(keys, price)
        levels[price] = qty

    def clear(self) -> None:
        self.bids.clear(); self.asks.clear(); self._bid_px.clear(); self._ask_px.clear()

    def best_bid(self) -> tuple[int, int] | None:
        if not self._bid_px:
            return None
        p = self._bid_px[-1]
        return p, self.bids[p]

    def best_ask(self) -> tuple[int, int] | None:
        if not self._ask_px:
            return None
        p = self._ask_px[0]
        return p, self.asks[p]

    def top(self, side: str, n: int) -> list[tuple[int, int]]:
        """The best ``n`` levels of a side, best first."""
        if side == "b":
            keys = self._bid_px[::-1][:n] if n < len(self._bid_px) else self._bid_px[::-1]
            return [(p, self.bids[p]) for p in keys[:n]]
        return [(p, self.asks[p]) for p in self._ask_px[:n]]

    def iter_side(self, side: str):
        """Levels of a side, best first, lazily (for sweeps that stop early)."""
        if side == "b":
            for p in reversed(self._bid_px):
                yield p, self.bids[p]
        else:
            for p in self._ask_px:
                yield p, self.asks[p]

    def depth(self, side: str) -> int:
        return len(self._bid_px) if side == "b" else len(self._ask_px)

    def worst(self, side: str) -> int | None:
        keys = self._bid_px if side == "b" else self._ask_px
        if not keys:
            return None
        return keys[0] if side == "b" else keys[-1]

    def mid2(self) -> int | None:
        """Twice the mid price (an integer), or None when a side is empty."""
        bb, ba = self.best_bid(), self.best_ask()
        if bb is None or ba is None:
            return None
        return bb[0] + ba[0]
