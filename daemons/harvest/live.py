"""Live feed items -> topic records (no I/O: the stage carries out what this returns).

:class:`LiveBooks` takes the items :class:`~.wsclient.LiveFeed` produces, one at a time, and
returns :class:`Action` tuples:

* ``("emit", topic, payload)``      a ``trades`` / ``book`` / ``depth`` record
* ``("dead", reason, raw, source)``  a malformed message, for ``deadletter``
* ``("snapshot", symbol)``           fetch a REST depth snapshot (the book needs a (re)sync)
* ``("log", level, event, fields)``  something an operator should see
* ``("alert", kind, message, fields)`` something an operator must act on (a stalled feed)

Book handling is Binance's method, through :class:`daemons.marketdata.book.DepthFeed`: diffs
are buffered from the first one on, a snapshot is asked for once a diff has arrived (so the
snapshot is never older than the buffer), and any break of the ``pu`` chain is written as a
``gap`` record and answered with a new snapshot. A reconnect does not reset the book: if no
diff was lost the chain still holds; if one was, the next diff breaks it and that is a gap.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import orjson

from daemons.marketdata import formats
from daemons.marketdata.book import DepthFeed


class Action(NamedTuple):
    kind: str
    a: object = None
    b: object = None
    c: object = None


class BadMessage(ValueError):
    """A message that cannot be turned into a record (the reason is the text)."""


def _number(v, what: str, positive: bool = False) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadMessage(f"{what} is not a number: {v!r}") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        raise BadMessage(f"{what} out of range: {v!r}")
    return x


def _int(data: dict, key: str) -> int:
    v = data.get(key)
    if type(v) is not int:
        raise BadMessage(f"{key} is not an integer: {v!r}")
    return v


def check_levels(levels, what: str) -> None:
    """``[[price, qty], ...]`` with finite prices > 0 and quantities >= 0."""
    if not isinstance(levels, list):
        raise BadMessage(f"{what} is not a list")
    for lv in levels:
        if not isinstance(lv, (list, tuple)) or len(lv) < 2:
            raise BadMessage(f"{what} level is not [price, qty]: {lv!r}")
        _number(lv[0], f"{what} price", positive=True)
        _number(lv[1], f"{what} qty")


def check_diff(data: dict) -> None:
    """Refuse a depth diff the book must not see (it would be applied half-way otherwise)."""
    _int(data, "U")
    _int(data, "u")
    if "pu" in data:
        _int(data, "pu")
    check_levels(data.get("b"), "b")
    check_levels(data.get("a"), "a")


def check_snapshot(body: dict) -> None:
    _int(body, "lastUpdateId")
    check_levels(body.get("bids"), "bids")
    check_levels(body.get("asks"), "asks")


def trade_payload(data: dict, recv_ts: int) -> dict:
    """The ``trades`` record of a trade / aggTrade payload (BadMessage if it does not fit)."""
    try:
        rec = formats.trade_record(data, recv_ts)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadMessage(f"bad trade: {type(exc).__name__}: {exc}") from None
    _number(rec["price"], "price", positive=True)
    _number(rec["qty"], "qty")
    if rec["t"] is None or rec["T"] is None or not rec["symbol"]:
        raise BadMessage("trade without id, time or symbol")
    return rec


def book_payload(data: dict, recv_ts: int) -> dict:
    """The ``book`` record of a bookTicker payload (BadMessage if it does not fit)."""
    try:
        rec = formats.book_record(data, recv_ts)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadMessage(f"bad bookTicker: {type(exc).__name__}: {exc}") from None
    for k in ("bid", "ask"):
        _number(rec[k], k, positive=True)
    for k in ("bid_qty", "ask_qty"):
        _number(rec[k], k)
    if not rec["symbol"]:
        raise BadMessage("bookTicker without symbol")
    return rec


def parse(raw: bytes | str) -> tuple[str | None, dict]:
    """``(stream, payload)`` of a websocket message: combined (``{"stream","data"}``) or bare."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"unparseable JSON: {exc}") from None
    if type(msg) is not dict:
        raise BadMessage("message is not a JSON object")
    if "stream" in msg:
        data = msg.get("data")
        if type(data) is not dict:
            raise BadMessage("combined-stream message without a data object")
        return msg["stream"], data
    return None, msg


class LiveBooks:
    """State of the live harvest: one DepthFeed per symbol, counters, connection states."""

    def __init__(self, groups, levels: int = 5, depth_groups=None):
        self.levels = levels
        self.up = {g: False for g in groups}
        # the connections carrying depth streams: a reconnect there may lose diffs
        self.depth_groups = set(depth_groups if depth_groups is not None else groups)
        self.feeds: dict[str, DepthFeed] = {}
        self.pending: set[str] = set()        # symbols with a snapshot request in flight
        self.reconnected: set[str] = set()    # symbols whose depth connection came back
        self.messages = 0
        self.reconnects = 0
        self.deadletters = 0
        self.ignored = 0
        self.snapshots = 0
        self.last_event_ms: int | None = None
        self.last_lag_ms: int | None = None
        self._ignored_kinds: set = set()
        self._ever_up: set = set()

    @property
    def connected(self) -> bool:
        return all(self.up.values())

    @property
    def gaps(self) -> int:
        return sum(f.gaps for f in self.feeds.values())

    def feed(self, symbol: str) -> DepthFeed:
        f = self.feeds.get(symbol)
        if f is None:
            f = self.feeds[symbol] = DepthFeed(symbol, self.levels, spot=False)
        return f

    # -- items -------------------------------------------------------------------------------
    def handle(self, item: tuple) -> list[Action]:
        kind = item[0]
        if kind == "msg":
            return self.on_message(item[1], item[2], item[3])
        if kind == "snapshot":
            return self.on_snapshot(item[1], item[2], item[3])
        if kind == "up":
            return self.on_up(item[1], item[2])
        if kind == "down":
            return self.on_down(item[1], item[2], item[3])
        if kind == "snapshot_error":
            return [Action("log", "warning", "snapshot failed",
                           {"symbol": item[1], "reason": item[2], "retry_in_s": item[3]})]
        raise ValueError(f"unknown feed item {kind!r}")

    def on_up(self, group: str, url: str) -> list[Action]:
        again = group in self._ever_up
        self._ever_up.add(group)
        self.up[group] = True
        if again:
            self.reconnects += 1
            if group in self.depth_groups:
                self.reconnected.update(self.feeds)
        return [Action("log", "info", "connected", {"group": group, "url": url,
                                                    "reconnect": again})]

    def on_down(self, group: str, reason: str, retry_in) -> list[Action]:
        self.up[group] = False
        out = [Action("log", "warning", "disconnected",
                      {"group": group, "reason": reason, "retry_in_s": retry_in})]
        if reason.startswith("stall"):   # connected, yet the exchange said nothing
            out.append(Action("alert", "stale_feed", f"market data feed {group}: {reason}; "
                              "reconnecting", {"subject": group, "group": group}))
        return out

    def on_message(self, group: str, recv_ts: int, raw) -> list[Action]:
        self.messages += 1
        try:
            stream, data = parse(raw)
            return self._payload(stream, data, recv_ts)
        except BadMessage as exc:  # anything else is a bug: let it stop the daemon
            self.deadletters += 1
            reason = str(exc)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            return [Action("dead", reason, text, f"websocket:{group}")]

    def _payload(self, stream, data: dict, recv_ts: int) -> list[Action]:
        kind = formats.classify(data, stream)
        E = data.get("E")
        if type(E) is int:
            self.last_event_ms = E
            self.last_lag_ms = recv_ts - E
        if kind in (formats.TRADE, formats.AGG_TRADE):
            return [Action("emit", "trades", trade_payload(data, recv_ts))]
        if kind == formats.BOOK_TICKER:
            return [Action("emit", "book", book_payload(data, recv_ts))]
        if kind == formats.DEPTH:
            return self._diff(data, recv_ts)
        if "result" in data and "id" in data:
            return []  # the answer to a SUBSCRIBE-style request
        if "code" in data and "msg" in data:
            raise BadMessage(f"venue error {data.get('code')}: {data.get('msg')}")
        # a stream we do not turn into records (markPrice, ...): counted, told once
        self.ignored += 1
        name = data.get("e") or stream or "?"
        if name in self._ignored_kinds:
            return []
        self._ignored_kinds.add(name)
        return [Action("log", "info", "ignoring stream", {"event": name})]

    def _diff(self, data: dict, recv_ts: int) -> list[Action]:
        check_diff(data)
        symbol = data.get("s")
        if not isinstance(symbol, str) or not symbol:
            raise BadMessage("depthUpdate without symbol")
        f = self.feed(symbol)
        out = [Action("emit", "depth", rec) for rec in f.on_diff(data, recv_ts)]
        after_reconnect = symbol in self.reconnected
        self.reconnected.discard(symbol)
        for act in out:
            rec = act.b
            if rec["type"] == "gap":
                if after_reconnect:
                    rec["reason"] += " (diffs lost while reconnecting)"
                out.insert(0, Action("log", "warning", "gap", {
                    k: rec[k] for k in ("symbol", "expected_pu", "got_pu", "u", "reason")}))
                break
        return out + self._want_snapshot(symbol)

    def _want_snapshot(self, symbol: str) -> list[Action]:
        if self.feed(symbol).needs_snapshot and symbol not in self.pending:
            self.pending.add(symbol)
            return [Action("snapshot", symbol)]
        return []

    def on_snapshot(self, symbol: str, recv_ts: int, body) -> list[Action]:
        self.pending.discard(symbol)
        try:
            snap = orjson.loads(body)
            if type(snap) is not dict:
                raise BadMessage("snapshot is not a JSON object")
            check_snapshot(snap)
        except (orjson.JSONDecodeError, BadMessage) as exc:
            self.deadletters += 1
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            return [Action("dead", f"bad depth snapshot: {exc}", text[:100000],
                           f"rest:{symbol}")] + self._want_snapshot(symbol)
        f = self.feed(symbol)
        self.snapshots += 1
        out = [Action("emit", "depth", rec) for rec in f.on_snapshot(snap, recv_ts)]
        out.insert(0, Action("log", "info", "snapshot", {
            "symbol": symbol, "lastUpdateId": snap["lastUpdateId"], "synced": f.book.synced}))
        return out + self._want_snapshot(symbol)

    def health(self) -> dict:
        return {
            "connected": self.connected,
            "connections": dict(self.up),
            "messages": self.messages,
            "gaps": self.gaps,
            "reconnects": self.reconnects,
            "snapshots": self.snapshots,
            "deadletters": self.deadletters,
            "ignored": self.ignored,
            "synced": {s: f.book.synced for s, f in self.feeds.items()},
            "last_event_ms": self.last_event_ms,
            "event_lag_ms": self.last_lag_ms,
        }
