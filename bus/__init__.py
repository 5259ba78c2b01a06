"""The file bus: append-only topics in JSONL or SQLite spools under ``<home>/bus``.

    bus = open_bus(home, sink="jsonl")
    w = bus.writer("trades")                  # one writer per topic, enforced by a lock
    w.append({"type": "trade", "price": 1.0}) # -> {"seq": 1, "ts": ..., "type": "trade", ...}
    c = bus.consumer("trades", "signal")      # resumes from its saved position
    for rec, pos in c.poll():
        handle(rec); c.mark(pos)
    c.commit()                                # save the position after processing
    bus.wait(0.5)                             # sleep until a watched topic changes

==========  ===========================================  =================================
sink        files                                        chosen by
==========  ===========================================  =================================
jsonl       ``<topic>/<first seq>.jsonl`` segments        default; ``--sink jsonl``
sqlite      ``<topic>/records.db`` (WAL)                  ``--sink sqlite``
==========  ===========================================  =================================

Readers auto-detect the sink of an existing topic.

Guarantees: ``seq`` runs from 1 without gaps per topic, across restarts; one writer per topic
(a second one raises :class:`WriterLockedError`), except ``deadletter``, which any process may
append to; a writer killed at any instant leaves no torn, repeated or renumbered record; a
consumer commits its position after processing (at least once) and skips what it cannot decode
after dead-lettering it. Consumers sleep in :meth:`Bus.wait` on inotify, with a slow poll
(``poll_interval_s``) as a safety net.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

import orjson

from . import jsonl, sqlite
from .durability import SyncPolicy
from .errors import BadRecord, BusError, UnknownTopicError, WriterLockedError
from .records import TOPICS, check_payload, decode, encode, now_ms

if TYPE_CHECKING:
    from .wake import Waker

__all__ = [
    "Bus", "Consumer", "open_bus", "BusError", "BadRecord", "WriterLockedError",
    "UnknownTopicError", "TOPICS", "SINKS", "check_payload", "decode", "encode", "now_ms",
]

SINKS = ("jsonl", "sqlite")
POSITION_WIDTH = 128    # bytes of a saved consumer position (padded; one sector at most)


@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """The settings a bus opened without them uses: ``sink`` and the ``bus`` section of
    ``etc/defaults.yaml``, the one place they are set (the daemons pass the loaded config's)."""
    from daemons.config import defaults as config_defaults

    cfg = config_defaults()
    return {"sink": cfg["sink"], **cfg["bus"]}


def open_bus(home: str | os.PathLike, sink: str | None = None, **settings) -> "Bus":
    """Open the bus under ``<home>/bus`` (created if missing)."""
    return Bus(home, sink=sink, **settings)


class Bus:
    """Topics, their writers and consumers, and the waker they share."""

    def __init__(self, home, sink: str | None = None, **settings):
        base = defaults()
        unknown = set(settings) - set(base)
        if unknown:
            raise BusError(f"unknown bus setting(s): {', '.join(sorted(unknown))}")
        self.settings = {**base, **{k: v for k, v in settings.items() if v is not None}}
        self.sink = sink or self.settings["sink"]
        if self.sink not in SINKS:
            raise BusError(f"unknown sink {self.sink!r}; choose one of: {', '.join(SINKS)}")
        self.home = os.path.abspath(os.fspath(home))
        self.root = os.path.join(self.home, "bus")
        os.makedirs(self.root, exist_ok=True)
        self._waker: Waker | None = None
        self._deadletter = None

    # -- topics ------------------------------------------------------------------------------
    def topic_dir(self, topic: str) -> str:
        if topic not in TOPICS:
            raise UnknownTopicError(f"unknown topic {topic!r}; topics are: {', '.join(TOPICS)}")
        return os.path.join(self.root, topic)

    def sink_of(self, topic: str) -> str:
        """The sink an existing topic uses, else the bus's configured one."""
        d = self.topic_dir(topic)
        if sqlite.has_topic(d):
            return "sqlite"
        if jsonl.has_topic(d):
            return "jsonl"
        return self.sink

    def last_seq(self, topic: str) -> int:
        d = self.topic_dir(topic)
        return (sqlite if self.sink_of(topic) == "sqlite" else jsonl).last_seq_in(d)

    # -- writing -----------------------------------------------------------------------------
    def writer(self, topic: str, shared: bool = False):
        """The writer of ``topic``; raises :class:`WriterLockedError` if it has one already.

        ``deadletter`` is the one shared topic: its writers take the lock per append, so any
        number of processes may hold one.
        """
        d = self.topic_dir(topic)
        existing = self.sink_of(topic)
        if existing != self.sink and (jsonl.has_topic(d) or sqlite.has_topic(d)):
            raise BusError(f"topic {topic!r} already holds {existing} spools; "
                           f"use --sink {existing} or another --home")
        return self._open_writer(topic, self.sink, shared or topic == "deadletter")

    def _open_writer(self, topic: str, sink: str, shared: bool):
        s = self.settings
        sync = SyncPolicy(s["fsync"], s["fsync_every"], s["fsync_interval_ms"])
        cls = sqlite.SqliteWriter if sink == "sqlite" else jsonl.JsonlWriter
        return cls(self.topic_dir(topic), topic, segment_bytes=s["segment_bytes"],
                   segment_seconds=s["segment_seconds"], retention_bytes=s["retention_bytes"],
                   retention_hours=s["retention_hours"], sync=sync, shared=shared)

    def deadletter(self, reason: str, raw: str, source: str | None = None,
                   position: dict | None = None, stage: str | None = None) -> dict:
        """Record a bad input in ``deadletter`` with the reason, where it was read (topic and
        position) and its raw text. Any number of processes may do this; an existing
        deadletter topic keeps its sink."""
        if self._deadletter is None:
            self._deadletter = self._open_writer("deadletter", self.sink_of("deadletter"), True)
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        return self._deadletter.append({
            "type": "deadletter", "reason": reason, "source": source, "position": position,
            "stage": stage, "raw": raw,
        })

    # -- reading -----------------------------------------------------------------------------
    def reader(self, topic: str, position: dict | None = None, start: str = "beginning",
               raw: bool = False):
        """A plain reader (no saved position) from ``start`` ("beginning" or "end") or
        ``position``. ``raw`` adds the stored text to each item (``ofi tail --json``)."""
        if start not in ("beginning", "end"):
            raise BusError(f"reader start must be beginning or end, not {start!r}")
        d = self.topic_dir(topic)
        cls = sqlite.SqliteReader if self.sink_of(topic) == "sqlite" else jsonl.JsonlReader
        return cls(d, position, start, raw=raw)

    def read_all(self, topic: str) -> list[dict]:
        """Every readable record of a topic, oldest first ([] if the topic does not exist)."""
        if not os.path.isdir(os.path.join(self.root, topic)):
            return []
        reader = self.reader(topic)
        out: list[dict] = []
        try:
            while True:
                items = reader.read(20000)
                if not items:
                    return out
                out.extend(rec for rec, *_ in items if not isinstance(rec, BadRecord))
        finally:
            reader.close()

    def consumer(self, topic: str, name: str, start: str = "saved",
                 default_start: str = "beginning") -> "Consumer":
        """A named consumer whose position is saved under ``<home>/bus/.consumers``."""
        return Consumer(self, topic, name, start, default_start)

    def consumers(self) -> list[dict]:
        """Every saved consumer position with its lag."""
        out = []
        base = os.path.join(self.root, ".consumers")
        if not os.path.isdir(base):
            return out
        for topic in sorted(os.listdir(base)):
            if topic not in TOPICS:
                continue
            last = self.last_seq(topic)
            for fn in sorted(os.listdir(os.path.join(base, topic))):
                if not fn.endswith(".json"):
                    continue
                try:
                    with open(os.path.join(base, topic, fn), "rb") as f:
                        pos = orjson.loads(f.read())
                except (OSError, orjson.JSONDecodeError):
                    continue
                out.append({"consumer": fn[:-5], "topic": topic, "position": pos.get("seq", 0),
                            "lag": max(0, last - int(pos.get("seq", 0)))})
        return out

    # -- waking ------------------------------------------------------------------------------
    def watch(self, topic: str) -> None:
        """Make :meth:`wait` return when ``topic`` changes."""
        if self._waker is None:
            self._waker = _new_waker()
        self._waker.watch(self.topic_dir(topic))

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a watched topic changes or ``timeout`` (default: the slow poll)."""
        if timeout is None:
            timeout = self.settings["poll_interval_s"]
        if self._waker is None:
            self._waker = _new_waker()
        return self._waker.wait(timeout)

    @property
    def waker(self) -> Waker | None:
        return self._waker

    # -- inspection --------------------------------------------------------------------------
    def stats(self) -> dict:
        """Per topic: sink, records, bytes, last seq; per consumer: position, lag."""
        topics = {}
        for topic in TOPICS:
            d = os.path.join(self.root, topic)
            if not os.path.isdir(d):
                continue
            sink = self.sink_of(topic)
            size = 0
            for fn in os.listdir(d):
                p = os.path.join(d, fn)
                if os.path.isfile(p) and not os.path.islink(p) and fn not in ("writer.lock", "bell"):
                    size += os.path.getsize(p)
            last = self.last_seq(topic)
            if sink == "sqlite":
                count = sqlite.count_in(d)
            else:
                segs = jsonl.list_segments(d)
                count = last - segs[0] + 1 if segs and last else 0
            topics[topic] = {"sink": sink, "records": count, "bytes": size, "last_seq": last}
        return {"home": self.home, "topics": topics, "consumers": self.consumers()}

    def close(self) -> None:
        if self._deadletter is not None:
            self._deadletter.close()
            self._deadletter = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None


class Consumer:
    """Reads one topic for one named consumer, at least once.

    ``poll`` returns ``(record, position)`` pairs; lines that cannot be decoded are sent to
    ``deadletter`` with the reason, the source topic and position and the raw text, and
    skipped (marking the record before such a line covers the line too). ``mark`` notes a
    processed position and ``commit`` saves the last marked one atomically (write, then
    rename), so a restart resumes after the last committed record: nothing is lost, and what
    was processed but not committed is delivered again.
    """

    def __init__(self, bus: Bus, topic: str, name: str, start: str = "saved",
                 default_start: str = "beginning"):
        if start not in ("saved", "beginning", "end"):
            raise BusError(f"consumer start must be saved, beginning or end, not {start!r}")
        self.bus = bus
        self.topic = topic
        self.name = name
        pos_dir = os.path.join(bus.root, ".consumers", topic)
        os.makedirs(pos_dir, exist_ok=True)
        self.path = os.path.join(pos_dir, f"{name}.json")
        saved = self.load() if start == "saved" else None
        first = default_start if start == "saved" else start
        self.reader = bus.reader(topic, saved, first)
        self._marked = saved or self.reader.position
        self._saved = dict(self._marked) if saved else None
        self._last = None          # position of the last record handed out
        self._durable = bus.settings["fsync"] != "none"
        self._fd = -1
        self._width = POSITION_WIDTH
        self.deadlettered = 0

    def load(self) -> dict | None:
        try:
            with open(self.path, "rb") as f:
                return orjson.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise BusError(f"consumer position {self.path} is unreadable: {exc}") from None

    def poll(self, max_records: int = 5000, greedy: bool = True) -> list[tuple[dict, dict]]:
        """Records available now (never blocks), at most ``max_records``; [] when nothing is
        new. ``greedy=False`` returns at most one chunk's worth (a few hundred records), so
        that the first records of a backlog are handed over after one chunk's decoding."""
        reader = self.reader
        bad_before = reader.bad_seen
        items = reader.read(max_records, greedy)
        if reader.bad_seen == bad_before:
            if items:
                self._last = items[-1][1]
            return items
        out = []
        last = self._last
        for item, pos in items:
            if isinstance(item, BadRecord):
                self.bus.deadletter(item.reason, item.raw, source=self.topic, position=pos,
                                    stage=self.name)
                self.deadlettered += 1
                if last is None:
                    self._marked = pos      # nothing handed out before it: skip it now
                else:
                    last.clear()            # marking the record before it skips it too
                    last.update(pos)
                continue
            out.append((item, pos))
            last = pos
        self._last = last
        return out

    def mark(self, position: dict) -> None:
        """Note that everything up to ``position`` has been processed."""
        self._marked = position

    def seek(self, position: dict | None) -> None:
        """Read from ``position`` (None: the beginning) on, whatever was saved: for a stage
        whose state, saved with the positions it reflects, is the truth (``daemons/runtime``).
        The next ``commit`` saves it."""
        self.reader.close()
        self.reader = self.bus.reader(self.topic, position, "beginning")
        self._marked = dict(position) if position else self.reader.position
        self._saved = None
        self._last = None

    def commit(self) -> None:
        """Save the marked position (atomically) if it moved.

        The position is rewritten in place with one ``pwrite`` of a padded line of less than
        512 bytes: a killed process leaves the old or the new one, never a mix. (Replacing
        the file by rename, the usual way, makes ext4 flush it to disk first: milliseconds
        per commit instead of one microsecond.)
        """
        if self._marked == self._saved:
            return
        data = orjson.dumps(self._marked)
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._width = max(POSITION_WIDTH, os.fstat(self._fd).st_size)
        if len(data) >= self._width:
            self._width = (len(data) // POSITION_WIDTH + 1) * POSITION_WIDTH
        os.pwrite(self._fd, data.ljust(self._width - 1) + b"\n", 0)
        if self._durable:
            os.fdatasync(self._fd)
        self._saved = dict(self._marked)

    @property
    def position(self) -> dict:
        return self._marked

    @property
    def skipped(self) -> int:
        """Records removed by retention before this consumer reached them."""
        return self.reader.skipped

    def lag(self) -> int:
        return max(0, self.bus.last_seq(self.topic) - int(self._marked.get("seq", 0)))

    def close(self) -> None:
        self.commit()
        self.reader.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _new_waker() -> "Waker":
    # imported when a reader first waits: watchdog costs every short command a tenth of a second
    from .wake import Waker

    return Waker()
