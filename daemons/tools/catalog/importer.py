"""Recorded files -> catalog sources (docs/catalog.md).

:func:`prepare` checks and opens the inputs (data.binance.vision ``.zip`` files are verified
against their ``.CHECKSUM`` and unpacked), :func:`sources_of` groups them into sources as
:func:`~daemons.marketdata.replay.chains_of` does, and :func:`import_source` writes one source:
the rows of :meth:`Replay.keyed <daemons.marketdata.replay.Replay.keyed>`, per kind, symbol and
UTC date, flushed as Parquet row groups into temp files that are moved into place once every
row is written; the manifest comes last. hftbacktest recordings are read in one pass by
:mod:`.fastimport` (same rows, no merge, the depth stream in a second process).
"""
from __future__ import annotations

import gc
import gzip
import os
import shutil
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...marketdata import formats
from ...marketdata.merge import STALL_MS
from ...marketdata.replay import Replay, chains_of
from ...signal import split
from . import fastimport, store

FLUSH_ROWS = 100_000
TMP = "_tmp"


class CatalogError(Exception):
    """An expected failure of an import (bad input, bad checksum); the message is one line."""


@dataclass
class Input:
    """One given file: ``path`` is what is read (a zip's CSV unpacked), the rest the file's."""

    path: str
    name: str
    sha256: str
    bytes: int
    given: str = ""     #: the path as given (errors name it)


@dataclass
class Source:
    """Consecutive inputs of one format and symbol prefix (one recording)."""

    format: str
    inputs: list[Input]
    source_id: str = field(init=False)

    def __post_init__(self):
        self.source_id = store.source_id([i.sha256 for i in self.inputs])


# -- inputs ------------------------------------------------------------------------------------

def read_checksum(path: Path) -> str | None:
    """The sha256 that ``<path>.CHECKSUM`` (``<sha256>  <name>``) gives, None without one."""
    ck = path.with_name(path.name + ".CHECKSUM")
    if not ck.is_file():
        return None
    words = ck.read_text(errors="replace").split()
    if not words or len(words[0]) != 64:
        raise CatalogError(f"{ck}: not a '<sha256>  <name>' checksum file")
    return words[0].lower()


def prepare(paths: list[str], unpack_dir: str) -> list[Input]:
    """Check every input before anything is written: it exists, its digest, a zip's checksum
    and content (the one file inside is unpacked into ``unpack_dir``)."""
    out = []
    for i, p in enumerate(paths):
        path = Path(p)
        if not path.is_file():
            raise CatalogError(f"no such file: {p}")
        digest, size = store.file_digest(path)
        read = str(path)
        if path.suffix.lower() == ".zip":
            want = read_checksum(path)
            if want is not None and want != digest:
                raise CatalogError(f"{p}: checksum mismatch: sha256 {digest}, "
                                   f"{path.name}.CHECKSUM says {want}")
            read = _unzip(path, Path(unpack_dir) / str(i))
        out.append(Input(read, path.name, digest, size, p))
    return out


def _unzip(path: Path, into: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise CatalogError(f"{path}: expected one file inside the zip, found {len(names)}")
            into.mkdir(parents=True, exist_ok=True)
            # the member's own name: symbol prefix and format come from it (chains_of)
            target = into / os.path.basename(names[0])
            with z.open(names[0]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CatalogError(f"{path}: corrupt zip: {exc}") from None
    return str(target)


def sources_of(inputs: list[Input]) -> list[Source]:
    """The inputs grouped into sources, in the given order (see the module docstring)."""
    by_path = {i.path: i for i in inputs}
    try:
        groups = chains_of([i.path for i in inputs])
    except formats.FormatError as exc:
        raise CatalogError(_named(str(exc), inputs)) from None
    return [Source(fmt, [by_path[p] for p in ps]) for fmt, ps in groups]


def _named(msg: str, inputs: list[Input]) -> str:
    """``msg`` with unpacked paths replaced by the paths the user gave."""
    for i in inputs:
        if i.given and i.path != i.given and i.path in msg:
            msg = msg.replace(i.path, i.given)
    return msg


# -- rows -------------------------------------------------------------------------------------
# One tuple per row in the kind's column order (store.schema), seq and the rest filled in by
# the caller; tuples are cheap to make and zip(*rows) turns a batch into columns at C speed.

def trade_row(seq: int, key: int, rec: dict) -> tuple:
    T, E, recv = rec["T"], rec["E"], rec["recv_ts"]
    t = T if T is not None else E if E is not None else recv
    return (seq, key, t, recv, E, rec["t"], rec["price"], rec["qty"], rec["side"] == "buy",
            rec["X"] == "MARKET")


def book_row(seq: int, key: int, rec: dict) -> tuple:
    E, recv = rec["E"], rec["recv_ts"]
    return (seq, key, recv if E is None else E, recv, E, rec["T"], rec["u"], rec["bid"],
            rec["bid_qty"], rec["ask"], rec["ask_qty"])


def depth_row(seq: int, key: int, rec: dict) -> tuple:
    """A depth, snapshot or gap record; the levels stay lists until the batch is converted.
    A snapshot's ``lastUpdateId`` goes into ``u``."""
    E, recv, typ = rec.get("E"), rec["recv_ts"], rec["type"]
    t = recv if E is None else E
    if typ == "depth":
        return (seq, key, t, recv, typ, rec["U"], rec["u"], rec["pu"], rec["bids"], rec["asks"])
    if typ == "snapshot":
        return (seq, key, t, recv, typ, None, rec["lastUpdateId"], None, rec["bids"],
                rec["asks"])
    return (seq, key, t, recv, typ, None, rec["u"], None, None, None)


def chain_gap_row(seq: int, key: int, rec: dict) -> tuple:
    """A ``gaps`` row from a depth ``gap`` record."""
    E, recv = rec.get("E"), rec["recv_ts"]
    return (seq, key, recv if E is None else E, recv, "depth", rec["reason"],
            rec["expected_pu"], rec["got_pu"], rec["u"], None)


def stall_row(seq: int, stall: dict, end_ms: int) -> tuple:
    """A ``gaps`` row from a :attr:`Replay.stalls` entry (``until`` None: silent to the end)."""
    t = stall["t"]
    until = stall["until"]
    return (seq, t, t, t, stall["stream"], "stream silent", None, None, None,
            end_ms if until is None else until)


def table_of(kind: str, rows: list[tuple], levels: int) -> pa.Table:
    """A batch of rows as a table of ``store.schema(kind, levels)``."""
    sch = store.schema(kind, levels)
    cols = list(zip(*rows))
    if kind != "depth":
        return pa.Table.from_arrays([column(c, f.type) for c, f in zip(cols, sch)], schema=sch)
    arrays = [column(c, f.type) for c, f in zip(cols[:8], sch)]
    for side in (cols[8], cols[9]):
        px, qty = level_matrix(side, levels)
        arrays += px + qty
    return pa.Table.from_arrays(arrays, schema=sch)


_NUMPY = {pa.int64(): np.int64, pa.float64(): np.float64, pa.bool_(): np.bool_}


def column(values, typ: pa.DataType) -> pa.Array:
    """``values`` as an array of ``typ``; through numpy when no value is None (several times
    faster than pyarrow's own conversion of Python objects)."""
    dt = _NUMPY.get(typ)
    if dt is not None and None not in values:
        return pa.array(np.array(values, dtype=dt), type=typ)
    return pa.array(values, type=typ)


_LEVELS = pa.list_(pa.list_(pa.float64()))


def level_matrix(sides, levels: int) -> tuple[list[pa.Array], list[pa.Array]]:
    """``[[price, qty], ...]`` per row (or None) -> ``levels`` price columns and ``levels``
    quantity columns, null where a row has fewer levels."""
    arr = pa.array(sides, type=_LEVELS)
    if len(arr) == 0:
        empty = [pa.array([], pa.float64())] * levels
        return empty, empty
    lens = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    starts = arr.offsets.to_numpy()[:-1]
    flat = pc.list_flatten(pc.list_flatten(arr)).to_numpy(zero_copy_only=False)
    if flat.size == 0:
        flat = np.zeros(2)
    j = np.arange(levels)
    have = j[None, :] < lens[:, None]
    pos = np.where(have, starts[:, None] + j[None, :], 0) * 2  # each level is [price, qty]
    px, qty, missing = flat[pos], flat[pos + 1], ~have
    return ([pa.array(px[:, i], mask=missing[:, i]) for i in range(levels)],
            [pa.array(qty[:, i], mask=missing[:, i]) for i in range(levels)])


# -- writing ----------------------------------------------------------------------------------

class Spool:
    """The rows of one source: per (kind, symbol, UTC day) a Parquet temp file written a row
    group at a time (``flush_rows``), so memory stays bounded."""

    def __init__(self, tmp_dir: Path, levels: int, flush_rows: int = FLUSH_ROWS):
        self.dir = tmp_dir
        self.levels = levels
        self.flush_rows = flush_rows
        # a depth row holds 2 * levels [price, qty] lists until it is converted (~0.25 kB
        # a level): fewer of them per row group keeps a batch near the others' size in memory
        self.depth_rows = max(1000, flush_rows * 2 // levels)
        self.bufs: dict[tuple, list] = {}
        self.writers: dict[tuple, pq.ParquetWriter] = {}
        self.rows: dict[tuple, int] = {}
        self.seq: dict[tuple, int] = {}      # (kind, symbol) -> next seq

    def next_seq(self, kind: str, symbol: str) -> int:
        k = (kind, symbol)
        s = self.seq.get(k, 0)
        self.seq[k] = s + 1
        return s

    def buffer(self, kind: str, symbol: str, day: int) -> list:
        """The list to append ``kind`` rows of ``symbol`` on ``day`` to (call :meth:`check`
        after appending)."""
        k = (kind, symbol, day)
        b = self.bufs.get(k)
        if b is None:
            b = self.bufs[k] = []
        return b

    def check(self, kind: str, symbol: str, day: int, buf: list) -> None:
        if len(buf) >= (self.depth_rows if kind == "depth" else self.flush_rows):
            self._flush((kind, symbol, day), buf)

    def _flush(self, k: tuple, buf: list) -> None:
        if not buf:
            return
        kind = k[0]
        self.write_table(kind, k[1], k[2], table_of(kind, buf, self.levels))
        buf.clear()

    def write_table(self, kind: str, symbol: str, day: int, table: pa.Table) -> None:
        """Append ``table`` (rows of ``kind``, ``symbol`` on ``day``, in ``seq`` order) as one
        row group."""
        k = (kind, symbol, day)
        w = self.writers.get(k)
        if w is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            schema = store.schema(kind, self.levels)
            w = self.writers[k] = pq.ParquetWriter(
                self._tmp(k), schema, compression="zstd",
                use_dictionary=False,  # faster and, for these columns, smaller
                # the integer columns (times, ids, keys: near-sorted) delta-encoded: half the
                # decoding time of plain + zstd, and smaller files
                column_encoding={f.name: "DELTA_BINARY_PACKED" for f in schema
                                 if pa.types.is_integer(f.type)})
        w.write_table(table, row_group_size=len(table))
        self.rows[k] = self.rows.get(k, 0) + len(table)

    def _tmp(self, k: tuple) -> Path:
        kind, symbol, day = k
        return self.dir / f"{kind}.{symbol}.{store.day_name(day)}.parquet"

    def close(self) -> dict[tuple, int]:
        """Flush everything; ``{(kind, symbol, day): rows}``."""
        for k, buf in self.bufs.items():
            self._flush(k, buf)
        for w in self.writers.values():
            w.close()
        return dict(self.rows)

    def commit(self, catalog, sid: str) -> None:
        """Move the closed temp files to their partitions."""
        for k in self.rows:
            kind, symbol, day = k
            dest = store.parquet_path(catalog, kind, symbol, store.day_name(day), sid)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp(k), dest)
        shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # already broken; the files go anyway
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


# -- one source -------------------------------------------------------------------------------

@dataclass
class Result:
    source: Source
    manifest: dict
    imported: bool          #: False: it was already in the catalog
    lines: int = 0
    seconds: float = 0.0


def import_source(catalog, src: Source, levels: int = 10, symbol: str | None = None,
                  progress=None, flush_rows: int = FLUSH_ROWS, fast: bool = True,
                  workers: int = 2) -> Result:
    """Write ``src`` into ``catalog`` unless its manifest is already there.

    ``symbol`` names the symbol of files that carry none (CSV). ``progress(lines)`` is called
    now and then with the lines read so far. An hftbacktest recording is read in one pass
    (:mod:`.fastimport`, the depth stream in a second process unless ``workers`` is 1); the
    other formats, or ``fast=False``, through Replay; the rows are the same.
    """
    sid = src.source_id
    old = store.read_manifest(catalog, sid)
    if old is not None:
        if old.get("levels") != levels and old["kinds"].get("depth"):
            raise CatalogError(f"source {sid} is in the catalog with {old['levels']} levels, "
                               f"not {levels}; remove _sources/{sid}.json to import it again")
        return Result(src, old, False)
    store.remove_source_files(catalog, sid)   # leftovers of an import that did not finish
    tmp = Path(catalog) / TMP / sid
    shutil.rmtree(tmp, ignore_errors=True)
    spool = Spool(tmp, levels, flush_rows)
    started = time.perf_counter()
    # the buffered rows are acyclic; without this, full collections walk them over and over
    # (a third of the import time on a long recording)
    gc_was_on = gc.isenabled()
    gc.disable()
    paths = [i.path for i in src.inputs]
    try:
        done = None
        if fast and fastimport.applies(src.format):
            try:
                done = fastimport.read(paths, spool, levels, symbol, STALL_MS, progress,
                                       workers)
            except fastimport.Fallback:
                spool.abort()
                spool = Spool(tmp, levels, flush_rows)
        if done is not None:
            first, last, lines, stalls = done.first, done.last, done.lines, done.stalls
            spool.rows.update(done.rows)   # the depth worker's files
            for sym, key, t, recv, reason, expected, got, u in done.gap_rows:
                day = t // store.DAY_MS
                buf = spool.buffer("gaps", sym, day)
                buf.append((spool.next_seq("gaps", sym), key, t, recv, "depth", reason,
                            expected, got, u, None))
                spool.check("gaps", sym, day, buf)
            symbols = sorted(done.symbols)
            stall_ms = int(STALL_MS)
        else:
            replay = Replay(paths, symbol=symbol, levels=levels)
            first, last = _fill(spool, replay, progress)
            lines, stalls = replay.messages, replay.stalls
            symbols = sorted({k[1] for k in spool.seq if k[0] != "gaps"})
            stall_ms = getattr(replay, "stall_ms", None) or _stall_ms(replay)
        _add_stalls(spool, stalls, symbols, last)
        rows = spool.close()
        manifest = _manifest(src, rows, first, last, levels, stall_ms)
        spool.commit(catalog, sid)
        store.write_manifest(catalog, manifest)
    except formats.FormatError as exc:
        spool.abort()
        raise CatalogError(_named(str(exc), src.inputs)) from None
    except (OSError, EOFError, zlib.error) as exc:
        spool.abort()
        raise CatalogError(_read_error(src, exc)) from None
    except split.DepthWorkerError as exc:
        spool.abort()
        raise CatalogError(str(exc)) from None
    except BaseException:
        spool.abort()
        raise
    finally:
        if gc_was_on:
            gc.enable()
        _rmdir_empty(Path(catalog) / TMP)
    return Result(src, manifest, True, lines, time.perf_counter() - started)


def _stall_ms(replay) -> float | None:
    chains = getattr(replay, "chains", None)
    return getattr(chains[0], "stall_ms", None) if chains else None


def _fill(spool: Spool, replay: Replay, progress) -> tuple[int | None, int | None]:
    """Every keyed record of ``replay`` into ``spool``; the first and last ``t``."""
    day_ms = store.DAY_MS
    first = last = None
    n = 0
    makers = {"trades": trade_row, "book": book_row, "depth": depth_row}
    next_seq, buffer, check = spool.next_seq, spool.buffer, spool.check
    for stream, key, rec in replay.keyed():
        sym = rec["symbol"]
        row = makers[stream](next_seq(stream, sym), key, rec)
        t = row[2]
        day = t // day_ms
        buf = buffer(stream, sym, day)
        buf.append(row)
        check(stream, sym, day, buf)
        if stream == "depth" and row[4] == "gap":
            g = chain_gap_row(next_seq("gaps", sym), key, rec)
            gb = buffer("gaps", sym, day)
            gb.append(g)
            check("gaps", sym, day, gb)
        if first is None or t < first:
            first = t
        if last is None or t > last:
            last = t
        n += 1
        if progress is not None and not n & 0x3FFF:
            progress(replay.messages)
    if progress is not None:
        progress(replay.messages)
    return first, last


def _add_stalls(spool: Spool, stalls: list, symbols: list, last) -> None:
    """The silences (:attr:`Replay.stalls`) as ``gaps`` rows of every symbol of the source
    (a stream of a recording is silent for all of its symbols)."""
    for st in stalls:
        for sym in symbols:
            row = stall_row(spool.next_seq("gaps", sym), st, last)
            day = row[2] // store.DAY_MS
            buf = spool.buffer("gaps", sym, day)
            buf.append(row)
            spool.check("gaps", sym, day, buf)


def _manifest(src: Source, rows: dict, first, last, levels: int, stall_ms) -> dict:
    kinds = {k: 0 for k in store.KINDS}
    for (kind, _sym, _day), n in rows.items():
        kinds[kind] += n
    return {
        "source_id": src.source_id,
        "format": src.format,
        "files": [{"name": i.name, "sha256": i.sha256, "bytes": i.bytes} for i in src.inputs],
        "symbols": sorted({k[1] for k in rows}),
        "kinds": kinds,
        "first_ms": first,
        "last_ms": last,
        "dates": sorted({store.day_name(k[2]) for k in rows}),
        "levels": levels,
        "stall_ms": stall_ms,
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _read_error(src: Source, exc: BaseException) -> str:
    """One line naming the input that cannot be read (found by reading each one again)."""
    for i in src.inputs:
        try:
            with formats.open_binary(i.path) as f:
                while f.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            return f"{i.given or i.name}: cannot read: {_one_line(e)}"
    return f"{', '.join(i.given or i.name for i in src.inputs)}: cannot read: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _rmdir_empty(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass
