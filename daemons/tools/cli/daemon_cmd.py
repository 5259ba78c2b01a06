"""``ofi daemon NAME``: run one stage in the foreground (what supervisord starts).

Each stage is a click command built here from the shared options of ``common`` (the same
command ``python -m daemons.<stage>`` runs); a stage's module is imported only when it runs.
"""
from __future__ import annotations

import importlib

import click

from ...strategy.source import SOURCES
from .common import STANDALONE, daemon_options, daemon_overrides, mode_option, runtime_options, \
    symbols_option


def stage_command(name: str, stage, help: str | None = None, options=(), overrides=None):
    """A click command that runs one stage daemon.

    ``stage`` is a :class:`daemons.runtime.Stage` subclass, or ``"module:Class"`` imported when
    the command runs. The command takes :func:`common.daemon_options` plus ``options`` (click
    decorators); ``overrides(**their values)`` turns the latter into dotted config overrides.
    A config that does not load is a refusal: one line ``ofi daemon NAME: ...``, exit 2.
    """
    def run(config_path, home, sink, symbols, mode, **extra):
        from ... import config as configmod
        from ... import runtime

        try:
            cfg = configmod.load(config_path, {
                **daemon_overrides(home=home, sink=sink, symbols=symbols, mode=mode),
                **(overrides(**extra) if overrides else {})})
        except configmod.ConfigError as exc:
            click.echo(f"ofi daemon {name}: {exc}", err=True)
            runtime.hold_until_started()   # SIGTERM's default action still ends it at once
            return runtime.REFUSED
        return runtime.run(_stage_class(stage), cfg)

    for deco in reversed(tuple(options)):
        run = deco(run)
    return click.command(name=name, help=help, context_settings=STANDALONE)(daemon_options(run))


def _stage_class(stage):
    if isinstance(stage, str):
        module, _, cls = stage.partition(":")
        return getattr(importlib.import_module(module), cls)
    return stage


def _confirm_live(confirm_live: bool) -> dict:
    # the flag only ever turns the confirmation on: without it the configured value stands
    return {"broker.confirm_live": True if confirm_live else None}


harvest = stage_command(
    "harvest", "daemons.harvest.stage:HarvestStage",
    "Binance USD-M market data (websocket or recorded files) to trades, book and depth.")

signal = stage_command(
    "signal", "daemons.signal.stage:SignalStage",
    "OFI/CVD signals from trades, book and depth.")

broker = stage_command(
    "broker", "daemons.broker.stage:BrokerStage",
    "Place intents at the venue; publish orders, fills and positions.",
    options=[click.option("--confirm-live", is_flag=True, default=False,
                          help="Allow live mode to trade real money (the same as "
                               "broker.confirm_live: true).")],
    overrides=_confirm_live)

report = stage_command(
    "report", "daemons.report.stage:ReportStage",
    "Rebuild today's report from the spools periodically.")


@click.command(name="strategy", context_settings=STANDALONE)
@runtime_options
@click.option("--output", metavar="DIR", default=None,
              help="Home whose bus receives the intents (the same as --home).")
@symbols_option(help="Comma-separated symbols to trade (default: the configured ones).")
@mode_option(help="Execution mode (also EXECUTOR_MODE); the broker acts on it.")
@click.option("--signals-dir", metavar="DIR", default=None,
              help="Home, bus dir or signals topic dir to read signals from (default: --home).")
@click.option("--signals-source", type=click.Choice(SOURCES), default=None,
              help="Sink the signals are read from (auto: detect).")
def strategy(**opts):
    """Turn signals into risk-checked order intents (default OFI/CVD strategy)."""
    from ...strategy.stage import main

    return main(**opts)


# stage name -> its command, or "module:attribute" of a command imported when asked for
STAGES = {
    "harvest": harvest,
    "signal": signal,
    "strategy": strategy,
    "broker": broker,
    "report": report,
    "exchange": "daemons.tools.exchange:command",
}


class StageGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(STAGES)

    def get_command(self, ctx, name):
        cmd = STAGES.get(name)
        if isinstance(cmd, str):
            cmd = _stage_class(cmd)
        return cmd


@click.group(cls=StageGroup, context_settings=STANDALONE)
def daemon():
    """Run one stage daemon in the foreground (supervisord's programs call this).

    ofi daemon NAME --help lists the flags of a stage.
    """


def run_stage(stage_cls, argv: list[str] | None = None) -> int:
    """Run the stage class ``stage_cls`` as a daemon with the flags of ``ofi daemon <stage>``
    (--config, --home, --sink, --symbols, --mode) parsed from ``argv``: a stage of one's own."""
    import sys

    from . import run_command

    cmd = stage_command(stage_cls.name, stage_cls,
                        (stage_cls.__doc__ or "").strip().splitlines()[0]
                        if stage_cls.__doc__ else None)
    return run_command(cmd, sys.argv[1:] if argv is None else list(argv),
                       f"ofi daemon {stage_cls.name}")


def main(name: str, argv: list[str] | None = None) -> int:
    """``python -m daemons.<name>``: the stage's command, with ``ofi``'s error handling."""
    import sys

    from . import run_command

    cmd = daemon.get_command(None, name)
    return run_command(cmd, sys.argv[1:] if argv is None else list(argv),
                       f"python -m daemons.{name}")
