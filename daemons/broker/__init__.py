"""The broker stage: ``intents`` in; ``orders``, ``fills`` and ``positions`` out.

==============  ==================================================================================
module          what it holds
==============  ==================================================================================
orders          the order state machine (a transition table; leaf module)
journal         the broker's memory rebuilt from its own topics; positions from fills
reconcile       start-up comparison of the journal with the venue (pure)
ratelimit       request-weight and order-count budgets from headers (pure)
gateway         the gateway interface and its Binance USD-M implementation
mock            the in-process mock gateway (``mock_orders.jsonl``)
binance/        the REST client by protocol surface: urls, signing, errors, schemas, filters,
                http, userstream
executors       backtest / testnet / live executors (prepare, submit, cancel, fetch_fills,
                get_position, close)
keys            ``<home>/secrets/credentials.json`` (``ofi keys``)
execlog         ``<home>/log/exec_log.jsonl``, one line per gateway action
stage           the daemon
==============  ==================================================================================
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the broker daemon (``ofi daemon broker`` / ``python -m daemons.broker``).

    Flags: --config, --home, --sink, --symbols, --mode, and --confirm-live (the same as
    ``broker.confirm_live: true``); see ``daemons/tools/cli/daemon_cmd.py``.
    """
    from ..tools.cli.daemon_cmd import main as daemon_main

    return daemon_main("broker", argv)
