"""``ofi bench lateness``: the share of late records at a given allowed lateness, on a recording
replayed at real speed.

Each record of the recording reaches the signal daemon's code (the real stage, on the runtime,
on a temporary bus) at its recorded receive time (``recv_ts``: when the recorder got it from
Binance), on an injected clock stepped every ``STEP_MS``, so the delays and their jitter are
the recorded network's. Times are moved to the present (by a whole number of intervals) so
that the feed is live for the watermark. Figures: late records / records, each stream's delay
as learnt (the recorder's clock offset plus the feed's latency), and how long after its end each
interval closed, on the exchange's clock (the local clock minus the smallest delay).
"""
from __future__ import annotations

import shutil
import tempfile
import time

from bus import open_bus

from ... import config as configmod
from ... import runtime
from ...harvest.replay import topic_of
from ...marketdata.merge import event_time
from ...marketdata.replay import Replay
from ...signal.stage import INPUTS, SignalStage

STEP_MS = 5


class _Clock:
    def __init__(self, ms: float):
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


class Replayed:
    """What :func:`replay` gives: the ``signals`` records, the clock (ms) when each was
    written, the records fed per topic, and each stream's delay as the stage learnt it."""

    def __init__(self, signals: list, close_at: list, counts: dict, delay: dict):
        self.signals, self.close_at, self.counts, self.delay = signals, close_at, counts, delay


def replay(records: list[dict], arrival_ms, symbols, lateness_ms: float,
           step_ms: float = STEP_MS, tail_ms: float = 1_000.0) -> Replayed:
    """Feed ``records`` (times already in the present) to the signal stage, on the runtime and
    a temporary bus, each when the injected clock reaches ``arrival_ms(record)``; the clock
    steps by ``step_ms`` and runs ``tail_ms`` past the last arrival."""
    arrivals = sorted(((arrival_ms(r), i) for i, r in enumerate(records)))
    home = tempfile.mkdtemp(prefix="ofi-replay-signal-")
    try:
        cfg = configmod.load(None, {"home": home, "symbols": list(symbols),
                                    "signal.allowed_lateness_ms": float(lateness_ms),
                                    "log.level": "warning"})
        clock = _Clock(arrivals[0][0])
        runner = runtime.Runner(SignalStage, cfg, clock=clock)
        runner.open()
        runner.stage.start()
        runner.ready = True
        bus = open_bus(home)
        writers = {t: bus.writer(t) for t in INPUTS}
        counts = {t: 0 for t in INPUTS}
        k, end = 0, arrivals[-1][0] + tail_ms
        close_at: list[float] = []
        while clock.ms < end:
            clock.ms += step_ms
            batch: dict = {}
            while k < len(arrivals) and arrivals[k][0] <= clock.ms:
                rec = records[arrivals[k][1]]
                batch.setdefault(topic_of(rec), []).append(rec)
                k += 1
            for topic, recs in batch.items():
                writers[topic].append_many(recs)
                counts[topic] += len(recs)
            before = runner.stage.emitted
            for _ in range(2):     # read what arrived, then what the first read left
                runner.step()
                runner.stage.tick(clock())
            close_at.extend([clock.ms] * (runner.stage.emitted - before))
        signals = bus.read_all("signals")
        for w in writers.values():
            w.close()
        bus.close()
        runner.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return Replayed(signals, close_at, counts, dict(runner.stage.watermark.delay))


def run(paths: list[str], symbol: str, lateness_ms: float, minutes: float = 10.0) -> dict:
    """Replay ``minutes`` of the recording (see the module docstring); returns the figures."""
    records = []
    for rec in Replay(paths, symbols={symbol}):
        if rec.get("recv_ts") is None or event_time(rec) is None:
            continue
        records.append(rec)
        if event_time(rec) - event_time(records[0]) > minutes * 60_000:
            break
    if not records:
        raise ValueError(f"no records of {symbol} with receive times in {', '.join(paths)}")
    shift = (int(time.time() * 1000) - records[0]["recv_ts"]) // 60_000 * 60_000  # same buckets
    minutes_read = round((event_time(records[-1]) - event_time(records[0])) / 60_000, 2)
    records = [shifted(r, shift) for r in records]
    out = replay(records, lambda r: r["recv_ts"], [symbol], lateness_ms)
    late = sum(s["late"] for s in out.signals)
    total = sum(out.counts.values())
    offset = min(out.delay.values()) if out.delay else 0.0   # recorder's clock − Binance's
    waits = sorted(round(at - offset - (s["bucket_ms"] + s["interval_ms"]), 1)
                   for s, at in zip(out.signals, out.close_at))
    return {
        "symbol": symbol, "files": paths, "minutes": minutes_read,
        "allowed_lateness_ms": float(lateness_ms), "records": total, "by_stream": out.counts,
        "late_records": late, "late_share": round(late / total, 6) if total else None,
        "signals": len(out.signals),
        "delay_ms": {t: round(d, 1) for t, d in out.delay.items()},
        "close_after_end_ms": {"p50": waits[len(waits) // 2] if waits else None,
                               "p99": waits[int(len(waits) * 0.99)] if waits else None},
    }


def shifted(rec: dict, shift: int) -> dict:
    """A copy of ``rec`` with its times (``E``, ``T``, ``recv_ts``) ``shift`` ms later."""
    rec = dict(rec)
    for key in ("E", "T", "recv_ts"):
        if key in rec:
            rec[key] += shift
    return rec
