"""The broker daemon as a real process against ``ofi exchange`` on loopback.

Faults on (timeouts after acceptance, 503, 5xx, websocket drops; 429 and 418 apart) and the broker
killed with SIGKILL at random instants: no client order id twice at the exchange, every fill
once in ``fills``, positions equal to the exchange's. Plus the kill switch, start-up
reconciliation, rate limits, and the secret never written anywhere.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bus import open_bus
from daemons.broker.binance.errors import GatewayError
from daemons.broker.binance.http import BinanceHttp
from daemons.broker.orders import TERMINAL
from daemons.broker.ratelimit import RateLimiter
from tests.conftest import OFI, free_port, wait_for
from tests.exchange_harness import PUSHER, push_market

API_KEY = "brokertestkey0123456789abcdefKEY9"
API_SECRET = "brokertestsecret-9f8e7d6c5b4a-never-logged"
SYMBOL = "BTCUSDT"


def _count_ready(path: Path) -> int:
    try:
        return path.read_text(errors="replace").count("ofi-ready")
    except FileNotFoundError:
        return 0


class Venue:
    """A running ``ofi exchange`` plus a signed client for the test's own checks."""

    def __init__(self, procs, tmp_path: Path, faults: str = "", extra: tuple = ()):
        self.port = free_port()
        self.dir = tmp_path / "exchange"
        self.dir.mkdir()
        self.log = self.dir / "exchange.log"
        args = OFI + ["exchange", "--port", str(self.port), "--home", str(self.dir),
                      "--api-key", API_KEY, "--api-secret", API_SECRET, "--symbols", SYMBOL]
        if faults:
            args += ["--faults", faults]
        args += list(extra)
        with open(self.log, "wb") as out:
            self.proc = procs(args, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: _count_ready(self.log) >= 1 or self.proc.poll() is not None, 30,
                  "the exchange's ofi-ready")
        assert self.proc.poll() is None, self.log.read_text()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = BinanceHttp(self.url, API_KEY, API_SECRET, limiter=RateLimiter(margin=0.0),
                                timeout_s=5.0)

    def call(self, fn, *args, timeout=30):
        """Retry through the faults (they hit the test's requests too)."""
        deadline = time.time() + timeout
        while True:
            try:
                return fn(*args)
            except GatewayError:
                if time.time() > deadline:
                    raise
                self.http.limiter = RateLimiter(margin=0.0)
                time.sleep(0.2)

    def all_orders(self):
        return self.call(self.http.all_orders, SYMBOL)

    def user_trades(self):
        return self.call(self.http.user_trades, SYMBOL)

    def position(self) -> float:
        rows = self.call(self.http.position_risk, SYMBOL)
        return sum(float(r["positionAmt"]) for r in rows if r["symbol"] == SYMBOL)

    def open_orders(self):
        return self.call(self.http.open_orders, SYMBOL)


class Broker:
    """The broker daemon as a process (restartable), fed by intents appended to the bus."""

    def __init__(self, procs, home: Path, venue: Venue, extra: str = ""):
        self.procs = procs
        self.home = home
        self.cfg = home / "broker.yaml"
        self.cfg.write_text(
            f"symbols: [{SYMBOL}]\n"
            f"exchange:\n  port: {venue.port}\n"
            "broker:\n  mode: sim\n  http_timeout_s: 1.0\n  resolution_window_s: 10.0\n"
            "  poll_interval_s: 0.5\n  intent_ttl_s: 300.0\n" + extra)
        self.log = home / "broker.log"
        self.env = {**os.environ, "OFI_API_KEY": API_KEY, "OFI_API_SECRET": API_SECRET}
        self.env.pop("EXECUTOR_MODE", None)
        self.proc = None
        self.starts = 0

    def start(self, wait_ready: bool = True) -> None:
        with open(self.log, "ab") as out:
            self.proc = self.procs(OFI + ["daemon", "broker", "--home", str(self.home),
                                          "--config", str(self.cfg)],
                                   stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1
        if wait_ready:
            wait_for(lambda: _count_ready(self.log) >= self.starts or self.proc.poll() is not None,
                      40, "the broker's ofi-ready")
            assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(15) == 0


def _records(home: Path, topic: str) -> list[dict]:
    bus = open_bus(home)
    reader = bus.reader(topic, start="beginning")
    out = []
    while True:
        items = reader.read(10000)
        if not items:
            break
        out.extend(r for r, _ in items)
    reader.close()
    bus.close()
    return out


def _last_status(home: Path) -> dict[str, dict]:
    last = {}
    for r in _records(home, "orders"):
        last[r["client_order_id"]] = r
    return last


def _intent(i: int, side: str, qty: float, order_type="MARKET", price=None, cid=None) -> dict:
    return {"type": "intent", "symbol": SYMBOL, "side": side, "qty": qty,
            "order_type": order_type, "price": price, "reduce_only": False,
            "client_order_id": cid or f"t{i}-{os.getpid()}", "reason": "test",
            "signal_seq": i, "bucket_ms": 0, "decision_mid": None, "fusion": None}


def _mid(venue: Venue) -> float:
    """The mark price, through the venue's faults (they hit the test's requests too)."""
    import requests

    def ask():
        try:
            r = requests.get(f"{venue.url}/fapi/v1/premiumIndex", params={"symbol": SYMBOL},
                             timeout=5)
        except requests.RequestException:
            return None
        return float(r.json()["markPrice"]) if r.status_code == 200 else None
    return wait_for(ask, 15, "the mark price")


def _assert_books_agree(home: Path, venue: Venue) -> None:
    """No client order id twice at the exchange; every fill once; positions equal."""
    orders = venue.all_orders()
    ids = Counter(o["clientOrderId"] for o in orders)
    assert [c for c, n in ids.items() if n > 1] == [], "a client order id was used twice"
    fills = _records(home, "fills")
    fill_ids = [f["trade_id"] for f in fills]
    assert len(fill_ids) == len(set(fill_ids)), "a fill was recorded twice"
    trades = venue.user_trades()
    assert sorted(fill_ids) == sorted(t["id"] for t in trades), "fills differ from userTrades"
    positions = [p for p in _records(home, "positions") if p["symbol"] == SYMBOL]
    assert positions[-1]["qty"] == pytest.approx(venue.position(), abs=1e-9)
    # every order the exchange has is one the broker journaled, in the same final state
    last = _last_status(home)
    for o in orders:
        mine = last.get(o["clientOrderId"])
        assert mine is not None, f"exchange order {o['clientOrderId']} not in the journal"
        if o["status"] in TERMINAL:
            assert mine["status"] == o["status"] or (
                o["status"] == "FILLED" and mine["filled_qty"] == pytest.approx(float(o["executedQty"])))


@pytest.mark.timeout(120)
def test_broker_faults_and_sigkill_never_double_or_lose(procs, home, tmp_path):
    # Arrange: faults on every surface; the broker killed at random instants
    # (429/418 answers carry Retry-After up to a minute: they are tested on their own below)
    seed = int(os.environ.get("OFI_CHAOS_SEED", "11"))   # to replay another run
    faults = f"timeout=0.06,timeout_s=1.5,unknown503=0.06,http5xx=0.05,ws_drop=0.02,seed={seed}"
    venue = Venue(procs, tmp_path, faults)
    broker = Broker(procs, home, venue)
    broker.start()
    rng = random.Random(seed)
    bus = open_bus(home)
    writer = bus.writer("intents")
    mid = _mid(venue)
    sent = []
    # Act: ~90 intents over ~12 s, 5 SIGKILLs
    kill_at = sorted(rng.uniform(1.0, 11.0) for _ in range(5))
    start = time.time()
    i = 0
    while time.time() - start < 12.0:
        side = rng.choice(["BUY", "SELL"])
        qty = rng.choice([0.002, 0.003, 0.005])
        if rng.random() < 0.2:
            px = round(mid * (0.999 if side == "BUY" else 1.001), 1)
            rec = _intent(i, side, qty, "LIMIT", px)
        else:
            rec = _intent(i, side, qty)
        writer.append(rec)
        sent.append(rec["client_order_id"])
        i += 1
        if kill_at and time.time() - start >= kill_at[0]:
            kill_at.pop(0)
            time.sleep(rng.uniform(0.0, 0.05))
            broker.kill()
            broker.start()
        time.sleep(rng.uniform(0.05, 0.2))
    writer.close()
    bus.close()
    # every intent reaches a settled state (LIMIT orders may stay open: cancel them via halt)
    wait_for(lambda: all(c in _last_status(home) and _last_status(home)[c]["status"] not in
                          ("PENDING", "UNKNOWN") for c in sent), 60, "every intent settled",
              interval=0.3)
    subprocess.run(OFI + ["halt", "--home", str(home), "--reason", "test end"], check=True,
                   capture_output=True, timeout=30)
    wait_for(lambda: all(r["status"] in TERMINAL for r in _last_status(home).values()), 40,
              "every order terminal after the halt", interval=0.3)
    wait_for(lambda: not venue.open_orders(), 20, "no open order left at the exchange")
    # let late stream fills land, then stop cleanly
    wait_for(lambda: len(_records(home, "fills")) == len(venue.user_trades()), 20,
              "fills caught up with userTrades", interval=0.3)
    broker.stop()
    # Assert
    _assert_books_agree(home, venue)
    state = orjson.loads((home / "state" / "trading.json").read_text())
    assert state["reason"] == "test end", f"the broker halted by itself: {state}"
    statuses = Counter(r["status"] for r in _last_status(home).values())
    assert statuses["FILLED"] > 20, statuses
    exec_log = [orjson.loads(line) for line in (home / "log" / "exec_log.jsonl").read_text().splitlines()]
    outcomes = Counter(e["outcome"] for e in exec_log)
    assert outcomes["ambiguous"] > 0 and outcomes["not_sent"] > 0, outcomes
    # the secret (and the full key) never reach a log or a spool
    for path in [*home.rglob("*"), broker.log]:
        if path.is_file() and path.name != "broker.yaml":
            data = path.read_bytes()
            assert API_SECRET.encode() not in data, f"secret found in {path}"
            assert API_KEY.encode() not in data, f"API key found in {path}"


@pytest.mark.timeout(60)
def test_broker_halt_cancels_open_orders_and_refuses_new_until_resumed(procs, home, tmp_path):
    venue = Venue(procs, tmp_path)
    broker = Broker(procs, home, venue)
    broker.start()
    mid = _mid(venue)
    bus = open_bus(home)
    w = bus.writer("intents")
    # resting orders far from the market
    for i in range(3):
        w.append(_intent(i, "BUY", 0.002, "LIMIT", round(mid * 0.9, 1), cid=f"rest-{i}"))
    wait_for(lambda: len(venue.open_orders()) == 3, 10, "3 open orders at the exchange")
    subprocess.run(OFI + ["halt", "--home", str(home), "--reason", "drill"], check=True,
                   capture_output=True, timeout=30)
    wait_for(lambda: not venue.open_orders(), 10, "the kill switch canceled them")
    w.append(_intent(9, "BUY", 0.002, cid="while-halted"))
    wait_for(lambda: _last_status(home).get("while-halted", {}).get("status") == "REJECTED", 10,
              "the intent refused while HALTED")
    assert "HALTED" in _last_status(home)["while-halted"]["reason"]
    last = _last_status(home)
    assert all(last[f"rest-{i}"]["status"] == "CANCELED" for i in range(3))
    subprocess.run(OFI + ["resume", "--home", str(home)], check=True, capture_output=True, timeout=30)
    w.append(_intent(10, "BUY", 0.002, cid="after-resume"))
    wait_for(lambda: _last_status(home).get("after-resume", {}).get("status") == "FILLED", 10,
              "an intent filled after resume")
    w.close()
    bus.close()
    broker.stop()
    _assert_books_agree(home, venue)


class _Webhook:
    """A Slack-style incoming webhook on loopback: the JSON documents POSTed to it."""

    def __init__(self):
        import http.server
        import threading
        got = self.got = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(60)
def test_broker_unexplained_venue_position_sets_halted_with_reason(procs, home, tmp_path):
    venue = Venue(procs, tmp_path)
    hook = _Webhook()
    # someone else trades on the account before the broker starts
    venue.call(venue.http.new_order, {"symbol": SYMBOL, "side": "BUY", "type": "MARKET",
                                      "quantity": "0.003", "newClientOrderId": "manual-1"})
    broker = Broker(procs, home, venue)
    broker.env["OFI_ALERTS_WEBHOOK_URL"] = hook.url    # the secret URL from the environment
    broker.start()
    state = orjson.loads((home / "state" / "trading.json").read_text())
    assert state["state"] == "HALTED" and state["by"] == "broker"
    assert "venue position 0.003" in state["reason"]
    # one alert on the bus and at the webhook, the URL in neither nor in the log
    docs = wait_for(lambda: len(hook.got) >= 2 and hook.got, 10, "the alerts at the webhook")
    assert [d["kind"] for d in docs] == ["reconciliation", "halted"]
    assert docs[1]["text"].startswith("[ofi halted]") and docs[1]["source"] == "broker"
    assert all("venue position 0.003" in d["text"] for d in docs)
    alerts = _records(home, "alerts")
    assert [a["kind"] for a in alerts] == ["reconciliation", "halted"]
    broker.stop()
    hook.close()
    for text in (broker.log.read_text(), orjson.dumps(alerts).decode()):
        assert "secret-token" not in text


@pytest.mark.timeout(60)
def test_broker_stays_under_order_rate_limit_without_429(procs, home, tmp_path):
    # 5 orders per 10 s at the exchange; the broker's margin 0.2 leaves it 4
    venue = Venue(procs, tmp_path, "order_limit_10s=5,seed=1")
    broker = Broker(procs, home, venue)
    broker.start()
    bus = open_bus(home)
    w = bus.writer("intents")
    for i in range(6):
        w.append(_intent(i, "BUY" if i % 2 else "SELL", 0.002, cid=f"rl-{i}"))
    wait_for(lambda: sum(r["status"] == "FILLED" for r in _last_status(home).values()) == 6, 25,
              "all 6 filled across two windows", interval=0.2)
    w.close()
    bus.close()
    broker.stop()
    exec_log = [orjson.loads(line) for line in (home / "log" / "exec_log.jsonl").read_text().splitlines()]
    assert not [e for e in exec_log if e.get("http") in (429, 418)]
    # held back by the broker's own limiter: logged as not_sent, nothing left the process
    places = sorted(e["ts"] for e in exec_log if e["action"] == "place"
                    and e["outcome"] != "not_sent")
    assert len(places) == 6
    per_window = Counter(int(ts // 10) for ts in places)
    assert max(per_window.values()) <= 4, per_window
    _assert_books_agree(home, venue)


@pytest.mark.timeout(60)
def test_broker_start_honours_retry_after_with_a_live_heartbeat_and_stops_at_once(
        procs, home, tmp_path):
    # Arrange: every request answered 429 with a 30 s Retry-After
    venue = Venue(procs, tmp_path, "r429=1.0,r429_retry_s=30,ban_after=100000,seed=3")
    broker = Broker(procs, home, venue)
    # Act: the broker starts and meets the 429 on its first call
    broker.start(wait_ready=False)
    beat_path = home / "run" / "broker.json"

    def waiting():
        try:
            beat = orjson.loads(beat_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return beat if beat.get("waiting") else None
    first = wait_for(waiting, 20, "a heartbeat that says the broker waits")
    time.sleep(1.5)
    second = waiting()
    # Assert: not ready, waiting on the venue until its Retry-After, the heartbeat still beating
    assert first["ready"] is False and first["waiting"]["error"] == "RateLimited"
    assert first["waiting"]["until"] >= first["ts"] + 20
    assert second is not None and second["ts"] > first["ts"]
    assert "venue_wait" in broker.log.read_text()
    # SIGTERM ends the wait at once: a stop (exit 0), not a refusal
    t0 = time.time()
    broker.proc.send_signal(signal.SIGTERM)
    assert broker.proc.wait(10) == 0
    assert time.time() - t0 < 3.0
    assert '"fatal"' not in broker.log.read_text()


@pytest.mark.timeout(60)
def test_dead_man_switch_keeps_orders_while_the_broker_lives_and_cancels_them_when_it_dies(
        procs, home, tmp_path):
    venue = Venue(procs, tmp_path)
    broker = Broker(procs, home, venue, extra="  deadman_ms: 2000\n")
    broker.start()
    mid = _mid(venue)
    bus = open_bus(home)
    w = bus.writer("intents")
    w.append(_intent(0, "BUY", 0.002, "LIMIT", round(mid * 0.9, 1), cid="resting-0"))
    wait_for(lambda: len(venue.open_orders()) == 1, 10, "a resting order at the exchange")
    # alive: refreshed every ~0.7 s, the 2 s countdown never runs out
    time.sleep(3.0)
    assert [o["clientOrderId"] for o in venue.open_orders()] == ["resting-0"]
    beat = orjson.loads((home / "run" / "broker.json").read_bytes())
    assert time.time() - beat["deadman_refreshed"][SYMBOL] < 2.0
    # dead: nobody refreshes, the venue cancels the order on its own
    broker.kill()
    killed = time.time()
    wait_for(lambda: not venue.open_orders(), 10, "the venue canceled the order")
    assert 1.0 < time.time() - killed < 5.0
    canceled = [o for o in venue.all_orders() if o["clientOrderId"] == "resting-0"]
    assert canceled[0]["status"] == "CANCELED"
    # a new broker learns it at start
    broker.start()
    wait_for(lambda: _last_status(home).get("resting-0", {}).get("status") == "CANCELED", 10,
              "the journal has the cancel")
    w.close()
    bus.close()
    broker.stop()


@pytest.mark.timeout(90)
def test_ofi_flatten_cancels_everything_and_closes_the_position_at_the_venue(
        procs, home, tmp_path):
    venue = Venue(procs, tmp_path)
    broker = Broker(procs, home, venue)
    broker.start()
    mid = _mid(venue)
    bus = open_bus(home)
    w = bus.writer("intents")
    w.append(_intent(0, "BUY", 0.005, cid="long-0"))
    w.append(_intent(1, "SELL", 0.002, "LIMIT", round(mid * 1.1, 1), cid="resting-1"))
    wait_for(lambda: venue.position() == pytest.approx(0.005) and len(venue.open_orders()) == 1,
              15, "a long position and a resting order at the exchange")
    # no strategy runs here: the broker alone flattens
    p = subprocess.run(OFI + ["flatten", "--home", str(home), "--wait-s", "30"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "sent SELL 0.005 BTCUSDT reduce-only MARKET" in p.stdout
    assert "flat: no position and no open order left" in p.stdout
    assert venue.position() == pytest.approx(0.0) and venue.open_orders() == []
    state = orjson.loads((home / "state" / "trading.json").read_bytes())
    assert state["state"] == "HALTED" and state["flatten"] is True
    # a second flatten with nothing left sends nothing and says so
    p2 = subprocess.run(OFI + ["flatten", "--home", str(home), "--json"], capture_output=True,
                        text=True, timeout=60)
    assert p2.returncode == 0, p2.stderr
    assert orjson.loads(p2.stdout)["flatten"]["sent"] == {}
    w.close()
    bus.close()
    broker.stop()
    _assert_books_agree(home, venue)


def test_ofi_flatten_without_a_broker_says_so_in_one_line(tmp_path):
    p = subprocess.run(OFI + ["flatten", "--home", str(tmp_path / "home"), "--wait-s", "0.5"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.startswith("ofi: the broker did not report") and p.stderr.count("\n") == 1
    state = orjson.loads((tmp_path / "home" / "state" / "trading.json").read_bytes())
    assert state["state"] == "HALTED" and state["flatten"] is True


@pytest.mark.timeout(60)
def test_broker_sets_leverage_and_margin_type_and_refuses_a_hedge_mode_account(
        procs, home, tmp_path):
    venue = Venue(procs, tmp_path)
    broker = Broker(procs, home, venue, extra="  leverage: 7\n  margin_type: ISOLATED\n")
    broker.start()
    row = venue.call(venue.http.position_risk, SYMBOL)[0]
    assert (row["leverage"], row["marginType"].lower()) == ("7", "isolated")
    broker.stop()
    broker.start()   # the same settings again: "no need to change" is not an error
    broker.stop()
    # someone switches the account to hedge mode: the broker refuses to start, in one line
    venue.call(lambda: venue.http.request("POST", "/fapi/v1/positionSide/dual",
                                          {"dualSidePosition": "true"}, signed=True))
    broker.start(wait_ready=False)
    assert broker.proc.wait(30) == 2
    log = broker.log.read_text()
    assert "hedge mode" in log and '"fatal"' in log


@pytest.mark.timeout(90)
def test_funding_payments_are_recorded_once_each_across_a_broker_restart(procs, home, tmp_path):
    venue = Venue(procs, tmp_path, extra=("--funding-interval-s", "1", "--funding-rate", "0.001"))
    # the wallet check every second: the payments are explained, never a halt
    broker = Broker(procs, home, venue, extra="  reconcile_interval_s: 1.0\n")
    broker.start()
    bus = open_bus(home)
    w = bus.writer("intents")
    w.append(_intent(0, "BUY", 0.01, cid="long-f"))
    wait_for(lambda: venue.position() == pytest.approx(0.01), 10, "a long position")

    def venue_funding():
        rows = venue.call(venue.http.income, "FUNDING_FEE")
        return {int(r["tranId"]): (float(r["income"]), int(r["time"])) for r in rows
                if r["symbol"] == SYMBOL}

    def recorded():
        return [(r["tran_id"], r["amount"]) for r in _records(home, "funding")]
    wait_for(lambda: len(recorded()) >= 2, 15, "funding payments recorded from the stream")
    wait_for(lambda: orjson.loads((home / "run" / "broker.json").read_bytes())["counts"]
             ["wallet_checks"] >= 3, 10, "wallet checks that the journal explained")
    # unrealized PnL at the venue's mark (markPrice stream), not at the fill price
    rec = wait_for(lambda: next((r for r in reversed(_records(home, "positions"))
                                 if r["cause"] == "mark"), None), 10, "a position at the mark")
    assert rec["unrealized_pnl"] == pytest.approx(0.01 * (rec["mark_price"] - rec["entry_price"]),
                                                  abs=1e-6)
    assert abs(rec["mark_price"] - _mid(venue)) < 0.002 * rec["mark_price"]
    # and the positions records carry the funding paid so far (the strategy's real money)
    last = [r for r in _records(home, "positions") if r["cause"] == "funding"][-1]
    paid_then = sum(r["amount"] for r in _records(home, "funding") if r["ts"] <= last["ts"])
    assert last["funding"] == pytest.approx(paid_then, abs=1e-9) and paid_then < 0
    broker.kill()
    paid = len(venue_funding())
    wait_for(lambda: len(venue_funding()) >= paid + 2, 10, "payments while the broker is down")
    down = set(venue_funding())
    broker.start()
    w.close()
    bus.close()
    wait_for(lambda: {t for t, _ in recorded()} >= down, 15, "the payments made while it was down")
    stopping = time.time()
    broker.stop()
    got = recorded()
    want = venue_funding()
    assert len({t for t, _ in got}) == len(got), "a payment recorded twice"
    assert all(want[t][0] == pytest.approx(a) for t, a in got)
    # every payment up to the stop is recorded (one being paid at that instant may not be)
    assert {t for t, (_, ms) in want.items() if ms < (stopping - 1.5) * 1000} <= \
        {t for t, _ in got}
    assert all(a < 0 for _, a in got)   # a long pays a positive rate
    assert _records(home, "alerts") == []
    log = broker.log.read_text()
    assert '"wallet_differs"' not in log or '"halt"' not in log


@pytest.mark.timeout(120)
def test_protective_stop_survives_a_killed_broker_and_the_venue_closes_the_position(
        procs, home, tmp_path):
    venue = Venue(procs, tmp_path, extra=("--balance", "100000000",
                                          "--extra-key", f"{PUSHER[0]}:{PUSHER[1]}"))
    broker = Broker(procs, home, venue, extra="risk:\n  protective_stop_bps: 3.0\n")
    broker.start()
    bus = open_bus(home)
    w = bus.writer("intents")
    w.append(_intent(0, "BUY", 0.01, cid="long-p"))
    wait_for(lambda: venue.position() == pytest.approx(0.01), 10, "a long position")

    def stops():
        return venue.call(lambda: venue.http.request("GET", "/fapi/v1/openAlgoOrders",
                                                     {"symbol": SYMBOL}, signed=True))
    (stop,) = wait_for(lambda: stops() or None, 10, "the protective stop at the venue")
    entry = float([o for o in venue.all_orders() if o["clientOrderId"] == "long-p"][0]["avgPrice"])
    assert (stop["orderType"], stop["side"], stop["closePosition"]) == ("STOP_MARKET", "SELL", True)
    assert stop["workingType"] == "MARK_PRICE" and stop["clientAlgoId"].startswith("ofi-stop-")
    assert float(stop["triggerPrice"]) == pytest.approx(entry * 0.9997, abs=0.11)
    # the broker dies (SIGKILL: nothing settles, nothing is canceled): the stop stays
    broker.kill()
    assert [s["clientAlgoId"] for s in stops()] == [stop["clientAlgoId"]]
    # the market falls through the trigger: the venue closes the position on its own
    push_market(venue.url, "SELL", float(stop["triggerPrice"]) - 1.0)
    wait_for(lambda: venue.position() == pytest.approx(0.0), 15, "the venue closed the position")
    assert stops() == []
    # the next broker adopts the stop's order: its fill is ours, the journal flat, no halt
    broker.start()
    wait_for(lambda: any(f["client_order_id"] == stop["clientAlgoId"]
                         for f in _records(home, "fills")), 15, "the stop's fill in the journal")
    wait_for(lambda: _records(home, "positions")[-1]["qty"] == pytest.approx(0.0), 10,
             "the journal's position is flat")
    assert not (home / "state" / "trading.json").exists() or orjson.loads(
        (home / "state" / "trading.json").read_bytes())["state"] != "HALTED"
    assert stops() == []                              # flat: no new stop
    w.close()
    bus.close()
    broker.stop()
    _assert_books_agree(home, venue)
