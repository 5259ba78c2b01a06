"""``ofi report``: build the report of a day or of a time range from the spools."""
from __future__ import annotations

import click

from bus import now_ms

from ...config import home_of
from .common import config_option, home_option, load_config


@click.command()
@click.option("--date", "date", metavar="D", default=None,
              help="UTC day: YYYY-MM-DD, today or yesterday (default: today).")
@click.option("--since", "since", metavar="T", default=None,
              help="From this time on instead: ISO 8601 (UTC unless it has an offset) or "
                   "epoch milliseconds.")
@click.option("--out", "out", metavar="DIR", type=click.Path(file_okay=False), default=None,
              help="Write the files here (default: <home>/reports/<date or range>).")
@config_option
@home_option
def report(date, since, out, config_path, home):
    """Build report.md, report.html and PNG charts from the spools; print report.md's path.

    PnL, fees, turnover, round trips and win rate, slippage against the decision mid, the
    signal's information coefficient, per-stage latency. Either sink is read. The same spools
    give byte-identical files, so cron may run it again.

    Example: ofi report --home /var/lib/ofi --date yesterday
    """
    from daemons.report.period import PeriodError, resolve

    try:
        period = resolve(date, since, now_ms())
    except PeriodError as exc:
        raise click.UsageError(str(exc)) from None
    cfg = load_config(config_path, home=home)
    from daemons.report.build import build  # lazy: matplotlib is slow to import

    click.echo(str(build(home_of(cfg), period, out)))
