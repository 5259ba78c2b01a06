"""``ofi bench e2e``: exchange event time to order acknowledged, through every daemon.

Runs the whole pipeline under supervisord in sim mode (a temporary home, a free port), then
reads the spools. For each acknowledged order: its intent, the signal that caused it, and the
first market event whose exchange time ``E`` is at or after that signal's interval end (the
event that let the signal stage close the interval). Latency = the order's acknowledgement
record ``ts`` minus that ``E``; per stage: harvest (``recv_ts - E``), signal (signal ``ts`` -
``recv_ts`` of that event), strategy (intent ``ts`` - signal ``ts``), broker (ack ``ts`` - intent
``ts``); and signal to acknowledged (ack ``ts`` - signal ``ts``). All clocks are this
machine's (the local exchange stamps ``E`` with it), in ms.
"""
from __future__ import annotations

import bisect
import os
import shutil
import socket
import tempfile

from .. import config as configmod
from .run import run as run_pipeline
from .summary import percentile

ACKED = ("NEW", "PARTIALLY_FILLED", "FILLED")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(values: list[float]) -> dict:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "max": max(values) if values else None, "n": len(values)}


def measure(home: str, sink: str = "jsonl") -> dict:
    """The latencies of a finished run's spools (see the module docstring)."""
    from bus import open_bus

    bus = open_bus(home, sink=sink)
    try:
        market = sorted(((r["E"], r["recv_ts"]) for t in ("trades", "book")
                         for r in bus.read_all(t) if r.get("E") and r.get("recv_ts")))
        signals = {r["seq"]: r for r in bus.read_all("signals")}
        intents = {r["client_order_id"]: r for r in bus.read_all("intents")
                   if r.get("type") == "intent"}
        acks = {}
        for o in bus.read_all("orders"):
            cid = o.get("client_order_id")
            if cid in intents and cid not in acks and o.get("status") in ACKED:
                acks[cid] = o
    finally:
        bus.close()
    times = [e for e, _ in market]
    e2e, harvest, signal, strategy, broker, sig_ack = [], [], [], [], [], []
    for cid, ack in acks.items():
        intent = intents[cid]
        sig = signals.get(intent.get("signal_seq"))
        if sig is None:
            continue
        end = sig["bucket_ms"] + sig["interval_ms"]
        i = bisect.bisect_left(times, end)
        if i == len(times):
            continue
        e, recv = market[i]
        e2e.append(ack["ts"] - e)
        harvest.append(recv - e)
        signal.append(sig["ts"] - recv)
        strategy.append(intent["ts"] - sig["ts"])
        broker.append(ack["ts"] - intent["ts"])
        sig_ack.append(ack["ts"] - sig["ts"])
    return {"event_to_ack_ms": _stats(e2e), "signal_to_ack_ms": _stats(sig_ack),
            "stages_ms": {"harvest": _stats(harvest), "signal": _stats(signal),
                          "strategy": _stats(strategy), "broker": _stats(broker)}}


def run(seconds: float = 45.0, sink: str = "jsonl", keep: bool = False) -> dict:
    """Run the pipeline for ``seconds`` and measure; returns the figures."""
    home = tempfile.mkdtemp(prefix="ofi-bench-e2e-")
    cfg_path = os.path.join(home, "bench.yaml")
    with open(cfg_path, "w") as f:
        f.write(f"broker:\n  mode: sim\nexchange:\n  port: {_free_port()}\n"
                "signal:\n  min_periods: 10\nstrategy:\n  entry_threshold: 0.5\n"
                "  max_hold_s: 5.0\n  cooldown_s: 1.0\nrisk:\n  max_orders_per_minute: 120\n")
    try:
        cfg = configmod.load(cfg_path, {"home": home, "sink": sink})
        summary = run_pipeline(cfg, list(("harvest", "signal", "strategy", "broker")),
                               seconds / 60.0, echo=lambda *_: None)
        if not summary["all_ready"]:
            raise RuntimeError(summary["error"] or "not every program became ready")
        out = measure(home, sink)
        out.update({"sink": sink, "seconds": seconds, "orders": summary["orders"],
                    "fills": summary["fills"], "records": summary["records"]})
        if keep:
            out["home"] = home
        return out
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
