"""The catalog read a piece at a time (``read.iter_symbol``) gives the rows of the whole period
(``read.read_symbol``) in the same order, and signals fed piece by piece
(``columnar.SignalStream``) equal the signals of the whole, wherever the pieces are cut: so
``ofi signals --catalog`` holds a few row groups, not the period, and still equals the raw
path."""
from __future__ import annotations

import random
import subprocess

import numpy as np
import orjson
import pytest

from daemons.tools.catalog import read
from daemons.marketdata.rows import KINDS, Rows
from daemons.signal import columnar
from daemons.signal.core import SignalCore

from conftest import OFI

USDM = ("btcusdt_20240718.gz", "btcusdt_20240719.gz")   # the recording spans midnight
MIDNIGHT = 1721347200000                                  # 2024-07-19T00:00Z


def ofi(*args, timeout=120):
    return subprocess.run(OFI + [str(a) for a in args], capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def usdm(data_dir, tmp_path_factory):
    files = [str(data_dir / "hftbacktest/usdm" / f) for f in USDM]
    root = tmp_path_factory.mktemp("catalog_usdm")
    p = ofi("data", "import", *files, "--catalog", root)
    assert p.returncode == 0, p.stderr
    return files, root


def _joined(pieces: list[Rows]) -> dict:
    out = {f: np.concatenate([getattr(p, f) for p in pieces]) for f in ("kind", "t", "key")}
    for kind in KINDS:
        cols = getattr(pieces[0], kind)
        out[kind] = {c: np.concatenate([getattr(p, kind)[c] for p in pieces]) for c in cols}
    return out


def _assert_same_rows(whole: Rows, pieces: list[Rows]) -> None:
    got = _joined(pieces)
    for f in ("kind", "t", "key"):
        assert np.array_equal(getattr(whole, f), got[f]), f
    for kind in KINDS:
        for c, v in getattr(whole, kind).items():
            assert np.array_equal(v, got[kind][c], equal_nan=True), (kind, c)


def _cut(rows: Rows, at: list[int]) -> list[Rows]:
    """``rows`` cut before each index of ``at`` (sorted) into consecutive pieces."""
    pieces, lo = [], 0
    for hi in at + [len(rows)]:
        sel = slice(lo, hi)
        part = {}
        for r, kind in enumerate(KINDS):
            before = int(np.count_nonzero(rows.kind[:lo] == r))
            n = int(np.count_nonzero(rows.kind[sel] == r))
            part[kind] = {c: v[before:before + n] for c, v in getattr(rows, kind).items()}
        pieces.append(Rows(rows.symbol, rows.kind[sel], rows.t[sel], rows.key[sel],
                           part["trades"], part["book"], part["depth"], rows.levels))
        lo = hi
    return pieces


def _streamed(pieces: list[Rows], core: SignalCore) -> tuple[list[dict], list[int]]:
    stream = columnar.SignalStream(core, pieces[0].symbol)
    records, closed, offset = [], [], 0
    for p in pieces:
        s = stream.feed(p)
        records += s.records
        closed += (s.closed_at + offset).tolist()
        offset += len(p)
    last = stream.finish()
    if last is not None:
        records.append(last)
        closed.append(offset)
    return records, closed


@pytest.mark.parametrize("span", [None, (MIDNIGHT - 90_000, MIDNIGHT + 240_000)])
def test_a_day_at_a_time_gives_the_whole_periods_rows_in_order(usdm, span):
    _, root = usdm
    lo, hi = span or (None, None)
    whole = read.read_symbol(root, "BTCUSDT", lo, hi, levels=5)
    pieces = list(read.iter_symbol(root, "BTCUSDT", lo, hi, levels=5))
    assert len(pieces) >= 2   # row groups at most, never across midnight
    assert all(p.key[-1] < MIDNIGHT or p.key[0] >= MIDNIGHT for p in pieces)
    _assert_same_rows(whole, pieces)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_signals_fed_in_pieces_equal_the_signals_of_the_whole(usdm, seed):
    # cuts anywhere: inside an interval, between a book row and the next, in a run of depth rows
    _, root = usdm
    for params in ({}, {"interval_ms": 250, "levels": 3, "min_periods": 5}):
        rows = read.read_symbol(root, "BTCUSDT", levels=params.get("levels", 5), full=False)
        whole = columnar.signals(rows, SignalCore(**params))
        rng = random.Random(seed)
        at = sorted(rng.sample(range(1, len(rows)), 40)) + [len(rows) - 1]
        records, closed = _streamed(_cut(rows, sorted(set(at))), SignalCore(**params))
        assert orjson.dumps(records) == orjson.dumps(whole.records)
        assert closed == whole.closed_at.tolist()


def test_one_row_pieces_and_empty_pieces(usdm):
    _, root = usdm
    rows = read.read_symbol(root, "BTCUSDT", MIDNIGHT, MIDNIGHT + 20_000, full=False)
    whole = columnar.signals(rows, SignalCore(min_periods=3))
    pieces = _cut(rows, list(range(1, len(rows))))
    pieces.insert(3, _cut(rows, [0])[0])   # an empty piece changes nothing
    records, _ = _streamed(pieces, SignalCore(min_periods=3))
    assert orjson.dumps(records) == orjson.dumps(whole.records)


def test_late_rows_keyed_past_midnight_are_carried_into_the_next_day(tmp_path):
    # a trade at 23:59:59.990 received after one at 00:00:00.020: its key is raised past
    # midnight, so the day-1 file holds a row keyed on day 2
    def book(t, bid):
        return {"e": "bookTicker", "u": t, "s": "BTCUSDT", "b": f"{bid:.1f}", "B": "1.000",
                "a": f"{bid + 0.1:.1f}", "A": "2.000", "T": t, "E": t}

    def trade(t, qty, sell=False):
        return {"e": "trade", "E": t, "T": t, "s": "BTCUSDT", "t": t, "p": "100.0",
                "q": f"{qty:.3f}", "X": "MARKET", "m": sell}
    t0 = MIDNIGHT - 3_000
    events = [book(t0 + 10 * i, 100 + i % 3) for i in range(200)]
    events += [trade(MIDNIGHT - 500, 0.5), trade(MIDNIGHT + 20, 0.25), trade(MIDNIGHT + 900, 1.0)]
    events.sort(key=lambda e: e["E"])
    after = next(i for i, e in enumerate(events) if e.get("T") == MIDNIGHT + 20 and "q" in e)
    events.insert(after + 1, trade(MIDNIGHT - 10, 0.125, sell=True))   # received late
    path = tmp_path / "btcusdt_late.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    root = tmp_path / "catalog"
    p = ofi("data", "import", path, "--catalog", root)
    assert p.returncode == 0, p.stderr
    whole = read.read_symbol(root, "BTCUSDT")
    pieces = list(read.iter_symbol(root, "BTCUSDT"))
    keys = whole.key[whole.kind == 0]
    late = whole.trades["t"] < keys
    assert late.sum() == 1   # the late trade: t before midnight, key after
    assert whole.trades["t"][late][0] < MIDNIGHT <= keys[late][0]
    assert all(p.key[-1] < MIDNIGHT or p.key[0] >= MIDNIGHT for p in pieces)
    assert any(p.key[0] >= MIDNIGHT and 0.125 in p.trades["qty"] for p in pieces)
    _assert_same_rows(whole, pieces)
    raw = ofi("signals", path, "--symbol", "BTCUSDT")
    cat = ofi("signals", "--catalog", root, "--symbol", "BTCUSDT")
    assert raw.returncode == cat.returncode == 0, (raw.stderr, cat.stderr)
    assert cat.stdout == raw.stdout


@pytest.fixture(scope="module")
def two_sources(data_dir, tmp_path_factory):
    """Each day's file imported as a source of its own, in row groups of 1000 rows."""
    from daemons.tools.catalog.importer import import_source, prepare, sources_of

    root = tmp_path_factory.mktemp("catalog_two")
    for f in USDM:
        [src] = sources_of(prepare([str(data_dir / "hftbacktest/usdm" / f)], str(root)))
        import_source(root, src, levels=5, flush_rows=1000)
    return root


@pytest.mark.parametrize("span", [None, (MIDNIGHT - 90_000, MIDNIGHT + 240_000)])
def test_row_groups_and_sources_cut_into_pieces_give_the_whole(two_sources, span):
    lo, hi = span or (None, None)
    assert len(read.symbol_sources(two_sources, "BTCUSDT")) == 2
    whole = read.read_symbol(two_sources, "BTCUSDT", lo, hi, levels=5)
    pieces = list(read.iter_symbol(two_sources, "BTCUSDT", lo, hi, levels=5))
    assert len(pieces) > 10
    _assert_same_rows(whole, pieces)
    rows = read.read_symbol(two_sources, "BTCUSDT", lo, hi, levels=5, full=False)
    want = columnar.signals(rows, SignalCore(min_periods=5))
    got, closed = _streamed(list(read.iter_symbol(two_sources, "BTCUSDT", lo, hi, levels=5,
                                                  full=False)), SignalCore(min_periods=5))
    assert orjson.dumps(got) == orjson.dumps(want.records)
    assert closed == want.closed_at.tolist()
