"""``ofi bench e2e``: interval end to order acknowledged, through every daemon.

Runs the whole pipeline under supervisord in sim mode (a temporary home, a free port), then
reads the latency traces the records carry (docs/latency.md): each acknowledged order's
``orders`` record holds its intent's trace, ``{"exchange": interval end, "signal": signal
written, "strategy": decision, "intent": intent written}``, and its own ``ts`` (the broker
wrote the acknowledgement). Figures, in ms of this machine's clock (the local exchange stamps
its events with it):

- ``interval_end_to_ack_ms``: acknowledgement − the end of the signal's interval (exchange time);
- ``signal_to_ack_ms``: acknowledgement − signal written;
- ``per_stage_ms``: harvest (``recv_ts − E`` of the market records), signal (signal written −
  interval end: the watermark's wait plus the work), strategy (intent written − signal
  written), broker (acknowledgement − intent written), and the broker's part split at the
  venue's time of the order (``venue_ts``, when the venue took it): ``to_venue`` (venue time −
  intent written) and ``from_venue`` (acknowledgement written − venue time).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile

from ... import config as configmod
from .run import run as run_pipeline
from .summary import percentile

ACKED = ("NEW", "PARTIALLY_FILLED", "FILLED")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(values: list[float]) -> dict:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "max": max(values) if values else None, "n": len(values),
            "mean": round(sum(values) / len(values), 3) if values else None}


def measure(home: str, sink: str = "jsonl") -> dict:
    """The latencies of a finished run's spools (see the module docstring)."""
    from bus import open_bus

    bus = open_bus(home, sink=sink)
    try:
        harvest = [r["recv_ts"] - r["E"] for t in ("trades", "book")
                   for r in bus.read_all(t) if r.get("E") and r.get("recv_ts")]
        acks = {}
        for o in bus.read_all("orders"):
            cid = o.get("client_order_id")
            if cid not in acks and o.get("status") in ACKED and isinstance(o.get("trace"), dict):
                acks[cid] = o
        late = [s.get("late", 0) for s in bus.read_all("signals")]
    finally:
        bus.close()
    end_ack, sig_ack, signal, strategy, broker = [], [], [], [], []
    to_venue, from_venue = [], []
    for ack in acks.values():
        tr = ack["trace"]
        if not all(isinstance(tr.get(k), (int, float))
                   for k in ("exchange", "signal", "intent")):
            continue
        end_ack.append(ack["ts"] - tr["exchange"])
        sig_ack.append(ack["ts"] - tr["signal"])
        signal.append(tr["signal"] - tr["exchange"])
        strategy.append(tr["intent"] - tr["signal"])
        broker.append(ack["ts"] - tr["intent"])
        if isinstance(ack.get("venue_ts"), (int, float)):
            to_venue.append(ack["venue_ts"] - tr["intent"])
            from_venue.append(ack["ts"] - ack["venue_ts"])
    return {"interval_end_to_ack_ms": _stats(end_ack), "signal_to_ack_ms": _stats(sig_ack),
            "per_stage_ms": {"harvest": _stats(harvest), "signal": _stats(signal),
                             "strategy": _stats(strategy), "broker": _stats(broker),
                             "to_venue": _stats(to_venue), "from_venue": _stats(from_venue)},
            "late_records": sum(late), "signals": len(late)}


#: the bench's trading: two symbols and a nervous strategy, so that a minute gives ~100 orders
BENCH_CONFIG = """\
symbols: [BTCUSDT, ETHUSDT]
broker:
  mode: sim
signal:
  min_periods: 10
strategy:
  entry_threshold: 0.3
  max_hold_s: 2.0
  cooldown_s: 0.0
risk:
  max_orders_per_minute: 0
"""


def run(seconds: float = 45.0, sink: str = "jsonl", keep: bool = False,
        config: str | None = None) -> dict:
    """Run the pipeline for ``seconds`` and measure; returns the figures. ``config``: a YAML
    file applied over the bench's own settings (say ``harvest.streams`` or the lateness)."""
    home = tempfile.mkdtemp(prefix="ofi-bench-e2e-")
    cfg_path = os.path.join(home, "bench.yaml")
    with open(cfg_path, "w") as f:
        f.write(BENCH_CONFIG + f"exchange:\n  port: {_free_port()}\n")
    try:
        cfg = configmod.load(cfg_path, {"home": home, "sink": sink})
        if config:
            cfg = configmod.merge(cfg, configmod.read_yaml(config), config)
            configmod.validate(cfg)
        summary = run_pipeline(cfg, list(("harvest", "signal", "strategy", "broker")),
                               seconds / 60.0, echo=lambda *_: None)
        if not summary["all_ready"]:
            raise RuntimeError(summary["error"] or "not every program became ready")
        out = measure(home, sink)
        out.update({"sink": sink, "seconds": seconds, "config": config,
                    "streams": cfg["harvest"]["streams"],
                    "allowed_lateness_ms": cfg["signal"]["allowed_lateness_ms"],
                    "orders": summary["orders"],
                    "fills": summary["fills"], "records": summary["records"]})
        if keep:
            out["home"] = home
        return out
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
