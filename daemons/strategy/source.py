"""Reading ``signals`` from somewhere other than the daemon's own bus (the seed's flags).

``--signals-dir DIR`` names a home (``DIR/bus/signals``), a bus directory (``DIR/signals``) or a
signals topic directory itself; ``--signals-source auto|jsonl|sqlite`` picks the sink to read
(auto: SQLite if the topic has a database, else JSONL segments, decided once data appears).
The position read so far is saved atomically in ``<home>/state/strategy-signals.json`` after
the records are processed, like a bus consumer's.
"""
from __future__ import annotations

import os

import orjson

from bus import jsonl, sqlite

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
    """A consumer of a signals topic directory with its own saved position."""

    def __init__(self, topic_dir: str, source: str, state_path: str):
        self.dir = topic_dir
        self.source = source
        self.state_path = state_path
        self.sink = detect(topic_dir, source)
        saved = self._load()
        self._saved = saved
        self._marked = saved
        self.reader = None

    def _load(self) -> dict | None:
        try:
            with open(self.state_path, "rb") as f:
                data = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):
            return None
        if data.get("dir") != self.dir:
            return None   # another source: its positions mean nothing here
        return data.get("position")

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
        """``(record or BadRecord, position)`` pairs available now."""
        if not self._open():
            return []
        return self.reader.read(max_records)

    def mark(self, position: dict) -> None:
        self._marked = position

    def commit(self) -> None:
        if self._marked == self._saved or self._marked is None:
            return
        tmp = f"{self.state_path}.tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"dir": self.dir, "sink": self.sink, "position": self._marked}))
        os.replace(tmp, self.state_path)
        self._saved = dict(self._marked)

    @property
    def seq(self) -> int:
        return int((self._marked or {}).get("seq", 0))

    def lag(self) -> int:
        if self.sink is None:
            return 0
        last = (sqlite if self.sink == "sqlite" else jsonl).last_seq_in(self.dir)
        return max(0, last - self.seq)

    def close(self) -> None:
        self.commit()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
