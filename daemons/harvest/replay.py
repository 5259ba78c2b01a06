"""The replay source: recorded files -> records, paced in exchange time.

:class:`daemons.marketdata.replay.Replay` reads every format ``ofi signals`` reads and merges
all files and streams in exchange-time order, with the local book synced from the recorded
snapshot exactly as live. :class:`Pacer` releases its records:

* ``speed == 0``: as fast as possible, in batches;
* ``speed > 0``: at ``speed`` times real time: the record with exchange time ``t`` is due at
  ``start + (t - t0) / speed`` on the monotonic clock.

``skip`` drops the first records (a restarted daemon resumes where it stopped).
"""
from __future__ import annotations

from daemons.marketdata.merge import event_time
from daemons.marketdata.replay import Replay

_TOPIC = {"trade": "trades", "book": "book", "depth": "depth", "snapshot": "depth",
          "gap": "depth"}


def topic_of(rec: dict) -> str:
    """The topic a replayed record belongs to."""
    return _TOPIC[rec["type"]]


class Pacer:
    """Hands out due records; see the module docstring. ``clock`` is monotonic seconds."""

    def __init__(self, records, speed: float = 0.0, skip: int = 0, batch: int = 5000):
        self.it = iter(records)
        self.speed = float(speed)
        self.batch = batch
        self.emitted = 0
        self.done = False
        self.last_event_ms: int | None = None
        self._next = None
        self._t0: float | None = None      # exchange ms of the first paced record
        self._start: float | None = None   # clock at the first paced record
        for _ in range(skip):
            if self._peek() is None:
                break
            self._next = None
            self.emitted += 1

    def _peek(self):
        if self._next is None and not self.done:
            try:
                self._next = next(self.it)
            except StopIteration:
                self.done = True
        return self._next

    def _due_at(self, rec) -> float:
        t = event_time(rec)
        if self.speed <= 0 or t is None:
            return float("-inf")
        if self._t0 is None:
            return float("-inf")
        return self._start + (t - self._t0) / (1000.0 * self.speed)

    def take(self, now: float) -> list[dict]:
        """The records due at ``now`` (at most ``batch``)."""
        out = []
        while len(out) < self.batch:
            rec = self._peek()
            if rec is None:
                break
            if self._t0 is None and self.speed > 0:
                t = event_time(rec)
                if t is not None:
                    self._t0, self._start = t, now
            if self._due_at(rec) > now:
                break
            out.append(rec)
            self._next = None
            t = event_time(rec)
            if t is not None:
                self.last_event_ms = t
        self.emitted += len(out)
        return out

    def wait(self, now: float) -> float | None:
        """Seconds until the next record is due (0: now; None: nothing left)."""
        rec = self._peek()
        if rec is None:
            return None
        return max(0.0, self._due_at(rec) - now)


def open_replay(paths: list[str], symbols: list[str], levels: int) -> Replay:
    """The merged records of ``paths`` for ``symbols`` (raises FormatError on a bad file)."""
    only = symbols[0] if len(symbols) == 1 else None  # names the symbol of CSV files
    return Replay(list(paths), symbols=set(symbols), symbol=only, levels=levels)
