"""``ofi bench``: benchmarks that print figures (JSON with --json)."""
from __future__ import annotations

import click
import orjson

from ... import config as configmod


@click.group()
def bench():
    """Benchmarks: bus, signals, research, exchange, broker, e2e. Figures, never pass/fail."""


def _print(data: dict, as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(data).decode())
    else:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@bench.command("bus")
@click.option("--sink", "sinks", multiple=True, type=click.Choice(["jsonl", "sqlite"]),
              help="Sink(s) to measure (default both).")
@click.option("--quick", is_flag=True, help="Fewer records (a smoke run, not a measurement).")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_bus(sinks, quick, as_json):
    """Append, read and writer-to-reader latency (two processes) for each sink."""
    from bus.bench import run

    _print(run(sinks or ("jsonl", "sqlite"), quick=quick), as_json)


@bench.command("signals")
@click.option("--input", "inputs", multiple=True, metavar="FILE",
              help="Recorded files (default: the USD-M BTCUSDT 2024-07-18/19 pair of the data dir).")
@click.option("--symbol", default="BTCUSDT", show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True, help="Runs per figure (best kept).")
@click.option("--workers", type=click.IntRange(1, 2), default=2, show_default=True,
              help="Processes of the end-to-end run (as `ofi signals --workers`).")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_signals(inputs, symbol, repeat, workers, as_json):
    """Events/s: files only parsed, the signal core alone, and `ofi signals` end to end."""
    from ..bench.signals import default_inputs, run

    paths = list(inputs) or default_inputs()
    if not paths:
        raise click.ClickException("no input files: pass --input or set OFI_DATA_DIR")
    _print(run(paths, symbol.upper(), repeat=max(1, repeat), workers=workers), as_json)


@bench.command("research")
@click.option("--copies", type=click.IntRange(1, 200), default=20, show_default=True,
              help="Copies of the recording in the corpus (the baselines' make_corpus.py).")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A corpus built beforehand (default: built in a temporary directory).")
@click.option("--runs", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Pairs (ours, plain loop) per figure, after one warm-up pair.")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_research(copies, corpus, runs, as_json):
    """Whole-process events/s and peak memory of raw and catalog signals, import and backtest,
    each beside the plain gunzip + orjson loop of the bench baselines."""
    from pathlib import Path

    from ..catalog.bench import run
    from ..bench.signals import data_dir

    try:
        _print(run(data_dir(), copies=copies, runs=runs,
                   corpus=Path(corpus) if corpus else None), as_json)
    except (FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


@bench.command("exchange")
@click.option("--seconds", type=float, default=5.0, show_default=True,
              help="Length of the place+cancel run.")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_exchange(seconds, as_json):
    """Orders/s (place+cancel, one signed client) and REST round trip p50/p99 of `ofi exchange`."""
    from ..exchange.bench import run

    _print(run(seconds), as_json)


@bench.command("broker")
@click.option("-n", "count", type=int, default=200, show_default=True, help="Intents timed.")
@click.option("--gap-ms", type=click.FloatRange(min=1), default=None,
              help="Append an intent every MS without waiting (default: one at a time).")
@click.option("--hang-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --gap-ms: about 1 order in N hangs until the broker's HTTP timeout.")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_broker(count, gap_ms, hang_every, as_json):
    """Intent-appended to order-acknowledged latency through the broker daemon (sim mode)."""
    from ..bench.broker import run

    if hang_every and gap_ms is None:
        raise click.UsageError("--hang-every needs --gap-ms")
    try:
        _print(run(n=count, gap_ms=gap_ms, hang_every=hang_every), as_json)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@bench.command("lateness")
@click.option("--input", "inputs", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False), help="Recorded file (repeat).")
@click.option("--symbol", required=True, help="Symbol, e.g. BTCUSDT.")
@click.option("--lateness-ms", type=click.FloatRange(min=0), default=None,
              help="Allowed lateness (default: signal.allowed_lateness_ms).")
@click.option("--minutes", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Minutes of the recording to replay.")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_lateness(inputs, symbol, lateness_ms, minutes, as_json):
    """Late records at an allowed lateness, the recording replayed at its receive times."""
    from ..bench.lateness import run

    if lateness_ms is None:
        lateness_ms = configmod.load()["signal"]["allowed_lateness_ms"]
    try:
        _print(run(list(inputs), symbol.upper(), lateness_ms, minutes), as_json)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@bench.command("e2e")
@click.option("--seconds", type=click.FloatRange(min=10), default=45.0, show_default=True,
              help="How long the pipeline trades.")
@click.option("--sink", type=click.Choice(["jsonl", "sqlite"]), default="jsonl", show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary home (its path is in the JSON).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
              help="YAML settings over the bench's own (e.g. harvest.streams).")
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
def bench_e2e(seconds, sink, keep, config, as_json):
    """Interval end -> order acknowledged, through every daemon under supervisord."""
    from ..supervise.bench_e2e import run

    try:
        _print(run(seconds, sink, keep, config), as_json)
    except configmod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
