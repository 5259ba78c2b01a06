"""The record envelope: encoding, decoding and the checks every record passes.

A record is one JSON object with at least ``seq`` (per topic, from 1, gap-free), ``ts`` (epoch ms
when written) and ``type``. The payload's own fields sit beside them at the top level so that
``jq .price`` works on a spool without unwrapping anything.

Both sinks store the same bytes per record: ``{"seq":N,"ts":T,`` followed by the payload's own
JSON minus its opening brace. Encoding by splicing skips building a dict per record, and
decoding a run of lines as one JSON array skips a Python call per line; both fall back to the
plain per-record path whenever their shortcut's preconditions do not hold.
"""
from __future__ import annotations

import math
import time
from itertools import count
from operator import itemgetter

import orjson

from .errors import BadRecord

TOPICS = (
    "trades", "book", "depth", "signals", "intents", "orders", "fills", "positions", "deadletter",
    "funding",   # funding payments of the account, as the broker learns them from the venue
    "protection",  # the broker's protective stops at the venue: placed, canceled, triggered
    # the MCP gateway: orders proposed by assistants, the operator's decisions, every tool call
    "proposals", "decisions", "audit",
    "alerts",    # events that need an operator (daemons/alerts.py); any process appends
)
RESERVED = ("seq", "ts")

_dumps = orjson.dumps
_loads = orjson.loads
_NL = orjson.OPT_APPEND_NEWLINE
_get_seq = itemgetter("seq")
_get_ts = itemgetter("ts")
_get_type = itemgetter("type")


def now_ms() -> int:
    """Wall-clock epoch milliseconds (the envelope's ``ts``)."""
    return time.time_ns() // 1_000_000


def encode(record: dict) -> bytes:
    """One record as a JSON line, newline included."""
    return _dumps(record, option=_NL)


def envelope(seq: int, ts: int, payload: dict) -> dict:
    """Put ``seq`` and ``ts`` first, then the payload (whose own seq/ts are replaced)."""
    rec = {"seq": seq, "ts": ts}
    rec.update(payload)
    rec["seq"] = seq
    rec["ts"] = ts
    return rec


def record_and_line(seq: int, ts: int, payload: dict) -> tuple[dict, bytes]:
    """The record of ``payload`` as ``seq`` and its stored line (newline included), for a
    single append, which returns the record anyway: one dict, one dumps."""
    if type(payload) is not dict or type(payload.get("type")) is not str:
        check_type(payload)
    rec = {"seq": seq, "ts": ts, **payload}
    if len(rec) != len(payload) + 2:     # the payload had its own seq or ts
        rec["seq"] = seq
        rec["ts"] = ts
    try:
        return rec, _dumps(rec, option=_NL)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise BadRecord(f"payload cannot be encoded: {exc}", _text(payload)) from None


def check_type(payload) -> None:
    """Refuse what cannot become a record: not an object, or no string ``type``."""
    if not isinstance(payload, dict):
        raise BadRecord("record is not a JSON object", _text(payload))
    if type(payload.get("type")) is not str:
        raise BadRecord("missing or invalid type", _text(payload))


def encode_line(seq: int, ts: int, payload: dict) -> bytes:
    """The stored line (newline included) of ``payload`` as record ``seq``; checks it first."""
    check_type(payload)
    try:
        if "seq" in payload or "ts" in payload:
            return _dumps(envelope(seq, ts, payload), option=_NL)
        # Slicing at once also matters for speed: orjson's over-allocated results are slow
        # to keep alive in bulk, a fresh small copy is not.
        return b'{"seq":%d,"ts":%d,%s' % (seq, ts, _dumps(payload, option=_NL)[1:])
    except TypeError as exc:  # orjson.JSONEncodeError
        raise BadRecord(f"payload cannot be encoded: {exc}", _text(payload)) from None


def encode_lines(first_seq: int, ts: int, payloads: list) -> list[bytes]:
    """Stored lines of a batch numbered from ``first_seq``; checks every payload first."""
    for p in payloads:
        if type(p) is not dict or type(p.get("type")) is not str or "seq" in p or "ts" in p:
            return [encode_line(s, ts, q) for s, q in zip(count(first_seq), payloads)]
    mid = b',"ts":%d,' % ts
    try:
        return [b'{"seq":%d%s%s' % (s, mid, _dumps(p, option=_NL)[1:])
                for s, p in zip(count(first_seq), payloads)]
    except TypeError:
        return [encode_line(s, ts, q) for s, q in zip(count(first_seq), payloads)]


def decode(raw: bytes | str) -> dict:
    """Parse one stored line into a record, or raise :class:`BadRecord` saying why."""
    try:
        rec = _loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"unparseable JSON: {exc}", _text(raw)) from None
    if type(rec) is not dict:
        raise BadRecord("record is not a JSON object", _text(raw))
    seq = rec.get("seq")
    if type(seq) is not int or seq < 1:
        raise BadRecord("missing or invalid seq", _text(raw))
    if type(rec.get("ts")) is not int:
        raise BadRecord("missing or invalid ts", _text(raw))
    if type(rec.get("type")) is not str:
        raise BadRecord("missing or invalid type", _text(raw))
    return rec


def decode_run(text: bytes | str, after_seq: int, n: int | None = None
               ) -> tuple[list[dict], list[int]] | None:
    """Decode records joined by commas (``text``) in one call, or None if any is suspect.

    The shortcut holds only when every element is an object with an int ``ts``, a str
    ``type`` and an int ``seq``, the seqs consecutive and all above ``after_seq`` (and, if
    ``n`` is given, exactly ``n`` elements). Anything else (a bad line, a replayed or
    out-of-order seq) returns None, and the caller decodes one by one to find the culprit.
    (Lines are not counted: a damaged line cannot pass for several good records unless it
    is several good records, with the right seqs.)
    """
    try:
        recs = _loads(b"[" + text + b"]" if type(text) is bytes else "[" + text + "]")
        seqs = list(map(_get_seq, recs))
        first = seqs[0]
        # Checks that run in C: sum() of ints is an int (a float or a string among them makes
        # it a float or raises), join() raises on a non-string.
        if (type(first) is not int or first <= after_seq
                or seqs != list(range(first, first + len(seqs)))
                or (n is not None and len(seqs) != n)
                or type(sum(seqs)) is not int
                or type(sum(map(_get_ts, recs))) is not int):
            return None
        "".join(map(_get_type, recs))
    except (orjson.JSONDecodeError, TypeError, KeyError, IndexError):
        return None
    return recs, seqs


def check_payload(payload) -> dict:
    """Validate an object offered for appending; returns it or raises :class:`BadRecord`."""
    check_type(payload)
    if not payload["type"]:
        raise BadRecord("missing or invalid type", _text(payload))
    for key, value in payload.items():
        if type(value) is float and not math.isfinite(value):
            raise BadRecord(f"non-finite number in field {key!r}", _text(payload))
    return payload


def _text(raw) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace").rstrip("\n")
    if isinstance(raw, str):
        return raw.rstrip("\n")
    try:
        return orjson.dumps(raw, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return repr(raw)
