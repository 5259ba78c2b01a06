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

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

#: the merged sequence's kind codes, also the merge ranks of the streams
TRADE, BOOK, DEPTH = 0, 1, 2
KINDS = ("trades", "book", "depth")
#: depth row type codes
DEPTH_ROW, SNAPSHOT_ROW, GAP_ROW = 0, 1, 2
_DEPTH_TYPES = {"depth": DEPTH_ROW, "snapshot": SNAPSHOT_ROW, "gap": GAP_ROW}

SOURCES_DIR = "_sources"


class CatalogError(Exception):
    """An expected failure (no catalog, symbol or period not in it, bad time); one line."""


# -- times ---------------------------------------------------------------------------------------

def parse_time(text: str) -> int:
    """``--from`` / ``--to``: epoch ms (digits), or an ISO date / date-time (UTC unless it says)."""
    s = text.strip()
    if s.isdigit():
        return int(s)
    try:
        d = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise CatalogError(f"bad time {text!r}: give epoch ms or an ISO date/time "
                           "such as 2024-07-18 or 2024-07-18T12:30 (UTC)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    """``2024-07-18T12:30:00.000Z``."""
    d = _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


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

@dataclass
class Rows:
    """One symbol's rows in merge order: the sequence (``kind``, ``t``, ``key``) and each kind's
    columns, its rows in the same order (``trades``: t, E, price, qty, is_buy, market; ``book``:
    t, E, T, bid, bid_qty, ask, ask_qty; ``depth``: t, type (codes), bid_px, bid_qty, ask_px,
    ask_qty as (rows, levels) arrays: a missing level has price -inf / +inf and quantity 0).
    ``E`` and ``T`` are 0 where null."""

    symbol: str
    kind: object
    t: object
    key: object
    trades: dict
    book: dict
    depth: dict
    levels: int

    def __len__(self) -> int:
        return len(self.kind)


_COLUMNS = {
    "trades": ("seq", "key", "t", "E", "price", "qty", "is_buy", "market"),
    "book": ("seq", "key", "t", "E", "T", "bid", "bid_qty", "ask", "ask_qty"),
    "depth": ("seq", "key", "t", "type"),
}
_SIGNAL_COLUMNS = {  # what the signals need (no prices of trades, no E/T)
    "trades": ("seq", "key", "t", "qty", "is_buy", "market"),
    "book": ("seq", "key", "t", "bid", "bid_qty", "ask", "ask_qty"),
    "depth": ("seq", "key", "t", "type"),
}


def read_symbol(catalog, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                levels: int = 5, full: bool = True, sources: list[dict] | None = None) -> Rows:
    """``symbol``'s rows with ``start_ms <= t < end_ms`` (either bound optional), merged as the
    raw path merges them: by ``(key, source, stream rank)``, each stream in ``seq`` order.
    ``full=False`` reads only the columns the signals need; ``levels`` depth levels are read."""
    import numpy as np

    if sources is None:
        sources = symbol_sources(catalog, symbol, start_ms, end_ms)
    have_levels = min(int(m.get("levels", levels)) for m in sources)
    if levels > have_levels:
        raise CatalogError(f"the catalog keeps {have_levels} depth levels; "
                           f"signal.levels is {levels}")
    cols = dict(_COLUMNS if full else _SIGNAL_COLUMNS)
    cols["depth"] = cols["depth"] + tuple(f"{side}_{x}_{i}" for side in ("bid", "ask")
                                          for x in ("px", "qty") for i in range(levels))
    parts = {k: [] for k in KINDS}
    for si, m in enumerate(sources):
        for kind in KINDS:
            paths = source_files(catalog, m, kind, symbol, start_ms, end_ms)
            if paths:
                c = _read_stream(paths, cols[kind])
                if len(sources) > 1:
                    c["_src"] = np.full(len(c["t"]), si, np.int64)
                parts[kind].append(c)
    data, srank, keys, ts = {}, [], [], []
    for r, kind in enumerate(KINDS):
        c = _concat(parts[kind], cols[kind] + (("_src",) if len(sources) > 1 else ()))
        if start_ms is not None or end_ms is not None:
            keep = np.ones(len(c["t"]), bool)
            if start_ms is not None:
                keep &= c["t"] >= start_ms
            if end_ms is not None:
                keep &= c["t"] < end_ms
            if not keep.all():
                c = {k: v[keep] for k, v in c.items()}
        srank.append(c.pop("_src") * 3 + r if len(sources) > 1 else r)
        keys.append(c["key"])
        ts.append(c["t"])
        data[kind] = c
    kind_seq = np.concatenate([np.full(len(k), r, np.int8) for r, k in enumerate(keys)])
    key = np.concatenate(keys)
    if len(sources) > 1:
        rank = np.concatenate(srank)
    else:
        rank = kind_seq
    # a stable sort of stream-ordered rows by (key, source, rank) is the merge (docs/catalog.md)
    order = np.argsort(key * (3 * len(sources) + 1) + rank, kind="stable")
    kind_seq = kind_seq[order]
    t = np.concatenate(ts)[order]
    key = key[order]
    if len(sources) > 1:   # one source keeps each kind's rows in place; several interleave them
        offsets = np.cumsum([0] + [len(k) for k in keys])
        for r, kind in enumerate(KINDS):
            idx = order[kind_seq == r] - offsets[r]
            data[kind] = {k: v[idx] for k, v in data[kind].items()}
    return Rows(symbol, kind_seq, t, key, data["trades"], data["book"],
                _depth(data["depth"], levels), levels)


def _read_stream(paths: list[Path], columns: tuple) -> dict:
    """The columns of one source's files of a kind (one per date) as numpy arrays (``type`` as
    codes), in ``seq`` order: a stream's late rows may sit in an earlier date's file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    tabs = []
    for path in paths:
        f = pq.ParquetFile(path, memory_map=True,
                           read_dictionary=["type"] if "type" in columns else None)
        names = set(f.schema_arrow.names)
        tabs.append(f.read(columns=[c for c in columns if c in names]))
    tab = tabs[0] if len(tabs) == 1 else pa.concat_tables(tabs, promote_options="default")
    out = {}
    for c in tab.column_names:   # one copy per column, whatever the files and row groups
        col = tab.column(c)
        if c == "type":
            out[c] = _type_codes(col)
        elif col.null_count:
            x = col.to_numpy()
            out[c] = x if x.dtype.kind == "f" else np.nan_to_num(x, nan=0).astype(np.int64)
        else:
            out[c] = col.to_numpy()
    n = tab.num_rows
    for c in columns:
        if c not in out:   # an absent optional column: all null
            out[c] = np.zeros(n, np.int64) if c in ("E", "T") else np.full(n, np.nan)
    seq = out["seq"]
    if len(paths) > 1 and len(seq) > 1 and not (seq[1:] > seq[:-1]).all():
        o = np.argsort(seq, kind="stable")
        out = {k: v[o] for k, v in out.items()}
    return out


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


def _concat(parts: list[dict], columns: tuple) -> dict:
    import numpy as np

    if not parts:
        return {c: np.zeros(0, np.int8 if c == "type" else
                            bool if c in ("is_buy", "market") else
                            np.float64 if c not in ("seq", "key", "t", "E", "T", "_src")
                            else np.int64)
                for c in columns}
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _depth(c: dict, levels: int) -> dict:
    """Level columns stacked into (rows, levels) arrays; missing levels at -inf / +inf, qty 0."""
    import numpy as np

    out = {k: c[k] for k in ("seq", "key", "t", "type")}
    n = len(c["t"])
    for side, fill in (("bid", -np.inf), ("ask", np.inf)):
        px = np.empty((n, levels))
        qty = np.empty((n, levels))
        for i in range(levels):
            px[:, i] = c[f"{side}_px_{i}"]
            qty[:, i] = c[f"{side}_qty_{i}"]
        px[np.isnan(px)] = fill
        qty[np.isnan(qty)] = 0.0
        out[f"{side}_px"] = px
        out[f"{side}_qty"] = qty
    return out
