"""The report stage: Markdown and HTML reports with PNG charts, built from the spools alone.

Modules: ``period`` (--date/--since), ``data`` (reading spools of a period), ``metrics`` (pure
computations), ``sections`` (what the report says), ``charts`` (matplotlib PNGs), ``render``
(Markdown and HTML), ``build`` (one report end to end), ``stage`` (the daemon).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the report daemon (``ofi daemon report`` / ``python -m daemons.report``)."""
    from ..tools.cli.daemon_cmd import main as daemon_main  # lazy: importing the package stays cheap

    return daemon_main("report", argv)
