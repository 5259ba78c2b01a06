"""Market data as columns: one symbol's rows in merge order (:class:`Rows`) and the codes
they carry. The catalog's reader (:mod:`daemons.tools.catalog.read`) makes them; the columnar
signal path (:mod:`daemons.signal.columnar`) and the backtest read them. No imports: numpy and
pyarrow come with the code that fills the columns.
"""
from __future__ import annotations

from dataclasses import dataclass

#: the merged sequence's kind codes, also the merge ranks of the streams
TRADE, BOOK, DEPTH = 0, 1, 2
KINDS = ("trades", "book", "depth")
#: depth row type codes
DEPTH_ROW, SNAPSHOT_ROW, GAP_ROW = 0, 1, 2


@dataclass
class Rows:
    """One symbol's rows in merge order: the sequence (``kind``, ``t``, ``key``) and each kind's
    columns, its rows in the same order (``trades``: t, E, price, qty, is_buy, market; ``book``:
    t, E, T, bid, bid_qty, ask, ask_qty; ``depth``: t, type (codes), bid_px, bid_qty, ask_px,
    ask_qty as (rows, levels) arrays: a missing level has price -inf / +inf and quantity 0).
    ``E`` and ``T`` are 0 where null."""

    symbol: str
    kind: object
    t: object
    key: object
    trades: dict
    book: dict
    depth: dict
    levels: int

    def __len__(self) -> int:
        return len(self.kind)
