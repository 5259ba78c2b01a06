"""The broker's :class:`BacktestExecutor`, matched against its open orders only.

``BacktestExecutor._match`` walks every order it ever took on every book and trade record, so a
run slows down with each order (quadratic over a long backtest). This subclass hands it the
open orders alone (the same fill rules, the broker's code), and keeps the full book of orders
for duplicate ids and reports.
"""
from __future__ import annotations

from ..broker.executors import BacktestExecutor

_OPEN = ("NEW", "PARTIALLY_FILLED")


class OpenOrdersExecutor(BacktestExecutor):
    """:class:`BacktestExecutor` whose matching skips filled, canceled and rejected orders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._open: dict = {}

    def submit(self, order, mark_price=None, now_ms=None):
        report = super().submit(order, mark_price, now_ms=now_ms)
        self._open[order.client_order_id] = self.orders[order.client_order_id]
        return report

    def _match(self, symbol, trade):
        if not self._open:
            return []
        every = self.orders
        self.orders = self._open
        try:
            return super()._match(symbol, trade)
        finally:
            self.orders = every
            done = [cid for cid, so in self._open.items() if so.status not in _OPEN]
            for cid in done:
                del self._open[cid]
