"""``ofi mcp`` (the Broker Gateway as an MCP server) and the operator's side of its proposals:
``ofi proposals``, ``ofi approve ID``, ``ofi reject ID``.

The MCP SDK is imported by ``ofi mcp`` only; the operator verbs need the bus alone.
"""
from __future__ import annotations

import getpass
import os
import time

import click
import orjson

from bus import now_ms

from ... import proposals as P
from ..gateway import store
from .common import config_option, home_option, json_option, load_config


@click.command()
@config_option
@home_option
@click.option("--http", "http_port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve streamable HTTP on 127.0.0.1:PORT (path /mcp) instead of stdio.")
def mcp(config_path, home, http_port):
    """The Broker Gateway as an MCP server (stdio, or streamable HTTP on loopback).

    Read tools: get_status, get_position, get_open_orders, fetch_fills, get_signals, get_pnl,
    get_report, get_proposals. submit_order and cancel_order (only with mcp.allow_orders: true)
    never trade: they create proposals that an operator approves with `ofi approve ID` or
    rejects with `ofi reject ID`. halt stops trading at once. Every call is audited on the
    `audit` topic.

    Example client config: {"command": "ofi", "args": ["mcp", "--home", "/opt/ofi/var"]}
    """
    from ..gateway.server import load_config as load_gateway_config
    from ..gateway.server import serve

    cfg = load_gateway_config(config_path, home)
    serve(cfg, http_port)


def _ledger(cfg):
    bus = store.open_home_bus(cfg)
    try:
        return store.ledger_of(bus)
    finally:
        bus.close()


def _when(ms) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _line(v: dict) -> str:
    if v["action"] == "cancel":
        what = f"cancel {v['client_order_id']}"
    else:
        price = f" @ {v['price']:g}" if v.get("price") else ""
        what = (f"{v['side']} {v['qty']:g} {v['symbol']} {v['order_type']}{price}"
                f"{' reduce-only' if v.get('reduce_only') else ''}  id {v['client_order_id']}")
    extra = ""
    if v.get("outcome") and v["outcome"].get("code"):
        extra = f"  ({v['outcome']['code']}: {v['outcome'].get('detail')})"
    elif v.get("decision_reason"):
        extra = f"  ({v['decision_reason']})"
    return f"{v['id']:<6} {v['state']:<9} {_when(v['created_ms'])}  {what}{extra}"


@click.command()
@config_option
@home_option
@click.option("--state", type=click.Choice(P.STATES), default=None,
              help="Only proposals in this state.")
@json_option
def proposals(config_path, home, state, as_json):
    """Orders and cancels proposed through `ofi mcp`, with their state.

    pending (waiting for `ofi approve` / `ofi reject`), approved, rejected, expired, sent (the
    strategy passed it to the broker) or denied (approved, then refused by the risk check).
    """
    cfg = load_config(config_path, home=home)
    rows = _ledger(cfg).views(now_ms(), state)
    if as_json:
        for r in rows:
            click.echo(orjson.dumps(r).decode())
        return
    if not rows:
        click.echo("no proposals" + (f" in state {state}" if state else ""))
        return
    for r in rows:
        click.echo(_line(r))


def _decide(config_path, home, pid: str, approve: bool, reason: str, as_json: bool) -> None:
    cfg = load_config(config_path, home=home)
    bus = store.open_home_bus(cfg)
    by = f"ofi:{_user()}"
    try:
        with store.writer(bus, "decisions") as w:
            led = store.ledger_of(bus)    # read under the lock: one decision per proposal
            try:
                payload = P.decide(led, pid, approve, now_ms(), by, reason)
            except P.ProposalError as exc:
                raise click.ClickException(str(exc)) from None
            rec = w.append(payload)
    finally:
        bus.close()
    if as_json:
        click.echo(orjson.dumps(rec).decode())
        return
    led.add_decision(rec)
    click.echo(f"{'approved' if approve else 'rejected'}: {_line(led.view(pid, now_ms()))}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@click.command()
@click.argument("proposal_id")
@click.option("--reason", default="", help="Why (kept with the decision).")
@config_option
@home_option
@json_option
def approve(proposal_id, reason, config_path, home, as_json):
    """Approve a pending proposal: the strategy sends it through the risk checks to the broker."""
    _decide(config_path, home, proposal_id, True, reason, as_json)


@click.command()
@click.argument("proposal_id")
@click.option("--reason", default="", help="Why (kept with the decision).")
@config_option
@home_option
@json_option
def reject(proposal_id, reason, config_path, home, as_json):
    """Reject a pending proposal: it never reaches the broker."""
    _decide(config_path, home, proposal_id, False, reason, as_json)
