"""The strategy stage: ``signals`` in, risk-checked ``intents`` out.

Modules: ``rules`` (the pure OFI/CVD strategy), ``risk`` (pure pre-trade risk), ``state`` (the
trading state / kill switch), ``ids`` (deterministic client order ids), ``stage`` (the daemon).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the strategy daemon (``ofi daemon strategy`` / ``python -m daemons.strategy``)."""
    from ..tools.cli.daemon_cmd import main as daemon_main  # lazy: importing the package stays cheap

    return daemon_main("strategy", argv)
