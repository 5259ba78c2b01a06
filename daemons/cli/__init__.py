"""The ``ofi`` command: a click group whose verbs are thin wrappers over library calls.

Expected failures (bad config or arguments, a locked topic, an unreachable venue) become one
line on stderr and a non-zero exit; only a bug shows a traceback, and only with OFI_DEBUG=1.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from bus import BusError

from ..config import ConfigError

# one module per verb or group of verbs; each exposes the click commands named here
VERBS = [
    ("daemons.cli.bus_cmds", ["tail", "bus_group"]),
    ("daemons.cli.daemon_cmd", ["daemon"]),
    ("daemons.cli.bench", ["bench"]),
    ("daemons.cli.data_cmd", ["data_group"]),
    ("daemons.cli.keys_cmd", ["keys_group"]),
    ("daemons.cli.signals_cmd", ["signals"]),
    ("daemons.cli.backtest_cmd", ["backtest"]),
    ("daemons.cli.exchange_cmd", ["exchange"]),
    ("daemons.cli.trading_cmds", ["halt", "resume"]),
    ("daemons.cli.report_cmd", ["report"]),
    ("daemons.cli.run_cmds", ["run", "status", "start", "stop", "health_listener"]),
]


class UserError(click.ClickException):
    """An expected failure: printed as one line, exit code 1."""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ofi-pipeline", prog_name="ofi")
def cli():
    """Order-flow (OFI/CVD) trading pipeline for Binance USD-M futures.

    Stages run as daemons under supervisord and talk through the file bus under --home.
    """


def _register() -> None:
    for module, names in VERBS:
        mod = importlib.import_module(module)
        for name in names:
            cli.add_command(getattr(mod, name))


_register()


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    try:
        rv = cli.main(args=argv, prog_name="ofi", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Abort:
        print("ofi: aborted", file=sys.stderr)
        return 130
    except click.UsageError as exc:
        print(f"ofi: {exc.format_message()}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"ofi: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"ofi: {exc}", file=sys.stderr)
        return 2
    except BusError as exc:
        print(f"ofi: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if os.environ.get("OFI_DEBUG"):
            raise
        print(f"ofi: internal error: {type(exc).__name__}: {exc} (OFI_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
