"""Options every verb shares (defined once), and the config/bus they lead to."""
from __future__ import annotations

import functools

import click

from ... import config as configmod


def home_option(f):
    return click.option("--home", envvar="OFI_HOME", default=None, metavar="DIR",
                        help="Runtime directory (default $OFI_HOME, else ./var).")(f)


def sink_option(f):
    return click.option("--sink", type=click.Choice(["jsonl", "sqlite"]), default=None,
                        help="Bus sink (default: the configured one; readers auto-detect).")(f)


def config_option(f):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        metavar="FILE", help="YAML file overriding etc/defaults.yaml.")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def recorded_input_options(f):
    """The market data of ``ofi signals`` / ``ofi backtest``: --input FILE... (and FILE...
    arguments), or --catalog DIR with --from / --to."""
    for deco in reversed((
            click.option("--input", "inputs", multiple=True, metavar="FILE",
                         help="Recorded file (repeat, or list several after one --input); "
                              "read in order."),
            click.argument("more", nargs=-1, metavar="[FILE]..."),
            click.option("--catalog", "catalog", metavar="DIR", default=None,
                         help="Read a market-data catalog (ofi data import) instead of files."),
            click.option("--from", "start", metavar="T", default=None,
                         help="With --catalog: from this time on (ISO date/time UTC, or epoch "
                              "ms)."),
            click.option("--to", "end", metavar="T", default=None,
                         help="With --catalog: before this time (ISO date/time UTC, or epoch "
                              "ms)."))):
        f = deco(f)
    return f


def runtime_options(f):
    """--config, --home and --sink together."""
    return config_option(home_option(sink_option(f)))


#: context settings of a command run on its own (``python -m daemons.<stage>``), as under ``ofi``
STANDALONE = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

def __getattr__(name: str):
    """``MODES``: the allowed ``broker.mode`` values, computed when first asked for."""
    if name == "MODES":
        return configmod.CHOICES["broker.mode"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _symbol_list(ctx, param, value):
    """'btcusdt, ETHUSDT' -> ['BTCUSDT', 'ETHUSDT']; None when not given (or empty)."""
    if not value:
        return None
    return [s.strip().upper() for s in value.split(",") if s.strip()] or None


def symbols_option(f=None, *, help="Comma-separated symbols (default: the configured ones)."):
    """--symbols SYM[,SYM...], given to the command as an upper-case list (or None)."""
    def deco(f):
        return click.option("--symbols", metavar="SYM[,SYM...]", default=None,
                            callback=_symbol_list, help=help)(f)
    return deco if f is None else deco(f)


def mode_option(f=None, *, help="Execution mode (default: the configured broker.mode)."):
    """--mode mock|sim|testnet|live."""
    def deco(f):
        return click.option("--mode", type=click.Choice(configmod.CHOICES["broker.mode"]),
                            default=None, help=help)(f)
    return deco if f is None else deco(f)


def daemon_options(f):
    """What every stage daemon takes: --config, --home, --sink, --symbols, --mode."""
    return runtime_options(symbols_option(mode_option(f)))


def daemon_overrides(home=None, sink=None, symbols=None, mode=None) -> dict:
    """The dotted config overrides of :func:`daemon_options`' values."""
    return {"home": home, "sink": sink, "broker.mode": mode, "symbols": symbols}


def load_config(config_path=None, **overrides) -> dict:
    """Config from defaults, file, environment and the given dotted overrides."""
    return configmod.load(config_path, overrides)


def open_cli_bus(cfg: dict, sink: str | None = None):
    from bus import open_bus   # here: most verbs never open the bus

    return open_bus(configmod.home_of(cfg), sink=sink or cfg["sink"], **cfg["bus"])


def pass_config(f):
    """Turn --config/--home/--sink into a loaded ``cfg`` argument."""
    @runtime_options
    @functools.wraps(f)
    def wrapper(*args, config_path=None, home=None, sink=None, **kwargs):
        cfg = load_config(config_path, home=home, sink=sink)
        return f(*args, cfg=cfg, **kwargs)
    return wrapper
