"""Alerts: the record, de-duplication on an injected clock, the webhook POST received by a real
HTTP server on loopback (retries, a receiver that is down, the URL kept secret), the shared
``alerts`` topic written through two bus handles, the strategy's stale-feed alert and
``ofi alerts``."""
from __future__ import annotations

import io
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from bus import open_bus
from conftest import OFI, free_port, typed_settings, wait_for
from daemons import alerts, config as configmod, runtime, settings
from daemons.alerts import Alerter, alert_record
from daemons.log import Logger
from daemons.strategy.stage import StrategyStage

SECRET = "T000/B000/xoxsecretpath"


def _alerts(**section) -> settings.Alerts:
    return typed_settings(alerts=section).alerts


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST's JSON and answers with the next of
    ``statuses`` (200 once they run out)."""

    def __init__(self, statuses=()):
        self.posts: list[dict] = []
        self.paths: list[str] = []
        self.statuses = list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.paths.append(self.path)
                outer.posts.append(json.loads(body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        r = Receiver(statuses)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def logger(name="broker"):
    buf = io.StringIO()
    return Logger(name, stream=buf), buf


def events(buf, event=None):
    out = [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return [e for e in out if event is None or e["event"] == event]


def bus_alerts(home):
    bus = open_bus(home)
    try:
        return bus.read_all("alerts")
    finally:
        bus.close()


def spool_text(home):
    return "".join(p.read_text(errors="replace") for p in (home / "bus").rglob("*")
                   if p.is_file() and p.suffix in (".jsonl", ".json"))


# -- the record ------------------------------------------------------------------------------
def test_alert_record_is_one_line_with_the_common_fields_and_refuses_bad_ones():
    rec = alert_record("halted", "trading HALTED:\n  overfill of\tBTC", source="broker",
                       subject="overfill", now=1_700_000_000_123, symbol="BTCUSDT",
                       qty=0.5, when=object.__new__(object), api_key="abc")
    assert rec["type"] == "alert" and rec["kind"] == "halted" and rec["subject"] == "overfill"
    assert rec["message"] == "trading HALTED: overfill of BTC"
    assert rec["source"] == "broker" and rec["ts"] == 1_700_000_000_123
    assert rec["symbol"] == "BTCUSDT" and rec["qty"] == 0.5
    assert isinstance(rec["when"], str) and rec["api_key"] == "****"
    orjson.dumps(rec)
    with pytest.raises(ValueError, match="unknown alert kind"):
        alert_record("nope", "x", source="s", now=0)
    with pytest.raises(ValueError, match="reserved"):
        alert_record("banned", "x", source="s", now=0, seq=3)
    assert set(alerts.KINDS) >= {"halted", "reconciliation", "banned", "stale_feed",
                                 "stop_triggered", "flatten_failed", "late_execution"}


# -- de-duplication ----------------------------------------------------------------------------
def test_same_kind_and_subject_within_repeat_s_is_raised_once(home):
    now = [1_000.0]
    log, buf = logger()
    bus = open_bus(home)
    a = Alerter(_alerts(repeat_s=300), bus, "broker", log, clock=lambda: now[0])
    try:
        first = a.alert("banned", "HTTP 418 until 12:00", subject="rest")
        assert first is not None and first["seq"] == 1
        now[0] += 299.0
        assert a.alert("banned", "HTTP 418 again", subject="rest") is None
        other = a.alert("banned", "HTTP 418 on the stream", subject="ws")      # other subject
        other_kind = a.alert("halted", "halted", subject="rest", source="x")  # other kind
        now[0] += 1.0                                                         # 300 s after
        again = a.alert("banned", "HTTP 418 still", subject="rest")
    finally:
        a.close(1)
        bus.close()
    assert other is not None and other_kind is not None and again is not None
    recs = bus_alerts(home)
    assert [(r["kind"], r["subject"], r["message"]) for r in recs] == [
        ("banned", "rest", "HTTP 418 until 12:00"), ("banned", "ws", "HTTP 418 on the stream"),
        ("halted", "rest", "halted"), ("banned", "rest", "HTTP 418 still")]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert recs[2]["source"] == "broker" and recs[2]["source_"] == "x"   # renamed, not refused
    lines = events(buf, "alert")
    assert len(lines) == 4 and a.suppressed == 1 and a.sent == 4
    assert lines[0]["level"] == "error" and lines[0]["kind"] == "banned"
    assert lines[0]["subject"] == "rest" and lines[0]["seq"] == 1


# -- the webhook -------------------------------------------------------------------------------
def test_webhook_receives_the_json_document_without_blocking_the_caller(home, receiver):
    rx = receiver()
    log, buf = logger("strategy")
    bus = open_bus(home)
    a = Alerter(_alerts(webhook_url=rx.url, timeout_s=5, repeat_s=300), bus, "strategy", log)
    try:
        rec = a.alert("stale_feed", "BTCUSDT: signals 5000 ms old", subject="BTCUSDT",
                      age_ms=5000, signal_seq=7)
        wait_for(lambda: rx.posts, 10, "the POST")
    finally:
        a.close(5)
        bus.close()
    assert rx.paths == [f"/services/{SECRET}"]
    assert rx.posts == [{"text": "[ofi stale_feed] BTCUSDT: signals 5000 ms old",
                         "kind": "stale_feed", "subject": "BTCUSDT",
                         "message": "BTCUSDT: signals 5000 ms old", "source": "strategy",
                         "ts": rec["ts"], "age_ms": 5000, "signal_seq": 7}]
    assert events(buf, "alert")[0]["level"] == "warning"
    assert not events(buf, "alert_webhook_failed")
    assert SECRET not in buf.getvalue() and SECRET not in spool_text(home)
    assert a._thread is None      # close stopped the thread


def test_webhook_500_is_retried_then_delivered(home, receiver):
    rx = receiver([500, 503])
    log, buf = logger()
    bus = open_bus(home)
    a = Alerter(_alerts(webhook_url=rx.url, timeout_s=5), bus, "broker", log)
    t0 = time.monotonic()
    try:
        a.alert("reconciliation", "BTCUSDT: venue 0.5, ours 0.4", subject="BTCUSDT")
        assert time.monotonic() - t0 < 0.5     # the caller did not wait for the retries
        wait_for(lambda: len(rx.posts) == 3, 10, "three POSTs")
    finally:
        a.close(5)
        bus.close()
    assert [p["kind"] for p in rx.posts] == ["reconciliation"] * 3
    assert not events(buf, "alert_webhook_failed")


def test_webhook_down_one_failure_line_record_kept_url_never_written(home):
    url = f"http://127.0.0.1:{free_port()}/services/{SECRET}"    # nothing listens there
    log, buf = logger()
    bus = open_bus(home)
    a = Alerter(_alerts(webhook_url=url, timeout_s=2), bus, "broker", log)
    try:
        rec = a.alert("halted", "trading HALTED: overfill", subject="overfill", note=url)
        a.close(10)                       # waits for the three attempts
    finally:
        bus.close()
    failed = events(buf, "alert_webhook_failed")
    assert len(failed) == 1
    assert failed[0]["attempts"] == 3 and failed[0]["error"] == "ConnectionError"
    assert failed[0]["kind"] == "halted" and failed[0]["subject"] == "overfill"
    recs = bus_alerts(home)
    assert [(r["seq"], r["kind"], r["message"]) for r in recs] == [
        (1, "halted", "trading HALTED: overfill")]
    assert rec["note"] == "****"          # a caller's copy of the URL is masked too
    assert SECRET not in buf.getvalue() and "127.0.0.1" not in buf.getvalue()
    assert SECRET not in spool_text(home)


# -- Context.alert and the shared topic --------------------------------------------------------
class Raiser(runtime.Stage):
    """A stage with its own output that raises an alert per input."""

    name = "broker"
    inputs = ("trades",)
    outputs = ("orders",)

    def handle(self, topic, rec):
        self.ctx.emit("orders", {"type": "order", "n": rec["n"]})
        self.ctx.alert("halted", f"halt {rec['n']}", subject=f"s{rec['n']}", n=rec["n"])


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_context_alert_shared_topic_from_two_bus_handles(home, sink):
    cfg = configmod.load(None, {"home": str(home), "sink": sink}, environ={})
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    w.append_many([{"type": "trade", "n": i} for i in range(40)])
    w.close()
    bus.close()
    log, buf = logger()
    runner = runtime.Runner(Raiser, cfg, log=log)
    other = open_bus(home, sink=sink)               # a second handle: another program's alerts
    other_alerts = Alerter(settings.of(cfg).alerts, other, "strategy",
                           Logger("strategy", stream=io.StringIO()))
    runner.open()
    stop = threading.Event()
    errors = []

    def second():
        i = 0
        try:
            while not stop.is_set() or i < 20:
                other_alerts.alert("stale_feed", f"stale {i}", subject=f"x{i}")
                i += 1
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=second)
    t.start()
    try:
        while runner.step():
            pass
    finally:
        stop.set()
        t.join(20)
        runner.close()
        other_alerts.close(1)
        other.close()
    assert not errors
    recs = bus_alerts(home)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    mine = [r for r in recs if r["source"] == "broker"]
    theirs = [r for r in recs if r["source"] == "strategy"]
    assert [r["n"] for r in mine] == list(range(40))
    assert len(theirs) >= 20 and len(mine) + len(theirs) == len(recs)
    assert open_bus(home).sink_of("alerts") == sink
    assert runner.ctx.alerter._writer is None            # closed with the runner
    assert len(events(buf, "alert")) == 40


# -- the strategy's stale feed -----------------------------------------------------------------
def _signals(base_ms, n, start=0):
    return [{"type": "signal", "symbol": "BTCUSDT", "bucket_ms": base_ms + (start + i) * 1000,
             "interval_ms": 1000, "mid": 50_000.0, "spread": 0.1, "fusion": 0.0, "ofi_z": 0.0,
             "cvd_z": 0.0, "ofi_l1": 0.0, "cvd_delta": 0.0} for i in range(n)]


def _run_strategy(home, batches, repeat_s):
    """Run the strategy stage in process: each batch of signals appended, then handled."""
    cfg = configmod.load(None, {"home": str(home), "alerts.repeat_s": repeat_s}, environ={})
    log, buf = logger("strategy")
    runner = runtime.Runner(StrategyStage, cfg, log=log)
    bus = open_bus(home)
    w = bus.writer("signals")
    try:
        runner.open()
        runner.stage.start()
        for batch in batches:
            w.append_many(batch() if callable(batch) else batch)
            while runner.step():
                pass
    finally:
        w.close()
        bus.close()
        runner.close()
    return buf


@pytest.mark.parametrize("repeat_s,expected", [(300, 1), (0, 2)])
def test_strategy_stale_run_raises_one_stale_feed_alert(home, repeat_s, expected):
    old = int(time.time() * 1000) - 3_600_000          # an hour old: a backlog
    fresh = lambda: _signals(int(time.time() * 1000) - 1000, 1)    # noqa: E731
    buf = _run_strategy(home, [_signals(old, 5), fresh, _signals(old, 3, start=10)], repeat_s)
    recs = bus_alerts(home)
    assert [(r["kind"], r["subject"], r["source"]) for r in recs] == \
        [("stale_feed", "BTCUSDT", "strategy")] * expected
    first = recs[0]
    assert first["signal_seq"] == 1 and first["age_ms"] > 3_500_000
    assert first["max_signal_age_ms"] == 2000
    assert first["message"].startswith("BTCUSDT: signals ")
    assert len(events(buf, "stale_signals")) == 2      # one log line per run, as before
    assert len(events(buf, "alert")) == expected


# -- ofi alerts --------------------------------------------------------------------------------
def ofi(*args, timeout=30):
    return subprocess.run([*OFI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_ofi_alerts_lists_filters_and_refuses_bad_arguments(home):
    bus = open_bus(home)
    w = alerts.open_alerts_writer(bus)
    now = int(time.time() * 1000)
    w.append(alert_record("banned", "HTTP 418", source="broker", subject="rest", now=now),
             ts=now - 7_200_000)
    w.append(alert_record("stale_feed", "BTCUSDT: signals 5000 ms old", source="strategy",
                          subject="BTCUSDT", now=now, age_ms=5000), ts=now - 60_000)
    w.append(alert_record("halted", "trading HALTED: overfill", source="broker",
                          subject="overfill", now=now), ts=now - 1_000)
    w.close()
    bus.close()

    r = ofi("alerts", "--home", home)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert "banned" in lines[0] and "rest" in lines[0] and "HTTP 418" in lines[0]
    assert "stale_feed" in lines[1] and "BTCUSDT" in lines[1] and "strategy" in lines[1]

    r = ofi("alerts", "--home", home, "--since", "1h", "--json")
    assert r.returncode == 0, r.stderr
    got = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [g["kind"] for g in got] == ["stale_feed", "halted"] and got[0]["age_ms"] == 5000

    r = ofi("alerts", "--home", home, "--limit", "1", "--json")
    assert [orjson.loads(x)["kind"] for x in r.stdout.splitlines()] == ["halted"]

    r = ofi("alerts", "--home", home, "--since", str(now - 30_000))     # epoch ms
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1

    for bad in (["--since", "yesterday-ish"], ["--limit", "0"], ["--limit", "x"]):
        r = ofi("alerts", "--home", home, *bad)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, bad
        assert r.stderr.startswith("ofi: ")


def test_ofi_alerts_with_no_topic_says_so(home):
    r = ofi("alerts", "--home", home)
    assert r.returncode == 0 and r.stdout == "" and "no alerts" in r.stderr
