"""Backtests: recorded market data through the live signal and strategy code to simulated fills.

Modules: ``engine`` (the pure driver: market records -> signals, intents, orders, fills and
positions records, with the live :class:`~daemons.signal.core.SignalCore` and
:class:`~daemons.strategy.core.StrategyCore` and the broker's ``BacktestExecutor``),
``venue`` (the broker's executor matched against open orders only), ``runner`` (input checks,
the output home's bus, the ``backtest.json`` summary and the report).
``ofi backtest`` (daemons/cli/backtest_cmd.py) runs it.
"""
from __future__ import annotations
