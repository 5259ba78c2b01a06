"""``ofi halt`` / ``ofi resume`` / ``ofi flatten``: the kill switch (the trading state in
<home>/state/trading.json).

HALTED: the strategy sends nothing and the broker cancels open orders and places nothing new,
until ``ofi resume`` sets ACTIVE again. Each prints one line of the new state.
"""
from __future__ import annotations

import os
import time

import click
import orjson

from ... import config as configmod
from ...runtime import read_json
from ...trading import ACTIVE, HALTED, StateError, save_state
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
@click.option("--flatten", is_flag=True,
              help="Also close every position (reduce-only MARKET orders), as `ofi flatten`.")
@click.option("--wait-s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="With --flatten: how long to wait for the broker's report.")
@home_option
@json_option
def halt(reason, flatten, wait_s, home, as_json):
    """Stop trading: nothing new is sent and the broker cancels open orders."""
    if flatten:
        _flatten(home, reason, wait_s, as_json)
    else:
        _set(home, HALTED, reason, as_json)


@click.command("flatten")
@click.option("--reason", default="flatten", show_default=True, help="Why.")
@click.option("--wait-s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="How long to wait for the broker's report.")
@home_option
@json_option
def flatten_cmd(reason, wait_s, home, as_json):
    """HALTED, every open order canceled and every position closed with reduce-only MARKET
    orders by the broker (the strategy need not run); prints what the broker did."""
    _flatten(home, reason, wait_s, as_json)


def _flatten(home: str | None, reason: str, wait_s: float, as_json: bool) -> None:
    path = _home(home)
    try:
        st = save_state(path, HALTED, reason, by="ofi", flatten=True)
    except (StateError, OSError) as exc:
        raise click.ClickException(f"cannot set the trading state: {exc}") from None
    deadline = time.time() + wait_s
    report = None
    while True:
        beat = read_json(os.path.join(path, "run", "broker.json")) or {}
        f = beat.get("flatten")
        if isinstance(f, dict) and f.get("since") == st.since and f.get("state") != "running":
            report = f
            break
        if time.time() >= deadline:
            break
        time.sleep(0.2)
    if as_json:
        click.echo(orjson.dumps({"trading": st.to_dict(), "flatten": report}).decode())
    else:
        click.echo(st.line())
        for cid, o in sorted(((report or {}).get("sent") or {}).items()):
            click.echo(f"sent {o['side']} {o['qty']:g} {o['symbol']} reduce-only MARKET ({cid})")
    if report is None:
        raise click.ClickException(
            f"the broker did not report the flatten within {wait_s:g}s (is it running? see "
            "`ofi status`); it closes the positions when it runs, trading stays HALTED")
    if report.get("state") != "done":
        left = ", ".join(f"{s} {q:g}" for s, q in sorted((report.get("left") or {}).items()))
        raise click.ClickException(f"flatten {report.get('state')}: positions left: {left or '-'}")
    if not as_json:
        click.echo("flat: no position and no open order left")


@click.command()
@click.option("--reason", default="manual", show_default=True, help="Why trading resumes.")
@home_option
@json_option
def resume(reason, home, as_json):
    """Resume trading (state ACTIVE)."""
    _set(home, ACTIVE, reason, as_json)
