"""Recorded files -> ``trades`` / ``book`` / ``depth`` topic records in exchange-time order.

    for rec in Replay(["btcusdt_20240718.gz", "btcusdt_20240719.gz"], symbols={"BTCUSDT"}):
        ...   # trade, book, depth, snapshot and gap records (COMMON schemas)

Consecutive files of the same format form one *chain* read in the given order (the files of
one recording window: the depth diff chain and the local book carry across them). Different
chains (say a trades CSV and a bookTicker CSV of the same day) are read side by side. Within a
chain each stream (trades, book, depth) keeps its file order; all streams of all chains are
merged by exchange time (:func:`~.merge.event_time`) with :class:`~.merge.Merger`, so equal
times keep file order within a stream. Diffs go through a :class:`~.book.DepthFeed` per symbol
before the merge, exactly as harvest publishes them.

Memory stays bounded whatever the input holds: a stream that falls silent while the others of
its recording go on does not hold them back for longer than ``stall_ms`` of receive time (see
:func:`~.merge.stalled_key`); the silence is noted in :attr:`Replay.stalls`.
"""
from __future__ import annotations

from itertools import chain

from . import formats
from .book import DepthFeed
from .merge import STALL_MS, Merger, event_time, stalled_key

_TRADE_KINDS = (formats.TRADE, formats.AGG_TRADE)


def chains_of(paths: list[str]) -> list[tuple[str, list[str]]]:
    """``[(format, [paths...]), ...]``: consecutive files of one format grouped, in order.

    Files whose names start with different symbols (``btcusdt_...``, ``ethusdt_...``) are
    different recordings, so they form different chains (merged by time, not read in turn).
    """
    out: list[tuple[str, list[str]]] = []
    last_symbol = None
    for p in paths:
        fmt = formats.detect(p)
        symbol = formats.symbol_from_path(p)
        if out and out[-1][0] == fmt and symbol == last_symbol:
            out[-1][1].append(p)
        else:
            out.append((fmt, [p]))
        last_symbol = symbol
    return out


class _Chain:
    """One chain of files: reads messages and pushes records into the merger."""

    def __init__(self, idx: int, fmt: str, paths: list[str], symbol: str | None,
                 symbols: set | None, levels: int, merger: Merger, stall_ms: float,
                 stalls: list):
        self.msgs = chain.from_iterable(formats.read_tuples(p, symbol, fmt) for p in paths)
        self.trades, self.book, self.depth = (idx, "trades"), (idx, "book"), (idx, "depth")
        self.streams = [(idx, s) for s in formats.STREAMS_OF[fmt]]
        self.symbols = symbols
        self.levels = levels
        self.merger = merger
        self.feeds: dict[str, DepthFeed] = {}
        self.messages = 0
        self.done = False
        self.stall_ms = int(stall_ms)
        self.stalls = stalls
        self.newest_recv = None   # the latest receive time read in this chain
        # each stream's own frontier (the merger's is also raised to newest_recv - stall_ms)
        self.last: dict = {s: None for s in self.streams}

    def _push(self, stream, t, recv, rec) -> None:
        """Queue ``rec`` under its merge key (see :func:`~.merge.stalled_key`)."""
        m = self.merger
        key = stalled_key(t, m.frontier[stream], recv, self.stall_ms)
        last = self.last[stream]
        if last is not None and recv - self.stall_ms > last:
            self.stalls.append({"stream": stream[1], "t": last, "until": t})
        self.last[stream] = key
        m.push(stream, key, (key, rec))

    def _moved(self, stream, t) -> None:
        """``stream`` moved on to ``t`` without an item (a buffered or dropped diff)."""
        if t is not None:
            self.merger.advance(stream, t)
            last = self.last[stream]
            if last is None or t > last:
                self.last[stream] = t

    def read(self, n: int = 512) -> None:
        """Read up to ``n`` messages; at the end, end this chain's streams."""
        m = self.merger
        push = self._push
        trade_record, book_record = formats.trade_record, formats.book_record
        symbols = self.symbols
        count = 0
        for msg in self.msgs:
            count += 1
            kind, recv, sym, data = msg[0], msg[1], msg[2], msg[3]
            if self.newest_recv is None or recv > self.newest_recv:
                self.newest_recv = recv
            if symbols is not None and sym not in symbols:
                if count >= n:
                    break
                continue
            if kind == "bookTicker":
                rec = book_record(data, recv, sym)
                E = rec["E"]
                push(self.book, recv if E is None else E, recv, rec)
            elif kind in _TRADE_KINDS:
                rec = trade_record(data, recv, sym)
                push(self.trades, rec["T"], recv, rec)
            elif kind == "depthUpdate":
                out = self._feed(sym).on_diff(data, recv)
                if out:
                    for rec in out:
                        push(self.depth, event_time(rec), rec["recv_ts"], rec)
                else:
                    self._moved(self.depth, data.get("E", recv))
            elif kind == "snapshot":
                for rec in self._feed(sym).on_snapshot(data, recv):
                    push(self.depth, event_time(rec), rec["recv_ts"], rec)
            if count >= n:
                break
        self.messages += count
        floor = None
        if self.newest_recv is not None:
            # no later item of a silent stream can sort below this: release what waits on it
            floor = self.newest_recv - self.stall_ms
            for s in self.streams:
                m.advance(s, floor)
        if count < n:
            self.done = True
            for s in self.streams:
                last = self.last[s]
                if last is not None and floor is not None and floor > last:  # silent to the end
                    self.stalls.append({"stream": s[1], "t": last, "until": None})
                m.end(s)

    def _feed(self, sym: str) -> DepthFeed:
        f = self.feeds.get(sym)
        if f is None:
            f = self.feeds[sym] = DepthFeed(sym, self.levels)
        return f


class Replay:
    """Iterate the records of recorded files in exchange-time order (see the module docstring).

    ``symbols``: keep only these (None: all). ``symbol`` names the symbol of files that carry
    none (CSV). ``levels``: book levels in each depth record. ``stall_ms``: see the module
    docstring; :meth:`keyed` gives each record's merge key too.
    """

    def __init__(self, paths: list[str], symbols=None, symbol: str | None = None,
                 levels: int = 5, batch: int = 512, stall_ms: float = STALL_MS):
        groups = chains_of(list(paths))
        streams = [(i, s) for i, (fmt, _) in enumerate(groups) for s in formats.STREAMS_OF[fmt]]
        self.merger = Merger(streams)
        syms = {s.upper() for s in symbols} if symbols else None
        #: silences: ``{stream, t (its last key), until (the key it spoke again at, or None)}``
        self.stalls: list[dict] = []
        self.chains = [_Chain(i, fmt, ps, symbol, syms, levels, self.merger, stall_ms,
                              self.stalls)
                       for i, (fmt, ps) in enumerate(groups)]
        self.batch = batch
        #: the most records the merge held back at once (bounded by stall_ms, not the input)
        self.peak_pending = 0

    @property
    def messages(self) -> int:
        """Messages read so far (every line of every file, filtered or not)."""
        return sum(c.messages for c in self.chains)

    @property
    def gaps(self) -> int:
        return sum(f.gaps for c in self.chains for f in c.feeds.values())

    def __iter__(self):
        for _, _, rec in self.keyed():
            yield rec

    def keyed(self):
        """``(stream, key, record)`` in merge order: ``stream`` is ``trades``, ``book`` or
        ``depth``, ``key`` the merge key (the record's time raised to its stream's frontier)."""
        m = self.merger
        by_stream = {s: c for c in self.chains for s in c.streams}
        while True:
            for s, (key, rec) in m.pop():
                yield s[1], key, rec
            w = m.waiting
            if w is None:
                return
            c = by_stream[w]
            if c.done:  # cannot happen (its streams are ended); guards an endless loop
                m.end(w)
                continue
            c.read(self.batch)
            held = m.pending()
            if held > self.peak_pending:
                self.peak_pending = held
