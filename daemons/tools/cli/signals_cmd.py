"""``ofi signals``: SPEC section 5 over recorded files, as JSON Lines signal records."""
from __future__ import annotations

import os
import sys

import click
import orjson

from ... import settings
from .common import config_option, load_config, recorded_input_options


@click.command("signals")
@recorded_input_options
@click.option("--symbol", required=True, help="Symbol, e.g. BTCUSDT.")
@click.option("--interval-ms", type=int, default=None, help="Interval (default: signal.interval_ms).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the records here (default: stdout).")
@click.option("--workers", type=click.IntRange(1, 2), default=2, show_default=True,
              help="Processes: 2 digests the depth stream of a recording in a second one.")
@config_option
def signals(inputs, more, catalog, start, end, symbol, interval_ms, out_path, workers,
            config_path):
    """OFI/CVD signals over recorded market data, one JSON record per interval.

    Formats are detected per file: hftbacktest recordings (<local_ts> <json>), raw websocket
    JSON lines, data.binance.vision aggTrades / trades / bookTicker CSV; gzip or plain.
    Consecutive files of one format are one recording read in order; streams are merged by
    exchange time. The last interval is closed at the end of the input.

    With --catalog DIR the rows come from a market-data catalog (docs/catalog.md), optionally
    limited to [--from, --to): the same records as from the files it was imported from.

    Example: ofi signals --input btcusdt_20240718.gz btcusdt_20240719.gz --symbol BTCUSDT
    """
    if catalog is not None:
        if inputs or more:
            raise click.UsageError("give either --catalog or input files, not both")
        return _from_catalog(catalog, symbol, start, end, interval_ms, out_path, config_path)
    if start is not None or end is not None:
        raise click.UsageError("--from and --to go with --catalog")
    from ...marketdata.formats import FormatError
    from ...signal.core import SignalCore
    from ...signal.offline import OfflineRun
    from ...signal.split import DepthWorkerError

    paths = list(inputs) + list(more)
    if not paths:
        raise click.UsageError("give at least one --input FILE")
    for p in paths:
        if not os.path.isfile(p):
            raise click.ClickException(f"no such file: {p}")
    cfg = load_config(config_path, **({"signal.interval_ms": interval_ms} if interval_ms else {}))
    try:
        core = SignalCore.from_settings(settings.of(cfg).signal)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    symbol = symbol.upper()
    progress = sys.stderr.isatty()
    out = open(out_path, "wb") if out_path else sys.stdout.buffer
    dumps = orjson.dumps
    nl = orjson.OPT_APPEND_NEWLINE
    n = 0
    try:
        run = OfflineRun(paths, symbol, core, workers=workers,
                         stall_ms=cfg["signal"]["stall_ms"])
        for sig in run:
            out.write(dumps(sig, option=nl))
            n += 1
            if progress and n % 100 == 0:
                sys.stderr.write(f"\r{n} intervals, {run.messages} messages")
    except (FormatError, DepthWorkerError) as exc:
        raise click.ClickException(str(exc))
    finally:
        if out_path:
            out.close()
        else:
            out.flush()
    if progress:
        sys.stderr.write(f"\r{n} intervals, {run.messages} messages, "
                         f"{run.gaps} depth gaps, {len(run.stalls)} silent streams\n")


def _from_catalog(catalog, symbol, start, end, interval_ms, out_path, config_path) -> None:
    """The catalog path: a day of rows at a time read column-wise, signals by
    :class:`daemons.signal.columnar.SignalStream` (memory is that of a day)."""
    from ..catalog import read
    from ...signal.core import SignalCore

    cfg = load_config(config_path, **({"signal.interval_ms": interval_ms} if interval_ms else {}))
    try:
        core = SignalCore.from_settings(settings.of(cfg).signal)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    symbol = symbol.strip().upper()
    try:
        start_ms = read.parse_time(start) if start is not None else None
        end_ms = read.parse_time(end) if end is not None else None
        sources = read.symbol_sources(catalog, symbol, start_ms, end_ms)
        pieces = read.iter_symbol(catalog, symbol, start_ms, end_ms, levels=core.levels,
                                  full=False, sources=sources)
        from ...signal import columnar

        stream = columnar.SignalStream(core, symbol)
        dumps = orjson.dumps
        nl = orjson.OPT_APPEND_NEWLINE
        out = open(out_path, "wb") if out_path else sys.stdout.buffer
        rows = intervals = 0
        try:
            write = out.write
            for piece in pieces:
                recs = stream.feed(piece).records
                for r in recs:   # one write each: joining many dumps results is slower
                    write(dumps(r, option=nl))
                rows += len(piece)
                intervals += len(recs)
            last = stream.finish()
            if last is not None:
                out.write(dumps(last, option=nl))
                intervals += 1
        finally:
            if out_path:
                out.close()
            else:
                out.flush()
    except read.CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if not rows:
        raise click.ClickException(f"no {symbol} rows in the catalog {catalog} for that period")
    if sys.stderr.isatty():
        sys.stderr.write(f"{intervals} intervals, {rows} rows\n")
