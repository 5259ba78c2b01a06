"""``ofi mcp`` with the SDK's own client over stdio, against a home of a short sim run.

One pipeline run (``ofi run``, sim mode, a free port on 127.0.0.1) serves every test: the
proposal flow while it trades (nothing reaches the venue before ``ofi approve``, then exactly one
order; a rejected proposal never), then the read tools against the home once the run ended
(the spools no longer move, so the tools must say exactly what they hold).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import anyio
import pytest

from bus import BadRecord, open_bus
from tests.conftest import OFI, ROOT, free_port, stop_groups, wait_for

pytestmark = pytest.mark.slow

KEY = "mcp-test-key-9f3a71c2"
SECRET = "mcp-test-secret-5be80d44e1"
READ_TOOLS = {"get_status", "get_position", "get_open_orders", "fetch_fills", "get_signals",
              "get_pnl", "get_report", "get_proposals"}
WRITE_TOOLS = {"submit_order", "cancel_order", "halt"}


def _config(path, port: int, allow_orders: bool) -> str:
    path.write_text(f"""
broker: {{mode: sim}}
exchange: {{port: {port}, api_key: {KEY}, api_secret: {SECRET}}}
signal: {{min_periods: 5, interval_ms: 500}}
strategy: {{entry_threshold: 0.5, max_hold_s: 4.0, cooldown_s: 1.0}}
report: {{interval_s: 5.0}}
daemon: {{heartbeat_s: 0.5}}
mcp: {{allow_orders: {str(allow_orders).lower()}, calls_per_minute: 200}}
""")
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A sim run in progress: ``{home, port, cfg_off, cfg_on, proc}``; killed at the end."""
    d = tmp_path_factory.mktemp("mcp")
    home, port = d / "home", free_port()
    cfg_off = _config(d / "off.yaml", port, False)
    cfg_on = _config(d / "on.yaml", port, True)
    proc = subprocess.Popen(OFI + ["run", "--config", cfg_off, "--home", str(home),
                                   "--minutes", "0.7", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: _ready(home), 90, "every program ready")
        wait_for(lambda: any(isinstance(r.get("mid"), float) for r in _records(home, "signals")),
              30, "a signal with a mid")
        yield {"home": home, "port": port, "cfg_off": cfg_off, "cfg_on": cfg_on, "proc": proc}
    finally:
        stop_groups([proc])


@pytest.fixture(scope="module")
def finished(run):
    """The same home once the run stopped: the spools no longer change."""
    out, err = run["proc"].communicate(timeout=120)
    assert run["proc"].returncode == 0, err[-2000:]
    return run


# -- helpers -------------------------------------------------------------------------------------
def _records(home, topic):
    bus = open_bus(home)
    try:
        return [r for r in bus.read_all(topic) if not isinstance(r, BadRecord)]
    finally:
        bus.close()


def _ofi(*args, check=True):
    p = subprocess.run(OFI + list(args), capture_output=True, text=True, timeout=30, cwd=ROOT)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def _status(home):
    return json.loads(_ofi("status", "--json", "--home", str(home)).stdout)


def _ready(home):
    try:
        progs = _status(home)["programs"]
    except (AssertionError, ValueError):
        return False
    return len(progs) == 6 and all(p["ready"] for p in progs)


def _venue_orders(port):
    params = {"symbol": "BTCUSDT", "limit": 1000, "timestamp": int(time.time() * 1000)}
    q = urllib.parse.urlencode(params)
    sig = hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/fapi/v1/allOrders?{q}&signature={sig}",
                                 headers={"X-MBX-APIKEY": KEY})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return [o["clientOrderId"] for o in json.loads(resp.read())]


def _session_calls(cfg, home, calls):
    """Open one stdio session of ``ofi mcp`` and make ``calls``: a list of (tool, args), or a
    callable getting the client (for list_tools); returns their results in order."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=OFI[0], args=OFI[1:] + ["mcp", "--config", cfg, "--home", str(home)], cwd=ROOT,
        # the keys of the run in the environment: the server must never read or show them
        env={"PYTHONPATH": str(ROOT), "OFI_API_KEY": KEY, "OFI_API_SECRET": SECRET})

    async def main():
        out = []
        async with Client(params, read_timeout_seconds=30) as c:
            for call in calls:
                out.append(await call(c) if callable(call) else await c.call_tool(*call))
        return out

    return anyio.run(main)


def _text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


SEEN: list[str] = []     # every tool result's text, for the secrets check at the end


def _ok(result):
    SEEN.append(_text(result) + json.dumps(result.structured_content))
    assert not result.is_error, _text(result)
    return result.structured_content


def _err(result) -> str:
    SEEN.append(_text(result))
    assert result.is_error and result.structured_content is None
    text = _text(result)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _qty(home) -> float:
    """A quantity worth about 150 USDT at the last mid (above the venue's minimum notional)."""
    mid = [r["mid"] for r in _records(home, "signals") if isinstance(r.get("mid"), float)][-1]
    return math.ceil(150.0 / mid * 1000) / 1000


# -- while the pipeline trades -------------------------------------------------------------------
def test_tools_listed_with_annotations_and_schemas(run):
    (tools,) = _session_calls(run["cfg_off"], run["home"], [lambda c: c.list_tools()])
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == READ_TOOLS | WRITE_TOOLS
    for name in READ_TOOLS:
        a = by_name[name].annotations
        assert a.read_only_hint is True and a.destructive_hint is False, name
    for name in WRITE_TOOLS:
        a = by_name[name].annotations
        assert a.read_only_hint is False and a.destructive_hint is True, name
    for t in tools.tools:
        assert t.output_schema and t.output_schema.get("type") == "object", t.name
        assert t.input_schema.get("type") == "object" and t.description
    sub = by_name["submit_order"].input_schema
    assert set(sub["required"]) == {"symbol", "side", "qty"}
    assert sub["properties"]["side"]["enum"] == ["BUY", "SELL"]
    assert "resume" not in by_name


def test_orders_refused_while_allow_orders_is_false(run):
    home = run["home"]
    res = _session_calls(run["cfg_off"], home, [
        ("submit_order", {"symbol": "BTCUSDT", "side": "BUY", "qty": 0.01,
                          "client_order_id": "mcp-off-1"}),
        ("cancel_order", {"client_order_id": "whatever"})])
    for r in res:
        assert "mcp.allow_orders" in _err(r)
    assert not _records(home, "proposals")
    assert "mcp-off-1" not in _venue_orders(run["port"])


def test_proposal_reaches_the_venue_only_once_approved(run):
    home, port = run["home"], run["port"]
    qty = _qty(home)
    order = {"symbol": "BTCUSDT", "side": "BUY", "qty": qty, "client_order_id": "mcp-ok-1"}
    first, again = _session_calls(run["cfg_on"], home, [("submit_order", order),
                                                        ("submit_order", order)])
    p = _ok(first)["proposal"]
    assert p["state"] == "pending" and p["client_order_id"] == "mcp-ok-1" and p["qty"] == qty
    # the same client order id again: the same proposal, not a second one
    assert _ok(again)["existing"] is True and _ok(again)["proposal"]["id"] == p["id"]
    assert [r["id"] for r in _records(home, "proposals")
            if r["client_order_id"] == "mcp-ok-1"] == [p["id"]]
    listed = _ofi("proposals", "--home", str(home), "--json").stdout.splitlines()
    assert [json.loads(x)["state"] for x in listed] == ["pending"]
    # nothing reaches the strategy or the venue without the operator: the strategy goes on
    # handling signals with the proposal there, and sends nothing of it
    seen = _strategy_position(home, "signals")
    wait_for(lambda: _strategy_position(home, "signals") > seen + 1, 20,
             "the strategy handling more signals")
    assert not [r for r in _records(home, "intents") if r.get("client_order_id") == "mcp-ok-1"]
    assert "mcp-ok-1" not in _venue_orders(port)

    out = _ofi("approve", p["id"], "--home", str(home), "--reason", "test")
    assert "approved" in out.stdout
    wait_for(lambda: "mcp-ok-1" in _venue_orders(port), 20, "the approved order at the venue")
    wait_for(lambda: any(r.get("client_order_id") == "mcp-ok-1" and r.get("status") == "FILLED"
                         for r in _records(home, "orders")), 20, "the broker's word on it")
    assert _venue_orders(port).count("mcp-ok-1") == 1
    intents = [r for r in _records(home, "intents") if r.get("proposal_id") == p["id"]]
    assert len(intents) == 1 and intents[0]["type"] == "intent"
    assert intents[0]["origin"] == "operator" and intents[0]["client_order_id"] == "mcp-ok-1"
    # decided once: a second approval is refused with one line
    again = _ofi("approve", p["id"], "--home", str(home), check=False)
    assert again.returncode != 0 and "only a pending proposal" in again.stderr
    (state,) = _session_calls(run["cfg_on"], home, [("get_proposals", {})])
    (mine,) = [x for x in _ok(state)["proposals"] if x["id"] == p["id"]]
    assert mine["state"] == "sent" and mine["decided_by"].startswith("ofi:")


def test_rejected_proposal_never_reaches_the_venue(run):
    home, port = run["home"], run["port"]
    order = {"symbol": "BTCUSDT", "side": "SELL", "qty": _qty(home),
             "client_order_id": "mcp-no-1"}
    (res,) = _session_calls(run["cfg_on"], home, [("submit_order", order)])
    pid = _ok(res)["proposal"]["id"]
    _ofi("reject", pid, "--home", str(home), "--reason", "not now")
    seq = max(r["seq"] for r in _records(home, "decisions"))
    # the strategy read the rejection (its decisions consumer passed it) and did nothing
    wait_for(lambda: _strategy_position(home, "decisions") >= seq, 20, "the strategy past it")
    # no intent of it, so nothing the broker could send
    assert not [r for r in _records(home, "intents") if r.get("proposal_id") == pid]
    assert "mcp-no-1" not in _venue_orders(port)
    assert _ofi("approve", pid, "--home", str(home), check=False).returncode != 0
    assert "rejected" in _ofi("proposals", "--home", str(home)).stdout


def _strategy_position(home, topic) -> int:
    try:
        with open(home / "run" / "strategy.json") as f:
            return json.load(f)["positions"].get(topic, 0)
    except (OSError, ValueError, KeyError):
        return 0


def test_bad_arguments_get_one_clear_error(run):
    home = run["home"]
    calls = [
        ("submit_order", {"symbol": "BTCUSDT", "side": "HOLD", "qty": 1}),
        ("submit_order", {"symbol": "BTCUSDT", "side": "BUY", "qty": "lots"}),
        ("submit_order", {"symbol": "BTCUSDT", "side": "BUY"}),
        ("submit_order", {"symbol": "DOGEUSDT", "side": "BUY", "qty": 1}),
        ("submit_order", {"symbol": "BTCUSDT", "side": "BUY", "qty": 1000}),
        ("submit_order", {"symbol": "BTCUSDT", "side": "BUY", "qty": 0.01, "order_type": "LIMIT"}),
        ("submit_order", {"symbol": "BTCUSDT", "side": "BUY", "qty": 0.01, "color": "red"}),
        ("cancel_order", {"client_order_id": "no-such-order"}),
        ("fetch_fills", {"symbol": "BTCUSDT", "from_ms": 10, "to_ms": 5}),
        ("get_signals", {"n": 0}),
        ("get_pnl", {"date": "last tuesday"}),
        ("halt", {"reason": ""}),
    ]
    expected = ["side", "qty", "'qty' is a required property", "not traded here",
                "max_order_notional", "price is required", "unknown argument 'color'",
                "no open order", "to_ms is before from_ms", "n:", "date", "reason"]
    results = _session_calls(run["cfg_on"], home, calls)
    for (tool, _), r, want in zip(calls, results, expected):
        text = _err(r)
        assert text.startswith(f"{tool}: ") and want in text, text
    audit = [r for r in _records(home, "audit") if r["outcome"] == "error"]
    assert len(audit) >= len(calls)


# -- the home once the run ended -----------------------------------------------------------------
def test_read_tools_say_what_the_spools_and_status_say(finished):
    home, cfg = finished["home"], finished["cfg_off"]
    st = _status(home)
    (status, pos, opens, fills, sigs, pnl, report) = [_ok(r) for r in _session_calls(cfg, home, [
        ("get_status", {}), ("get_position", {}), ("get_open_orders", {}),
        ("fetch_fills", {"symbol": "BTCUSDT", "from_ms": 0, "limit": 10000}),
        ("get_signals", {"symbol": "BTCUSDT", "n": 5}), ("get_pnl", {}), ("get_report", {})])]
    # get_status is `ofi status --json` (heartbeat ages move with the clock)
    for s in (st, status):
        for p in s["programs"]:
            p.pop("heartbeat_age_s")
        s["trading"].pop("heartbeat_age_s", None)
    assert status == st
    # the broker's last positions record
    last = [r for r in _records(home, "positions") if r["symbol"] == "BTCUSDT"][-1]
    (p,) = pos["positions"]
    assert (p["seq"], p["qty"], p["entry_price"], p["in_flight"]) == \
        (last["seq"], last["qty"], last["entry_price"], last["in_flight"])
    # orders not terminal, from the orders topic
    final = {}
    for r in _records(home, "orders"):
        final[r["client_order_id"]] = r
    open_cids = {c for c, r in final.items() if r["status"] not in
                 ("FILLED", "CANCELED", "REJECTED", "EXPIRED", "ABANDONED")}
    assert {o["client_order_id"] for o in opens["orders"]} == open_cids
    # every fill, our approved order's included
    spool_fills = [f for f in _records(home, "fills") if f["symbol"] == "BTCUSDT"]
    assert [f["trade_id"] for f in fills["fills"]] == [f["trade_id"] for f in spool_fills]
    assert fills["count"] == len(spool_fills) and "mcp-ok-1" in {
        f["client_order_id"] for f in fills["fills"]}
    # the last 5 signals
    spool_sigs = [r for r in _records(home, "signals") if r["symbol"] == "BTCUSDT"][-5:]
    assert [(s["seq"], s["fusion"], s["mid"]) for s in sigs["signals"]] == \
        [(s["seq"], s.get("fusion"), s.get("mid")) for s in spool_sigs]
    # today's PnL as the report computes it
    from bus import now_ms
    from daemons.report import data, sections
    from daemons.report.period import parse_date

    want = sections.pnl(data.load(home, parse_date(pnl["date"], now_ms())))
    assert {k: v for k, v in pnl.items() if k != "date"} == json.loads(json.dumps(want))
    assert pnl["fills"] == len({f["trade_id"] for f in _records(home, "fills")})
    # the latest report and its summary
    assert report["path"] and report["path"].startswith(str(home / "reports"))
    assert report["period"] == pnl["date"] and "Net PnL" in report["summary"]


def test_streamable_http_on_loopback(finished):
    from mcp import Client

    home, port = finished["home"], free_port()
    proc = subprocess.Popen(OFI + ["mcp", "--config", finished["cfg_off"], "--home", str(home),
                                   "--http", str(port)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _listening(port), 20, "the HTTP server listening")

        async def main():
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=30) as c:
                return await c.list_tools(), await c.call_tool("get_position", {})

        tools, pos = anyio.run(main)
        assert {t.name for t in tools.tools} == READ_TOOLS | WRITE_TOOLS
        assert _ok(pos)["positions"][0]["symbol"] == "BTCUSDT"
        assert _records(home, "audit")[-1]["transport"] == "http"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _listening(port) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def test_every_call_is_audited_and_nothing_secret_leaks(finished):
    home = finished["home"]
    _session_calls(finished["cfg_on"], home, [("halt", {"reason": "end of the test"})])
    assert json.loads((home / "state" / "trading.json").read_text())["state"] == "HALTED"
    audit = _records(home, "audit")
    tools = {r["tool"] for r in audit}
    assert READ_TOOLS - {"get_proposals"} <= tools and WRITE_TOOLS <= tools
    for r in audit:
        assert set(r) >= {"tool", "arguments", "outcome", "ts"}
    assert audit[-1]["tool"] == "halt" and audit[-1]["outcome"] == "ok"
    blobs = SEEN + [json.dumps(r) for t in ("audit", "proposals", "decisions")
                    for r in _records(home, t)]
    for blob in blobs:
        assert KEY not in blob and SECRET not in blob

