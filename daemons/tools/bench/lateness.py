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
from ...marketdata.merge import event_time
from ...marketdata.replay import Replay
from ...signal.stage import INPUTS, SignalStage

STEP_MS = 5
TOPIC = {"trade": "trades", "book": "book", "depth": "depth", "snapshot": "depth", "gap": "depth"}


class _Clock:
    def __init__(self, ms: float):
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


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
    first = records[0]["recv_ts"]
    shift = (int(time.time() * 1000) - first) // 60_000 * 60_000   # whole minutes: same buckets
    arrivals = sorted(((r["recv_ts"] + shift, i) for i, r in enumerate(records)))
    home = tempfile.mkdtemp(prefix="ofi-bench-lateness-")
    try:
        cfg = configmod.load(None, {"home": home, "symbols": [symbol],
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
        k, end = 0, arrivals[-1][0] + 1_000
        close_at: list[float] = []     # the clock when each signal was written
        while clock.ms < end:
            clock.ms += STEP_MS
            batch: dict = {}
            while k < len(arrivals) and arrivals[k][0] <= clock.ms:
                rec = dict(records[arrivals[k][1]])
                for key in ("E", "T", "recv_ts"):
                    if key in rec:
                        rec[key] += shift
                topic = TOPIC[rec["type"]]
                batch.setdefault(topic, []).append(rec)
                counts[topic] += 1
                k += 1
            for topic, recs in batch.items():
                writers[topic].append_many(recs)
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
    late = sum(s["late"] for s in signals)
    total = sum(counts.values())
    delay = runner.stage.watermark.delay
    offset = min(delay.values()) if delay else 0.0   # the recorder's clock minus Binance's
    waits = sorted(round(at - offset - (s["bucket_ms"] + s["interval_ms"]), 1)
                   for s, at in zip(signals, close_at))
    return {
        "symbol": symbol, "files": paths, "minutes": round((event_time(records[-1])
                                                            - event_time(records[0])) / 60_000, 2),
        "allowed_lateness_ms": float(lateness_ms), "records": total, "by_stream": counts,
        "late_records": late, "late_share": round(late / total, 6) if total else None,
        "signals": len(signals),
        "delay_ms": {t: round(d, 1) for t, d in delay.items()},
        "close_after_end_ms": {"p50": waits[len(waits) // 2] if waits else None,
                               "p99": waits[int(len(waits) * 0.99)] if waits else None},
    }
