"""Deterministic merge of FIFO streams (trades, book, depth, ...) by exchange time.

Each stream keeps its own order (a stream is never reordered: OFI compares each book update
with the previous one of the same stream). Across streams, items leave in ``(key, rank)`` order,
``rank`` being the stream's position in the list given to :class:`Merger`. An item is released
only once no stream can still bring an item that sorts before it:

- a stream with queued items: its head bounds the release;
- an empty stream: its *frontier* (the key of the last item pushed, or :meth:`Merger.advance`d
  past: keys within a stream never decrease, a smaller key is raised to the frontier) bounds it;
- an ended stream, once empty, bounds nothing;
- an *idle* stream (caught up with its input for now, as the daemon sees it) bounds nothing
  older than ``grace_ms`` before the newest frontier of all streams.

So the output is a function of the streams' contents alone, not of how their items arrived
in time (batches, restarts), except through the idle rule, which only matters when a stream
falls silent for longer than ``grace_ms`` and then brings older items (these are late).

Keys are epoch ms. :func:`event_time` is the key of a topic record.
"""
from __future__ import annotations

from collections import deque

_INF = float("inf")

#: recorded files: a stream received this long after its own frontier no longer holds the
#: other streams of its recording back (signal.stall_ms)
STALL_MS = 30_000


def stalled_key(t, frontier, recv, stall_ms):
    """The merge key of an item of a recorded stream: its time ``t``, raised to the stream's
    ``frontier`` (keys never decrease within a stream) and to ``recv - stall_ms``.

    The last part bounds what a silent stream holds back: every later item of the recording
    (receive times grow along a file) gets a key of at least ``newest recv - stall_ms``, so
    the merge may release everything below that. It changes a key only for an item received
    more than ``stall_ms`` after its own time, i.e. after such a silence; ``t`` None (no
    time) takes the frontier, as :meth:`Merger.push` does.
    """
    if t is None:
        t = frontier if frontier is not None else 0
    elif frontier is not None and t < frontier:
        t = frontier
    floor = recv - stall_ms
    return floor if t < floor else t


def event_time(rec: dict):
    """The exchange time a topic record is ordered and bucketed by (epoch ms).

    trade: ``T`` (trade time); book, depth, snapshot, gap: ``E`` (event time). Spot bookTicker
    and spot snapshots carry no ``E``: the local receive time ``recv_ts`` stands in.
    """
    if rec.get("type") == "trade":
        t = rec.get("T")
        if t is None:
            t = rec.get("E")
    else:
        t = rec.get("E")
    if t is None:
        t = rec.get("recv_ts")
    return t


class Merger:
    """Merges named FIFO streams; see the module docstring."""

    def __init__(self, streams, grace_ms: float | None = None):
        self.names = list(streams)
        self.rank = {s: i for i, s in enumerate(self.names)}
        self.queues = {s: deque() for s in self.names}
        self.frontier: dict = {s: None for s in self.names}
        self.ended: set = set()
        self.idle: set = set()
        self.grace_ms = grace_ms
        #: after :meth:`pop`: the empty stream that holds the merge up (None if none does)
        self.waiting = None

    def push(self, stream, key, item) -> None:
        """Queue ``item`` with ``key`` at the end of ``stream``."""
        f = self.frontier[stream]
        if key is None or (f is not None and key < f):
            key = f if f is not None else 0
        self.frontier[stream] = key
        self.queues[stream].append((key, item))

    def advance(self, stream, key) -> None:
        """Note that ``stream`` has moved to ``key`` without an item (e.g. a buffered diff)."""
        f = self.frontier[stream]
        if key is not None and (f is None or key > f):
            self.frontier[stream] = key

    def end(self, stream) -> None:
        """``stream`` will bring nothing more."""
        self.ended.add(stream)

    def low_water(self):
        """The key below which nothing more can come from any stream: the least of each
        stream's head or, empty, its frontier. Ended streams count for nothing, and so do
        ``idle`` streams that never brought an item. None when a stream bounds it from the
        start (no frontier yet)."""
        low = None
        for s in self.names:
            q = self.queues[s]
            if q:
                k = q[0][0]
            elif s in self.ended:
                continue
            else:
                k = self.frontier[s]
                if k is None:
                    if s in self.idle:
                        continue
                    return None
            if low is None or k < low:
                low = k
        return low

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def pop(self) -> list:
        """Every ``(stream, item)`` that can be released now, in merge order."""
        out = []
        queues = self.queues
        names = self.names
        while True:
            best = None
            bkey = None
            for s in names:
                q = queues[s]
                if q:
                    k = q[0][0]
                    if best is None or k < bkey:
                        best, bkey = s, k
            if best is None:
                self.waiting = next((s for s in names if s not in self.ended), None)
                return out
            brank = self.rank[best]
            limit = (_INF, 0)
            limiter = None
            newest = None
            for s in names:
                if s == best:
                    continue
                q = queues[s]
                if not q and s in self.ended:
                    continue
                if q:
                    b = (q[0][0], self.rank[s])
                else:
                    f = self.frontier[s]
                    b = (f if f is not None else -_INF, self.rank[s])
                    if s in self.idle and self.grace_ms is not None:
                        if newest is None:
                            newest = max((x for x in self.frontier.values() if x is not None),
                                         default=-_INF)
                        b = max(b, (newest - self.grace_ms, _INF))
                if b < limit:
                    limit, limiter = b, s
            if (bkey, brank) >= limit:
                self.waiting = limiter  # an empty stream holds the merge up
                return out
            q = queues[best]
            lk, lr = limit
            append = out.append
            if brank < lr:
                while q and q[0][0] <= lk:
                    append((best, q.popleft()[1]))
            else:
                while q and q[0][0] < lk:
                    append((best, q.popleft()[1]))

    def state(self) -> dict:
        """JSON-able state (queues included) for a restart."""
        return {"queues": {str(s): [[k, it] for k, it in q] for s, q in self.queues.items()},
                "frontier": {str(s): f for s, f in self.frontier.items()}}

    def load(self, state: dict) -> None:
        """Restore :meth:`state` (streams are matched by name)."""
        for s in self.names:
            self.queues[s] = deque((k, it) for k, it in state["queues"].get(str(s), []))
            self.frontier[s] = state["frontier"].get(str(s))
