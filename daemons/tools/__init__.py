"""The tools beside the five stages: the ``ofi`` command line (``cli``), supervision
(``supervise``), the local Binance exchange (``exchange``), research (``backtest``,
``catalog``), the MCP gateway (``gateway``) and the benchmarks (``bench``). The stages
(``daemons.harvest``, ``signal``, ``strategy``, ``broker``, ``report``) and their runtime import
from here only the command line's option parsing, the catalog's row layout and the gateway's
proposal rules (``docs/architecture.md``).
"""
