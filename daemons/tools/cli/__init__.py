"""The ``ofi`` command: a click group whose verbs are thin wrappers over library calls.

Expected failures (bad config or arguments, a locked topic, an unreachable venue) become one
line on stderr and a non-zero exit; only a bug shows a traceback, and only with OFI_DEBUG=1.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from ...config import ConfigError

# each verb: the module that defines it and the click command's name there. A verb's module is
# imported only when that verb runs (or for --help), so a command pays for its own imports only
VERBS = {
    "tail": ("daemons.tools.cli.bus_cmds", "tail"),
    "bus": ("daemons.tools.cli.bus_cmds", "bus_group"),
    "daemon": ("daemons.tools.cli.daemon_cmd", "daemon"),
    "bench": ("daemons.tools.cli.bench", "bench"),
    "data": ("daemons.tools.cli.data_cmd", "data_group"),
    "keys": ("daemons.tools.cli.keys_cmd", "keys_group"),
    "signals": ("daemons.tools.cli.signals_cmd", "signals"),
    "backtest": ("daemons.tools.cli.backtest_cmd", "backtest"),
    "exchange": ("daemons.tools.cli.exchange_cmd", "exchange"),
    "halt": ("daemons.tools.cli.trading_cmds", "halt"),
    "resume": ("daemons.tools.cli.trading_cmds", "resume"),
    "flatten": ("daemons.tools.cli.trading_cmds", "flatten_cmd"),
    "report": ("daemons.tools.cli.report_cmd", "report"),
    "alerts": ("daemons.tools.cli.alerts_cmd", "alerts"),
    "run": ("daemons.tools.cli.run_cmds", "run"),
    "status": ("daemons.tools.cli.run_cmds", "status"),
    "start": ("daemons.tools.cli.run_cmds", "start"),
    "stop": ("daemons.tools.cli.run_cmds", "stop"),
    "health-listener": ("daemons.tools.cli.run_cmds", "health_listener"),
    "mcp": ("daemons.tools.cli.mcp_cmds", "mcp"),
    "proposals": ("daemons.tools.cli.mcp_cmds", "proposals"),
    "approve": ("daemons.tools.cli.mcp_cmds", "approve"),
    "reject": ("daemons.tools.cli.mcp_cmds", "reject"),
}


class LazyGroup(click.Group):
    """A group whose verbs are imported when first asked for (see :data:`VERBS`)."""

    def list_commands(self, ctx):
        return sorted(VERBS)

    def get_command(self, ctx, name):
        where = VERBS.get(name)
        if where is None:
            return None
        return getattr(importlib.import_module(where[0]), where[1])


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ofi-pipeline", prog_name="ofi")
def cli():
    """Order-flow (OFI/CVD) trading pipeline for Binance USD-M futures.

    Stages run as daemons under supervisord and talk through the file bus under --home.
    """


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    return run_command(cli, argv, "ofi")


def run_command(command: click.Command, argv: list[str] | None = None, prog: str = "ofi") -> int:
    """Run a click command (the ``ofi`` group, or one of its commands on its own, as in
    ``python -m daemons.broker``) and return its exit code; expected failures are one line on
    stderr prefixed with ``prog``."""
    try:
        rv = command.main(args=argv, prog_name=prog, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except click.UsageError as exc:
        print(f"{prog}: {exc.format_message()}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"{prog}: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a bus error (one line), else a bug: one line unless asked
        from bus import BusError   # (imported here: most verbs never need the bus)

        if isinstance(exc, BusError):
            print(f"{prog}: {exc}", file=sys.stderr)
            return 1
        if os.environ.get("OFI_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (OFI_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
