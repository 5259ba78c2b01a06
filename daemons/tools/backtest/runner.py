"""The imperative shell around the engine: check the inputs, write a home's bus, build the report.

    info = inspect_inputs(paths, "BTCUSDT")          # fails early on a missing file / symbol
    home = new_home(base_dir, "BTCUSDT", info.first_ms)
    result = run(paths, "BTCUSDT", cfg, home)        # records in <home>/bus, summary
    result = run_catalog(catalog, "BTCUSDT", cfg, home, start_ms, end_ms)   # the same, read
                                                     # from a market-data catalog
    report_md = build_report(home, result)
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bus import open_bus

from ... import settings
from ...config import ConfigError
from ...signal.core import SignalCore
from ...strategy.core import StrategyCore
from .engine import TOPICS, Engine, Settings, Summary
from .engine import run as run_engine
from .engine import feed_rows

SAMPLE_MESSAGES = 5000     # messages read per file to find its symbols and start time
SUMMARY_FILE = "backtest.json"


class BacktestError(Exception):
    """An expected failure (missing file, symbol not in the files, bad setting); one line."""


@dataclass(frozen=True)
class InputInfo:
    symbols: frozenset          # symbols seen in the files' first messages
    first_ms: int | None        # earliest exchange time of ``symbol`` seen there
    lines: int | None = None    # lines of all files (for a progress bar), when counted


@dataclass
class Result:
    home: Path
    summary: Summary
    elapsed_s: float            # the replay and engine, without the report

    @property
    def events_per_s(self) -> float:
        return self.summary.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def inspect_inputs(paths: list[str], symbol: str) -> InputInfo:
    """Refuse missing or unreadable files, and files without ``symbol`` (first messages)."""
    from ...marketdata import formats   # lazy: the raw path's only (so are Replay's imports)

    if not paths:
        raise BacktestError("give at least one --input FILE")
    for p in paths:
        if not os.path.isfile(p):
            raise BacktestError(f"no such file: {p}")
    seen: set[str] = set()
    first = None
    try:
        for p in paths:
            for kind, recv, sym, data, *_ in itertools.islice(formats.read_tuples(p),
                                                              SAMPLE_MESSAGES):
                if sym is None:        # a CSV file named without a symbol: --symbol says it
                    sym = symbol
                seen.add(sym)
                if sym == symbol and kind != "other":
                    t = data.get("T") or data.get("E") or recv
                    t = formats.to_ms(int(t)) if t is not None else None
                    if t is not None and (first is None or t < first):
                        first = t
    except (formats.FormatError, OSError, EOFError, ValueError) as exc:
        raise BacktestError(str(exc)) from None
    if symbol not in seen:
        have = ", ".join(sorted(seen)) or "no market data"
        raise BacktestError(f"symbol {symbol} is not in the input files (they hold {have})")
    return InputInfo(frozenset(seen), first)


def count_lines(paths: list[str]) -> int:
    """Lines of all files (what :attr:`Replay.messages` counts up to)."""
    from ...marketdata import formats

    return sum(1 for p in paths for _ in formats.iter_lines(p))


def new_home(base: str | os.PathLike, symbol: str, first_ms: int | None) -> Path:
    """A fresh directory ``<base>/<symbol>-<first date>``, ``-2``, ``-3``... if taken."""
    date = time.strftime("%Y%m%d", time.gmtime(first_ms / 1000)) if first_ms else "unknown"
    stem = Path(base) / f"{symbol}-{date}"
    for n in itertools.count(1):
        path = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def check_home(home: str | os.PathLike) -> Path:
    """``--out DIR`` must be new or empty: a backtest never mixes with other records."""
    path = Path(home)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BacktestError(f"--out {home} is not an empty directory; choose a new one")
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_engine(cfg: dict, symbol: str, out) -> Engine:
    """An engine from the config (``signal``, ``strategy``, ``risk``, ``backtest`` sections);
    raises :class:`~daemons.config.ConfigError` for a setting out of range."""
    typed = settings.of(cfg)   # ranges and the id prefix are checked here (a ConfigError)
    try:
        strategy = StrategyCore.from_settings(typed, symbols=[symbol])
    except ValueError as exc:   # a bad strategy.instruments entry
        raise ConfigError(f"config: {exc}") from None
    signals = SignalCore.from_settings(typed.signal)
    run = Settings.from_settings(typed)
    return Engine(signals, strategy, run.executor(), out, run.denials_to_bus)


class BusOutput:
    """Records to the bus of a home, one writer per topic, envelope ``ts`` as given."""

    def __init__(self, home: str | os.PathLike, sink: str, bus_settings: dict):
        self.bus = open_bus(home, sink=sink, **bus_settings)
        self.writers = {t: self.bus.writer(t) for t in TOPICS}

    def write(self, topic: str, payload: dict, ts: int) -> dict:
        return self.writers[topic].append(payload, ts=ts)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.bus.close()


def run(paths: list[str], symbol: str, cfg: dict, home: str | os.PathLike,
        on_progress=None) -> Result:
    """Backtest ``symbol`` over ``paths`` into ``home``'s bus; ``on_progress(lines_read)``."""
    from ...marketdata import formats
    from ...marketdata.replay import Replay

    bus_settings = {k: v for k, v in cfg["bus"].items()
                    if k not in ("retention_bytes", "retention_hours")}  # keep every record
    out = BusOutput(home, cfg["sink"], bus_settings)
    try:
        engine = make_engine(cfg, symbol, out)
        replay = Replay(paths, symbols={symbol}, symbol=symbol, levels=engine.signals.levels)
        progress = (lambda _n: on_progress(replay.messages)) if on_progress else None
        t0 = time.perf_counter()
        try:
            summary = run_engine(replay, engine, progress)
        except formats.FormatError as exc:
            raise BacktestError(str(exc)) from None
        elapsed = time.perf_counter() - t0
        if on_progress:
            on_progress(replay.messages)
    finally:
        out.close()
    if not summary.events:
        raise BacktestError(f"no {symbol} market data in the input files")
    result = Result(Path(home), summary, elapsed)
    _write_summary(result, [os.path.abspath(p) for p in paths], symbol, cfg)
    return result


def catalog_sources(catalog, symbol: str, start_ms: int | None, end_ms: int | None
                    ) -> list[dict]:
    """The manifests of ``symbol``'s sources in the period; :class:`BacktestError` if none
    (no catalog, symbol or period: the message says what the catalog has)."""
    from ..catalog import read

    try:
        return read.symbol_sources(catalog, symbol, start_ms, end_ms)
    except read.CatalogError as exc:
        raise BacktestError(str(exc)) from None


def run_catalog(catalog, symbol: str, cfg: dict, home: str | os.PathLike,
                start_ms: int | None = None, end_ms: int | None = None,
                on_progress=None, on_rows=None) -> Result:
    """Backtest ``symbol`` over a market-data catalog's rows with ``start_ms <= t < end_ms``;
    the same records as :func:`run` over the files they were imported from.
    ``on_rows(n)`` is told the number of rows once read, ``on_progress(rows done)`` then."""
    from ..catalog import read
    from ...signal import columnar

    sources = catalog_sources(catalog, symbol, start_ms, end_ms)
    bus_settings = {k: v for k, v in cfg["bus"].items()
                    if k not in ("retention_bytes", "retention_hours")}  # keep every record
    t0 = time.perf_counter()
    engine = make_engine(cfg, symbol, None)
    if on_rows:   # the sources' rows (all of them: a period takes part of them)
        on_rows(sum(m.get("kinds", {}).get(k, 0) for m in sources for k in read.KINDS))
    stream = columnar.SignalStream(engine.signals, symbol)
    out = BusOutput(home, cfg["sink"], bus_settings)
    done = 0
    try:
        engine.out = out
        # a day of rows at a time: memory is that of a day, not of the period
        for rows in read.iter_symbol(catalog, symbol, start_ms, end_ms,
                                     levels=engine.signals.levels, sources=sources):
            feed_rows(rows, stream.feed(rows), engine, on_progress, done=done)
            done += len(rows)
        if not done:
            raise BacktestError(f"no {symbol} rows in the catalog {catalog} for that period")
        last = stream.finish()
        if last is not None:
            engine.signal(last)
        summary = engine.finish()
    except read.CatalogError as exc:
        raise BacktestError(str(exc)) from None
    finally:
        out.close()
    elapsed = time.perf_counter() - t0
    result = Result(Path(home), summary, elapsed)
    period = {"from": start_ms, "to": end_ms}
    _write_summary(result, [os.path.abspath(catalog)], symbol, cfg, period)
    return result


def _write_summary(result: Result, inputs: list[str], symbol: str, cfg: dict,
                   period: dict | None = None) -> None:
    """``<home>/backtest.json``: inputs, settings and results (no wall-clock figures)."""
    doc = {"symbol": symbol, "inputs": inputs,
           "settings": {k: cfg[k] for k in ("signal", "strategy", "risk", "backtest")},
           "summary": result.summary.to_dict()}
    if period is not None:
        doc["period"] = period
    (result.home / SUMMARY_FILE).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def report_period(result: Result, symbol: str):
    """The report period: every record written (their ``ts`` is simulated time)."""
    from ...report.period import Period, iso_ms

    s = result.summary
    since = s.first_ms
    until = max(s.last_ms, since) + 60_000   # acks of the last orders come after the data
    return Period(since, until, "backtest",
                  f"backtest {symbol} {iso_ms(since)} to {iso_ms(s.last_ms)}")


def build_report(result: Result, symbol: str, charts: bool = True) -> Path:
    """Build the report of the run (``<home>/reports/backtest/report.md``), with its PNG charts
    unless ``charts=False``; its path."""
    from ...report.build import build

    return build(result.home, report_period(result, symbol), charts=charts)


class ReportProcess:
    """:func:`build_report` in a process forked before the backtest starts, which imports the
    report's modules (matplotlib: a good part of a second) while this one runs the backtest,
    and, once told the home (:meth:`watch`), reads its records as they are written.

        with ReportProcess() as reports:
            reports.watch(home)
            result = run_catalog(..., home, ...)
            path = reports.build(result, symbol, charts)

    The report is the one :func:`build_report` writes (the same function, from the records on
    disk; :class:`daemons.report.data.Tail`). Without ``os.fork``, or when the forked process
    fails, it is built in this process (an error in it then surfaces here as it would have).
    Leaving the ``with`` block without :meth:`build` ends the forked process.
    """

    def __init__(self):
        self.pid = None
        self._jobs = self._answers = None

    def __enter__(self) -> "ReportProcess":
        if not hasattr(os, "fork"):
            return self
        jobs_r, jobs_w = os.pipe()
        answers_r, answers_w = os.pipe()
        pid = os.fork()
        if pid == 0:   # the report's process: never returns
            code = 1
            try:
                os.close(jobs_w)
                os.close(answers_r)
                code = _report_child(jobs_r, answers_w)
            finally:
                os._exit(code)
        os.close(jobs_r)
        os.close(answers_w)
        self.pid, self._jobs, self._answers = pid, jobs_w, answers_r
        return self

    def watch(self, home) -> None:
        """Have the forked process read ``home``'s records while they are written."""
        if self.pid is not None and self._jobs is not None:
            try:
                _send(self._jobs, ("watch", str(home)))
            except OSError:
                pass

    def build(self, result: Result, symbol: str, charts: bool = True) -> Path:
        """:func:`build_report`, by the forked process when there is one."""
        if self.pid is not None:
            job = ("build", str(result.home), report_period(result, symbol), charts)
            try:
                with open(self._jobs, "wb", closefd=True) as f:
                    self._jobs = None
                    _send(f.fileno(), job)
                with open(self._answers, "rb", closefd=True) as f:
                    self._answers = None
                    answer = f.read()
            except OSError:
                answer = b""
            self._reap()
            if answer.startswith(b"ok "):
                return Path(answer[3:].decode())
        return build_report(result, symbol, charts)

    def __exit__(self, *exc) -> None:
        self._reap(kill=True)

    def _reap(self, kill: bool = False) -> None:
        for fd in (self._jobs, self._answers):   # EOF: the forked process exits
            if fd is not None:
                os.close(fd)
        self._jobs = self._answers = None
        if self.pid is not None:
            pid, self.pid = self.pid, None
            if kill:   # no report to build: not even the end of its imports is waited for
                import signal

                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


#: how often the report's process reads the records written since it last did (seconds)
TAIL_EVERY_S = 0.05


def _send(fd: int, message) -> None:
    """One message to the report's process: its pickle's length (4 bytes), the pickle."""
    import pickle

    data = pickle.dumps(message)
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


def _report_child(jobs: int, answers: int) -> int:
    """The forked process of :class:`ReportProcess`: import, read the home's records while
    they are written (once told it), wait for the job, build."""
    import pickle
    import select

    from ...report import charts  # noqa: F401  (the slow import, before the job comes)
    from ...report.build import build
    from ...report.data import Tail

    tail = None
    buf = b""
    job = None
    while job is None:
        if tail is not None and not select.select([jobs], [], [], TAIL_EVERY_S)[0]:
            try:
                tail.poll()
            except Exception:   # reading it again at the end will tell
                tail.close()
                tail = None
            continue
        chunk = os.read(jobs, 1 << 16)
        if not chunk:   # the backtest ended without a report
            return 0
        buf += chunk
        while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
            n = int.from_bytes(buf[:4], "big")
            message, buf = pickle.loads(buf[4:4 + n]), buf[4 + n:]
            if message[0] == "watch":
                tail = Tail(message[1])
            elif message[0] == "build":
                job = message[1:]
    home, period, with_charts = job
    if tail is not None and os.path.abspath(tail.home) != os.path.abspath(home):
        tail.close()
        tail = None
    try:
        path = build(home, period, charts=with_charts, fork=True, tail=tail)
    except BaseException:   # the caller builds it again itself, and shows the error
        return 1
    with open(answers, "wb") as f:
        f.write(b"ok " + str(path).encode())
    return 0
