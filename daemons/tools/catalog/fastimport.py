"""One-pass import of an hftbacktest recording (docs/catalog.md, "Importing").

The catalog stores each stream on its own, and a row's ``key`` depends only on the rows of its
own stream before it and on receive times (:func:`~daemons.marketdata.merge.stalled_key`), so
nothing needs merging: the lines are read once and each stream's rows are appended to their
own buffers, written as Parquet row groups of the :class:`~.importer.Spool` as they fill.

The rows are exactly those of the general path (:class:`~daemons.marketdata.replay.Replay`'s
keyed records), including what depends on how Replay reads: Replay reads a recording 512
messages at a time and after each batch raises every stream's frontier to the newest receive
time read minus ``stall_ms``; the silences (:attr:`Replay.stalls`) are listed in the order of
the messages that revealed them; a message without a symbol (a REST snapshot) takes that of the
file's last message that had one.

The depth stream (book sync with :class:`~daemons.marketdata.book.LocalBook`, the top levels
after each applied diff, snapshots, gaps) is digested in a forked worker that reads the same
files, parses only the depth lines and the untagged ones (snapshots), and writes the ``depth``
rows itself, as :mod:`daemons.signal.split` does for ``ofi signals``; this process parses the
other lines (it skips depth lines by a bytes check on the stream name) and writes the trades and
book rows, then the ``gaps`` rows (the worker's chain breaks, then every silence). Both
processes parse every line's receive time, so each knows Replay's batch floors on its own.

With numba, each process reads its common lines in compiled code, a block at a time, straight
into the row groups' columns (:class:`Columns`): the worker the diffs that chain on an in-sync
book (:class:`_Compiled`), this process the book tickers and trades of its symbol
(:class:`_Ticks`). Every other line is read by the Python loop on the same state.

A line whose content does not fit its stream name (a depth message under a stream name without
``@depth``, or the reverse) raises :class:`Fallback`: the caller imports with Replay instead.
"""
from __future__ import annotations

import zlib
from itertools import chain

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ...marketdata.book import APPLIED, BUFFERED, DROPPED, LocalBook, snapshot_top
from ...marketdata.forked import DepthWorkerError, Worker, fork
from ...marketdata.formats import (FormatError, bad_line, iter_blocks, iter_line_chunks,
                                  stamp_divisor, symbol_from_path)
from ...signal import split
from . import store

#: messages Replay reads per batch (Replay(batch=...)'s default); its frontiers move after each
BATCH = 512

_NEG = float("-inf")
_TAG, _DTAG, _NAME = split.STREAM_TAG, split.DEPTH_TAG, split.NAME_AT
_I64 = pa.int64()
_F64 = pa.float64()


class Fallback(Exception):
    """The input has lines the one-pass reader does not split the way Replay reads them."""


def applies(fmt: str) -> bool:
    """Whether a source of format ``fmt`` is read by this module."""
    return fmt == "hftbacktest"


# -- columns ------------------------------------------------------------------------------------

def _floats(values) -> pa.Array:
    """Binance's decimal strings as float64, parsed in C (correctly rounded, as ``float``)."""
    try:
        return pc.cast(pa.array(values, type=pa.string()), _F64)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([float(v) for v in values], type=_F64)


#: the ``type`` of depth rows, by code (:class:`Columns`)
DEPTH_TYPES = ("depth", "gap", "snapshot")
_TYPE_CODE = {name: i for i, name in enumerate(DEPTH_TYPES)}
_NAN = float("nan")
#: per kind: where a row tuple (see :class:`Sink`) holds its int columns (key, t, recv first,
#: never null; the others nullable), its float columns (decimal strings) and its bool columns
_LAYOUT = {
    "book": ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9), ()),
    "trades": ((0, 1, 2, 3, 4), (5, 6), (7, 8)),
    "depth": ((0, 1, 2, 4, 5, 6), (), ()),   # the type at 3, the four level tuples at 7..10
}


class Columns:
    """A stream's rows (see :class:`Sink`) in columns, where the compiled readers write them
    too (:func:`~daemons.signal.fastticks.tick_rows`,
    :func:`~daemons.marketdata.fastbook.import_diffs`): ``ints`` x rows (key, t, recv, then the
    kind's nullable ones, ``nulls`` saying which are null), ``floats``, ``bools``; for depth
    also ``types`` (codes of :data:`DEPTH_TYPES`) and ``levels`` (bid px, bid qty, ask px, ask
    qty) x level x rows, NaN past a row's levels. Rows appended as tuples wait in a list until
    :meth:`settle`."""

    def __init__(self, kind: str, levels: int, cap: int):
        self.kind = kind
        self.pos = _LAYOUT[kind]
        self.nlev = levels if kind == "depth" else 0
        self.schema = store.schema(kind, levels)
        self.n = 0
        self.pending: list[tuple] = []
        self.append = self.pending.append
        self._alloc(cap)

    def _arrays(self) -> tuple:
        return self.ints, self.nulls, self.floats, self.bools, self.types, self.levels

    def _alloc(self, cap: int) -> None:
        ni, nf, nb = (len(x) for x in self.pos)
        self.cap = cap
        self.ints = np.zeros((ni, cap), np.int64)
        self.nulls = np.zeros((ni - 3, cap), np.bool_)
        self.floats = np.zeros((nf, cap))
        self.bools = np.zeros((nb, cap), np.bool_)
        self.types = np.zeros(cap, np.int8)
        self.levels = np.full((4, self.nlev, cap), _NAN)

    def __len__(self) -> int:
        return self.n + len(self.pending)

    def settle(self) -> None:
        """The appended tuples into the columns."""
        rows = self.pending
        m = len(rows)
        if not m:
            return
        a, b = self.n, self.n + m
        if b > self.cap:
            old = self._arrays()
            self._alloc(max(b, 2 * self.cap))
            for new, o in zip(self._arrays(), old):
                new[..., :a] = o[..., :a]
        cols = list(zip(*rows))
        ints_at, floats_at, bools_at = self.pos
        for c, at in enumerate(ints_at):
            vals = cols[at]
            if c >= 3:
                miss = False
                if None in vals:
                    miss = [v is None for v in vals]
                    vals = [0 if v is None else v for v in vals]
                self.nulls[c - 3, a:b] = miss
            self.ints[c, a:b] = vals
        for c, at in enumerate(floats_at):
            self.floats[c, a:b] = _floats(cols[at]).to_numpy(zero_copy_only=False)
        for c, at in enumerate(bools_at):
            self.bools[c, a:b] = cols[at]
        if self.nlev:
            self.types[a:b] = [_TYPE_CODE[x] for x in cols[3]]
            nlev = self.nlev
            pad = [(_NAN,) * (nlev - k) for k in range(nlev + 1)]
            for k in range(4):
                flat = np.fromiter(chain.from_iterable(
                    v if len(v) == nlev else v + pad[len(v)] for v in cols[7 + k]),
                    np.float64, m * nlev)
                self.levels[k, :, a:b] = flat.reshape(m, nlev).T
        self.n = b
        del rows[:]

    def take(self, limit: int, seq0: int) -> tuple[pa.Table, np.ndarray]:
        """The first ``limit`` rows (at most) out of the buffer, as a table of the kind's
        schema (``seq`` from ``seq0``), and their ``t``."""
        self.settle()
        m = min(limit, self.n)
        ints, nulls = self.ints, self.nulls
        t = ints[1, :m].copy()
        arrays = [pa.array(np.arange(seq0, seq0 + m, dtype=np.int64)),
                  pa.array(ints[0, :m].copy()), pa.array(t), pa.array(ints[2, :m].copy())]
        if self.nlev:
            arrays.append(pa.DictionaryArray.from_arrays(self.types[:m].copy(),
                                                         DEPTH_TYPES).cast(pa.string()))
        for c in range(3, len(ints)):
            miss = nulls[c - 3, :m]
            arrays.append(pa.array(ints[c, :m].copy(),
                                   mask=miss.copy() if miss.any() else None))
        arrays += [pa.array(col[:m].copy()) for col in self.floats]
        arrays += [pa.array(col[:m].copy()) for col in self.bools]
        for side in self.levels:
            for col in side:
                col = col[:m].copy()
                miss = np.isnan(col)
                arrays.append(pa.array(col, mask=miss if miss.any() else None))
        rest = self.n - m
        if rest:   # (few: a buffer is taken as soon as it holds a row group)
            for arr in self._arrays():
                arr[..., :rest] = arr[..., m:self.n]
        # the compiled readers write neither depth types (0: depth), nor the nulls they do not
        # know of, nor missing levels
        self.levels[:, :, rest:self.n] = _NAN
        self.nulls[:, rest:self.n] = False
        self.types[rest:self.n] = 0
        self.n = rest
        return pa.Table.from_arrays(arrays, schema=self.schema), t


class Sink:
    """Rows per (kind, symbol) in stream order, written through ``spool`` split by UTC date
    once a row group's worth is there (``seq`` is the row's position in its stream).

    Rows (appended as tuples by the Python readers, kept in :class:`Columns`): ``trades``
    ``(key, t, recv, E, trade_id, price str, qty str, is_buy, market)``; ``book`` ``(key, t,
    recv, E, T, u, bid, bid_qty, ask, ask_qty)`` (strings); ``depth`` ``(key, t, recv, type,
    U, u, pu, bid_px, bid_qty, ask_px, ask_qty)`` (tuples of floats, best first, shorter when
    the book has fewer levels).
    """

    def __init__(self, spool, levels: int):
        self.spool = spool
        self.levels = levels
        self.bufs: dict[tuple, list] = {}
        self.written: dict[tuple, int] = {}
        self.first = self.last = None

    def rows(self, kind: str, symbol) -> Columns:
        k = (kind, symbol)
        b = self.bufs.get(k)
        if b is None:
            b = self.bufs[k] = Columns(kind, self.levels, self.limit(kind))
        return b

    def limit(self, kind: str) -> int:
        """Rows per row group of ``kind``."""
        return self.spool.depth_rows if kind == "depth" else self.spool.flush_rows

    def symbols(self) -> set:
        return {sym for (_kind, sym), n in self.written.items() if n}

    def flush(self, final: bool = False) -> None:
        """Write every full row group (``final``: everything)."""
        for (kind, sym), buf in self.bufs.items():
            limit = self.limit(kind)
            while len(buf) >= limit or (final and len(buf)):
                k = (kind, sym)
                seq0 = self.written.get(k, 0)
                table, t = buf.take(limit, seq0)
                self.written[k] = seq0 + len(t)
                self._write(kind, sym, table, t)

    def _write(self, kind: str, sym, table: pa.Table, t: np.ndarray) -> None:
        lo, hi = int(t.min()), int(t.max())
        if self.first is None or lo < self.first:
            self.first = lo
        if self.last is None or hi > self.last:
            self.last = hi
        days = t // store.DAY_MS
        if lo // store.DAY_MS == hi // store.DAY_MS:
            self.spool.write_table(kind, sym, lo // store.DAY_MS, table)
            return
        for day in np.unique(days):
            self.spool.write_table(kind, sym, int(day), table.filter(pa.array(days == day)))


# -- symbols of messages without one ------------------------------------------------------------

def _symbol_of(line: bytes):
    """The ``s`` of a line's message (None: none, or not a message)."""
    sp = line.find(b" ")
    if sp <= 0:
        return None
    try:
        msg = orjson.loads(line[sp + 1:])
        data = msg["data"] if msg.get("stream") is not None else msg
        return data.get("s")
    except Exception:  # not a message (the reader that owns the line reports it)
        return None


def _last_symbol(lines: list, end: int, default):
    """The ``s`` of the last message before ``lines[end]`` that has one, else ``default``
    (what Replay's reader holds for messages that carry none)."""
    for k in range(end - 1, -1, -1):
        s = _symbol_of(lines[k])
        if s is not None:
            return s
    return default


# -- depth --------------------------------------------------------------------------------------

class _Book:
    __slots__ = ("book", "rows", "valid", "bpx", "bq", "apx", "aq")

    def __init__(self, levels: int, rows: list, array_book=None):
        # a marketdata.fastbook.ArrayBook (the same levels, in arrays) when given
        self.book = array_book(levels=levels) if array_book is not None \
            else LocalBook(levels=levels)
        self.rows = rows
        self.valid = False   # bpx .. aq are the book's top levels
        self.bpx = self.bq = self.apx = self.aq = ()


class DepthRows:
    """The depth stream -> ``depth`` rows (into ``sink``), chain breaks (:attr:`gap_rows`) and
    silences (:attr:`stalls`, ``(message number, stall)``), as Replay's ``DepthFeed`` and merge
    keys give them. ``floor(x)``: a Replay batch ended, the frontier rises to ``x``."""

    def __init__(self, sink: Sink, levels: int, stall_ms: int, array_book=None):
        self.sink = sink
        self.levels = levels
        self.stall = stall_ms
        self.array_book = array_book
        self.f = _NEG       # the merge frontier (keys, buffered diffs' times, batch floors)
        self.last = _NEG    # the last key or buffered diff's time (silences are measured from)
        self.stalls: list[tuple] = []
        self.gap_rows: list[tuple] = []
        self.books: dict = {}

    def _book(self, sym) -> _Book:
        b = self.books.get(sym)
        if b is None:
            b = self.books[sym] = _Book(self.levels, self.sink.rows("depth", sym),
                                        self.array_book)
        return b

    def floor(self, x) -> None:
        if x > self.f:
            self.f = x

    def _key(self, t, recv, idx):
        fl = recv - self.stall
        last = self.last
        if fl > last != _NEG:
            self.stalls.append((idx, {"stream": "depth", "t": last, "until": t}))
        f = self.f
        if t >= f and t >= fl:
            key = t
        else:
            key = f if f > t else t
            if fl > key:
                key = fl
        self.f = self.last = key
        return key

    def _top(self, b: _Book) -> None:
        book = b.book
        n = self.levels
        bs, as_ = book.bid_side, book.ask_side
        if self.array_book is not None:
            if not b.valid or bs.touched:
                px, qf, _ = bs.top(n)
                b.bpx, b.bq = tuple(px), tuple(qf)
            if not b.valid or as_.touched:
                px, qf, _ = as_.top(n)
                b.apx, b.aq = tuple(px), tuple(qf)
            b.valid = True
            return
        if not b.valid or bs.touched:
            b.bpx = tuple(bs.top_prices(n))
            b.bq = tuple(map(float, map(bs.levels.__getitem__, b.bpx)))
        if not b.valid or as_.touched:
            b.apx = tuple(as_.top_prices(n))
            b.aq = tuple(map(float, map(as_.levels.__getitem__, b.apx)))
        b.valid = True

    def _applied(self, b: _Book, d, recv, idx) -> None:
        E = d.get("E")
        t = recv if E is None else E
        key = self._key(t, recv, idx)
        self._top(b)
        b.rows.append((key, t, recv, "depth", d["U"], d["u"], d.get("pu"), b.bpx, b.bq, b.apx,
                       b.aq))

    def _gap(self, b: _Book, g, d, recv, sym, idx) -> None:
        E = d.get("E")
        t = recv if E is None else E
        key = self._key(t, recv, idx)
        b.valid = False
        b.rows.append((key, t, recv, "gap", None, g.u, None, (), (), (), ()))
        self.gap_rows.append((sym, key, t, recv, g.reason, g.expected_pu, g.got_pu, g.u))

    def diff(self, d: dict, recv, sym, idx) -> None:
        b = self._book(sym)
        res = b.book.diff(d, recv)
        if res is APPLIED:
            self._applied(b, d, recv, idx)
        elif res is BUFFERED or res is DROPPED:
            t = d.get("E", recv)   # the stream moved on without a record (Replay's _moved)
            if t is not None:
                if t > self.f:
                    self.f = t
                if t > self.last:
                    self.last = t
        else:
            self._gap(b, res, d, recv, sym, idx)

    def snapshot(self, snap: dict, recv, sym, idx) -> None:
        b = self._book(sym)
        E = snap.get("E")
        t = recv if E is None else E
        key = self._key(t, recv, idx)
        bids, asks = snapshot_top(snap, self.levels)
        b.rows.append((key, t, recv, "snapshot", None, snap["lastUpdateId"], None,
                       tuple(x[0] for x in bids), tuple(x[1] for x in bids),
                       tuple(x[0] for x in asks), tuple(x[1] for x in asks)))
        b.valid = False

        def each(d, res, tag):
            ts = recv if tag is None else tag
            if res is APPLIED:
                self._applied(b, d, ts, idx)
            elif res is not BUFFERED and res is not DROPPED:
                self._gap(b, res, d, ts, sym, idx)

        b.book.snapshot(snap["lastUpdateId"], snap.get("bids", ()), snap.get("asks", ()), each)


# -- reading ------------------------------------------------------------------------------------

def _is_book(e, data, stream) -> bool:
    """``formats.classify`` says bookTicker (``e`` is None)."""
    if "lastUpdateId" in data:
        return False
    if stream is not None:
        return stream.endswith("@bookTicker")
    return "b" in data and "B" in data and "A" in data


class Result:
    """What one pass found: ``first``/``last`` t, ``lines`` (messages), ``stalls`` (Replay's
    order), ``gap_rows`` (chain breaks), ``symbols`` with rows, ``rows`` of the worker's files."""

    def __init__(self):
        self.first = self.last = None
        self.lines = 0
        self.stalls: list[dict] = []
        self.gap_rows: list[tuple] = []
        self.symbols: set = set()
        self.rows: dict = {}
        self.newest = _NEG
        self.end_stalls: list[dict] = []


def read(paths: list[str], spool, levels: int, symbol: str | None, stall_ms: int,
         progress=None, workers: int = 2) -> Result:
    """Write the trades, book and depth rows of ``paths`` (one hftbacktest recording) through
    ``spool`` (the depth rows in a worker when ``workers`` > 1 and processes can be forked);
    the gaps rows are the caller's (from the result)."""
    stall = int(stall_ms)
    remote = _start(paths, spool, levels, symbol, stall) if workers > 1 else None
    sink = Sink(spool, levels)
    depth = None if remote is not None else DepthRows(sink, levels, stall)
    try:
        out = _read_main(paths, sink, symbol, stall, depth, remote, progress)
        sink.flush(final=True)
        if remote is not None:
            end = remote.finish()
            out.rows = end["rows"]
            for x, y in ((end["first"], end["last"]), (sink.first, sink.last)):
                if x is not None and (out.first is None or x < out.first):
                    out.first = x
                if y is not None and (out.last is None or y > out.last):
                    out.last = y
            mids, dstalls, out.gap_rows = end["stalls"], end["end_stall"], end["gap_rows"]
            out.symbols = sink.symbols() | end["symbols"]
        else:
            out.first, out.last = sink.first, sink.last
            mids, out.gap_rows = depth.stalls, depth.gap_rows
            dstalls = _end_stall("depth", depth.last, out.newest, stall)
            out.symbols = sink.symbols()
        # silences in the order of the messages that revealed them, then those to the end
        out.stalls = [s for _, s in sorted(out.stalls + mids, key=lambda x: x[0])] \
            + out.end_stalls + dstalls
        return out
    finally:
        if remote is not None:
            remote.close()


def _end_stall(stream: str, last, newest, stall) -> list:
    if newest != _NEG and last != _NEG and newest - stall > last:
        return [{"stream": stream, "t": last, "until": None}]
    return []


class _Main:
    """The main process's reading state (trades and book; depth too without a worker), kept
    between calls of :meth:`lines` (whose loop works on local copies of it)."""

    def __init__(self, sink: Sink, symbol, stall: int, depth: DepthRows | None, skip: bool):
        self.sink, self.symbol, self.stall, self.depth, self.skip = sink, symbol, stall, depth, skip
        self.stalls: list[tuple] = []   # (message number, stall) of trades and book
        self.f_t = self.f_b = _NEG      # merge frontiers (keys, batch floors)
        self.l_t = self.l_b = _NEG      # last keys
        self.count = 0
        self.nb = BATCH
        self.newest = _NEG
        self.tsym = self.bsym = object()
        self.tadd = self.badd = None
        self.div = None
        self.file_symbol = None

    def start(self, path: str) -> None:
        """A new file (its stamps' unit is found again)."""
        self.div = None
        self.file_symbol = self.symbol or symbol_from_path(path)

    def lines(self, path: str, lines, first: int, end: int, lineno: int) -> None:
        """Read ``lines[first:end]`` (``lineno``: the number of the line before ``lines[0]``)."""
        sink, symbol, stall, depth, skip = self.sink, self.symbol, self.stall, self.depth, \
            self.skip
        stalls = self.stalls
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        tag, dtag, name = _TAG, _DTAG, _NAME
        f_t, f_b, l_t, l_b = self.f_t, self.f_b, self.l_t, self.l_b
        count, nb, newest = self.count, self.nb, self.newest
        tsym, bsym, tadd, badd = self.tsym, self.bsym, self.tadd, self.badd
        div, file_symbol = self.div, self.file_symbol
        for j in range(first, end):
            line = lines[j]
            sp = line.find(b" ")
            if sp <= 0:
                bad_line(path, lineno + j + 1, line)
                continue
            try:
                ts = int(line[:sp])
            except ValueError:
                bad_line(path, lineno + j + 1, line)
                continue
            if div is None:
                div = stamp_divisor(ts)
            recv = ts // div
            if skip and line.startswith(tag, sp + 1) \
                    and line.find(dtag, sp + name, line.find(b'"', sp + name)) >= 0:
                if count == nb:   # the depth worker's line (counted: Replay's batches)
                    nb += BATCH
                    fl = newest - stall
                    if fl > f_t:
                        f_t = fl
                    if fl > f_b:
                        f_b = fl
                count += 1
                if recv > newest:
                    newest = recv
                continue
            body = line[sp + 1:]
            try:
                msg = loads(body)
            except decode_error:
                bad_line(path, lineno + j + 1, line)
                continue
            if count == nb:
                nb += BATCH
                fl = newest - stall
                if fl > f_t:
                    f_t = fl
                if fl > f_b:
                    f_b = fl
                if depth is not None:
                    depth.floor(fl)
            count += 1
            if recv > newest:
                newest = recv
            stream = msg.get("stream")
            data = msg["data"] if stream is not None else msg
            e = data.get("e")
            if e == "bookTicker" or (e is None and _is_book(e, data, stream)):
                s = data.get("s")
                if s is None:
                    s = file_symbol if symbol is not None else \
                        _last_symbol(lines, j, file_symbol)
                if s != bsym:
                    bsym = s
                    badd = sink.rows("book", s).append
                E = data.get("E")
                t = recv if E is None else E
                fl = recv - stall
                if fl > l_b != _NEG:
                    stalls.append((count, {"stream": "book", "t": l_b, "until": t}))
                if t >= f_b and t >= fl:
                    key = t
                else:
                    key = f_b if f_b > t else t
                    if fl > key:
                        key = fl
                f_b = l_b = key
                badd((key, t, recv, E, data.get("T"), data.get("u"), data["b"], data["B"],
                      data["a"], data["A"]))
            elif e == "trade" or e == "aggTrade":
                s = data.get("s")
                if s is None:
                    s = file_symbol if symbol is not None else \
                        _last_symbol(lines, j, file_symbol)
                if s != tsym:
                    tsym = s
                    tadd = sink.rows("trades", s).append
                T = data.get("T")
                E = data.get("E")
                if T is None:
                    T = E
                elif E is None:
                    E = T
                fl = recv - stall
                if fl > l_t != _NEG:
                    stalls.append((count, {"stream": "trades", "t": l_t, "until": T}))
                if T is None:   # no time: the frontier (merge.stalled_key)
                    t = recv
                    key = f_t if f_t != _NEG else 0
                    if fl > key:
                        key = fl
                else:
                    t = T
                    if T >= f_t and T >= fl:
                        key = T
                    else:
                        key = f_t if f_t > T else T
                        if fl > key:
                            key = fl
                f_t = l_t = key
                tid = data.get("t")
                if tid is None:
                    tid = data.get("a")
                tadd((key, t, recv, E, tid, data["p"], data["q"], not data["m"],
                      data.get("X", "MARKET") == "MARKET"))
            elif e == "depthUpdate" or (e is None and "lastUpdateId" in data):
                if skip:
                    if line.startswith(tag, sp + 1):
                        raise Fallback(f"{path}:{lineno + j + 1}: depth under another "
                                       "stream name")
                    continue   # untagged: the worker's too
                s = data.get("s")
                if s is None:
                    s = file_symbol if symbol is not None else \
                        _last_symbol(lines, j, file_symbol)
                if e is None:
                    depth.snapshot(data, recv, s, count)
                else:
                    depth.diff(data, recv, s, count)
        self.f_t, self.f_b, self.l_t, self.l_b = f_t, f_b, l_t, l_b
        self.count, self.nb, self.newest = count, nb, newest
        self.tsym, self.bsym, self.tadd, self.badd = tsym, bsym, tadd, badd
        self.div = div

    def result(self) -> Result:
        out = Result()
        out.stalls = self.stalls
        out.lines = self.count
        out.newest = self.newest
        out.end_stalls = _end_stall("trades", self.l_t, self.newest, self.stall) \
            + _end_stall("book", self.l_b, self.newest, self.stall)
        return out


def _read_main(paths, sink: Sink, symbol, stall, depth: DepthRows | None, remote,
               progress) -> Result:
    """Trades and book (and, without a worker, depth) rows; every line's receive time."""
    st = _Main(sink, symbol, stall, depth, remote is not None)
    ticks = _Ticks.make(st) if remote is not None else None
    for path in paths:
        st.start(path)
        lineno = 0
        if ticks is not None:
            lineno = ticks.file(path, progress, remote)
            continue
        for lines in iter_line_chunks(path):
            st.lines(path, lines, 0, len(lines), lineno)
            lineno += len(lines)
            if symbol is None:
                st.file_symbol = _last_symbol(lines, len(lines), st.file_symbol)
            sink.flush()
            if remote is not None:
                remote.poll()
            if progress is not None:
                progress(st.count)
    return st.result()


class _Ticks:
    """The main process's lines read by :func:`~daemons.signal.fastticks.tick_rows` a block at
    a time, every line it leaves read by :meth:`_Main.lines`; the state they share is handed
    over on each call and taken back after it."""

    def __init__(self, st: _Main, ft, scan):
        self.st, self.ft, self.scan = st, ft, scan
        self.si = np.zeros(8, np.int64)
        self.sf = np.zeros(5)
        self.flat = np.zeros(ft.NF, np.int64)
        self.sym = None
        self.want = np.zeros(0, np.uint8)
        self.full = False

    @classmethod
    def make(cls, st: _Main) -> "_Ticks | None":
        """None without numba (every line read the Python way)."""
        try:
            from ...marketdata.fastbook import scan_block
            from ...signal import fastticks
        except ImportError:
            return None
        return cls(st, fastticks, scan_block)

    def file(self, path: str, progress, remote) -> int:
        """Read one file; its lines' count."""
        st = self.st
        lineno = 0
        for block in iter_blocks(path):
            starts, ends, stamps, kinds = self.scan(block)
            nl = len(kinds)
            lines = _BlockLines(block, starts.tolist(), ends.tolist())
            buf = np.frombuffer(block, np.uint8)
            j = 0
            while j < nl:
                if st.div is not None:
                    j = self.run(buf, starts, ends, stamps, kinds, j)
                    if j >= nl:
                        break
                    if self.full:
                        st.sink.flush()
                        continue
                st.lines(path, lines, j, j + 1, lineno)
                j += 1
            lineno += nl
            if st.symbol is None:
                st.file_symbol = _last_symbol(lines, nl, st.file_symbol)
            st.sink.flush()
            remote.poll()
            if progress is not None:
                progress(st.count)
        return lineno

    def run(self, buf, starts, ends, stamps, kinds, j: int) -> int:
        """Lines from ``j`` on; the first one left to Python."""
        ft, st, si, sf = self.ft, self.st, self.si, self.sf
        sym = st.bsym if isinstance(st.bsym, str) else st.file_symbol
        if sym != self.sym:
            self.sym = sym
            self.want = np.frombuffer(str(sym).encode(), np.uint8)
        book, trades = st.sink.rows("book", sym), st.sink.rows("trades", sym)
        book.settle()
        trades.settle()
        si[ft.R_DIV], si[ft.R_COUNT], si[ft.R_NB] = st.div, st.count, st.nb
        si[ft.R_NBK], si[ft.R_CAPB] = book.n, book.cap
        si[ft.R_NTR], si[ft.R_CAPT] = trades.n, trades.cap
        si[ft.R_NS] = 0
        sf[ft.R_FT], sf[ft.R_FB], sf[ft.R_LT], sf[ft.R_LB] = st.f_t, st.f_b, st.l_t, st.l_b
        sf[ft.R_NEWEST] = st.newest
        nl = len(starts)
        marks = (np.empty(nl, np.int64), np.empty(nl, np.int8), np.empty(nl, np.int64),
                 np.empty(nl, np.int64))
        j = ft.tick_rows(buf, starts, ends, stamps, kinds, j, self.want, st.stall, BATCH, si, sf,
                         self.flat, book.ints, book.nulls, book.floats, trades.ints,
                         trades.floats, trades.bools, *marks)
        st.count, st.nb = int(si[ft.R_COUNT]), int(si[ft.R_NB])
        st.f_t, st.f_b = _int_or_neg(sf[ft.R_FT]), _int_or_neg(sf[ft.R_FB])
        st.l_t, st.l_b = _int_or_neg(sf[ft.R_LT]), _int_or_neg(sf[ft.R_LB])
        st.newest = _int_or_neg(sf[ft.R_NEWEST])
        ns = int(si[ft.R_NS])
        for idx, stream, t, until in zip(*(m[:ns].tolist() for m in marks)):
            st.stalls.append((idx, {"stream": "book" if stream else "trades", "t": t,
                                    "until": until}))
        book.n, trades.n = int(si[ft.R_NBK]), int(si[ft.R_NTR])
        self.full = book.n >= book.cap or trades.n >= trades.cap
        return j


class _DepthLines:
    """The depth worker's reading state (depth rows; the other lines' receive times only),
    kept between calls of :meth:`lines` as :class:`_Main` keeps the main process's.
    ``message`` / ``with_levels``: :func:`daemons.marketdata.fastbook.depth_message` and
    ``with_levels``, for a depth of array books (None: every line through orjson)."""

    def __init__(self, sink: Sink, symbol, stall: int, depth: DepthRows, message=None,
                 with_levels=None):
        self.sink, self.symbol, self.stall, self.depth = sink, symbol, stall, depth
        self.message, self.with_levels = message, with_levels
        self.count = 0
        self.nb = BATCH
        self.newest = _NEG
        self.div = None
        self.file_symbol = None
        self.last_symbol = None   # of the last diff or snapshot read here

    def start(self, path: str) -> None:
        """A new file (its stamps' unit is found again)."""
        self.div = None
        self.file_symbol = self.symbol or symbol_from_path(path)

    def lines(self, path: str, lines, first: int, end: int, lineno: int) -> None:
        """Read ``lines[first:end]`` (``lineno``: the number of the line before ``lines[0]``)."""
        symbol, stall, depth = self.symbol, self.stall, self.depth
        message, with_levels = self.message, self.with_levels
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        tag, dtag, name = _TAG, _DTAG, _NAME
        count, nb, newest = self.count, self.nb, self.newest
        div, file_symbol = self.div, self.file_symbol
        for j in range(first, end):
            line = lines[j]
            sp = line.find(b" ")
            if sp <= 0:
                bad_line(path, lineno + j + 1, line)
                continue
            try:
                ts = int(line[:sp])
            except ValueError:
                bad_line(path, lineno + j + 1, line)
                continue
            if div is None:
                div = stamp_divisor(ts)
            recv = ts // div
            tagged = line.startswith(tag, sp + 1)
            if tagged and line.find(dtag, sp + name, line.find(b'"', sp + name)) < 0:
                if count == nb:   # the main process's line
                    nb += BATCH
                    depth.floor(newest - stall)
                count += 1
                if recv > newest:
                    newest = recv
                continue
            # a plain diff, read without orjson (None: anything else)
            data = message(line, sp + 1) if message is not None and tagged else None
            stream = data is not None
            if data is None:
                try:
                    msg = loads(line[sp + 1:])
                except decode_error:
                    bad_line(path, lineno + j + 1, line)
                    continue
                stream = msg.get("stream")
                data = msg["data"] if stream is not None else msg
            if count == nb:
                nb += BATCH
                depth.floor(newest - stall)
            count += 1
            if recv > newest:
                newest = recv
            e = data.get("e")
            if e == "depthUpdate" or (e is None and "lastUpdateId" in data):
                s = data.get("s")
                if s is None:
                    s = file_symbol if symbol is not None else \
                        _last_symbol(lines, j, file_symbol)
                if e is None:
                    depth.snapshot(data, recv, s, count)
                else:
                    depth.diff(data if with_levels is None or type(data.get("b")) is not list
                               else with_levels(data, line, sp + 1), recv, s, count)
                self.last_symbol = s
            elif tagged and (e in ("bookTicker", "trade", "aggTrade")
                             or (e is None and _is_book(e, data, stream))):
                raise Fallback(f"{path}:{lineno + j + 1}: trades or book under a depth "
                               "stream name")
        self.count, self.nb, self.newest, self.div = count, nb, newest, div


def _read_depth(paths, st: _DepthLines) -> None:
    """The worker's pass without numba: every line read by :meth:`_DepthLines.lines`."""
    for path in paths:
        st.start(path)
        lineno = 0
        for lines in iter_line_chunks(path):
            st.lines(path, lines, 0, len(lines), lineno)
            lineno += len(lines)
            if st.symbol is None:
                st.file_symbol = _last_symbol(lines, len(lines), st.file_symbol)
            st.sink.flush()
    st.sink.flush(final=True)


class _BlockLines:
    """A block's lines by index (what :func:`_last_symbol` reads), cut when read."""

    __slots__ = ("block", "starts", "ends")

    def __init__(self, block: bytes, starts: list, ends: list):
        self.block, self.starts, self.ends = block, starts, ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> bytes:
        return self.block[self.starts[k]:self.ends[k]]


def _read_depth_blocks(paths, st: _DepthLines, scan) -> None:
    """:func:`_read_depth` with the lines classified by compiled code
    (:func:`daemons.marketdata.fastbook.scan_block`): every line of another stream, and the
    diffs that chain on an in-sync book, are read by
    :func:`daemons.marketdata.fastbook.import_diffs` (:class:`_Compiled`), every line it
    leaves by :meth:`_DepthLines.lines`."""
    fast = _Compiled(st)
    for path in paths:
        st.start(path)
        lineno = 0
        for block in iter_blocks(path):
            starts, ends, stamps, kinds = scan(block)
            nl = len(kinds)
            lines = _BlockLines(block, starts.tolist(), ends.tolist())
            buf = np.frombuffer(block, np.uint8)
            j = 0
            while j < nl:
                if st.div is not None:   # (the first line of a file finds the stamps' unit)
                    j = fast.run(buf, starts, ends, stamps, kinds, j)
                    if j >= nl:
                        break
                    if fast.full:
                        st.sink.flush()
                        continue
                st.lines(path, lines, j, j + 1, lineno)
                j += 1
            lineno += nl
            if st.symbol is None:
                st.file_symbol = _last_symbol(lines, nl, st.file_symbol)
            st.sink.flush()
    st.sink.flush(final=True)


def _int_or_neg(x: float):
    """A state value back from the compiled code: an int, or -inf."""
    return x if x == _NEG else int(x)


class _Compiled:
    """:func:`~daemons.marketdata.fastbook.import_diffs` over the book of the symbol whose
    diff was read last, its state shared with :class:`DepthRows` (handed over on each call,
    taken back after it)."""

    def __init__(self, st: _DepthLines):
        from ...marketdata import fastbook

        self.fb = fb = fastbook
        self.st = st
        self.depth = depth = st.depth
        n = self.n = depth.levels
        self.si = np.zeros(12, np.int64)
        self.sf = np.zeros(3)
        self.cur = np.full((4, n), np.nan)
        self.top = (np.empty(n), np.empty(n), np.empty(n, np.int64))
        m = fb._MAX_LEVELS
        self.scratch = (np.empty(m), np.empty(m), np.empty(m, np.bool_), np.zeros(12, np.int64),
                        np.empty(m), np.empty(m), np.empty(m, np.bool_))
        self.idle = (fb.ArrayBook(levels=n), Columns("depth", n, 1))   # before any book is synced
        self.sym = None
        self.want = np.zeros(0, np.uint8)
        self.full = False

    def run(self, buf, starts, ends, stamps, kinds, j: int) -> int:
        """Lines from ``j`` on; the first one left to :meth:`_DepthLines.lines`."""
        fb, si, sf, depth, cur, st = self.fb, self.si, self.sf, self.depth, self.cur, self.st
        s = st.last_symbol
        if s != self.sym and isinstance(s, str):
            self.sym = s
            self.want = np.frombuffer(s.encode(), np.uint8)
        b = depth.books.get(self.sym)
        book = b.book if b is not None else None
        sync = (book is not None and book._bridged and book.spot is False
                and isinstance(book, fb.ArrayBook))
        if sync:
            rows = b.rows
            rows.settle()
            si[fb.IM_LAST_U] = book.last_u
            si[fb.IM_TOUCHED] = book.touched
            si[fb.IM_VALID] = b.valid
            if b.valid:
                for k, v in enumerate((b.bpx, b.bq, b.apx, b.aq)):
                    cur[k, :len(v)] = v
                    cur[k, len(v):] = np.nan
                si[fb.IM_NPB], si[fb.IM_NPA] = len(b.bpx), len(b.apx)
        else:
            book, rows = self.idle
        si[fb.IM_SYNC] = sync
        si[fb.IM_N], si[fb.IM_CAP] = rows.n, rows.cap
        si[fb.IM_NS] = 0
        si[fb.IM_DIV], si[fb.IM_COUNT], si[fb.IM_NB] = st.div, st.count, st.nb
        sf[fb.IF_F], sf[fb.IF_LAST], sf[fb.IF_NEWEST] = depth.f, depth.last, st.newest
        bs, as_ = book.bid_side, book.ask_side
        nl = len(starts)
        st_idx, st_stream, st_t, st_until = (np.empty(nl, np.int64), np.empty(nl, np.int8),
                                             np.empty(nl, np.int64), np.empty(nl, np.int64))
        n0 = rows.n
        j = fb.import_diffs(buf, starts, ends, stamps, kinds, j, self.want, depth.stall, BATCH,
                            si, sf, bs.keys, bs.used, bs.qf, bs.qs, bs.best, bs.st,
                            bs.edge, as_.keys, as_.used, as_.qf, as_.qs, as_.best, as_.st,
                            as_.edge, self.n, cur, *self.top, *self.scratch, rows.ints,
                            rows.levels, st_idx, st_stream, st_t, st_until)
        st.count, st.nb = int(si[fb.IM_COUNT]), int(si[fb.IM_NB])
        st.newest = _int_or_neg(sf[fb.IF_NEWEST])
        depth.f, depth.last = _int_or_neg(sf[fb.IF_F]), _int_or_neg(sf[fb.IF_LAST])
        ns = int(si[fb.IM_NS])
        for idx, t, until in zip(st_idx[:ns].tolist(), st_t[:ns].tolist(),
                                 st_until[:ns].tolist()):
            depth.stalls.append((idx, {"stream": "depth", "t": t, "until": until}))
        if sync and si[fb.IM_N] > n0:
            rows.n = int(si[fb.IM_N])
            book.last_u = int(si[fb.IM_LAST_U])
            book.touched = bool(si[fb.IM_TOUCHED])
            b.valid = True
            nbid, nask = int(si[fb.IM_NPB]), int(si[fb.IM_NPA])
            b.bpx, b.bq = tuple(cur[0, :nbid].tolist()), tuple(cur[1, :nbid].tolist())
            b.apx, b.aq = tuple(cur[2, :nask].tolist()), tuple(cur[3, :nask].tolist())
        self.full = sync and rows.n >= rows.cap
        return j


# -- the worker ---------------------------------------------------------------------------------

class _Remote(Worker):
    """The main process's side of the depth worker."""

    def __init__(self, proc, conn):
        super().__init__(proc, conn)
        self.end = None

    def poll(self) -> None:
        """Raise the worker's error as soon as it is there."""
        if self.end is None and self.conn.poll():
            self._take(self.recv())

    def finish(self) -> dict:
        while self.end is None:
            self._take(self.recv())
        self.proc.join(5)
        return self.end

    def _take(self, msg) -> None:
        tag = msg[0]
        if tag == "end":
            self.end = msg[1]
        elif tag == "format":
            raise FormatError(msg[1])
        elif tag == "read":
            raise OSError(msg[1])
        elif tag == "fallback":
            raise Fallback(msg[1])
        else:
            raise DepthWorkerError(msg[1])


def _start(paths, spool, levels, symbol, stall) -> _Remote | None:
    """Fork the depth worker (None when processes cannot be forked here)."""
    if not split.has_depth(paths[0]):
        return None
    w = fork(_work, (list(paths), spool.dir, levels, spool.flush_rows, symbol, stall),
             "ofi-import-depth", errors={FormatError: "format", Fallback: "fallback",
                                         (OSError, EOFError, zlib.error): "read"})
    return None if w is None else _Remote(w.proc, w.conn)


def _work(conn, paths, tmp_dir, levels, flush_rows, symbol, stall) -> None:
    """The worker's body: writes the depth files, sends its totals."""
    from .importer import Spool

    spool = Spool(tmp_dir, levels, flush_rows)
    sink = Sink(spool, levels)
    fast = split._fast_book(levels)
    if fast:
        array_book, with_levels, scan, message = fast
        depth = DepthRows(sink, levels, stall, array_book=array_book)
        st = _DepthLines(sink, symbol, stall, depth, message, with_levels)
        _read_depth_blocks(paths, st, scan)
    else:
        depth = DepthRows(sink, levels, stall)
        st = _DepthLines(sink, symbol, stall, depth)
        _read_depth(paths, st)
    rows = spool.close()
    conn.send(("end", {
        "rows": rows, "first": sink.first, "last": sink.last, "symbols": sink.symbols(),
        "stalls": depth.stalls, "gap_rows": depth.gap_rows,
        "end_stall": _end_stall("depth", depth.last, st.newest, stall)}))
