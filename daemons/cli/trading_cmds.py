"""``ofi halt`` / ``ofi resume``: the kill switch (the trading state in <home>/state/trading.json).

HALTED: the strategy sends nothing and the broker cancels open orders and places nothing new,
until ``ofi resume`` sets ACTIVE again. Each prints one line of the new state.
"""
from __future__ import annotations

import click
import orjson

from .. import config as configmod
from ..strategy.state import ACTIVE, HALTED, StateError, save_state
from .common import home_option, json_option


def _home(home: str | None) -> str:
    return str(configmod.home_of(configmod.load(None, {"home": home})))


def _set(home: str | None, state: str, reason: str, as_json: bool) -> None:
    try:
        st = save_state(_home(home), state, reason, by="ofi")
    except (StateError, OSError) as exc:
        raise click.ClickException(f"cannot set the trading state: {exc}") from None
    click.echo(orjson.dumps(st.to_dict()).decode() if as_json else st.line())


@click.command()
@click.option("--reason", default="manual", show_default=True, help="Why trading stops.")
@home_option
@json_option
def halt(reason, home, as_json):
    """Stop trading: nothing new is sent and the broker cancels open orders."""
    _set(home, HALTED, reason, as_json)


@click.command()
@click.option("--reason", default="manual", show_default=True, help="Why trading resumes.")
@home_option
@json_option
def resume(reason, home, as_json):
    """Resume trading (state ACTIVE)."""
    _set(home, ACTIVE, reason, as_json)
