"""The record envelope: encoding, decoding and the checks every record passes.

A record is one JSON object with at least ``seq`` (per topic, from 1, gap-free), ``ts`` (epoch ms
when written) and ``type``. The payload's own fields sit beside them at the top level so that
``jq .price`` works on a spool without unwrapping anything.
"""
from __future__ import annotations

import math
import time

import orjson

from .errors import BadRecord

TOPICS = (
    "trades", "book", "depth", "signals", "intents", "orders", "fills", "positions", "deadletter",
)
RESERVED = ("seq", "ts")


def now_ms() -> int:
    """Wall-clock epoch milliseconds (the envelope's ``ts``)."""
    return time.time_ns() // 1_000_000


def encode(record: dict) -> bytes:
    """One record as a JSON line, newline included."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def envelope(seq: int, ts: int, payload: dict) -> dict:
    """Put ``seq`` and ``ts`` first, then the payload (whose own seq/ts are replaced)."""
    rec = {"seq": seq, "ts": ts}
    rec.update(payload)
    rec["seq"] = seq
    rec["ts"] = ts
    return rec


def decode(raw: bytes | str) -> dict:
    """Parse one stored line into a record, or raise :class:`BadRecord` saying why."""
    try:
        rec = orjson.loads(raw)
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


def check_payload(payload) -> dict:
    """Validate an object offered for appending; returns it or raises :class:`BadRecord`."""
    if type(payload) is not dict:
        raise BadRecord("record is not a JSON object", _text(payload))
    if type(payload.get("type")) is not str or not payload["type"]:
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
