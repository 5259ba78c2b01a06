"""``ofi alerts``: the recent records of the ``alerts`` topic."""
from __future__ import annotations

import re

import click
import orjson

from bus import now_ms

from .common import json_option, open_cli_bus, pass_config

_AGO = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def since_ms(text: str, now: int) -> int:
    """``--since``: an ISO 8601 time (UTC unless it has an offset), epoch milliseconds, or a
    duration ago (``30m``, ``2h``, ``1d``); ValueError with a one-line message."""
    value = text.strip()
    m = re.fullmatch(r"(\d{1,9})([smhd])", value)
    if m:
        return now - int(m.group(1)) * _AGO[m.group(2)]
    from daemons.report.period import epoch_ms

    try:
        ms = epoch_ms(value)
    except ValueError:
        raise ValueError(f"invalid --since {text!r}: expected an ISO time (e.g. "
                         "2024-03-05T12:00:00Z), epoch milliseconds or a duration such as "
                         "30m, 2h, 1d") from None
    if ms < 0:
        raise ValueError(f"invalid --since {text!r}: before 1970")
    return ms


@click.command()
@click.option("--since", "since", metavar="T", default=None,
              help="Only alerts from this time on: ISO 8601 (UTC unless it has an offset), epoch "
                   "milliseconds, or a duration ago (30m, 2h, 1d).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Print at most the N newest.")
@json_option
@pass_config
def alerts(since, limit, as_json, cfg):
    """Recent alerts (HALTED, reconciliation, ban, stale feed, stop triggered, ...), oldest
    first: time, kind, subject, program and message. --json prints the records, one a line.

    Example: ofi alerts --since 2h
    """
    try:
        start = since_ms(since, now_ms()) if since is not None else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    bus = open_cli_bus(cfg)
    try:
        recs = [r for r in bus.read_all("alerts") if r.get("type") == "alert"
                and (start is None or int(r.get("ts") or 0) >= start)]
    finally:
        bus.close()
    recs = recs[-limit:]
    if as_json:
        for r in recs:
            click.echo(orjson.dumps(r).decode())
        return
    if not recs:
        click.echo("no alerts" + (" since then" if start is not None else ""), err=True)
        return
    from daemons.report.period import iso_ms

    for r in recs:
        ts = int(r.get("ts") or 0)
        click.echo(f"{iso_ms(ts - ts % 1000)} {r.get('kind', '?'):<14} "
                   f"{r.get('subject') or '-':<12} {r.get('source') or '-':<9} "
                   f"{r.get('message', '')}")
