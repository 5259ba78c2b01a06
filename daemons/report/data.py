"""Load what a report needs from the spools of a period, through the bus reader API.

Small topics (signals, intents, orders, fills, positions) are kept whole for the period;
``trades`` and ``book`` (millions of records a day) are reduced on the fly to per-symbol
latency samples and a price per second. Records are picked by their envelope ``ts``; a short
look-back before the period feeds joins (a fill whose intent was written just before midnight).
Either sink works: the bus detects the sink of each topic.
"""
from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field

import orjson

from bus import BadRecord, jsonl, open_bus

from .period import Period

SMALL_TOPICS = ("signals", "intents", "orders", "fills", "positions", "funding")
FEED_TOPICS = ("trades", "book")
JOIN_TOPICS = ("signals", "intents")
#: look-back for joins across the period's start
JOIN_MARGIN_MS = 15 * 60 * 1000
#: envelope ts is write time and nearly monotonic; tolerate this much disorder when seeking
SLACK_MS = 60 * 1000


@dataclass
class Feed:
    """One market-data topic reduced: counts, harvest latencies and a price per second."""

    count: int = 0
    latency_ms: dict[str, array] = field(default_factory=dict)   # symbol -> recv_ts - E
    price: dict[str, dict[int, float]] = field(default_factory=dict)  # symbol -> second -> px

    def add(self, rec: dict) -> None:
        sym = rec.get("symbol")
        if not isinstance(sym, str):
            return
        self.count += 1
        event = rec.get("E") if _num(rec.get("E")) else rec.get("T")
        if _num(event) and _num(rec.get("recv_ts")):
            self.latency_ms.setdefault(sym, array("d")).append(rec["recv_ts"] - event)
        px = _price_of(rec)
        t = rec.get("E") if _num(rec.get("E")) else rec["ts"]
        if px is not None and _num(t):
            self.price.setdefault(sym, {})[int(t) // 1000 * 1000] = px


@dataclass
class Dataset:
    """Everything a report is computed from."""

    period: Period
    records: dict[str, list[dict]]          # small topics, records in the period, seq order
    lookback: dict[str, list[dict]]         # join topics, records just before the period
    start_positions: dict[str, dict]        # last positions record per symbol before it
    feeds: dict[str, Feed]                  # trades, book
    sinks: dict[str, str]                   # topic -> sink, for topics that exist
    unreadable: dict[str, int]              # topic -> undecodable lines skipped


def load(home: str | os.PathLike, period: Period, topics: tuple[str, ...] = SMALL_TOPICS,
         feeds: bool = True) -> Dataset:
    """Read the period's records (missing home or topics: empty); only ``topics`` of the small
    ones, and the market-data feeds only with ``feeds`` (PnL alone needs fills and positions)."""
    ds = Dataset(period, {t: [] for t in SMALL_TOPICS}, {t: [] for t in JOIN_TOPICS}, {},
                 {t: Feed() for t in FEED_TOPICS}, {}, {})
    if not os.path.isdir(os.path.join(os.fspath(home), "bus")):
        return ds
    bus = open_bus(home)
    try:
        for topic in tuple(topics) + (FEED_TOPICS if feeds else ()):
            if _exists(bus, topic):
                ds.sinks[topic] = bus.sink_of(topic)
        for topic in SMALL_TOPICS:
            if topic in ds.sinks:
                for rec in _scan(bus, topic, period.since_ms, period.until_ms, ds.unreadable):
                    ds.records[topic].append(rec)
        for topic in JOIN_TOPICS:
            if topic in ds.sinks:
                ds.lookback[topic] = list(_scan(bus, topic, period.since_ms - JOIN_MARGIN_MS,
                                                period.since_ms, {}))
        if "positions" in ds.sinks:
            for rec in _scan(bus, "positions", None, period.since_ms, {}):
                if isinstance(rec.get("symbol"), str):
                    ds.start_positions[rec["symbol"]] = rec
        for topic in FEED_TOPICS:
            if topic in ds.sinks:
                feed = ds.feeds[topic]
                for rec in _scan(bus, topic, period.since_ms, period.until_ms, ds.unreadable):
                    feed.add(rec)
    finally:
        bus.close()
    return ds


class Tail:
    """The small topics of a home read while they are being written (a backtest's report
    process reads them during the run, so that little is left to read once it ends).

        tail = Tail(home)
        tail.poll()                 # now and then: reads what is new
        ds = tail.load(period)      # once the writers are closed

    :meth:`load` gives what :func:`load` gives: the records read, when every one of them lies
    inside the period (so none is a look-back or start position, and a seek would have
    started at the beginning) and there is no market-data feed and no unreadable line;
    otherwise :func:`load` itself.
    """

    def __init__(self, home: str | os.PathLike):
        self.home = home
        self.bus = None
        self.readers: dict = {}
        self.records: dict[str, list[dict]] = {t: [] for t in SMALL_TOPICS}
        self.bad = 0

    def poll(self) -> None:
        """Read what has been written since the last poll."""
        if self.bus is None:
            if not os.path.isdir(os.path.join(os.fspath(self.home), "bus")):
                return
            self.bus = open_bus(self.home)
        for topic in SMALL_TOPICS:
            reader = self.readers.get(topic)
            if reader is None:
                if not _exists(self.bus, topic):
                    continue
                reader = self.readers[topic] = self.bus.reader(topic)
            out = self.records[topic]
            while True:
                batch = reader.read(5000)
                if not batch:
                    break
                for rec, _pos in batch:
                    if isinstance(rec, BadRecord):
                        self.bad += 1
                    else:
                        out.append(rec)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers = {}
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    def load(self, period: Period) -> Dataset:
        """The rest, and the period's :class:`Dataset` (as :func:`load` gives it)."""
        try:
            self.poll()
            ds = self._dataset(period)
        finally:
            self.close()
        return ds if ds is not None else load(self.home, period)

    def _dataset(self, period: Period) -> Dataset | None:
        if self.bus is None or self.bad:
            return None
        since, until = period.since_ms, period.until_ms
        sinks = {}
        for topic in SMALL_TOPICS + FEED_TOPICS:
            if _exists(self.bus, topic):
                if topic in FEED_TOPICS or topic not in self.readers:
                    return None
                sinks[topic] = self.bus.sink_of(topic)
        for recs in self.records.values():
            for rec in recs:
                ts = rec["ts"]
                if (since is not None and ts < since) or (until is not None and ts >= until):
                    return None
        return Dataset(period, self.records, {t: [] for t in JOIN_TOPICS}, {},
                       {t: Feed() for t in FEED_TOPICS}, sinks, {})


def _exists(bus, topic: str) -> bool:
    d = bus.topic_dir(topic)
    return os.path.isdir(d) and bus.last_seq(topic) > 0


def _scan(bus, topic: str, since_ms: int | None, until_ms: int | None, unreadable: dict):
    """Records of ``topic`` with since <= ts < until, in seq order."""
    reader = bus.reader(topic, position=_seek(bus, topic, since_ms))
    try:
        while True:
            batch = reader.read(5000)
            if not batch:
                return
            for rec, _pos in batch:
                if isinstance(rec, BadRecord):
                    unreadable[topic] = unreadable.get(topic, 0) + 1
                    continue
                ts = rec["ts"]
                if until_ms is not None and ts >= until_ms:
                    if ts >= until_ms + SLACK_MS:
                        return
                    continue
                if since_ms is None or ts >= since_ms:
                    yield rec
    finally:
        reader.close()


def _seek(bus, topic: str, since_ms: int | None) -> dict | None:
    """A reader position shortly before the first record written at ``since_ms``."""
    if since_ms is None:
        return None
    target = since_ms - SLACK_MS
    if bus.sink_of(topic) == "jsonl":
        d = bus.topic_dir(topic)
        start = None
        for first in jsonl.list_segments(d):
            ts = _first_ts(os.path.join(d, jsonl.segment_name(first)))
            if ts is None or ts >= target:
                break
            start = first
        return {"seq": start - 1, "segment": start, "offset": 0} if start else None
    # sqlite: bisect on seq for the first record with ts >= target
    lo, hi = 1, bus.last_seq(topic)
    while lo < hi:
        mid = (lo + hi) // 2
        ts = _ts_after(bus, topic, mid - 1)
        if ts is None or ts >= target:
            hi = mid
        else:
            lo = mid + 1
    return {"seq": lo - 1} if lo > 1 else None


def _ts_after(bus, topic: str, seq: int) -> int | None:
    reader = bus.reader(topic, position={"seq": seq})
    try:
        for rec, _pos in reader.read(1):
            if not isinstance(rec, BadRecord):
                return rec["ts"]
        return None
    finally:
        reader.close()


def _first_ts(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError:
        return None
    try:
        ts = orjson.loads(line).get("ts")
    except (ValueError, AttributeError):
        return None
    return ts if isinstance(ts, int) else None


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _price_of(rec: dict) -> float | None:
    if rec.get("type") == "book":
        bid, ask = rec.get("bid"), rec.get("ask")
        if _num(bid) and _num(ask) and bid > 0 and ask > 0:
            return (bid + ask) / 2
        return None
    px = rec.get("price")
    return float(px) if _num(px) and px > 0 else None
