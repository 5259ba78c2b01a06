"""``ofi daemon NAME``: run one stage in the foreground (what supervisord starts)."""
from __future__ import annotations

import importlib
import sys

import click

# stage name -> module whose ``main(argv)`` runs it
STAGES = {
    "harvest": "daemons.harvest",
    "signal": "daemons.signal",
    "strategy": "daemons.strategy",
    "broker": "daemons.broker",
    "report": "daemons.report",
    "exchange": "daemons.exchange",
}


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", type=click.Choice(sorted(STAGES)))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def daemon(name, args):
    """Run the daemon NAME in the foreground (supervisord's programs call this).

    Flags after NAME go to the daemon: --config, --home, --sink, --symbols, --mode.
    """
    try:
        mod = importlib.import_module(STAGES[name])
    except ModuleNotFoundError:
        raise click.ClickException(f"the {name} daemon is not available in this build") from None
    sys.exit(mod.main(list(args)))
