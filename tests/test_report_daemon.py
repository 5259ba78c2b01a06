"""The report daemon: ready line, periodic rebuild of today's report, clean stop."""
from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from bus import now_ms, open_bus
from conftest import ROOT, wait_for

pytestmark = pytest.mark.timeout(60)


def _lines(stream) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in stream], daemon=True).start()
    return q


def _wait_line(q: queue.Queue, needle: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} before the deadline")


def test_report_daemon_rebuilds_today_and_stops_clean(home, procs):
    cfg = home / "report.yaml"
    cfg.write_text("report:\n  interval_s: 0.3\n")
    p = procs([sys.executable, "-m", "daemons.report", "--home", str(home), "--config", str(cfg)],
              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = _lines(p.stdout)
    deadline = time.monotonic() + 40
    ready = json.loads(_wait_line(lines, "ofi-ready", deadline))
    assert ready["stage"] == "report"

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    md = home / "reports" / today / "report.md"
    wait_for(md.exists, deadline - time.monotonic(), "the first report")
    assert "| Fills | 0 |" in md.read_text()

    bus = open_bus(home)
    w = bus.writer("fills")
    w.append({"type": "fill", "symbol": "BTCUSDT", "client_order_id": "x1", "order_id": 1,
              "trade_id": 1, "side": "BUY", "qty": 0.01, "price": 50000.0, "fee": 0.2,
              "fee_asset": "USDT", "realized_pnl": 0.0, "maker": False, "T": now_ms()})
    w.close()
    bus.close()
    wait_for(lambda: "| Fills | 1 |" in md.read_text(), deadline - time.monotonic(),
             "a rebuild with the fill")
    assert (home / "reports" / today / "equity.png").exists()

    beat_file = home / "run" / "report.json"
    wait_for(lambda: json.loads(beat_file.read_text())["builds"] >= 2, deadline - time.monotonic(),
             "the heartbeat to count the builds")
    beat = json.loads(beat_file.read_text())
    assert beat["ready"] is True and beat["last_error"] is None

    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0
    _wait_line(lines, '"stopped"', time.monotonic() + 5)
