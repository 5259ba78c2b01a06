"""The broker daemon in mock mode as a real process: fills at once, mock_orders.jsonl, intents
read again after a crash recognised by client order id, bad intents dead-lettered."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

import orjson
import pytest

from bus import open_bus
from tests.conftest import OFI, wait_for


def _records(home, topic):
    bus = open_bus(home)
    r = bus.reader(topic, start="beginning")
    out = []
    while True:
        items = r.read(10000)
        if not items:
            break
        out.extend(rec for rec, _ in items)
    r.close()
    bus.close()
    return out


def _start(procs, home, log):
    with open(log, "ab") as out:
        p = procs(OFI + ["daemon", "broker", "--home", str(home), "--mode", "mock"],
                  stdout=out, stderr=subprocess.STDOUT,
                  env={k: v for k, v in os.environ.items() if k != "EXECUTOR_MODE"})
    n = log.read_text().count("ofi-ready") if log.exists() else 0
    wait_for(lambda: log.read_text().count("ofi-ready") > n or p.poll() is not None, 30, "ready")
    assert p.poll() is None, log.read_text()
    return p


def _intent(cid, side="BUY", qty=0.01):
    return {"type": "intent", "symbol": "BTCUSDT", "side": side, "qty": qty,
            "order_type": "MARKET", "price": None, "reduce_only": False,
            "client_order_id": cid, "reason": "test", "decision_mid": 50000.0}


def test_broker_mock_fills_at_once_and_reread_intents_are_not_placed_again(procs, home):
    log = home / "broker.log"
    p = _start(procs, home, log)
    bus = open_bus(home)
    w = bus.writer("intents")
    for i in range(5):
        w.append(_intent(f"m-{i}", "BUY" if i % 2 == 0 else "SELL"))
    w.append({"type": "intent", "symbol": "BTCUSDT", "side": "HOLD", "qty": 1})
    w.append(_intent("m-0"))                      # the strategy re-sent an intent
    wait_for(lambda: len(_records(home, "fills")) == 5, 10, "5 fills")
    # crash, and lose the consumer position: every intent is read again
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    shutil.rmtree(home / "bus" / ".consumers" / "intents")
    p = _start(procs, home, log)
    w.append(_intent("m-5"))
    wait_for(lambda: len(_records(home, "fills")) == 6, 10, "the sixth fill")
    w.close()
    bus.close()
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    mock_rows = [orjson.loads(x) for x in (home / "mock_orders.jsonl").read_text().splitlines()]
    assert sorted(r["clientOrderId"] for r in mock_rows) == [f"m-{i}" for i in range(6)]
    fills = _records(home, "fills")
    assert len({f["trade_id"] for f in fills}) == len(fills) == 6
    orders = _records(home, "orders")
    assert {o["client_order_id"] for o in orders if o["status"] == "FILLED"} == {f"m-{i}" for i in range(6)}
    assert _records(home, "positions")[-1]["qty"] == pytest.approx(0.02)   # 4 buys, 2 sells of 0.01
    dead = _records(home, "deadletter")
    assert any("side must be BUY or SELL" in d["reason"] for d in dead)
    assert "duplicate_intent" in log.read_text()
    assert (home / "log" / "exec_log.jsonl").read_text().count('"place"') == 6
