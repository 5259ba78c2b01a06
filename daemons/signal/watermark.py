"""When the signal daemon may close an interval: a watermark on the exchange's clock.

The exchange clock is estimated per input stream from the local clock: a stream's *delay* is
the smallest age (local time of reading minus the record's exchange time) seen on it, the
clock offset plus the feed's fastest latency. It is learnt from every record, and may drift up
by :data:`DRIFT` ms per second of samples so that a lasting increase (a clock step, a slower
route) is learnt too. A caught-up stream's frontier is then ``now − delay − allowed lateness``:
everything older is expected to have arrived, whether the stream spoke or not (a quiet market
moves time too). A stream whose delay is above :data:`LIVE_MS` is a replay of the past (recorded
data appended to the bus), not a live feed: the clock does not move it, its records do, and
the daemon then gives exactly what ``ofi signals`` gives over the same records. Pure: the
caller passes the times.
"""
from __future__ import annotations

#: how fast a stream's delay estimate may rise, in ms per ms of samples (1 ms per second)
DRIFT = 0.001
#: a stream read later than this after its exchange time is no live feed (see above)
LIVE_MS = 60_000


class Watermark:
    """Per-stream delay estimates and the frontiers they give; see the module docstring."""

    def __init__(self, lateness_ms: float):
        self.lateness_ms = float(lateness_ms)
        self.delay: dict[str, float] = {}
        self._at: dict[str, float] = {}

    def observe(self, stream: str, event_ms: float, now_ms: float) -> None:
        """A record of ``stream`` with exchange time ``event_ms`` read at local ``now_ms``."""
        age = now_ms - event_ms
        prev = self.delay.get(stream)
        if prev is not None:
            prev += (now_ms - self._at[stream]) * DRIFT
            if prev < age:
                age = prev
        self.delay[stream] = age
        self._at[stream] = now_ms

    def frontier(self, stream: str, now_ms: float) -> float | None:
        """The exchange time below which ``stream`` brings nothing more (None: not known, or
        not a live feed)."""
        d = self.delay.get(stream)
        if d is None or d > LIVE_MS:
            return None
        return now_ms - d - self.lateness_ms

    def wait_ms(self, until_ms: float, now_ms: float) -> float | None:
        """How long until every live stream's frontier reaches ``until_ms`` (None: no live
        stream is known)."""
        live = [d for d in self.delay.values() if d <= LIVE_MS]
        if not live:
            return None
        return max(0.0, until_ms + max(live) + self.lateness_ms - now_ms)
