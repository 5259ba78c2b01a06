"""``ofi exchange``: the local Binance USD-M compatible exchange (REST + websocket, one port).

The flags are parsed by :func:`daemons.exchange.main` (the same code ``ofi daemon exchange``
runs), so ``ofi exchange --help`` prints the full reference, fault spec included.
"""
from __future__ import annotations

import sys

import click


@click.command(add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def exchange(args):
    """Local Binance USD-M compatible exchange (sim or replay feed, faults). --help for all flags."""
    from daemons.exchange import main

    sys.exit(main(list(args), prog="ofi exchange"))
