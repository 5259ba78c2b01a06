"""Recorded Binance market data: format detection, raw messages, and topic records.

Formats (auto-detected from the first line; gzip detected from the magic bytes):

=================  ==========================================================================
``hftbacktest``    ``<local_ts> <json>`` lines; local ts in ns (2024 files) or µs (2023 files);
                   the JSON is a combined-stream message ``{"stream","data"}`` or a REST depth
                   snapshot ``{"lastUpdateId", "bids", "asks"[, "E", "T"]}``
``wsjson``         raw websocket JSON lines: combined ``{"stream","data"}`` or bare event objects
``csv_aggtrades``  data.binance.vision aggTrades: agg_trade_id, price, quantity, first_trade_id,
                   last_trade_id, transact_time, is_buyer_maker[, is_best_match]
``csv_trades``     data.binance.vision trades: id, price, qty, quote_qty, time, is_buyer_maker
                   [, is_best_match]
``csv_bookticker`` data.binance.vision bookTicker: update_id, best_bid_price, best_bid_qty,
                   best_ask_price, best_ask_qty, transaction_time, event_time
=================  ==========================================================================

CSV files may have a header or not; times may be ms or µs (spot files from 2025 on); booleans
``True``/``true``. :func:`read_messages` yields :class:`Message` objects whose ``data`` is the
websocket payload as Binance sends it (strings for prices and quantities; CSV rows are turned
into the equivalent ``aggTrade`` / ``trade`` / ``bookTicker`` payloads), so an exchange replay
can send it as is. :func:`trade_record` and :func:`book_record` turn payloads into the
``trades`` / ``book`` topic records every stage agrees on (see docs in COMMON schemas)::

    trade: {type, symbol, E, T, t, price, qty, side ("buy"|"sell": the taker), X, recv_ts}
    book:  {type, symbol, u, E, T, bid, bid_qty, ask, ask_qty, recv_ts}

Times are epoch milliseconds (ints). ``recv_ts`` is the local receive time (for CSV, which has
none, the event time). Spot bookTicker has no ``E``/``T``: they are ``None`` in the record and
users take ``recv_ts`` instead.
"""
from __future__ import annotations

import gzip
import os
import re
from typing import Iterator, NamedTuple

import orjson
from isal import igzip

FORMATS = ("hftbacktest", "wsjson", "csv_aggtrades", "csv_trades", "csv_bookticker")

#: the kinds of :class:`Message`
TRADE, AGG_TRADE, BOOK_TICKER, DEPTH, SNAPSHOT, OTHER = (
    "trade", "aggTrade", "bookTicker", "depthUpdate", "snapshot", "other")

#: which topic streams each format can produce ("depth" = diffs and snapshots)
STREAMS_OF = {
    "hftbacktest": ("trades", "book", "depth"),
    "wsjson": ("trades", "book", "depth"),
    "csv_aggtrades": ("trades",),
    "csv_trades": ("trades",),
    "csv_bookticker": ("book",),
}


class FormatError(ValueError):
    """A file whose format is unknown or whose content does not fit its format."""


class Message(NamedTuple):
    """One raw market-data message from a recording."""

    kind: str          #: trade | aggTrade | bookTicker | depthUpdate | snapshot | other
    recv_ts: int       #: local receive time, epoch ms (CSV: the event time)
    symbol: str        #: upper case, e.g. BTCUSDT
    data: dict         #: websocket payload (REST body for a snapshot), strings as sent
    stream: str | None = None  #: combined-stream name when the source had one


# -- files -----------------------------------------------------------------------------------

def open_binary(path: str):
    """``path`` opened for reading bytes, gunzipped when it starts with the gzip magic.

    Gunzipped with ISA-L (``isal.igzip``, the same file API and errors as :mod:`gzip`): about
    3.5 times faster than zlib on recordings, a large part of reading them."""
    f = open(path, "rb")
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        return igzip.GzipFile(fileobj=f, mode="rb")
    return f


def iter_lines(path: str, chunk: int = 1 << 20):
    """The lines of a (possibly gzipped) file as bytes, read in large chunks (fast path)."""
    for lines in iter_line_chunks(path, chunk):
        yield from lines


def iter_line_chunks(path: str, chunk: int = 1 << 20):
    """:func:`iter_lines` a list at a time (one list per ``chunk`` bytes read)."""
    with open_binary(path) as f:
        rest = b""
        while True:
            data = f.read(chunk)
            if not data:
                break
            lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
            rest = lines.pop()
            yield lines
        if rest:
            yield [rest]


def iter_blocks(path: str, chunk: int = 1 << 20):
    """The bytes of ``path`` a block of whole lines at a time: the lines of each block are those
    :func:`iter_line_chunks` yields for the same read (every block but the last ends with
    ``\\n``; the last holds the rest after the last ``\\n``, if any)."""
    with open_binary(path) as f:
        rest = b""
        while True:
            data = f.read(chunk)
            if not data:
                break
            end = data.rfind(b"\n") + 1
            if end:
                yield rest + data[:end] if rest else data[:end]
                rest = data[end:]
            else:
                rest += data
                yield b""
        if rest:
            yield rest


def _first_line(path: str) -> bytes:
    with open_binary(path) as f:
        for line in f:
            line = line.strip()
            if line:
                return line
    return b""


_CSV_BOOL = {b"true", b"false", b"True", b"False", b"TRUE", b"FALSE"}


def detect(path: str) -> str:
    """The format of ``path`` (one of :data:`FORMATS`); raises :class:`FormatError`."""
    try:
        line = _first_line(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise FormatError(f"{path}: cannot read: {exc}") from None
    if not line:
        raise FormatError(f"{path}: empty file")
    if line[:1] == b"{":
        return "wsjson"
    sp = line.find(b" ")
    if sp > 0 and line[:sp].isdigit() and line[sp + 1:sp + 2] == b"{":
        return "hftbacktest"
    cols = line.split(b",")
    if len(cols) >= 6:
        return _csv_kind(path, cols)
    raise FormatError(f"{path}: unknown format (first line starts {line[:60]!r})")


def _csv_kind(path: str, cols: list[bytes]) -> str:
    if not cols[0].strip().isdigit():  # a header
        names = [c.strip().decode().lower() for c in cols]
        if "best_bid_price" in names:
            return "csv_bookticker"
        if "agg_trade_id" in names or "first_trade_id" in names:
            return "csv_aggtrades"
        if "quote_qty" in names:
            return "csv_trades"
        raise FormatError(f"{path}: unknown CSV header {','.join(names)}")
    bools = [i for i, c in enumerate(cols) if c.strip() in _CSV_BOOL]
    if not bools:
        if len(cols) == 7:
            return "csv_bookticker"
    elif bools[0] == 6:
        return "csv_aggtrades"
    elif bools[0] == 5:
        return "csv_trades"
    raise FormatError(f"{path}: unknown CSV layout ({len(cols)} columns)")


_SYMBOL_IN_NAME = re.compile(r"^([A-Za-z0-9]{5,20})[-_.]")


def symbol_from_path(path: str) -> str | None:
    """The symbol a file name starts with (``btcusdt_20240718.gz`` -> ``BTCUSDT``), if any."""
    m = _SYMBOL_IN_NAME.match(os.path.basename(path))
    return m.group(1).upper() if m else None


def stamp_divisor(ts: int) -> int:
    """What divides a recording's local stamp (ns, µs or ms by magnitude) into ms."""
    return 1_000_000 if ts >= 10**17 else 1000 if ts >= 10**14 else 1


def bad_line(path: str, number: int, line: bytes, stamped: bool = True) -> None:
    """Raise the :class:`FormatError` that recorded line ``number`` (1-based) of ``path``
    deserves, once a reader failed on it; return if the line is blank (readers skip those).
    Every reader of ``<local_ts> <json>`` lines reads on the fast path and calls this on a
    failure, so a bad line gets the same message, and the same number, whoever reads it."""
    if not line.strip():
        return
    body = line
    if stamped:
        sp = line.find(b" ")
        if sp <= 0:
            raise FormatError(f"{path}:{number}: expected '<local_ts> <json>'")
        try:
            int(line[:sp])
        except ValueError:
            raise FormatError(f"{path}:{number}: bad local timestamp") from None
        body = line[sp + 1:]
        if not body.strip():
            return
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FormatError(f"{path}:{number}: unparseable JSON") from None
    raise FormatError(f"{path}:{number}: unreadable record")


def to_ms(t: int) -> int:
    """An epoch time in s, ms, µs or ns, as ms (by magnitude)."""
    if t >= 10**17:
        return t // 1_000_000
    if t >= 10**14:
        return t // 1000
    if t < 10**11:
        return t * 1000
    return t


# -- messages ---------------------------------------------------------------------------------

def read_messages(path: str, symbol: str | None = None, fmt: str | None = None
                  ) -> Iterator[Message]:
    """Every message of a recorded file, in file order (markPrice and the like as ``other``).

    ``symbol`` names the symbol of sources that do not carry one (CSV files, REST snapshots);
    it defaults to the ``s`` of the file's events, else to the file name's prefix.
    """
    make = Message._make
    return (make(t) for t in read_tuples(path, symbol, fmt))


def read_tuples(path: str, symbol: str | None = None, fmt: str | None = None):
    """:func:`read_messages` as plain ``(kind, recv_ts, symbol, data, stream)`` tuples (faster)."""
    fmt = fmt or detect(path)
    if fmt == "hftbacktest":
        return _read_json_lines(path, symbol, stamped=True)
    if fmt == "wsjson":
        return _read_json_lines(path, symbol, stamped=False)
    if fmt in ("csv_aggtrades", "csv_trades", "csv_bookticker"):
        return _read_csv(path, fmt, symbol or symbol_from_path(path))
    raise FormatError(f"{path}: unknown format {fmt!r}")


def classify(payload: dict, stream: str | None = None) -> str:
    """The kind of a websocket payload or REST depth body."""
    e = payload.get("e")
    if e is not None:
        return e if e in (TRADE, AGG_TRADE, BOOK_TICKER, DEPTH) else OTHER
    if "lastUpdateId" in payload:
        return SNAPSHOT
    if stream is not None:
        if stream.endswith("@bookTicker"):
            return BOOK_TICKER
        return OTHER
    if "b" in payload and "B" in payload and "A" in payload:  # spot bookTicker has no "e"
        return BOOK_TICKER
    return OTHER


def _read_json_lines(path: str, symbol: str | None, stamped: bool) -> Iterator[Message]:
    loads = orjson.loads
    kinds = _KINDS
    file_symbol = symbol or symbol_from_path(path)
    div = None
    recv = 0
    lineno = 0
    for line in iter_lines(path):
        lineno += 1
        if stamped:
            sp = line.find(b" ")
            if sp <= 0:
                bad_line(path, lineno, line)
                continue
            try:
                ts = int(line[:sp])
            except ValueError:
                bad_line(path, lineno, line)
                continue
            if div is None:
                div = stamp_divisor(ts)
            recv = ts // div
            body = line[sp + 1:]
        else:
            body = line
        try:
            msg = loads(body)
        except orjson.JSONDecodeError:
            bad_line(path, lineno, line, stamped)
            continue
        stream = msg.get("stream")
        data = msg["data"] if stream is not None else msg
        e = data.get("e")
        kind = e if e in kinds else classify(data, stream)
        if not stamped:  # no local stamp: the event time stands in
            recv = data.get("E") or data.get("T") or recv
        s = data.get("s")
        if s is not None:
            if symbol is None:
                file_symbol = s
        else:
            s = file_symbol
        yield (kind, recv, s, data, stream)


_KINDS = frozenset((TRADE, AGG_TRADE, BOOK_TICKER, DEPTH))


def _bool(v: str) -> bool:
    v = v.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise ValueError(f"not a boolean: {v!r}")


_CSV_COLUMNS = {
    "csv_aggtrades": ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                      "transact_time", "is_buyer_maker", "is_best_match"),
    "csv_trades": ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"),
    "csv_bookticker": ("update_id", "best_bid_price", "best_bid_qty", "best_ask_price",
                       "best_ask_qty", "transaction_time", "event_time"),
}


def _read_csv(path: str, fmt: str, symbol: str | None) -> Iterator[Message]:
    if not symbol:
        raise FormatError(f"{path}: CSV files carry no symbol; give one (--symbol)")
    cols = _CSV_COLUMNS[fmt]
    index = {c: i for i, c in enumerate(cols)}
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.decode().strip()
            if not line:
                continue
            row = line.split(",")
            if lineno == 1 and not row[0].strip().isdigit():
                names = [c.strip().lower() for c in row]
                # futures files name some columns differently; map by position where unknown
                index = {c: names.index(c) if c in names else i for i, c in enumerate(cols)}
                if fmt == "csv_trades" and "quantity" in names:
                    index["qty"] = names.index("quantity")
                continue
            try:
                yield _csv_message(fmt, row, index, symbol)
            except (ValueError, IndexError) as exc:
                raise FormatError(f"{path}:{lineno}: bad {fmt} row: {exc}") from None


def _csv_message(fmt: str, row: list[str], ix: dict, symbol: str) -> tuple:
    if fmt == "csv_aggtrades":
        t = to_ms(int(row[ix["transact_time"]]))
        data = {"e": AGG_TRADE, "E": t, "s": symbol, "a": int(row[ix["agg_trade_id"]]),
                "p": row[ix["price"]], "q": row[ix["quantity"]],
                "f": int(row[ix["first_trade_id"]]), "l": int(row[ix["last_trade_id"]]),
                "T": t, "m": _bool(row[ix["is_buyer_maker"]])}
        return (AGG_TRADE, t, symbol, data, None)
    if fmt == "csv_trades":
        t = to_ms(int(row[ix["time"]]))
        data = {"e": TRADE, "E": t, "T": t, "s": symbol, "t": int(row[ix["id"]]),
                "p": row[ix["price"]], "q": row[ix["qty"]], "X": "MARKET",
                "m": _bool(row[ix["is_buyer_maker"]])}
        return (TRADE, t, symbol, data, None)
    tt = to_ms(int(row[ix["transaction_time"]]))
    et = to_ms(int(row[ix["event_time"]]))
    data = {"e": BOOK_TICKER, "u": int(row[ix["update_id"]]), "s": symbol,
            "b": row[ix["best_bid_price"]], "B": row[ix["best_bid_qty"]],
            "a": row[ix["best_ask_price"]], "A": row[ix["best_ask_qty"]], "T": tt, "E": et}
    return (BOOK_TICKER, et, symbol, data, None)


# -- topic records ------------------------------------------------------------------------------

def trade_record(data: dict, recv_ts: int, symbol: str | None = None) -> dict:
    """A ``trades`` record from a ``trade`` or ``aggTrade`` payload.

    ``side`` is the taker's: ``m == true`` (the buyer was the maker) means a taker sell.
    Spot trades carry no ``X``; they are all ``MARKET``.
    """
    E = data.get("E")
    T = data.get("T")
    t = data.get("t")
    return {
        "type": "trade", "symbol": data.get("s") or symbol,
        "E": E if E is not None else T, "T": T if T is not None else E,
        "t": t if t is not None else data.get("a"),
        "price": float(data["p"]), "qty": float(data["q"]),
        "side": "sell" if data["m"] else "buy", "X": data.get("X", "MARKET"),
        "recv_ts": recv_ts,
    }


def book_record(data: dict, recv_ts: int, symbol: str | None = None) -> dict:
    """A ``book`` record (best bid/ask) from a ``bookTicker`` payload (spot: no ``E``/``T``)."""
    return {
        "type": "book", "symbol": data.get("s") or symbol, "u": data.get("u"),
        "E": data.get("E"), "T": data.get("T"),
        "bid": float(data["b"]), "bid_qty": float(data["B"]),
        "ask": float(data["a"]), "ask_qty": float(data["A"]),
        "recv_ts": recv_ts,
    }
