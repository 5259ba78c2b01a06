"""``ofi bench e2e``'s figures from a run's spools: each order's first acknowledgement and its
latency trace, the broker's part split at the venue's time of the order."""
from __future__ import annotations

from bus import open_bus
from daemons.tools.supervise.bench_e2e import measure

T = 1_700_000_000_000


def _order(cid, status, ts, trace=None, venue_ts=None):
    rec = {"type": "order", "client_order_id": cid, "symbol": "BTCUSDT", "status": status}
    if trace is not None:
        rec["trace"] = trace
    if venue_ts is not None:
        rec["venue_ts"] = venue_ts
    return rec, ts


def test_figures_come_from_each_orders_first_acknowledgement(home):
    trace = {"exchange": T, "signal": T + 15, "strategy": T + 15, "intent": T + 16}
    rows = [
        _order("a", "PENDING", T + 16),
        _order("a", "NEW", T + 19, trace, venue_ts=T + 17),       # the acknowledgement
        _order("a", "FILLED", T + 30, trace, venue_ts=T + 29),    # later: not counted
        _order("b", "FILLED", T + 1021, {**trace, "exchange": T + 1000, "signal": T + 1016,
                                         "intent": T + 1017}, venue_ts=T + 1018),
        _order("c", "REJECTED", T + 2020, trace),                 # never acknowledged
    ]
    bus = open_bus(home)
    try:
        w = bus.writer("orders")
        for rec, ts in rows:
            w.append(rec, ts=ts)
        bus.writer("signals").append_many([{"type": "signal", "late": 2}, {"type": "signal"}])
        bus.writer("trades").append({"type": "trade", "E": T, "recv_ts": T + 1})
    finally:
        bus.close()

    got = measure(str(home))

    assert got["signal_to_ack_ms"] == {"p50": 4, "p99": 5, "max": 5, "n": 2, "mean": 4.5}
    assert got["interval_end_to_ack_ms"]["max"] == 21 and got["interval_end_to_ack_ms"]["n"] == 2
    stages = got["per_stage_ms"]
    assert stages["broker"]["mean"] == 3.5            # 19 - 16, 1021 - 1017
    assert stages["to_venue"]["mean"] == 1.0          # 17 - 16, 1018 - 1017
    assert stages["from_venue"]["mean"] == 2.5        # 19 - 17, 1021 - 1018
    assert stages["harvest"]["n"] == 1
    assert got["late_records"] == 2 and got["signals"] == 2
