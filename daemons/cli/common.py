"""Options every verb shares (defined once), and the config/bus they lead to."""
from __future__ import annotations

import functools

import click

from bus import open_bus

from .. import config as configmod


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


def load_config(config_path=None, **overrides) -> dict:
    """Config from defaults, file, environment and the given dotted overrides."""
    return configmod.load(config_path, overrides)


def open_cli_bus(cfg: dict, sink: str | None = None):
    return open_bus(configmod.home_of(cfg), sink=sink or cfg["sink"], **cfg["bus"])


def pass_config(f):
    """Turn --config/--home/--sink into a loaded ``cfg`` argument."""
    @runtime_options
    @functools.wraps(f)
    def wrapper(*args, config_path=None, home=None, sink=None, **kwargs):
        cfg = load_config(config_path, home=home, sink=sink)
        return f(*args, cfg=cfg, **kwargs)
    return wrapper
