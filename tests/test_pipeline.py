"""The whole pipeline under real supervisord, against the local exchange on a free port.

One run trades and checks the start order (each program only once the one before is ready),
the reverse stop order, the round trip of orders and the money (the report's net PnL equals the
venue's wallet change, funding included). A second run SIGKILLs every daemon and freezes one
(SIGSTOP): supervisord restarts the killed ones, the health listener restarts the frozen one, and
at the end no record or order is lost or doubled. A third under a venue that executes orders late.
A fourth stops everything with a position open: the venue's protective stop closes it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from bus import BadRecord, open_bus
from tests.conftest import OFI, free_port, wait_for
from tests.exchange_harness import PUSHER, push_market

pytestmark = pytest.mark.slow


def _config(tmp_path, port: int, **extra) -> str:
    sections = {
        "broker": {"mode": "sim"},
        "exchange": {"port": port},
        "signal": {"min_periods": 5, "interval_ms": 500},
        "strategy": {"entry_threshold": 0.5, "max_hold_s": 4.0, "cooldown_s": 1.0},
        "report": {"interval_s": 20.0},
        "supervise": {"heartbeat_timeout_s": 4.0, "grace_s": 3.0},
        "daemon": {"heartbeat_s": 0.5},
    }
    for section, kv in extra.items():
        sections.setdefault(section, {}).update(kv)
    lines = []
    for section, kv in sections.items():
        lines.append(f"{section}:")
        lines += [f"  {k}: {v}" for k, v in kv.items()]
    path = tmp_path / "pipeline.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _records(home, topic):
    bus = open_bus(home)
    if not os.path.isdir(os.path.join(bus.root, topic)):
        return []
    r = bus.reader(topic)
    out = []
    while True:
        items = r.read(50000)
        if not items:
            break
        for rec, _ in items:
            assert not isinstance(rec, BadRecord), rec
            out.append(rec)
    r.close()
    bus.close()
    return out


def _last_seq(home, topic) -> int:
    bus = open_bus(home)
    try:
        return bus.last_seq(topic)
    finally:
        bus.close()


def _signed_get(port, path, params):
    params = dict(params, timestamp=int(time.time() * 1000))
    q = urllib.parse.urlencode(params)
    sig = hmac.new(b"demo-secret", q.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}?{q}&signature={sig}",
                                 headers={"X-MBX-APIKEY": "demo-key"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _status(home):
    p = subprocess.run(OFI + ["status", "--json", "--home", str(home)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _assert_topics_whole(home):
    """Every topic: seq 1..n with no gap or repeat."""
    for topic in ("trades", "book", "depth", "signals", "intents", "orders", "fills", "positions"):
        seqs = [r["seq"] for r in _records(home, topic)]
        assert seqs == list(range(1, len(seqs) + 1)), f"{topic}: seq not gap-free"


PROGRAMS = ["exchange", "harvest", "signal", "strategy", "broker", "report"]


def _all_ready(home):
    """``{name: program}`` from ``ofi status`` once every program is ready, else None."""
    try:
        st = _status(home)
    except AssertionError:
        return None
    progs = {p["name"]: p for p in st["programs"]}
    return progs if all(progs.get(n, {}).get("ready") for n in PROGRAMS) else None


def _kill(home, progs, name):
    """SIGKILL one program; its new ``{name: program}`` once supervisord restarted it."""
    old = progs[name]["pid"]
    os.kill(old, signal.SIGKILL)
    return wait_for(lambda: (lambda p: p if p and p[name]["pid"] != old else None)(_all_ready(home)),
                 60, f"{name} restarted after SIGKILL")


def _venue_agrees_with_spools(home, port, procs):
    """Restart the exchange on its saved state: no order doubled, no fill lost or invented,
    the last ``positions`` record equals the venue's position. Returns (intents, venue ids)."""
    ex = procs(OFI + ["exchange", "--port", str(port), "--state", str(home / "exchange")],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: "ofi-ready" in ex.stdout.readline(), 30, "exchange ready")
    intents = [r for r in _records(home, "intents") if r["type"] == "intent"]
    cids = [i["client_order_id"] for i in intents]
    assert cids and len(cids) == len(set(cids))
    at_venue = _signed_get(port, "/fapi/v1/allOrders", {"symbol": "BTCUSDT", "limit": 1000})
    venue_cids = [o["clientOrderId"] for o in at_venue]
    assert len(venue_cids) == len(set(venue_cids)), "a client order id reached the venue twice"
    # the venue's orders are our intents', the flatten's and those our protective stops placed
    assert {c for c in venue_cids if not c.startswith(("ofi-stop-", "ofi-flat-"))} <= set(cids)
    # every venue order is in the spools
    assert set(venue_cids) <= {r["client_order_id"] for r in _records(home, "orders")}
    fills = _records(home, "fills")
    trade_ids = [f["trade_id"] for f in fills]
    assert len(trade_ids) == len(set(trade_ids)), "a fill was recorded twice"
    venue_trades = _signed_get(port, "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "limit": 1000})
    assert sorted(t["id"] for t in venue_trades) == sorted(trade_ids), "fills lost or invented"
    risk = _signed_get(port, "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
    venue_qty = sum(float(r["positionAmt"]) for r in risk)
    positions = [r for r in _records(home, "positions") if r["symbol"] == "BTCUSDT"]
    assert positions and abs(positions[-1]["qty"] - venue_qty) < 1e-9
    return intents, venue_cids


def test_pipeline_runs_in_order_round_trips_orders_and_its_pnl_is_the_venues(tmp_path, procs):
    """Start and stop order, orders round-tripped, and money: with funding charged every few
    seconds, after ``ofi flatten`` the report's net PnL equals the change of the venue's wallet
    balance plus its unrealized PnL, to the cent."""
    home = tmp_path / "home"
    port = free_port()
    cfg = _config(tmp_path, port, exchange={"funding_interval_s": 3.0, "funding_rate": 0.0005},
                  broker={"reconcile_interval_s": 3.0})
    run = procs(OFI + ["run", "--config", cfg, "--home", str(home), "--minutes", "0.7", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _all_ready(home), 90, "every program ready")
    wait_for(lambda: _last_seq(home, "fills") > 0 and _last_seq(home, "funding") > 0, 35,
             "fills and a funding payment")
    # the protective stop is at the venue while a position is open
    placed = [r for r in _records(home, "protection") if r["event"] == "placed"]
    assert placed and placed[0]["client_algo_id"].startswith("ofi-stop-")
    fl = subprocess.run(OFI + ["flatten", "--home", str(home), "--wait-s", "20"],
                        capture_output=True, text=True, timeout=60)
    assert fl.returncode == 0, fl.stderr
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err[-2000:] + out[-2000:]
    s = json.loads(out)
    programs = ["exchange", "harvest", "signal", "strategy", "broker", "report"]
    assert s["programs"] == programs and s["all_ready"]
    assert s["stop_order"] == list(reversed(programs))
    # each program was spawned only after the one before had printed ofi-ready
    ready_at = {}
    for n in programs:
        for line in (home / "log" / f"{n}.log").read_text().splitlines():
            if '"ofi-ready"' in line:
                ready_at[n] = json.loads(line)["ts"]
                break
    spawned_at = {}
    for line in (home / "log" / "supervisord.log").read_text().splitlines():
        if " spawned: '" in line:
            name = line.split("spawned: '")[1].split("'")[0]
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
            spawned_at.setdefault(name, stamp)
    assert list(ready_at) == programs
    for before, after in zip(programs, programs[1:]):
        assert spawned_at[after] >= ready_at[before] - 0.002, (before, after)
    # orders round-tripped: placed, acknowledged by the exchange and filled
    assert s["records"]["signals"] > 10 and s["records"]["trades"] > 0
    assert s["orders_by_status"].get("FILLED", 0) > 0 and s["fills"] > 0
    orders = _records(home, "orders")
    fills = _records(home, "fills")
    assert {f["client_order_id"] for f in fills} <= {o["client_order_id"] for o in orders}
    _assert_topics_whole(home)
    # money: the report's net PnL is the venue's (wallet change + unrealized), to the cent
    rep = subprocess.run(OFI + ["report", "--home", str(home), "--config", cfg],
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    md = open(rep.stdout.strip()).read()
    net = float(md.split("| Net PnL |")[1].split("|")[0])
    funding = float(md.split("| Funding (quote asset; negative: paid) |")[1].split("|")[0])
    _venue_agrees_with_spools(home, port, procs)     # the exchange again, on its saved state
    acct = _signed_get(port, "/fapi/v2/account", {})
    change = float(acct["totalWalletBalance"]) - 10000.0 + float(acct["totalUnrealizedProfit"])
    print(f"report net PnL {net:.4f} USDT (funding {funding:.4f}); venue wallet change + "
          f"unrealized {change:.4f} USDT")
    assert funding != 0.0
    assert abs(net - change) <= 0.01, (net, change)
    # the broker's wallet check (every 3 s) explained every change: no reconciliation alert
    assert [a for a in _records(home, "alerts") if a["kind"] == "reconciliation"] == []


def test_pipeline_survives_sigkill_of_every_daemon_and_a_hang(tmp_path, procs):
    home = tmp_path / "home"
    port = free_port()
    cfg = _config(tmp_path, port)
    run = procs(OFI + ["run", "--config", cfg, "--home", str(home), "--minutes", "1.6", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progs = wait_for(lambda: _all_ready(home), 90, "every program ready")
    wait_for(lambda: _last_seq(home, "fills") > 0, 60, "a first fill before the first kill")
    for name in ["signal", "strategy", "broker", "harvest", "exchange", "report"]:
        progs = _kill(home, progs, name)
        # the pipeline flows again before the next kill: new signals reach the bus
        mark = _last_seq(home, "signals")
        wait_for(lambda: _last_seq(home, "signals") > mark, 30, f"signals flowing after {name}")
    # a hang: the heartbeat stops, the health listener restarts the program
    frozen = progs["strategy"]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        wait_for(lambda: (lambda p: p if p and p["strategy"]["pid"] != frozen else None)(
              _all_ready(home)),
              60, "frozen strategy restarted by the health listener")
    finally:
        try:
            os.kill(frozen, signal.SIGCONT)
        except ProcessLookupError:
            pass
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err[-2000:]
    s = json.loads(out)
    assert s["restarts"].get("strategy", 0) >= 2       # the SIGKILL and the hang
    for name in PROGRAMS:
        assert s["restarts"].get(name, 0) >= 1, (name, s["restarts"])
    health_log = (home / "log" / "health.log").read_text()
    assert "unhealthy" in health_log and "heartbeat" in health_log
    _assert_topics_whole(home)
    # no order doubled or lost: restart the exchange on its saved state and compare
    _venue_agrees_with_spools(home, port, procs)


def test_pipeline_late_venue_and_kills_never_double_an_order(tmp_path, procs):
    """A venue that answers -1007 or times out and executes the order seconds later, plus 5xx,
    429s and SIGKILLs of the broker and the strategy: every order once, nothing lost."""
    home = tmp_path / "home"
    port = free_port()
    faults = ("late=0.3,late_mode=mixed,late_min_ms=800,late_max_ms=3000,timeout_s=2,"
              "unknown503=0.05,timeout=0.05,http5xx=0.03,r429=0.01,r429_retry_s=2,ban_after=1000,seed=11")
    cfg = _config(tmp_path, port, exchange={"faults": f'"{faults}"'},
                  broker={"http_timeout_s": 1.0, "resolution_window_s": 20.0,
                          "settle_on_stop_s": 8.0, "position_check_s": 2.0})
    run = procs(OFI + ["run", "--config", cfg, "--home", str(home), "--minutes", "1.2", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progs = wait_for(lambda: _all_ready(home), 90, "every program ready")
    wait_for(lambda: _last_seq(home, "fills") > 0, 60, "a first fill before the first kill")
    for name in ["broker", "strategy", "broker"]:
        # kill while orders are in flight: right after an intent
        mark = _last_seq(home, "intents")
        wait_for(lambda: _last_seq(home, "intents") > mark, 30, f"an intent before killing {name}")
        progs = _kill(home, progs, name)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err[-2000:]
    s = json.loads(out)
    _assert_topics_whole(home)
    intents, venue_cids = _venue_agrees_with_spools(home, port, procs)
    # no order from a stale signal: each intent was decided on a fresh signal
    for i in intents:
        if i["client_order_id"] in venue_cids and i.get("decision_ms"):
            assert i["ts"] - i["decision_ms"] <= 2000 + 500, i
    # the faults did happen: orders executed late, and the broker met ambiguity
    stopped = [json.loads(x) for x in (home / "log" / "exchange.log").read_text().splitlines()
               if '"stopped"' in x]
    assert stopped and stopped[-1]["faults"].get("late_landed", 0) >= 1, stopped
    exec_log = [json.loads(x) for x in (home / "log" / "exec_log.jsonl").read_text().splitlines()]
    assert any(e.get("outcome") == "ambiguous" for e in exec_log)
    assert s["orders_by_status"].get("FILLED", 0) > 0


def test_pipeline_down_the_venue_still_closes_the_position_at_the_protective_stop(tmp_path, procs):
    """A position open, the broker SIGKILLed and supervisord stopped: the protective stop stays
    at the venue, and when the market goes through it the venue closes the position."""
    home = tmp_path / "home"
    port = free_port()
    # no time exit or stop loss of the strategy's, and a stop far enough that the simulated
    # market does not reach it by itself in a few seconds
    cfg = _config(tmp_path, port, risk={"protective_stop_bps": 30.0},
                  strategy={"max_hold_s": 0.0, "exit_threshold": -0.29, "entry_threshold": 0.3,
                            "stop_loss_bps": 0.0})
    run = procs(OFI + ["run", "--config", cfg, "--home", str(home), "--minutes", "3", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progs = wait_for(lambda: _all_ready(home), 90, "every program ready")

    def open_stop():
        pos = [r for r in _records(home, "positions") if r["symbol"] == "BTCUSDT"]
        if not pos or abs(pos[-1]["qty"]) < 1e-9:
            return None
        try:
            beat = json.loads((home / "run" / "broker.json").read_text())
        except (OSError, ValueError):
            return None
        stops = (beat.get("protection") or {}).get("BTCUSDT", {})
        return (pos[-1], stops.get("stops")) if stops.get("stops") else None
    for _ in range(5):
        pos, stops = wait_for(open_stop, 60, "a position with its protective stop")
        # HALTED: nothing closes the position from here but the venue (no exit is sent) ...
        subprocess.run(OFI + ["halt", "--home", str(home), "--reason", "test"], check=True,
                       capture_output=True, timeout=30)
        time.sleep(1.0)
        risk = _signed_get(port, "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
        if sum(float(r["positionAmt"]) for r in risk) != 0.0:
            break
        # ... unless a signal's exit was on its way when the halt came: the next position
        subprocess.run(OFI + ["resume", "--home", str(home)], check=True, capture_output=True,
                       timeout=30)
    os.kill(progs["broker"]["pid"], signal.SIGKILL)
    run.send_signal(signal.SIGTERM)                    # supervisord stops everything
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-2000:]
    # the venue, back on its saved state: the position and the stop are there
    ex = procs(OFI + ["exchange", "--port", str(port), "--state", str(home / "exchange"),
                      "--extra-key", ":".join(PUSHER), "--balance", "100000000"],
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: "ofi-ready" in ex.stdout.readline(), 30, "exchange ready")
    risk = _signed_get(port, "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
    qty = sum(float(r["positionAmt"]) for r in risk)
    assert qty != 0.0
    (algo,) = _signed_get(port, "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})
    assert algo["clientAlgoId"].startswith("ofi-stop-") and algo["closePosition"] is True
    assert algo["side"] == ("SELL" if qty > 0 else "BUY")
    trigger = float(algo["triggerPrice"])
    push_market(f"http://127.0.0.1:{port}", algo["side"],
                trigger - 1.0 if algo["side"] == "SELL" else trigger + 1.0)
    wait_for(lambda: sum(float(r["positionAmt"]) for r in _signed_get(
        port, "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})) == 0.0, 15,
        "the venue closed the position at the stop")
    done = _signed_get(port, "/fapi/v1/algoOrder", {"clientAlgoId": algo["clientAlgoId"]})
    assert done["algoStatus"] == "FINISHED"
