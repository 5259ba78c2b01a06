"""Reading ``signals`` from somewhere other than the daemon's own bus (the seed's flags).

``--signals-dir DIR`` names a home (``DIR/bus/signals``), a bus directory (``DIR/signals``) or a
signals topic directory itself; ``--signals-source auto|jsonl|sqlite`` picks the sink to read
(auto: SQLite if the topic has a database, else JSONL segments, decided once data appears).
The runtime reads it like a bus consumer; the position read so far is saved with the
strategy's state (``<home>/state/strategy.json``).
"""
from __future__ import annotations

import os

from bus import BadRecord, jsonl, sqlite

SOURCES = ("auto", "jsonl", "sqlite")


class SourceError(Exception):
    """The signals source cannot be used as asked (one-line message)."""


def resolve_topic_dir(path: str | os.PathLike) -> str:
    """The signals topic directory that ``path`` designates (see the module docstring)."""
    p = os.path.abspath(os.fspath(path))
    if _has_spools(p):
        return p
    if os.path.isdir(os.path.join(p, "signals")) and not os.path.isdir(os.path.join(p, "bus")):
        return os.path.join(p, "signals")
    return os.path.join(p, "bus", "signals")


def _has_spools(topic_dir: str) -> bool:
    return jsonl.has_topic(topic_dir) or sqlite.has_topic(topic_dir)


def detect(topic_dir: str, source: str) -> str | None:
    """The sink to read: ``source`` if forced, else what the directory holds (None: nothing yet).

    Raises :class:`SourceError` when a forced sink is absent but the other one is present.
    """
    if source not in SOURCES:
        raise SourceError(f"--signals-source must be one of {', '.join(SOURCES)}, not {source!r}")
    has_sql, has_jsonl = sqlite.has_topic(topic_dir), jsonl.has_topic(topic_dir)
    if source == "auto":
        return "sqlite" if has_sql else "jsonl" if has_jsonl else None
    if source == "jsonl" and has_sql and not has_jsonl:
        raise SourceError(f"{topic_dir} holds SQLite signals, not JSONL (--signals-source sqlite)")
    if source == "sqlite" and has_jsonl and not has_sql:
        raise SourceError(f"{topic_dir} holds JSONL signals, not SQLite (--signals-source jsonl)")
    return source


class SignalSource:
    """A consumer of a signals topic directory outside this home's bus, run by the runtime
    like a bus consumer (its position is saved in the strategy's state file, under ``key``).
    Undecodable lines go to this home's ``deadletter``."""

    def __init__(self, topic_dir: str, source: str, bus, name: str):
        self.dir = topic_dir
        self.source = source
        self.key = f"signals@{topic_dir}"
        self.bus = bus
        self.name = name
        self.sink = detect(topic_dir, source)
        self._marked: dict | None = None
        self.reader = None

    def _open(self) -> bool:
        if self.reader is not None:
            return True
        if self.sink is None:
            self.sink = detect(self.dir, self.source)
            if self.sink is None:
                return False
        cls = sqlite.SqliteReader if self.sink == "sqlite" else jsonl.JsonlReader
        self.reader = cls(self.dir, self._marked, "beginning")
        return True

    def poll(self, max_records: int) -> list:
        """``(record, position)`` pairs available now."""
        if not self._open():
            return []
        out = []
        for item, pos in self.reader.read(max_records):
            if isinstance(item, BadRecord):
                self.bus.deadletter(item.reason, item.raw, source="signals", position=pos,
                                    stage=self.name)
                self._marked = pos
                continue
            out.append((item, pos))
        return out

    def seek(self, position: dict | None) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self._marked = dict(position) if position else None

    def mark(self, position: dict) -> None:
        self._marked = position

    def commit(self) -> None:
        """Nothing to do: the position is saved with the strategy's state."""

    @property
    def position(self) -> dict | None:
        return self._marked

    @property
    def seq(self) -> int:
        return int((self._marked or {}).get("seq", 0))

    def lag(self) -> int:
        if self.sink is None:
            return 0
        last = (sqlite if self.sink == "sqlite" else jsonl).last_seq_in(self.dir)
        return max(0, last - self.seq)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
