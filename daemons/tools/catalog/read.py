"""Read one symbol's rows back from a market-data catalog (docs/catalog.md), as numpy arrays in
the raw path's merge order.

    sources = symbol_sources(catalog, "BTCUSDT")          # manifests; one-line CatalogError
    rows = read_symbol(catalog, "BTCUSDT", start_ms, end_ms, levels=5)
    rows.kind, rows.t                                      # the merged sequence
    rows.trades["qty"], rows.book["bid"], rows.depth["bid_px"]  # each kind in merged order

The manifest checks need neither numpy nor pyarrow; both are imported only to read rows (they
take a good part of a short command's run time).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...marketdata.rows import DEPTH_ROW, GAP_ROW, KINDS, SNAPSHOT_ROW, Rows
from ...report.period import epoch_ms, iso_ms

_DEPTH_TYPES = {"depth": DEPTH_ROW, "snapshot": SNAPSHOT_ROW, "gap": GAP_ROW}

SOURCES_DIR = "_sources"


class CatalogError(Exception):
    """An expected failure (no catalog, symbol or period not in it, bad time); one line."""


# -- times ---------------------------------------------------------------------------------------

def parse_time(text: str) -> int:
    """``--from`` / ``--to``: epoch ms (digits), or an ISO date / date-time (UTC unless it says)."""
    try:
        return epoch_ms(text)
    except ValueError:
        raise CatalogError(f"bad time {text!r}: give epoch ms or an ISO date/time "
                           "such as 2024-07-18 or 2024-07-18T12:30 (UTC)") from None


# -- manifests -----------------------------------------------------------------------------------

def manifests(catalog: str | os.PathLike) -> list[dict]:
    """Every finished import of the catalog, by ``first_ms`` (:func:`.store.manifests`)."""
    root = Path(catalog)
    if not root.is_dir():
        raise CatalogError(f"no catalog at {catalog} (import data with: ofi data import FILE... "
                           f"--catalog {catalog})")
    if not (root / SOURCES_DIR).is_dir():
        raise CatalogError(f"{catalog} is not a catalog (no {SOURCES_DIR}/ in it)")
    from . import store

    try:
        return store.manifests(root)
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{catalog}: unreadable manifest: {exc}") from None


def symbol_sources(catalog, symbol: str, start_ms: int | None = None,
                   end_ms: int | None = None) -> list[dict]:
    """The manifests of ``symbol``'s sources that overlap ``[start_ms, end_ms)``, in the order
    of their ``first_ms``; :class:`CatalogError` naming what the catalog has otherwise."""
    ms = manifests(catalog)
    have = sorted({s for m in ms for s in m.get("symbols", ())})
    mine = [m for m in ms if symbol in m.get("symbols", ()) and m.get("first_ms") is not None]
    if not mine:
        raise CatalogError(f"symbol {symbol} is not in the catalog {catalog} (it has "
                           f"{', '.join(have) if have else 'no imported data'})")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise CatalogError(f"empty period: --from {iso_ms(start_ms)} is not before "
                           f"--to {iso_ms(end_ms)}")
    sel = [m for m in mine if (start_ms is None or m["last_ms"] >= start_ms)
           and (end_ms is None or m["first_ms"] < end_ms)]
    if not sel:
        spans = ", ".join(f"{iso_ms(m['first_ms'])} to {iso_ms(m['last_ms'])}" for m in mine)
        want = (f"from {iso_ms(start_ms) if start_ms is not None else 'the start'} "
                f"to {iso_ms(end_ms) if end_ms is not None else 'the end'}")
        raise CatalogError(f"no {symbol} data {want} in the catalog {catalog} (it has {spans})")
    return sel


def source_files(catalog, manifest: dict, kind: str, symbol: str, start_ms: int | None = None,
                 end_ms: int | None = None) -> list[Path]:
    """The Parquet files of one source, kind and symbol, by date, within the period's dates."""
    from . import store

    if not manifest.get("kinds", {}).get(kind):
        return []
    lo = store.date_of(start_ms) if start_ms is not None else None
    hi = store.date_of(end_ms - 1) if end_ms is not None else None
    out = []
    for d in sorted(manifest.get("dates", ())):
        if (lo is not None and d < lo) or (hi is not None and d > hi):
            continue
        p = store.parquet_path(catalog, kind, symbol, d, manifest["source_id"])
        if p.is_file():
            out.append(p)
    return out


# -- rows ----------------------------------------------------------------------------------------

_COLUMNS = {
    "trades": ("key", "t", "E", "price", "qty", "is_buy", "market"),
    "book": ("key", "t", "E", "T", "bid", "bid_qty", "ask", "ask_qty"),
    "depth": ("key", "t", "type"),
}
_SIGNAL_COLUMNS = {  # what the signals need (no prices of trades, no E/T)
    "trades": ("key", "t", "qty", "is_buy", "market"),
    "book": ("key", "t", "bid", "bid_qty", "ask", "ask_qty"),
    "depth": ("key", "t", "type"),
}
#: depth levels as (rows, levels) arrays: name -> value of a level the book does not have
_LEVELS = {"bid_px": float("-inf"), "bid_qty": 0.0, "ask_px": float("inf"), "ask_qty": 0.0}


def read_symbol(catalog, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                levels: int = 5, full: bool = True, sources: list[dict] | None = None) -> Rows:
    """``symbol``'s rows with ``start_ms <= t < end_ms`` (either bound optional), merged as the
    raw path merges them: by ``(key, source, stream rank)``, each stream in ``seq`` order.
    ``full=False`` reads only the columns the signals need; ``levels`` depth levels are read.
    The whole period at once: :func:`iter_symbol` holds one day at a time."""
    sources, cols = _prepare(catalog, symbol, start_ms, end_ms, levels, full, sources)
    parts = {}
    for kind in KINDS:
        streams = []
        for si, m in enumerate(sources):
            paths = source_files(catalog, m, kind, symbol, start_ms, end_ms)
            if paths:
                streams.append(_tagged(_read_stream(paths, cols[kind], _levels_of(kind, levels)),
                                       si, len(sources)))
        parts[kind] = _within(_concat(streams, _tag_columns(cols[kind], len(sources)),
                                      _levels_of(kind, levels)), start_ms, end_ms)
    return _merge(symbol, parts, len(sources), levels)


def iter_symbol(catalog, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                levels: int = 5, full: bool = True, sources: list[dict] | None = None):
    """:func:`read_symbol` in consecutive pieces: the same rows in the same order, cut into
    :class:`Rows` of about a row group each (never across a UTC day of merge keys), so that
    memory is that of a few row groups, not of the period.

    Each stream (a source's rows of a kind) is read a row group at a time; the rows keyed
    before the smallest last key read of the streams not yet finished are in their final
    order and make the next piece (merge order is by key first). A row lies in the file of its
    time's date, and its key is at or after its time, so a day's files hold every row keyed in
    that day; the few keyed later (late rows raised to their stream's frontier) are carried
    into the next day's stream, put back in ``seq`` order there."""
    from . import store

    sources, cols = _prepare(catalog, symbol, start_ms, end_ms, levels, full, sources)
    lo = store.date_of(start_ms) if start_ms is not None else ""
    hi = store.date_of(end_ms - 1) if end_ms is not None else "9999"
    dates = sorted({d for m in sources for d in m.get("dates", ()) if lo <= d <= hi})
    n = len(sources)
    # one thread decodes each stream's next row group (pyarrow lets go of the GIL) while this
    # one merges and hands out the pieces
    with ThreadPoolExecutor(1, thread_name_prefix="ofi-catalog-read") as pool:
        carry: dict = {}   # (source index, kind rank) -> rows keyed in a later day, in seq order
        for d in dates:
            bound = (_day_number(d) + 1) * store.DAY_MS   # the first key of the next day
            streams = []
            for r, kind in enumerate(KINDS):
                for si, m in enumerate(sources):
                    p = None
                    if d in m.get("dates", ()) and m.get("kinds", {}).get(kind):
                        p = store.parquet_path(catalog, kind, symbol, d, m["source_id"])
                        p = p if p.is_file() else None
                    c = carry.pop((si, r), None)
                    if p is not None or c is not None:
                        streams.append(_Stream(si, r, p, c, cols[kind], _levels_of(kind, levels),
                                               bound, start_ms, end_ms, pool))
            for parts in _cut_by_key(streams, bound):
                yield _piece(symbol, parts, cols, n, levels)
            for s in streams:
                rest = s.rest()
                if rest is not None:
                    carry[(s.si, s.rank)] = rest
        if carry:
            yield _piece(symbol, list(carry.items()), cols, n, levels)
            carry.clear()


def _cut_by_key(streams: list, bound: int):
    """Lists of ``((source index, kind rank), rows)``: the streams' rows keyed before
    ``bound``, in consecutive pieces each of which precedes the next in merge order."""
    for s in streams:
        s.more()
    while True:
        live = [s for s in streams if not s.done]
        low = min(s.last_key() for s in live) if live else bound
        cut = min(low, bound)
        parts = [((s.si, s.rank), rows) for s in streams
                 if (rows := s.take(cut)) is not None]
        if parts:
            yield parts
        if low >= bound:
            return
        for s in live:
            if s.last_key() == low:
                s.more()


def _piece(symbol: str, parts: list, cols: dict, sources: int, levels: int) -> "Rows":
    """:class:`Rows` of the streams' parts (each in seq order, keyed before the next piece)."""
    import numpy as np

    data = {}
    for r, kind in enumerate(KINDS):
        mine = []
        for (si, rank), rows in parts:
            if rank != r:
                continue
            rows = _without_seq(rows)
            if sources > 1:
                rows["_src"] = np.full(len(rows["t"]), si, np.int64)
            mine.append(rows)
        data[kind] = _concat(mine, _tag_columns(cols[kind], sources), _levels_of(kind, levels))
    return _merge(symbol, data, sources, levels)


def _prepare(catalog, symbol, start_ms, end_ms, levels, full, sources):
    if sources is None:
        sources = symbol_sources(catalog, symbol, start_ms, end_ms)
    have_levels = min(int(m.get("levels", levels)) for m in sources)
    if levels > have_levels:
        raise CatalogError(f"the catalog keeps {have_levels} depth levels; "
                           f"signal.levels is {levels}")
    return sources, _COLUMNS if full else _SIGNAL_COLUMNS


def _levels_of(kind: str, levels: int) -> int:
    return levels if kind == "depth" else 0


def _day_number(date: str) -> int:
    import datetime as dt

    return (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days


def _tag_columns(columns: tuple, sources: int) -> tuple:
    return columns + (("_src",) if sources > 1 else ())


def _tagged(c: dict, si: int, sources: int) -> dict:
    """A stream's columns with its source's index (``_src``) when there are several sources."""
    import numpy as np

    if sources > 1:
        c["_src"] = np.full(len(c["t"]), si, np.int64)
    return c


def _without_seq(c: dict) -> dict:
    return {k: v for k, v in c.items() if k != "seq"}


def _within(c: dict, start_ms, end_ms) -> dict:
    """The rows with ``start_ms <= t < end_ms``."""
    import numpy as np

    if start_ms is None and end_ms is None:
        return c
    keep = np.ones(len(c["t"]), bool)
    if start_ms is not None:
        keep &= c["t"] >= start_ms
    if end_ms is not None:
        keep &= c["t"] < end_ms
    return c if keep.all() else {k: v[keep] for k, v in c.items()}


def _merge(symbol: str, data: dict, sources: int, levels: int) -> Rows:
    """Each kind's stream-ordered rows -> :class:`Rows` in merge order: a stable sort by
    ``(key, source, stream rank)`` (docs/catalog.md)."""
    import numpy as np

    srank, keys, ts = [], [], []
    for r, kind in enumerate(KINDS):
        c = data[kind]
        srank.append(c.pop("_src") * 3 + r if sources > 1 else r)
        keys.append(c["key"])
        ts.append(c["t"])
    if sources == 1:
        # key * 4 + rank sorted: a merge of three runs (each stream's keys never go down),
        # and the sorted values give the key and the kind back
        merged = np.empty(sum(len(k) for k in keys), np.int64)
        at = 0
        for r, k in enumerate(keys):
            np.multiply(k, 4, out=merged[at:at + len(k)])
            merged[at:at + len(k)] += r
            at += len(k)
        order = np.argsort(merged, kind="stable")
        merged = merged[order]
        kind_seq = (merged & 3).astype(np.int8)
        key = merged >> 2
        t = np.concatenate(ts)[order]
        return Rows(symbol, kind_seq, t, key, data["trades"], data["book"], data["depth"],
                    levels)
    kind_seq = np.concatenate([np.full(len(k), r, np.int8) for r, k in enumerate(keys)])
    key = np.concatenate(keys)
    rank = np.concatenate([np.broadcast_to(r, len(k)) for r, k in zip(srank, keys)])
    order = np.argsort(key * (3 * sources + 1) + rank, kind="stable")
    kind_seq = kind_seq[order]
    t = np.concatenate(ts)[order]
    key = key[order]
    if sources > 1:   # one source keeps each kind's rows in place; several interleave them
        offsets = np.cumsum([0] + [len(k) for k in keys])
        for r, kind in enumerate(KINDS):
            idx = order[kind_seq == r] - offsets[r]
            data[kind] = {k: v[idx] for k, v in data[kind].items()}
    return Rows(symbol, kind_seq, t, key, data["trades"], data["book"], data["depth"], levels)


def _read_stream(paths: list[Path], columns: tuple, levels: int = 0,
                 seq_from: int | None = None) -> dict:
    """The columns of one source's files of a kind (one per date) as numpy arrays (``type`` as
    codes; E, T 0 where null), in ``seq`` order: a stream's late rows may sit in an earlier
    date's file. ``levels`` > 0: also the depth levels as (rows, levels) arrays (:data:`_LEVELS`),
    each level contiguous (Fortran order). ``seq_from``: ``seq`` too when a row may have a
    ``key`` at or after it (by the files' statistics), although ``columns`` do not name it.

    Each row group is decoded and copied into arrays of the stream's length, so that at most
    one row group is held twice. ``seq`` itself is read only when the files' statistics do not
    show them in order already (rows within a file are in ``seq`` order)."""
    import numpy as np
    import pyarrow.parquet as pq

    files = [pq.ParquetFile(p, memory_map=True,
                            read_dictionary=["type"] if "type" in columns else None)
             for p in paths]
    n = sum(f.metadata.num_rows for f in files)
    ordered = _in_seq_order(files)
    keep_seq = "seq" in columns or (seq_from is not None and
                                    _max_of(files, "key", seq_from) >= seq_from)
    # column in the files -> (output array, level index or None)
    dest: dict[str, tuple] = {}
    out: dict = {}
    for c in dict.fromkeys(columns + (("seq",) if keep_seq or not ordered else ())):
        out[c] = np.empty(n, _dtype(c, files))
        dest[c] = (out[c], None)
    for name in _LEVELS if levels else ():
        out[name] = np.empty((n, levels), order="F")
        side, x = name.split("_")
        for i in range(levels):
            dest[f"{side}_{x}_{i}"] = (out[name], i)
    at = 0
    for f in files:
        names = set(f.schema_arrow.names)
        read = [c for c in dest if c in names]
        for c in dest:
            if c not in names:   # an absent optional column: all null
                _fill_null(dest[c], at, at + f.metadata.num_rows)
        for g in range(f.metadata.num_row_groups):
            tab = f.read_row_group(g, columns=read)
            m = tab.num_rows
            for c in read:
                arr, level = dest[c]
                col = tab.column(c)
                part = arr[at:at + m] if level is None else arr[at:at + m, level]
                if c == "type":
                    part[:] = _type_codes(col)
                elif col.null_count and arr.dtype.kind != "f":
                    part[:] = col.fill_null(False if arr.dtype == bool else 0).to_numpy()
                else:
                    part[:] = col.to_numpy()   # a null double: NaN
            at += m
    if levels:   # a level the book does not have (null: NaN here)
        for name, fill in _LEVELS.items():
            a = out[name]
            nan = np.isnan(a)
            if nan.any():
                a[nan] = fill
    if not ordered:
        seq = out["seq"] if keep_seq else out.pop("seq")
        if len(seq) > 1 and not (seq[1:] > seq[:-1]).all():
            o = np.argsort(seq, kind="stable")
            out = {k: v[o] for k, v in out.items()}
    return out


def _max_of(files, column: str, default: int):
    """The largest value of ``column`` in the files by their statistics; ``default`` when a
    file has rows without them."""
    top = None
    for f in files:
        md = f.metadata
        if md.num_rows == 0:
            continue
        try:
            i = f.schema_arrow.names.index(column)
        except ValueError:
            return default
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(i).statistics
            if st is None or not st.has_min_max:
                return default
            top = st.max if top is None else max(top, st.max)
    return default if top is None else top


def _in_seq_order(files) -> bool:
    """Whether the files' rows are in ``seq`` order as they come: one file, or each file's
    ``seq`` statistics above the previous one's (False when a file has none)."""
    if len(files) == 1:
        return True
    last = None
    for f in files:
        md = f.metadata
        if md.num_rows == 0:
            continue
        try:
            i = f.schema_arrow.names.index("seq")
        except ValueError:
            return False
        lo = hi = None
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(i).statistics
            if st is None or not st.has_min_max:
                return False
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
        if last is not None and lo <= last:
            return False
        last = hi
    return True


def _dtype(column: str, files):
    """The numpy type of a column: as the first file that has it stores it."""
    import numpy as np

    if column == "type":
        return np.int8
    for f in files:
        schema = f.schema_arrow
        if column in schema.names:
            typ = schema.field(column).type
            return bool if str(typ) == "bool" else np.float64 if str(typ) == "double" \
                else np.int64
    return np.int64 if column in ("seq", "key", "t", "E", "T") else np.float64


def _fill_null(dest: tuple, lo: int, hi: int) -> None:
    arr, level = dest
    if level is not None:
        arr[lo:hi, level] = float("nan")
    else:
        arr[lo:hi] = float("nan") if arr.dtype.kind == "f" else 0


def _type_codes(col):
    import numpy as np

    parts = []
    for ch in col.chunks:
        if hasattr(ch, "indices"):
            lut = np.array([_DEPTH_TYPES.get(s, GAP_ROW) for s in ch.dictionary.to_pylist()],
                           np.int8)
            parts.append(lut[ch.indices.to_numpy(zero_copy_only=False)] if len(lut)
                         else np.zeros(len(ch), np.int8))
        else:
            parts.append(np.array([_DEPTH_TYPES.get(s, GAP_ROW) for s in ch.to_pylist()],
                                  np.int8))
    return np.concatenate(parts) if parts else np.zeros(0, np.int8)


def _concat(parts: list[dict], columns: tuple, levels: int = 0) -> dict:
    import numpy as np

    if not parts:
        out = {c: np.zeros(0, np.int8 if c == "type" else
                           bool if c in ("is_buy", "market") else
                           np.float64 if c not in ("key", "t", "E", "T", "_src")
                           else np.int64)
               for c in columns}
        if levels:
            out.update({name: np.zeros((0, levels)) for name in _LEVELS})
        return out
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class _Stream:
    """One source's rows of a kind in a day, read a row group at a time in ``seq`` order (the
    rows carried from the day before merged in), within ``[start_ms, end_ms)``; a buffer of
    the rows read and not yet taken (their keys never go down)."""

    def __init__(self, si, rank, path, carried, columns, levels, bound, start_ms, end_ms,
                 pool):
        self.si, self.rank = si, rank
        self.carried = carried
        self.within = (start_ms, end_ms)
        self.buf = None
        self.done = False
        self.groups = iter(())
        if path is not None:
            self.groups = _row_groups(path, columns, levels, carried is not None, bound, pool)

    def _next_chunk(self):
        """The next rows in seq order (None at the end)."""
        import numpy as np

        for c in self.groups:
            c = _within(c, *self.within)
            if self.carried is not None:   # the carried rows that come before these
                seq = c["seq"]
                if not len(seq):
                    continue
                k = int(np.searchsorted(self.carried["seq"], seq[-1], side="right"))
                if k:
                    head = {key: v[:k] for key, v in self.carried.items()}
                    self.carried = {key: v[k:] for key, v in self.carried.items()}
                    c = _concat([head, c], tuple(c))
                    o = np.argsort(c["seq"], kind="stable")
                    c = {key: v[o] for key, v in c.items()}
            if len(c["t"]):
                return c
        if self.carried is not None:
            c, self.carried = self.carried, None
            if len(c["t"]):
                return c
        return None

    def more(self) -> None:
        """Read the next rows into the buffer (or note the end)."""
        c = self._next_chunk()
        if c is None:
            self.done = True
        elif self.buf is None:
            self.buf = c
        else:
            self.buf = _concat([self.buf, c], tuple(self.buf))

    def last_key(self) -> int:
        return int(self.buf["key"][-1])

    def take(self, cut: int):
        """The buffered rows keyed before ``cut`` (None: none), out of the buffer."""
        import numpy as np

        b = self.buf
        if b is None:
            return None
        k = int(np.searchsorted(b["key"], cut, side="left"))
        if not k:
            return None
        if k == len(b["key"]):
            self.buf = None
            return b
        self.buf = {key: v[k:] for key, v in b.items()}
        return {key: v[:k] for key, v in b.items()}

    def rest(self):
        """Everything not taken (all keyed in a later day), in seq order (None: nothing)."""
        while not self.done:
            self.more()
        b, self.buf = self.buf, None
        return b


def _row_groups(path, columns: tuple, levels: int, with_seq: bool, bound: int, pool):
    """One Parquet file's rows a row group at a time, as :func:`_read_stream` gives them (the
    same columns, types, codes and fills); ``seq`` too when ``with_seq`` or when a row may be
    keyed at or after ``bound`` (by the file's statistics)."""
    import numpy as np
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path, memory_map=True,
                       read_dictionary=["type"] if "type" in columns else None)
    if with_seq or _max_of([f], "key", bound) >= bound:
        columns = tuple(dict.fromkeys(columns + ("seq",)))
    names = set(f.schema_arrow.names)
    dtypes = {c: np.dtype(_dtype(c, [f])) for c in columns}
    level_cols = {}
    for name in _LEVELS if levels else ():
        side, x = name.split("_")
        level_cols[name] = [f"{side}_{x}_{i}" for i in range(levels)]
    read = [c for c in columns if c in names] + \
        [c for cs in level_cols.values() for c in cs if c in names]
    groups = f.metadata.num_row_groups
    ahead = pool.submit(f.read_row_group, 0, columns=read) if groups else None
    for g in range(groups):
        tab = ahead.result()
        if g + 1 < groups:   # the next group is decoded (GIL released) while this one is used
            ahead = pool.submit(f.read_row_group, g + 1, columns=read)
        m = tab.num_rows
        out = {}
        for c in columns:
            dt = dtypes[c]
            if c not in names:   # an absent optional column: all null
                out[c] = np.full(m, np.nan if dt.kind == "f" else 0, dt)
                continue
            col = tab.column(c)
            if c == "type":
                out[c] = _type_codes(col)
            elif col.null_count and dt.kind != "f":
                out[c] = col.fill_null(False if dt == bool else 0).to_numpy().astype(
                    dt, copy=False)
            else:
                out[c] = col.to_numpy().astype(dt, copy=False)   # a null double: NaN
        for name, cs in level_cols.items():
            a = np.empty((m, levels), order="F")
            for i, c in enumerate(cs):
                a[:, i] = tab.column(c).to_numpy() if c in names else np.nan
            nan = np.isnan(a)
            if nan.any():   # a level the book does not have
                a[nan] = _LEVELS[name]
            out[name] = a
        yield out
