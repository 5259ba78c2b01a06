"""``ofi backtest``: recorded data through the signal and strategy code to simulated fills."""
from __future__ import annotations

import sys
from contextlib import nullcontext

import click

from ...config import home_of
from .common import config_option, load_config, recorded_input_options


@click.command("backtest")
@recorded_input_options
@click.option("--symbol", required=True, help="Symbol, e.g. BTCUSDT.")
@click.option("--out", "out", metavar="DIR", type=click.Path(), default=None,
              help="Home to write the records and the report into; new or empty "
                   "(default: a new <home>/backtests/<SYMBOL>-<first date>).")
@click.option("--no-report", is_flag=True, help="Skip building the report.")
@click.option("--charts/--no-charts", default=True, show_default=True,
              help="Draw the report's PNG charts (matplotlib: about a second of a short run).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@config_option
def backtest(inputs, more, catalog, start, end, symbol, out, no_report, charts, progress,
             config_path):
    """Backtest the strategy over recorded market data, with simulated fills; print a report.

    The signal and strategy code are the daemons' own; orders fill against the recorded best
    bid/ask after backtest.latency_ms, paying backtest.taker_fee_bps / maker_fee_bps. The
    signals, intents, orders, fills and positions go to the bus of the output home with the
    market's time as their `ts`, so `ofi report --home DIR --date D` and `ofi tail` read them.
    The report (<out>/reports/backtest/report.md and .html) has PNG charts unless --no-charts.
    Input formats as for `ofi signals`; or --catalog DIR, a market-data catalog
    (docs/catalog.md), optionally limited to [--from, --to): the same records as from the files
    it was imported from.

    Example: ofi backtest --input btcusdt_20240718.gz btcusdt_20240719.gz --symbol BTCUSDT
    """
    from ..backtest import runner

    if catalog is not None:
        if inputs or more:
            raise click.UsageError("give either --catalog or input files, not both")
    else:
        if start is not None or end is not None:
            raise click.UsageError("--from and --to go with --catalog")
        if not (inputs or more):
            raise click.UsageError("give at least one --input FILE")
    # the charts' modules are imported by another process while this one runs the backtest
    with runner.ReportProcess() if charts and not no_report else nullcontext() as reports:
        if catalog is not None:
            return _from_catalog(runner, catalog, start, end, symbol, out, no_report, charts,
                                 progress, config_path, reports)
        return _from_files(runner, list(inputs) + list(more), symbol, out, no_report, charts,
                           progress, config_path, reports)


def _from_files(runner, paths, symbol, out, no_report, charts, progress, config_path, reports):
    symbol = symbol.strip().upper()
    cfg = load_config(config_path)
    try:
        info = runner.inspect_inputs(paths, symbol)
        runner.make_engine(cfg, symbol, out=None)   # bad settings: ConfigError before any output
        home = runner.check_home(out) if out else \
            runner.new_home(home_of(cfg) / "backtests", symbol, info.first_ms)
        if reports is not None:
            reports.watch(home)
        show = sys.stderr.isatty() if progress is None else progress
        if show:
            result = _run_with_bar(runner, paths, symbol, cfg, home)
        else:
            result = runner.run(paths, symbol, cfg, home)
    except runner.BacktestError as exc:
        raise click.ClickException(str(exc)) from None
    _print_summary(result, _report(runner, result, symbol, no_report, charts, reports))


def _report(runner, result, symbol, no_report, charts, reports):
    if no_report:
        return None
    if reports is not None:
        return reports.build(result, symbol, charts)
    return runner.build_report(result, symbol, charts)


def _from_catalog(runner, catalog, start, end, symbol, out, no_report, charts, progress,
                  config_path, reports):
    from ..catalog import read

    symbol = symbol.strip().upper()
    cfg = load_config(config_path)
    try:
        try:
            start_ms = read.parse_time(start) if start is not None else None
            end_ms = read.parse_time(end) if end is not None else None
        except read.CatalogError as exc:
            raise runner.BacktestError(str(exc)) from None
        sources = runner.catalog_sources(catalog, symbol, start_ms, end_ms)
        runner.make_engine(cfg, symbol, out=None)   # bad settings: ConfigError before any output
        first = max(sources[0]["first_ms"], start_ms or 0)
        home = runner.check_home(out) if out else \
            runner.new_home(home_of(cfg) / "backtests", symbol, first)
        if reports is not None:
            reports.watch(home)
        show = sys.stderr.isatty() if progress is None else progress
        if show:
            result = _catalog_with_bar(runner, catalog, symbol, cfg, home, start_ms, end_ms)
        else:
            result = runner.run_catalog(catalog, symbol, cfg, home, start_ms, end_ms)
    except runner.BacktestError as exc:
        raise click.ClickException(str(exc)) from None
    _print_summary(result, _report(runner, result, symbol, no_report, charts, reports))


def _catalog_with_bar(runner, catalog, symbol, cfg, home, start_ms, end_ms):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn("backtest {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(symbol, total=None)
        return runner.run_catalog(catalog, symbol, cfg, home, start_ms, end_ms,
                                  on_progress=lambda n: bar.update(task, completed=n),
                                  on_rows=lambda n: bar.update(task, total=n))


def _run_with_bar(runner, paths, symbol, cfg, home):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    total = runner.count_lines(paths)
    columns = (TextColumn("backtest {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("messages"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(symbol, total=total)
        return runner.run(paths, symbol, cfg, home,
                          on_progress=lambda n: bar.update(task, completed=n))


def _print_summary(result, report) -> None:
    s = result.summary
    rec = s.counts
    lines = [
        f"home: {result.home}",
        f"events: {s.events} in {result.elapsed_s:.2f} s ({result.events_per_s:,.0f} events/s)",
        f"signals: {rec['signals']}  intents: {s.intents}  denied: {s.denied}  "
        f"orders: {s.orders} ({s.open_orders} still open)  fills: {s.fills}",
        "position: " + (", ".join(f"{k} {v:g}" for k, v in s.position.items()) or "flat"),
        f"realized PnL: {s.realized_pnl:.4f}  fees: {s.fees:.4f}  "
        f"unrealized: {s.unrealized_pnl:.4f}  net: {s.net_pnl:.4f} (quote asset)",
    ]
    if report is not None:
        lines.append(f"report: {report}")
    click.echo("\n".join(lines))
