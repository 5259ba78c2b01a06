"""``ofi exchange``: the local Binance USD-M compatible exchange (REST + websocket, one port).

The command is :func:`daemons.tools.exchange.command` (the same one ``ofi daemon exchange`` and
``python -m daemons.tools.exchange`` run), so ``ofi exchange --help`` prints the full reference,
fault spec included.
"""
from __future__ import annotations

from daemons.tools.exchange import command as exchange

__all__ = ["exchange"]
