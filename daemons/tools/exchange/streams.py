"""Websocket market streams: stream names, fan-out to connections, depth diff aggregation.

Stream names (lower-case symbol): ``<s>@trade``, ``<s>@aggTrade``, ``<s>@bookTicker``,
``!bookTicker``, ``<s>@depth@0ms`` (every diff), ``<s>@depth@100ms``, ``<s>@depth`` (250 ms),
``<s>@depth@500ms``, ``<s>@depth<5|10|20>[@100ms|@500ms]`` (partial book), ``<s>@markPrice``
(3 s) and ``<s>@markPrice@1s``, and a listenKey (the user data stream).

Throttled depth streams merge the diffs of their interval (the last quantity of a level wins):
``U`` of the first, ``u`` and ``E``/``T`` of the last, ``pu`` of the first, so that every stream's
``pu`` equals the ``u`` of its previous event and the REST snapshot (``lastUpdateId`` = last diff
applied) always falls inside the chain.
"""
from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import orjson

STREAM_RE = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?P<kind>trade|aggTrade|bookTicker|markPrice|depth(?:5|10|20)?)"
    r"(?:@(?P<speed>0ms|100ms|250ms|500ms|1s))?$")
DEPTH_SPEEDS = {"100ms": 100, "250ms": 250, "500ms": 500}


def valid_stream(name: str, is_listen_key) -> bool:
    """Whether ``name`` is a stream this venue serves."""
    if name in ("!bookTicker",):
        return True
    m = STREAM_RE.match(name)
    if m:
        kind, speed = m.group("kind"), m.group("speed")
        if kind == "markPrice":
            return speed in (None, "1s")
        if kind.startswith("depth"):
            return speed != "1s" and (kind == "depth" or speed != "0ms")
        return speed is None
    return bool(is_listen_key(name))


class Conn:
    """One websocket connection: its streams, mode, and outgoing queue."""

    MAX_QUEUE = 20000

    def __init__(self, ws, combined: bool):
        self.ws = ws
        self.combined = combined
        self.streams: list[str] = []
        self.queue: asyncio.Queue = asyncio.Queue()
        self.dropped = False
        self.transport = None

    def push(self, stream: str, raw: bytes, wrapped: bytes) -> None:
        if self.dropped:
            return
        if self.queue.qsize() >= self.MAX_QUEUE:
            self.drop()           # a client that cannot keep up is disconnected, as Binance does
            return
        self.queue.put_nowait(wrapped if self.combined else raw)

    def drop(self) -> None:
        self.dropped = True
        self.queue.put_nowait(None)


class Hub:
    """stream name -> subscribed connections."""

    def __init__(self, faults=None):
        self.subs: dict[str, set[Conn]] = {}
        self.faults = faults
        self.sent = 0

    def subscribe(self, conn: Conn, stream: str) -> None:
        self.subs.setdefault(stream, set()).add(conn)
        if stream not in conn.streams:
            conn.streams.append(stream)

    def unsubscribe(self, conn: Conn, stream: str) -> None:
        s = self.subs.get(stream)
        if s is not None:
            s.discard(conn)
            if not s:
                del self.subs[stream]
        if stream in conn.streams:
            conn.streams.remove(stream)

    def remove(self, conn: Conn) -> None:
        for stream in list(conn.streams):
            self.unsubscribe(conn, stream)

    def has(self, stream: str) -> bool:
        return stream in self.subs

    def publish(self, stream: str, payload: dict) -> None:
        conns = self.subs.get(stream)
        if not conns:
            return
        raw = orjson.dumps(payload)
        wrapped = b'{"stream":"' + stream.encode() + b'","data":' + raw + b"}"
        for conn in list(conns):
            if self.faults is not None and self.faults.ws_drop():
                conn.drop()
                continue
            conn.push(stream, raw, wrapped)
            self.sent += 1


class DepthAggregator:
    """Merges the diffs of one symbol over one interval."""

    def __init__(self, interval_ms: int):
        self.interval_ms = interval_ms
        self.first: dict | None = None
        self.last: dict | None = None
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def add(self, diff: dict) -> None:
        if self.first is None:
            self.first = diff
        self.last = diff
        for p, q in diff["b"]:
            self.bids[p] = q
        for p, q in diff["a"]:
            self.asks[p] = q

    def flush(self) -> dict | None:
        if self.first is None:
            return None
        f, l = self.first, self.last
        out = {"e": "depthUpdate", "E": l["E"], "T": l.get("T", l["E"]), "s": l["s"],
               "U": f["U"], "u": l["u"], "pu": f["pu"],
               "b": [[p, q] for p, q in sorted(self.bids.items(), key=lambda kv: -Decimal(kv[0]))],
               "a": [[p, q] for p, q in sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))]}
        self.first = self.last = None
        self.bids, self.asks = {}, {}
        return out
