"""The signal daemon: ``trades`` + ``book`` + ``depth`` -> ``signals`` (SPEC section 5).

Restart equivalence (a SIGKILL at any instant, then a restart, gives exactly the ``signals`` of
an uninterrupted run) rests on three things:

0. **Intervals close by watermark.** An interval closes when the exchange clock, estimated
   from the local clock and each input's measured delay (:mod:`.watermark`), has passed its
   end plus ``signal.allowed_lateness_ms``, not when the slowest stream next speaks. A record
   of an interval already closed is late: it counts in the open interval and in that
   interval's ``late`` field (never dropped); the heartbeat counts them too.
1. **A deterministic interleaving.** The three inputs are merged by exchange time with
   :class:`~daemons.marketdata.merge.Merger` (each topic keeps its order; a record is handed
   to the core only when no input can still bring an older one), so the order the core sees
   is a function of the topics' contents, not of how reads were batched. An input that is
   caught up (nothing more to read now) holds the others back for at most
   ``signal.merge_grace_ms`` of exchange time, so a silent stream does not stall the signals.
2. **State and input positions saved together.** The stage is stateful on the runtime
   (``daemons/runtime.py``): every ``signal.save_every_s`` the runtime writes
   ``<home>/state/signal.json`` atomically with the core state, the merge queues, where the
   ``signals`` topic ended, and the position of the last record read from each input; on
   start it rewinds the inputs to those positions, so every record is read again after the
   snapshot, none twice before it.
3. **No duplicate output.** Signals written after the snapshot are read back from the
   ``signals`` topic on start; the replayed core regenerates them and they are skipped
   (per symbol, every ``bucket_ms`` up to the last one already present).

Bad input (wrong type, missing field, NaN, negative size) goes to ``deadletter``; the stage
carries on.
"""
from __future__ import annotations

import math

import orjson

from bus import BadRecord

from .. import config as configmod
from ..marketdata.merge import Merger, event_time
from ..runtime import Stage
from .core import SignalCore
from .watermark import Watermark

INPUTS = ("trades", "book", "depth")
STATE_VERSION = 1


def _num(rec: dict, key: str, nonneg: bool = False) -> None:
    v = rec.get(key)
    if type(v) not in (int, float):
        raise BadRecord(f"missing or non-numeric {key!r}", _raw(rec))
    if not math.isfinite(v):
        raise BadRecord(f"non-finite {key!r}", _raw(rec))
    if nonneg and v < 0:
        raise BadRecord(f"negative {key!r}", _raw(rec))


def _time(rec: dict) -> None:
    t = event_time(rec)
    if type(t) is not int or t < 0:
        raise BadRecord("missing or invalid event time (E/T/recv_ts)", _raw(rec))


def _levels(rec: dict, key: str) -> None:
    side = rec.get(key)
    if type(side) is not list:
        raise BadRecord(f"missing or invalid {key!r}", _raw(rec))
    for lvl in side:
        if (type(lvl) is not list or len(lvl) != 2
                or any(type(x) not in (int, float) or not math.isfinite(x) for x in lvl)):
            raise BadRecord(f"invalid level in {key!r}", _raw(rec))
        if lvl[1] < 0:
            raise BadRecord(f"negative size in {key!r}", _raw(rec))


def _raw(rec: dict) -> str:
    return orjson.dumps(rec).decode()


_EXPECTED = {"trades": ("trade",), "book": ("book",), "depth": ("depth", "snapshot", "gap")}


def validate(topic: str, rec: dict) -> None:
    """Raise :class:`BadRecord` unless ``rec`` is a usable record of ``topic``."""
    typ = rec.get("type")
    if typ not in _EXPECTED[topic]:
        raise BadRecord(f"unexpected type {typ!r} in {topic}", _raw(rec))
    sym = rec.get("symbol")
    if type(sym) is not str or not sym:
        raise BadRecord("missing or invalid symbol", _raw(rec))
    _time(rec)
    if typ == "trade":
        _num(rec, "qty", nonneg=True)
        _num(rec, "price", nonneg=True)
        if rec.get("side") not in ("buy", "sell"):
            raise BadRecord("side must be buy or sell", _raw(rec))
        x = rec.get("X", "MARKET")
        if type(x) is not str:
            raise BadRecord("invalid X", _raw(rec))
    elif typ == "book":
        for k in ("bid", "ask", "bid_qty", "ask_qty"):
            _num(rec, k, nonneg=True)
    elif typ in ("depth", "snapshot"):
        _levels(rec, "bids")
        _levels(rec, "asks")


class SignalStage(Stage):
    """Signal daemon: OFI/CVD signals from trades, book and depth."""

    name = "signal"
    inputs = INPUTS
    outputs = ("signals",)
    stateful = True

    def __init__(self, ctx):
        super().__init__(ctx)
        sec = ctx.settings.signal
        self.save_every_s = sec.save_every_s
        self.core = SignalCore.from_settings(ctx.settings.signal)   # the core shared offline
        self.core.count_late = True
        self.merger = Merger(INPUTS, grace_ms=sec.merge_grace_ms)
        self.watermark = Watermark(sec.allowed_lateness_ms)
        self._read_at = 0              # local ms of the current batch (the records' ages)
        self.late = 0
        self.signals_pos: dict | None = None    # where ``signals`` ended at the restored save
        self.resumed = False
        self.skip: dict = {}
        self.emitted = self.skipped = 0

    def restore(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise configmod.ConfigError(f"signal state: unknown version {state.get('version')!r}")
        self.core = SignalCore.from_state(state["core"])
        self.core.count_late = True
        self.merger.load(state["merger"])
        self.signals_pos = state["signals_pos"]
        self.resumed = True

    def snapshot(self) -> dict:
        end = self.ctx.bus.reader("signals", start="end")
        signals_pos = end.position
        end.close()
        return {"version": STATE_VERSION, "core": self.core.state(),
                "merger": self.merger.state(), "signals_pos": signals_pos}

    def start(self) -> None:
        self.skip = self._already_written(self.signals_pos if self.resumed else None)
        self.ctx.log.info("signal state", resumed=self.resumed,
                          symbols=sorted(self.core.symbols), skip=self.skip)

    # -- loop ------------------------------------------------------------------------------
    def drained(self, topic: str, caught_up: bool) -> None:
        self._read_at = self.ctx.now_ms()
        if caught_up:
            self.merger.idle.add(topic)
        else:
            self.merger.idle.discard(topic)

    def handle(self, topic: str, rec: dict) -> None:
        validate(topic, rec)
        t = event_time(rec)
        self.watermark.observe(topic, t, self._read_at)
        self.merger.push(topic, t, rec)

    def tick(self, now: float) -> None:
        m = self.merger
        now_ms = now * 1000
        clocked = False
        for topic in m.idle:           # a caught-up live stream: time moves its frontier
            f = self.watermark.frontier(topic, now_ms)
            if f is not None:
                m.advance(topic, f)
                clocked = True
        out = []
        process = self.core.process
        for _, rec in m.pop():
            sigs = process(rec)
            if sigs:
                out.extend(sigs)
        if clocked:                    # (records alone close intervals in a replay of the past)
            low = m.low_water()
            if low is not None:
                out.extend(self.core.advance(low))
        if out:
            self._emit(out)

    def idle_timeout(self) -> float | None:
        nxt = self.core.next_close_ms()
        if nxt is None:
            return None
        wait = self.watermark.wait_ms(nxt, self.ctx.now_ms())
        return None if wait is None else wait / 1000

    def health(self) -> dict:
        return {"pending": self.merger.pending(), "emitted_signals": self.emitted,
                "skipped_signals": self.skipped, "late_records": self.late,
                "delay_ms": {t: round(d, 1) for t, d in self.watermark.delay.items()}}

    # -- output ----------------------------------------------------------------------------
    def _emit(self, sigs: list[dict]) -> None:
        skip = self.skip
        if skip:
            keep = []
            for s in sigs:
                last = skip.get(s["symbol"])
                if last is not None and s["bucket_ms"] <= last:
                    self.skipped += 1
                    continue
                keep.append(s)
            sigs = keep
        if sigs:
            for s in sigs:   # the latency trace starts at the exchange time that closed it
                self.late += s["late"]
                s["trace"] = {"exchange": s["bucket_ms"] + s["interval_ms"]}
            self.ctx.emit_many("signals", sigs)
            self.emitted += len(sigs)

    def _already_written(self, signals_pos: dict | None) -> dict:
        """Per symbol, the last ``bucket_ms`` in ``signals`` after the saved position."""
        bus = self.ctx.bus
        reader = bus.reader("signals", position=signals_pos, start="beginning")
        last: dict = {}
        try:
            while True:
                batch = reader.read(5000)
                if not batch:
                    break
                for rec, _ in batch:
                    if isinstance(rec, dict) and rec.get("type") == "signal":
                        b = rec.get("bucket_ms")
                        if type(b) is int and b > last.get(rec.get("symbol"), -1):
                            last[rec["symbol"]] = b
        finally:
            reader.close()
        return last
