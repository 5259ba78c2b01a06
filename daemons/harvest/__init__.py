"""The harvest daemon: Binance USD-M market data to ``trades``, ``book`` and ``depth`` records.

Modules: ``streams`` (which URLs carry which streams), ``wsclient`` (websocket connections and
REST snapshots on a background thread), ``live`` (feed items -> records and actions, pure),
``replay`` (recorded files, paced), ``stage`` (the daemon).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the harvest daemon (``ofi daemon harvest`` / ``python -m daemons.harvest``)."""
    from ..tools.cli.daemon_cmd import main as daemon_main  # lazy: importing the package stays cheap

    return daemon_main("harvest", argv)
