"""The strategy daemon as a real process: signals in through the bus API, intents out,
SIGKILL restarts without duplicates, the seed's flags, and the kill switch."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import orjson
import pytest

from bus import BadRecord, open_bus
from daemons.strategy import ids, rules
from daemons.trading import ACTIVE, HALTED, REDUCING, load_state, status

from conftest import OFI, typed_settings, wait_for

BASE = 1_700_000_000_000
STRATEGY = [sys.executable, "-m", "daemons.strategy"]
# one entry (crossing at +2 with agreement) and one reversal exit every 12 intervals
CYCLE = [0.0, 2.0, 1.0, -0.5] + [0.0] * 8


def signal_payloads(fusions, start=0, mid=50_000.0, symbol="BTCUSDT", base=BASE):
    out = []
    for i, f in enumerate(fusions, start):
        z = 1.0 if f > 0 else -1.0 if f < 0 else 0.0
        m = mid(i) if callable(mid) else mid
        out.append({"type": "signal", "symbol": symbol, "bucket_ms": base + i * 1000,
                    "interval_ms": 1000, "mid": m, "spread": 0.1, "fusion": f, "ofi_z": z,
                    "cvd_z": z, "ofi_l1": 0.0, "cvd_delta": 0.0})
    return out


def fresh_payloads(fusions, mid=50_000.0):
    """Signals whose intervals end now and in the seconds before (wall clock)."""
    now = int(time.time()) * 1000
    return signal_payloads(fusions, mid=mid, base=now - len(fusions) * 1000)


def position(qty, intent_seq, in_flight=(), mark=50_000.0, cause="fill"):
    """A ``positions`` record as the broker writes it."""
    return {"type": "position", "symbol": "BTCUSDT", "qty": qty,
            "entry_price": 50_000.0 if qty else 0.0, "realized_pnl": 0.0,
            "unrealized_pnl": 0.0, "mark_price": mark, "intent_seq": intent_seq,
            "in_flight": list(in_flight), "cause": cause}


def log_events(tmp_path, event, name="strategy"):
    out = []
    for line in (tmp_path / f"{name}.log").read_bytes().splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            out.append(rec)
    return out


def append(home, topic, payloads, sink="jsonl"):
    bus = open_bus(home, sink=sink)
    w = bus.writer(topic)
    try:
        w.append_many(payloads)
    finally:
        w.close()
        bus.close()


def records(home, topic="intents"):
    bus = open_bus(home)
    try:
        if not os.path.isdir(bus.topic_dir(topic)):
            return []
        r = bus.reader(topic)
        out = []
        try:
            while True:
                batch = r.read(100_000)
                if not batch:
                    break
                out.extend(rec for rec, _ in batch if not isinstance(rec, BadRecord))
        except sqlite3.OperationalError:
            return []   # the writer is still creating the database: nothing to read yet
        finally:
            r.close()
        return out
    finally:
        bus.close()


def intents(home):
    return [r for r in records(home) if r["type"] == "intent"]


def heartbeat(home):
    try:
        with open(os.path.join(home, "run", "strategy.json"), "rb") as f:
            return orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return {}


def write_config(tmp_path, **sections) -> str:
    """A --config file; rate limit off so that fast synthetic streams are not throttled, and
    the freshness check off: the synthetic signals carry 2023 timestamps."""
    data = {"risk": {"max_orders_per_minute": 0},
            "strategy": {"notional_usdt": 100.0, "max_signal_age_ms": 0}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = tmp_path / "strategy.yaml"
    path.write_text(orjson.dumps(data).decode())   # JSON is YAML
    return str(path)


def start(procs, tmp_path, args, name="strategy", env=None):
    log = open(tmp_path / f"{name}.log", "ab")
    e = {k: v for k, v in os.environ.items() if k not in ("EXECUTOR_MODE", "OFI_HOME")}
    e.update(env or {})
    return procs(STRATEGY + args, stdout=log, stderr=subprocess.STDOUT, env=e)


def wait_ready(home, p, timeout=15.0):
    def ready():
        assert p.poll() is None, f"strategy exited with {p.returncode}"
        return heartbeat(home).get("ready") and heartbeat(home).get("pid") == p.pid
    wait_for(ready, timeout, "ofi-ready heartbeat")


def expected_ids(fusions, cfg_strategy=None):
    """The ids an uninterrupted run must emit, from the pure rules."""
    p = rules.Params.from_settings(typed_settings(strategy=cfg_strategy or {}).strategy)
    view, out = rules.View(), []
    for s in signal_payloads(fusions):
        d = rules.decide(p, view, s)
        view = rules.observe(view, s)
        if d:
            out.append(ids.client_order_id("ofi", "BTCUSDT", s["bucket_ms"], d.code, d.side))
            view = rules.apply(view, d)
    return out


def test_strategy_daemon_signals_topic_emits_intents_live(procs, tmp_path, home):
    cfg = write_config(tmp_path)
    append(home, "signals", signal_payloads(CYCLE * 2))
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    got = wait_for(lambda: len(intents(home)) >= 4 and intents(home), what="4 intents")
    append(home, "signals", signal_payloads(CYCLE, start=24))    # while it runs
    got = wait_for(lambda: len(intents(home)) >= 6 and intents(home), what="6 intents")
    assert [(r["side"], r["reason"], r["reduce_only"]) for r in got] == \
        [("BUY", "entry", False), ("SELL", "exit", True)] * 3
    assert [r["signal_seq"] for r in got] == [2, 4, 14, 16, 26, 28]
    assert [r["client_order_id"] for r in got] == expected_ids(CYCLE * 3)
    for r in got:
        assert ids.PATTERN.match(r["client_order_id"])
        assert r["qty"] == 0.002 and r["order_type"] == "MARKET" and r["price"] is None
        assert r["bucket_ms"] == BASE + (r["signal_seq"] - 1) * 1000
    beat = wait_for(lambda: heartbeat(home).get("strategy", {}).get("last_signal_seq") == 36
                    and heartbeat(home), what="heartbeat")
    assert beat["risk"]["state"] == ACTIVE
    assert beat["risk"]["symbols"]["BTCUSDT"]["position_qty"] == 0
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_daemon_sigkill_mid_stream_no_duplicate_intents(procs, tmp_path, home):
    cfg = write_config(tmp_path)
    chunk = CYCLE * 100                      # 1200 signals, 200 intents per chunk
    fusions = chunk * 4
    written = 0
    for k in range(3):
        p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
        before = len(records(home))
        append(home, "signals", signal_payloads(chunk, start=written))
        written += len(chunk)
        # kill as soon as it has made some progress on this chunk, most likely mid-batch
        wait_for(lambda: len(records(home)) > before + 5, what="progress")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    append(home, "signals", signal_payloads(chunk, start=written))
    want = expected_ids(fusions)
    assert len(want) == 800
    wait_for(lambda: len(records(home)) >= len(want), timeout=30, what="all intents")
    wait_for(lambda: heartbeat(home).get("strategy", {}).get("last_signal_seq") == len(fusions)
             and heartbeat(home).get("pid") == p.pid, what="caught up")
    got = records(home)
    coids = [r["client_order_id"] for r in got]
    assert len(coids) == len(set(coids)), "duplicate client order ids"
    assert coids == want
    assert [r["signal_seq"] for r in got] == sorted(r["signal_seq"] for r in got)
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_daemon_seed_flags_read_other_home_sqlite(procs, tmp_path):
    signals_home, out = tmp_path / "signals_home", tmp_path / "out"
    append(signals_home, "signals", signal_payloads(CYCLE), sink="sqlite")
    cfg = write_config(tmp_path)
    p = start(procs, tmp_path, [
        "--config", cfg, "--mode", "testnet", "--signals-source", "sqlite",
        "--signals-dir", str(signals_home), "--sink", "sqlite", "--output", str(out),
        "--symbols", "BTCUSDT"], env={"EXECUTOR_MODE": "testnet"})
    got = wait_for(lambda: len(intents(out)) >= 2 and intents(out), what="intents in --output")
    assert [r["reason"] for r in got] == ["entry", "exit"]
    assert open_bus(out).sink_of("intents") == "sqlite"
    append(signals_home, "signals", signal_payloads(CYCLE, start=12), sink="sqlite")
    wait_for(lambda: len(intents(out)) >= 4, what="intents after more signals")
    beat = heartbeat(out)
    assert beat["signals_source"]["sink"] == "sqlite"
    assert not os.path.exists(signals_home / "bus" / "intents")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_daemon_signals_dir_auto_via_ofi_daemon(procs, tmp_path):
    signals_home, out = tmp_path / "sig", tmp_path / "out"
    append(signals_home, "signals", signal_payloads(CYCLE))
    log = open(tmp_path / "ofi.log", "ab")
    p = procs(OFI + ["daemon", "strategy", "--home", str(out), "--config", write_config(tmp_path),
                     "--signals-dir", str(signals_home / "bus" / "signals"),
                     "--signals-source", "auto"], stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: len(intents(out)) >= 2, what="intents")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


@pytest.mark.parametrize("args,message", [
    (["--signals-source", "jsonl"], "holds SQLite signals"),
    (["--output", "/tmp/a-different-home"], "differ"),
    (["--mode", "paper"], "is not one of"),
])
def test_strategy_daemon_bad_flags_one_line_exit_2(tmp_path, args, message):
    home = tmp_path / "h"
    append(home, "signals", signal_payloads([0.0]), sink="sqlite")
    r = subprocess.run(STRATEGY + ["--home", str(home), "--signals-dir", str(home)] + args,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_strategy_daemon_help_lists_seed_flags():
    r = subprocess.run(STRATEGY + ["--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for flag in ("--signals-dir", "--signals-source", "--sink", "--output", "--mode", "--symbols",
                 "--config", "--home"):
        assert flag in r.stdout


def test_strategy_halt_resume_cli_daemon_obeys(procs, tmp_path, home):
    p = start(procs, tmp_path, ["--home", str(home), "--config", write_config(tmp_path)])
    wait_ready(home, p)
    r = subprocess.run(OFI + ["halt", "--home", str(home), "--reason", "drill"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    assert "HALTED" in r.stdout and "drill" in r.stdout
    assert load_state(home).state == HALTED and load_state(home).reason == "drill"
    append(home, "signals", signal_payloads(CYCLE))
    denied = wait_for(lambda: [x for x in records(home) if x["type"] == "risk_denied"],
                      what="a risk_denied record")
    assert denied[0]["code"] == "halted" and denied[0]["reason"] == "entry"
    assert intents(home) == []
    r = subprocess.run(OFI + ["resume", "--home", str(home)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "ACTIVE" in r.stdout and r.stdout.count("\n") == 1
    append(home, "signals", signal_payloads(CYCLE, start=12))
    got = wait_for(lambda: intents(home), what="an intent after resume")
    assert got[0]["signal_seq"] == 14
    st = wait_for(lambda: (s := status(home))["risk"] and s["risk"]["denied"] >= 1 and s,
                  what="status with risk usage")
    assert st["state"] == ACTIVE and st["risk"]["denials"] == {"halted": 1}
    assert st["risk"]["max_position_usdt"] == 1000.0 and "orders_last_minute" in st["risk"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_daily_loss_sets_reducing_and_denies_entries(procs, tmp_path, home):
    cfg = write_config(tmp_path, risk={"daily_loss_limit_usdt": 0.1},
                       strategy={"stop_loss_bps": 20.0})
    # long 0.002 at 50000, stopped out at 49_900 (-0.2 USDT), then a new crossing
    mids = [50_000.0, 50_000.0, 49_900.0] + [49_900.0] * 9 + [49_900.0] * 12
    append(home, "signals", signal_payloads([0.0, 2.0, 1.0] + [0.0] * 9 + CYCLE,
                                            mid=lambda i: mids[i]))
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    wait_for(lambda: any(x["type"] == "risk_denied" for x in records(home)), what="denial")
    got = records(home)
    assert [(x["type"], x.get("trigger")) for x in got] == \
        [("intent", "cross"), ("intent", "stop"), ("risk_denied", "cross")]
    assert got[2]["code"] == "reducing"
    st = load_state(home)
    assert st.state == REDUCING and st.by == "strategy" and st.reason.startswith("daily loss")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_positions_record_corrects_view(procs, tmp_path, home):
    p = start(procs, tmp_path, ["--home", str(home), "--config", write_config(tmp_path)])
    append(home, "signals", signal_payloads([0.0, 2.0]))
    wait_for(lambda: intents(home), what="entry intent")
    # the broker handled the entry (intent seq 1) and it ended unfilled: flat
    append(home, "positions", [position(0.0, 1, cause="order_done")])
    wait_for(lambda: heartbeat(home).get("strategy", {}).get("position_corrections") == 1,
             what="correction")
    append(home, "signals", signal_payloads([1.0, -0.5, 0.0], start=2))   # would be an exit
    wait_for(lambda: heartbeat(home).get("strategy", {}).get("last_signal_seq") == 5,
             what="signals handled")
    assert len(intents(home)) == 1
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_positions_record_before_intent_handled_keeps_it(procs, tmp_path, home):
    p = start(procs, tmp_path, ["--home", str(home), "--config", write_config(tmp_path)])
    append(home, "signals", signal_payloads([0.0, 2.0]))
    wait_for(lambda: intents(home), what="entry intent")
    # written before the broker took the entry (intent_seq 0): the entry still counts
    append(home, "positions", [position(0.0, 0, cause="venue")])
    beat = wait_for(lambda: (hb := heartbeat(home)).get("strategy", {}).get("positions") == 1
                    and hb, what="record handled")
    sym = beat["risk"]["symbols"]["BTCUSDT"]
    assert sym["position_qty"] == 0.002 and sym["broker_qty"] == 0.0
    assert sym["orders_in_flight"] == 1 and beat["strategy"]["position_corrections"] == 0
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_stale_backlog_after_restart_no_intents_fresh_signals_trade(procs, tmp_path,
                                                                            home):
    cfg = write_config(tmp_path, strategy={"max_signal_age_ms": 5000})
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    append(home, "signals", fresh_payloads([0.0, 0.5]))
    wait_for(lambda: heartbeat(home).get("strategy", {}).get("last_signal_seq") == 2,
             what="first signals")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    # written while it was down, an hour ago: crossings that must not become orders now
    backlog = signal_payloads(CYCLE * 2, base=int(time.time()) * 1000 - 3_600_000)
    append(home, "signals", backlog)
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    beat = wait_for(lambda: (hb := heartbeat(home)).get("strategy", {}).get("last_signal_seq")
                    == 26 and hb.get("pid") == p.pid and hb, what="backlog handled")
    assert beat["strategy"]["stale_signals"] == 24 and beat["strategy"]["intents"] == 0
    assert records(home) == []
    (line,) = log_events(tmp_path, "stale_signals")          # one line for the whole run
    assert line["signal_seq"] == 3 and line["age_ms"] > 3_500_000
    append(home, "signals", fresh_payloads([0.0, 2.0]))
    (entry,) = wait_for(lambda: intents(home), what="an intent from fresh signals")
    assert (entry["signal_seq"], entry["side"], entry["reason"]) == (28, "BUY", "entry")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_timer_exit_fires_without_signals(procs, tmp_path, home):
    cfg = write_config(tmp_path, strategy={"max_signal_age_ms": 5000, "max_hold_s": 1.0,
                                           "stop_loss_bps": 0.0})
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    append(home, "signals", fresh_payloads([0.0, 2.0]))
    wait_for(lambda: intents(home), what="entry intent")
    append(home, "positions", [position(0.002, 1)])             # filled
    got = wait_for(lambda: len(intents(home)) >= 2 and intents(home), what="the timer's exit")
    ex = got[1]
    assert (ex["side"], ex["qty"], ex["reduce_only"], ex["trigger"], ex["origin"]) == \
        ("SELL", 0.002, True, "time", "timer")
    assert ex["signal_seq"] is None and ids.PATTERN.match(ex["client_order_id"])
    assert ex["decision_ms"] - got[0]["decision_ms"] >= 1000
    beat = wait_for(lambda: (hb := heartbeat(home)).get("strategy", {}).get("timer_exits") == 1
                    and hb, what="counted")
    assert beat["strategy"]["last_signal_seq"] == 2                      # no signal since
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_refused_exit_after_restart_view_is_broker_position_stop_again(
        procs, tmp_path, home):
    cfg = write_config(tmp_path, strategy={"max_signal_age_ms": 5000, "stop_loss_bps": 50.0,
                                           "max_hold_s": 0.0})
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    append(home, "signals", fresh_payloads([0.0, 2.0]))
    wait_for(lambda: intents(home), what="entry intent")
    append(home, "positions", [position(0.002, 1)])
    wait_for(lambda: heartbeat(home).get("strategy", {}).get("positions") == 1, what="fill")
    append(home, "signals", fresh_payloads([1.0], mid=49_700.0))    # -60 bps: stop
    got = wait_for(lambda: len(intents(home)) >= 2 and intents(home), what="stop exit")
    assert (got[1]["trigger"], got[1]["origin"]) == ("stop", "signal")
    wait_for(lambda: heartbeat(home).get("risk", {}).get("symbols", {}).get("BTCUSDT", {})
             .get("orders_in_flight") == 1, what="exit outstanding")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    # meanwhile the broker refused the exit (stale): still long, nothing in flight
    append(home, "positions", [position(0.002, 2, mark=49_700.0, cause="order_done")])
    p = start(procs, tmp_path, ["--home", str(home), "--config", cfg])
    got = wait_for(lambda: len(intents(home)) >= 3 and intents(home), what="stop again")
    again = got[2]
    assert (again["trigger"], again["origin"], again["side"], again["qty"]) == \
        ("stop", "timer", "SELL", 0.002)
    assert again["client_order_id"] != got[1]["client_order_id"]
    starts = log_events(tmp_path, "strategy_start")
    assert starts[-1]["positions"] == {"BTCUSDT": 0.002}       # rebuilt: the broker's position
    assert starts[-1]["positions_seq"] == 2
    # the broker fills it: flat, nothing outstanding
    append(home, "positions", [position(0.0, again["seq"])])
    wait_for(lambda: (s := heartbeat(home).get("risk", {}).get("symbols", {}).get("BTCUSDT"))
             and s["broker_qty"] == 0.0 and s["orders_in_flight"] == 0
             and s["position_qty"] == 0.0, what="flat")
    assert len(intents(home)) == 3
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_unreadable_trading_state_denies_as_halted(procs, tmp_path, home):
    (home / "state").mkdir()
    (home / "state" / "trading.json").write_text("{garbage")
    append(home, "signals", signal_payloads(CYCLE))
    p = start(procs, tmp_path, ["--home", str(home), "--config", write_config(tmp_path)])
    denied = wait_for(lambda: [x for x in records(home) if x["type"] == "risk_denied"],
                      what="denial")
    assert denied[0]["code"] == "halted" and intents(home) == []
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def test_strategy_bad_signal_deadlettered_daemon_goes_on(procs, tmp_path, home):
    bad = {"type": "signal", "symbol": "BTCUSDT", "bucket_ms": "soon", "fusion": 3.0}
    append(home, "signals", [bad] + signal_payloads(CYCLE, start=1))
    p = start(procs, tmp_path, ["--home", str(home), "--config", write_config(tmp_path)])
    wait_for(lambda: len(intents(home)) >= 2, what="intents after the bad record")
    dead = wait_for(lambda: records(home, "deadletter"), what="deadletter")
    assert dead[0]["stage"] == "strategy" and "bucket_ms" in dead[0]["reason"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
