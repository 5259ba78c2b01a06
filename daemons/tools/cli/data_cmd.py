"""``ofi data import`` / ``ofi data ls``: the market-data catalog (docs/catalog.md)."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import click
import orjson

from .common import json_option


@click.group("data")
def data_group():
    """The market-data catalog: recorded files parsed once into Parquet."""


@data_group.command("import")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--catalog", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Catalog directory (created if needed).")
@click.option("--symbol", default=None,
              help="Symbol of files that carry none (data.binance.vision CSV), e.g. BTCUSDT.")
@click.option("--levels", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Book levels per depth row.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
def import_cmd(files, catalog, symbol, levels, progress):
    """Import recorded files into the catalog.

    Every format ofi reads: hftbacktest recordings, websocket JSON lines, data.binance.vision
    aggTrades / trades / bookTicker CSV, gzipped or plain, and data.binance.vision .zip files
    (checked against the .CHECKSUM file beside them when there is one). Consecutive files of
    one format and symbol prefix form one source; importing the same files again changes
    nothing.

    Example: ofi data import btcusdt_20240718.gz btcusdt_20240719.gz --catalog ~/catalog
    """
    from ..catalog.importer import CatalogError, import_source, prepare, sources_of
    from ..catalog.store import manifests

    show = sys.stderr.isatty() if progress is None else progress
    created = not Path(catalog).exists()
    try:
        with tempfile.TemporaryDirectory(prefix="ofi-import-") as unpack:
            inputs = prepare(list(files), unpack)
            sources = sources_of(inputs)
            Path(catalog).mkdir(parents=True, exist_ok=True)
            with _progress(show) as bar:
                for src in sources:
                    names = ", ".join(i.name for i in src.inputs)
                    tick = None
                    if bar is not None:
                        task = bar.add_task(names, total=None, rate="")
                        started = time.perf_counter()

                        def tick(lines, task=task, started=started):
                            rate = lines / max(time.perf_counter() - started, 1e-9)
                            bar.update(task, completed=lines, rate=f"{rate:,.0f} lines/s")
                    res = import_source(catalog, src, levels=levels,
                                        symbol=symbol.upper() if symbol else None,
                                        progress=tick)
                    _report(res, names)
    except CatalogError as exc:
        if created and not manifests(catalog):  # a failed first import leaves no empty dir
            shutil.rmtree(catalog, ignore_errors=True)
        raise click.ClickException(str(exc))


def _progress(show: bool):
    if not show:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # the line count of a gzipped file is unknown until it is read: a pulsing bar, counts
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,.0f} lines"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), console=Console(stderr=True))


def _report(res, names: str) -> None:
    m = res.manifest
    if not res.imported:
        click.echo(f"{m['source_id']}  {names}: already in the catalog")
        return
    kinds = ", ".join(f"{k} {n:,}" for k, n in m["kinds"].items() if n)
    rate = res.lines / res.seconds if res.seconds else 0.0
    click.echo(f"{m['source_id']}  {names}: {kinds or 'no rows'} "
               f"({', '.join(m['symbols'])}; {res.lines:,} lines in {res.seconds:.2f} s, "
               f"{rate:,.0f} lines/s)")


@data_group.command("ls")
@click.option("--catalog", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Catalog directory.")
@json_option
def ls_cmd(catalog, as_json):
    """What the catalog holds: per symbol and date, rows per kind, sources, time range."""
    from ..catalog.store import KINDS, summary

    if not Path(catalog).is_dir():
        raise click.ClickException(f"no such catalog directory: {catalog}")
    rows = summary(catalog)
    if not rows:
        raise click.ClickException(f"{catalog}: no imported sources (ofi data import ...)")
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    head = ["symbol", "date", *KINDS, "first", "last", "sources"]
    table = [head]
    for r in rows:
        table.append([r["symbol"], r["date"], *(f"{r['kinds'].get(k, 0):,}" for k in KINDS),
                      _clock(r["first_ms"]), _clock(r["last_ms"]), " ".join(r["sources"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        cells = [c.rjust(w) if 2 <= i < 2 + len(KINDS) else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())


def _clock(ms) -> str:
    """``HH:MM:SS.mmm`` UTC of an epoch-ms time (the date is its own column)."""
    if ms is None:
        return "-"
    s, milli = divmod(int(ms), 1000)
    return f"{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{milli:03d}"
