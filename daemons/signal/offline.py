"""Signals over recorded files: the replay of :mod:`daemons.marketdata.replay` into the core.

The same :class:`~.core.SignalCore` the daemon runs; at the end of the input the open interval
is closed too (SPEC section 5).
"""
from __future__ import annotations

from typing import Iterator

from ..marketdata.replay import Replay
from .core import SignalCore


def run_files(paths: list[str], symbol: str, core: SignalCore | None = None,
              replay: Replay | None = None) -> Iterator[dict]:
    """Signal records (without seq/ts) of ``symbol`` over ``paths``, in order.

    Pass ``replay`` to read its counters (messages, gaps) afterwards.
    """
    core = core or SignalCore()
    replay = replay or Replay(paths, symbols={symbol}, symbol=symbol, levels=core.levels)
    process = core.process
    for rec in replay:
        out = process(rec)
        if out:
            yield from out
    yield from core.flush()
