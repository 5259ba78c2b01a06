"""``ofi backtest`` over the real BTCUSDT recording: signals as ``ofi signals``, intents as the
strategy daemon's, fills by the executor's rules, positions and fees from the fills, a report,
the same records on every run, and one-line errors."""
from __future__ import annotations

import bisect
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from bus import open_bus
from daemons import config as configmod
from daemons.tools.backtest import runner
from daemons.marketdata.replay import Replay

from conftest import OFI

TOPICS = ("signals", "intents", "orders", "fills", "positions")
FILES = ("btcusdt_20240718.gz", "btcusdt_20240719.gz")
LATENCY_MS = 40
TAKER = 5.0 / 10_000
# trades often on 8 minutes; the rate limit is off because the daemon counts orders on the wall
# clock (it takes every signal within a second) and the backtest on the market's clock
CONFIG = {
    "signal": {"min_periods": 20},
    "strategy": {"entry_threshold": 1.2, "cooldown_s": 2.0},
    "risk": {"max_orders_per_minute": 0},
    "backtest": {"latency_ms": LATENCY_MS, "taker_fee_bps": 5.0, "maker_fee_bps": 2.0},
}


def read_topic(home, topic) -> list[dict]:
    bus = open_bus(home)
    try:
        return bus.read_all(topic)
    finally:
        bus.close()


def strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("seq", "ts")}


def run_cli(args, timeout=60, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFI_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(OFI + args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(cwd or Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """One `ofi backtest` run through the CLI, its records and its printed summary."""
    base = tmp_path_factory.mktemp("backtest")
    cfg_path = base / "backtest.yaml"
    cfg_path.write_text(orjson.dumps(CONFIG).decode())   # JSON is YAML
    paths = [str(data_dir / "hftbacktest" / "usdm" / f) for f in FILES]
    home = base / "home"
    t0 = time.perf_counter()
    p = run_cli(["backtest", "--input", *paths, "--symbol", "BTCUSDT", "--config",
                 str(cfg_path), "--out", str(home), "--charts"])
    elapsed = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    records = {t: read_topic(home, t) for t in TOPICS}
    return {"base": base, "home": home, "paths": paths, "config": str(cfg_path),
            "records": records, "stdout": p.stdout, "elapsed": elapsed}


def books_of(paths):
    """Every best bid/ask record of the files, in replay order, and their event times."""
    books = [r for r in Replay(paths, symbols={"BTCUSDT"}) if r["type"] == "book"]
    return books, [b["E"] for b in books]


def test_backtest_real_recording_trades_and_prints_summary(setup):
    rec = setup["records"]
    intents = [r for r in rec["intents"] if r["type"] == "intent"]
    assert len(intents) >= 10
    assert {i["reason"] for i in intents} == {"entry", "exit"}
    out = setup["stdout"]
    for word in ("signals:", "intents:", "fills:", "realized PnL:", "fees:", "net:",
                 "events/s", "report:"):
        assert word in out
    assert f"intents: {len(intents)}" in out
    # the envelope ts is market time: 2024-07-18/19, not the wall clock
    for topic in TOPICS:
        ts = [r["ts"] for r in rec[topic]]
        assert ts and 1721347000000 <= min(ts) and max(ts) < 1721347600000, topic
        assert ts == sorted(ts), topic


def test_backtest_every_intent_has_order_records_and_fills(setup):
    rec = setup["records"]
    orders: dict[str, list[dict]] = {}
    for o in rec["orders"]:
        orders.setdefault(o["client_order_id"], []).append(o)
    fills: dict[str, list[dict]] = {}
    for f in rec["fills"]:
        fills.setdefault(f["client_order_id"], []).append(f)
    intents = [r for r in rec["intents"] if r["type"] == "intent"]
    assert set(orders) == {i["client_order_id"] for i in intents}
    for i in intents:
        chain = orders[i["client_order_id"]]
        assert [o["status"] for o in chain[:2]] == ["PENDING", "NEW"]
        assert chain[0]["intent_seq"] == i["seq"] and chain[0]["ts"] == i["ts"]
        assert chain[1]["ts"] == i["ts"] + LATENCY_MS          # the ack after the latency
        assert (chain[0]["side"], chain[0]["qty"]) == (i["side"], i["qty"])
        if chain[-1]["status"] == "FILLED":
            got = fills[i["client_order_id"]]
            assert sum(f["qty"] for f in got) == pytest.approx(i["qty"])
            assert chain[-1]["filled_qty"] == pytest.approx(i["qty"])
        else:   # sent by the last intervals: the data ended before the next book update
            assert chain[-1]["status"] == "NEW" and i["ts"] >= rec["signals"][-3]["ts"]
    assert sum(o[-1]["status"] == "FILLED" for o in orders.values()) >= len(intents) - 1


def test_backtest_market_fills_take_opposite_best_after_latency(setup):
    """A MARKET order fills at the first best bid/ask update at or after it reaches the venue
    (intent time + latency): BUY at the ask, SELL at the bid, taker fee on qty x price."""
    books, times = books_of(setup["paths"])
    intents = {r["client_order_id"]: r for r in setup["records"]["intents"]
               if r["type"] == "intent"}
    fills = setup["records"]["fills"]
    assert fills
    first_fill: dict[str, dict] = {}
    for f in fills:
        first_fill.setdefault(f["client_order_id"], f)
        assert f["maker"] is False and f["fee_asset"] == "USDT"
        assert f["fee"] == pytest.approx(f["qty"] * f["price"] * TAKER, rel=1e-12)
    for cid, f in first_fill.items():
        i = intents[cid]
        assert i["order_type"] == "MARKET"
        arrive = i["ts"] + LATENCY_MS
        book = books[bisect.bisect_left(times, arrive)]
        assert f["T"] == book["E"] >= arrive
        assert f["price"] == (book["ask"] if f["side"] == "BUY" else book["bid"])
        assert f["qty"] == pytest.approx(min(i["qty"], book["ask_qty"] if f["side"] == "BUY"
                                             else book["bid_qty"]))


def test_backtest_positions_follow_the_fills(setup):
    rec = setup["records"]
    by_ts: dict[int, float] = {}
    qty = realized = 0.0
    for f in rec["fills"]:
        qty += f["qty"] if f["side"] == "BUY" else -f["qty"]
        realized += f["realized_pnl"]
        by_ts[f["ts"]] = qty
    positions = rec["positions"]
    assert len(positions) >= len(by_ts)
    for p in positions:
        if p["ts"] in by_ts:
            assert p["qty"] == pytest.approx(by_ts[p["ts"]], abs=1e-12)
    last = positions[-1]
    assert last["qty"] == pytest.approx(qty, abs=1e-12)
    assert last["realized_pnl"] == pytest.approx(realized, abs=1e-6)
    summary = orjson.loads((setup["home"] / runner.SUMMARY_FILE).read_bytes())["summary"]
    fees = sum(f["fee"] for f in rec["fills"])
    assert summary["fees"] == pytest.approx(fees, abs=1e-6)
    assert summary["realized_pnl"] == pytest.approx(realized, abs=1e-6)
    assert summary["net_pnl"] == pytest.approx(realized - fees + (last["unrealized_pnl"] or 0.0),
                                               abs=1e-6)


def test_backtest_signals_equal_ofi_signals_over_same_files(setup):
    out = setup["base"] / "signals.jsonl"
    p = run_cli(["signals", "--input", *setup["paths"], "--symbol", "BTCUSDT", "--config",
                 setup["config"], "--out", str(out)])
    assert p.returncode == 0, p.stderr
    expected = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    got = [strip(r) for r in setup["records"]["signals"]]
    assert len(got) == len(expected) > 400
    assert got == expected


def test_backtest_report_files_exist(setup):
    md = setup["home"] / "reports" / "backtest" / "report.md"
    assert f"report: {md}" in setup["stdout"]
    for name in ("report.md", "report.html", "equity.png", "price.png", "fusion.png"):
        assert (md.parent / name).stat().st_size > 0, name
    text = md.read_text()
    assert "backtest BTCUSDT" in text and "2024-07-18" in text
    fills = len(setup["records"]["fills"])
    assert f"| Fills | {fills} |" in text


def test_backtest_report_equals_one_built_from_the_records(setup, tmp_path):
    """The report process (records read during the run, charts drawn by two processes)
    writes the files a plain build from the records on disk writes."""
    from types import SimpleNamespace

    from daemons.report.build import build

    summary = orjson.loads((setup["home"] / runner.SUMMARY_FILE).read_bytes())["summary"]
    result = SimpleNamespace(summary=SimpleNamespace(first_ms=summary["first_ms"],
                                                     last_ms=summary["last_ms"]))
    build(setup["home"], runner.report_period(result, "BTCUSDT"), out_dir=tmp_path)
    got = setup["home"] / "reports" / "backtest"
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in tmp_path.iterdir())
    for p in tmp_path.iterdir():
        assert (got / p.name).read_bytes() == p.read_bytes(), p.name


def test_backtest_run_twice_gives_identical_records(setup, tmp_path):
    """A second run (in process, the library behind the verb) writes the same records."""
    cfg = configmod.load(setup["config"], {"home": str(tmp_path)})
    home = runner.check_home(tmp_path / "again")
    result = runner.run(setup["paths"], "BTCUSDT", cfg, home)
    assert result.summary.events > 70_000
    for topic in TOPICS:
        assert read_topic(home, topic) == setup["records"][topic], topic
    assert (home / runner.SUMMARY_FILE).read_bytes() == \
        (setup["home"] / runner.SUMMARY_FILE).read_bytes()


def test_backtest_strategy_daemon_fed_same_signals_emits_same_intents(setup, tmp_path, procs):
    """The strategy daemon (a real process) on a home whose signals topic holds the
    backtest's signals decides exactly what the backtest's strategy core decided. The recording's
    timestamps are old for the wall clock: the daemon replays them with the freshness check off
    (the backtest keeps it on, on its simulated clock)."""
    home = tmp_path / "live"
    live_cfg = tmp_path / "live.yaml"
    live_cfg.write_text(orjson.dumps({**CONFIG, "strategy": {
        **CONFIG["strategy"], "max_signal_age_ms": 0}}).decode())
    signals = setup["records"]["signals"]
    bus = open_bus(home)
    w = bus.writer("signals")
    try:
        w.append_many([strip(r) for r in signals])
    finally:
        w.close()
        bus.close()
    env = {k: v for k, v in os.environ.items() if k not in ("EXECUTOR_MODE", "OFI_HOME")}
    log = open(tmp_path / "strategy.log", "ab")
    p = procs([sys.executable, "-m", "daemons.strategy", "--home", str(home),
               "--config", str(live_cfg)], stdout=log, stderr=subprocess.STDOUT, env=env)
    last = signals[-1]["seq"]
    deadline = time.monotonic() + 30
    while True:
        assert p.poll() is None, f"strategy exited with {p.returncode}"
        try:
            hb = orjson.loads((home / "run" / "strategy.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            hb = {}
        if (hb.get("strategy") or {}).get("last_signal_seq") == last:
            break
        assert time.monotonic() < deadline, "the daemon did not take every signal"
        time.sleep(0.05)
    keys = ("type", "client_order_id", "side", "qty", "reduce_only", "reason", "trigger",
            "signal_seq", "bucket_ms", "decision_mid")
    live = [tuple(r[k] for k in keys) for r in read_topic(home, "intents")]
    backtest = [tuple(r[k] for k in keys) for r in setup["records"]["intents"]]
    assert live == backtest and len(live) >= 10


@pytest.mark.parametrize("case", ["missing_file", "unknown_symbol", "bad_config", "bad_value",
                                  "out_not_empty"])
def test_backtest_bad_input_exits_with_one_line(case, data_dir, tmp_path):
    path = str(data_dir / "hftbacktest" / "usdm" / FILES[0])
    args = ["backtest", "--input", path, "--symbol", "BTCUSDT", "--out", str(tmp_path / "o")]
    want = 1
    if case == "missing_file":
        args[2] = str(tmp_path / "nope.gz")
        needle = "no such file"
    elif case == "unknown_symbol":
        args[4] = "ETHUSDT"
        needle = "ETHUSDT is not in the input files"
    elif case in ("bad_config", "bad_value"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("backtest: {latency_ms: soon}\n" if case == "bad_config"
                       else "backtest: {taker_fee_bps: -1.0}\n")
        args += ["--config", str(bad)]
        needle, want = "backtest.", 2
    else:
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "x").write_text("x")
        needle = "not an empty directory"
    p = run_cli(args)
    assert p.returncode == want, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr
    if case != "out_not_empty":
        assert not (tmp_path / "o").exists()    # nothing written on a refused start


def test_backtest_open_orders_executor_fills_like_broker_executor(setup):
    """The engine's executor only skips closed orders: the broker's own executor gives the
    same records."""
    from daemons.tools.backtest.engine import Engine, MemoryOutput, run
    from daemons.broker.executors import BacktestExecutor

    cfg = configmod.load(setup["config"])
    built = runner.make_engine(cfg, "BTCUSDT", MemoryOutput())
    out = MemoryOutput()
    plain = BacktestExecutor(taker_fee_bps=5.0, maker_fee_bps=2.0, latency_ms=LATENCY_MS)
    eng = Engine(built.signals, built.strategy, plain, out)
    run(Replay(setup["paths"], symbols={"BTCUSDT"}, symbol="BTCUSDT"), eng)
    for topic in TOPICS:
        assert out.records[topic] == setup["records"][topic], topic


def test_backtest_without_out_uses_new_dir_under_home(data_dir, tmp_path):
    """No --out: <home>/backtests/<SYMBOL>-<first date>, then -2 for a second run."""
    path = str(data_dir / "hftbacktest" / "usdm" / FILES[0])
    homes = []
    for extra in (["--progress"], []):
        p = run_cli(["backtest", "--input", path, "--symbol", "btcusdt", "--no-report", *extra],
                    cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        (line,) = [x for x in p.stdout.splitlines() if x.startswith("home: ")]
        homes.append(Path(line[len("home: "):]))
        assert "report:" not in p.stdout
    base = tmp_path / "var" / "backtests"
    assert homes == [base / "BTCUSDT-20240718", base / "BTCUSDT-20240718-2"]
    assert read_topic(homes[0], "signals") == read_topic(homes[1], "signals") != []
