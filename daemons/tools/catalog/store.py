"""The catalog's layout on disk (docs/catalog.md): paths, Parquet schemas, manifests.

    DIR/_sources/<source_id>.json
    DIR/<kind>/symbol=<SYMBOL>/date=<YYYY-MM-DD>/<source_id>.parquet

Only sources with a manifest count: readers go through :func:`manifests` and
:func:`source_files`, never through a bare glob.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path

import orjson
import pyarrow as pa

KINDS = ("trades", "book", "depth", "gaps")
#: the merge rank of each stream kind (gaps are not merged)
RANK = {"trades": 0, "book": 1, "depth": 2}
SOURCES = "_sources"
DAY_MS = 86_400_000

_I, _F, _B, _S = pa.int64(), pa.float64(), pa.bool_(), pa.string()
_HEAD = [("seq", _I), ("key", _I), ("t", _I), ("recv_ts", _I)]
_TAIL = {
    "trades": [("E", _I), ("trade_id", _I), ("price", _F), ("qty", _F), ("is_buy", _B),
               ("market", _B)],
    "book": [("E", _I), ("T", _I), ("u", _I), ("bid", _F), ("bid_qty", _F), ("ask", _F),
             ("ask_qty", _F)],
    "gaps": [("stream", _S), ("reason", _S), ("expected_pu", _I), ("got_pu", _I), ("u", _I),
             ("until", _I)],
}


def level_columns(levels: int) -> list[str]:
    """``bid_px_0 .. bid_px_{L-1}, bid_qty_0 .., ask_px_0 .., ask_qty_0 ..``."""
    return [f"{side}_{what}_{i}" for side in ("bid", "ask") for what in ("px", "qty")
            for i in range(levels)]


def schema(kind: str, levels: int = 10) -> pa.Schema:
    """The Parquet schema of ``kind`` (``levels`` matters for ``depth`` only)."""
    if kind == "depth":
        tail = [("type", _S), ("U", _I), ("u", _I), ("pu", _I)]
        tail += [(c, _F) for c in level_columns(levels)]
    else:
        tail = _TAIL[kind]
    return pa.schema(_HEAD + tail)


# -- names and paths ---------------------------------------------------------------------------

def date_of(ms: int) -> str:
    """The UTC date (``YYYY-MM-DD``) of an epoch-ms time."""
    return day_name(ms // DAY_MS)


def day_name(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (days since 1970-01-01)."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()


def source_id(digests: list[str]) -> str:
    """First 16 hex digits of the SHA-256 of the files' SHA-256 hex digests, in order."""
    h = hashlib.sha256()
    for d in digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()[:16]


def file_digest(path, chunk: int = 1 << 20) -> tuple[str, int]:
    """``(sha256 hex, bytes)`` of a file's content."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def partition_dir(catalog, kind: str, symbol: str, date: str) -> Path:
    return Path(catalog) / kind / f"symbol={symbol}" / f"date={date}"


def parquet_path(catalog, kind: str, symbol: str, date: str, sid: str) -> Path:
    return partition_dir(catalog, kind, symbol, date) / f"{sid}.parquet"


def manifest_path(catalog, sid: str) -> Path:
    return Path(catalog) / SOURCES / f"{sid}.json"


# -- manifests -----------------------------------------------------------------------------------

def read_manifest(catalog, sid: str) -> dict | None:
    """The manifest of source ``sid``, None when the source is not (completely) imported."""
    try:
        return orjson.loads(manifest_path(catalog, sid).read_bytes())
    except FileNotFoundError:
        return None


def manifests(catalog) -> list[dict]:
    """Every complete source's manifest, in the order of ``first_ms`` (then ``source_id``)."""
    d = Path(catalog) / SOURCES
    out = []
    if d.is_dir():
        for p in d.glob("*.json"):
            out.append(orjson.loads(p.read_bytes()))
    out.sort(key=lambda m: (m["first_ms"] if m["first_ms"] is not None else -1, m["source_id"]))
    return out


def write_manifest(catalog, manifest: dict) -> Path:
    """Write a manifest atomically (temp file, fsync, rename): the source's commit point."""
    path = manifest_path(catalog, manifest["source_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def source_files(catalog, kind: str, symbol: str, dates=None) -> list[Path]:
    """The Parquet files of ``kind`` and ``symbol`` (upper case) of complete sources, in read
    order: sources by ``first_ms``, each source's dates ascending. ``dates``: keep only these
    (``YYYY-MM-DD`` strings; None: all)."""
    keep = None if dates is None else set(dates)
    out = []
    for m in manifests(catalog):
        if symbol not in m["symbols"] or not m["kinds"].get(kind):
            continue
        for date in m["dates"]:
            if keep is not None and date not in keep:
                continue
            p = parquet_path(catalog, kind, symbol, date, m["source_id"])
            if p.exists():
                out.append(p)
    return out


def remove_source_files(catalog, sid: str) -> None:
    """Delete every Parquet file (and temp file) of source ``sid``: the leftovers of an import
    that did not finish, before it is imported again."""
    names = {f"{sid}.parquet", f".{sid}.parquet.tmp"}
    root = Path(catalog)
    for kind in KINDS:
        base = root / kind
        if not base.is_dir():
            continue
        for sym in base.iterdir():
            if not sym.is_dir():
                continue
            for date in sym.iterdir():
                for name in names:
                    p = date / name
                    if p.exists():
                        p.unlink()


# -- what the catalog holds -------------------------------------------------------------------

def summary(catalog) -> list[dict]:
    """Per symbol and date (sorted): ``{symbol, date, kinds: {kind: rows}, sources: [ids],
    first_ms, last_ms}``, from the manifests and the Parquet footers (rows, min/max ``t``)."""
    import pyarrow.parquet as pq

    out: dict[tuple, dict] = {}
    for m in manifests(catalog):
        sid = m["source_id"]
        for kind in KINDS:
            if not m["kinds"].get(kind):
                continue
            for symbol in m["symbols"]:
                for date in m["dates"]:
                    p = parquet_path(catalog, kind, symbol, date, sid)
                    if not p.exists():
                        continue
                    meta = pq.ParquetFile(p).metadata
                    e = out.setdefault((symbol, date), {
                        "symbol": symbol, "date": date, "kinds": {k: 0 for k in KINDS},
                        "sources": [], "first_ms": None, "last_ms": None})
                    e["kinds"][kind] += meta.num_rows
                    if sid not in e["sources"]:
                        e["sources"].append(sid)
                    lo, hi = _t_range(meta)
                    if lo is not None and (e["first_ms"] is None or lo < e["first_ms"]):
                        e["first_ms"] = lo
                    if hi is not None and (e["last_ms"] is None or hi > e["last_ms"]):
                        e["last_ms"] = hi
    return [out[k] for k in sorted(out)]


def _t_range(meta) -> tuple[int | None, int | None]:
    """Min and max of column ``t`` from a Parquet footer's row-group statistics."""
    idx = meta.schema.names.index("t")
    lo = hi = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            continue
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return lo, hi
