"""The dead-man switch of ``ofi exchange``: POST /fapi/v1/countdownCancelAll cancels the open
orders of a symbol once a countdown runs out unrefreshed; refreshing or 0 keeps them."""
import json
import time

import pytest
import requests
from websockets.sync.client import connect

from daemons.tools.exchange import signing
from exchange_harness import KEY, SECRET, start_exchange, um_client, wait_for

pytestmark = pytest.mark.timeout(60)


def _signed(port, method, path, params):
    q = "&".join(f"{k}={v}" for k, v in {**params, "timestamp": int(time.time() * 1000)}.items())
    q += "&signature=" + signing.sign(SECRET, q)
    return requests.request(method, f"http://127.0.0.1:{port}{path}?{q}",
                            headers={"X-MBX-APIKEY": KEY}, timeout=10)


def _rest_orders(port, c, n=2):
    bid = float(c.book_ticker("BTCUSDT")["bidPrice"])
    return [c.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                        price=f"{round(bid * 0.98 - i, 1):.1f}", timeInForce="GTC",
                        newClientOrderId=f"rest-{i}")["orderId"] for i in range(n)]


def _open(c):
    return sorted(o["orderId"] for o in c.get_orders(symbol="BTCUSDT"))


def test_countdown_cancels_after_expiry_and_not_while_refreshed(procs, home):
    _, port, _ = start_exchange(procs, home, "--symbols", "BTCUSDT", "ETHUSDT")
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    ids = _rest_orders(port, c)
    eth_bid = float(c.book_ticker("ETHUSDT")["bidPrice"])
    eth = c.new_order(symbol="ETHUSDT", side="BUY", type="LIMIT", quantity="0.100",
                      price=f"{round(eth_bid * 0.98, 2):.2f}", timeInForce="GTC")["orderId"]
    ask = float(c.book_ticker("BTCUSDT")["askPrice"])
    stop = _signed(port, "POST", "/fapi/v1/algoOrder",
                   {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "BUY",
                    "type": "STOP_MARKET", "triggerPrice": f"{ask + 500:.1f}",
                    "quantity": "0.010"}).json()
    with connect(f"ws://127.0.0.1:{port}/ws/{lk}") as ws:
        # the third-party client's call; Binance answers countdownTime as a string
        assert c.countdown_cancel_order(symbol="BTCUSDT", countdownTime=600) == \
            {"symbol": "BTCUSDT", "countdownTime": "600"}
        for _ in range(8):                        # refreshed every 200 ms for 1.6 s: kept
            time.sleep(0.2)
            c.countdown_cancel_order(symbol="BTCUSDT", countdownTime=600)
        assert _open(c) == sorted(ids)
        t0 = time.monotonic()
        wait_for(lambda: _open(c) == [], timeout=5, interval=0.02)
        assert 0.3 < time.monotonic() - t0 < 2.0
        events = []
        while sum(1 for e in events if e.get("e") == "ORDER_TRADE_UPDATE") < 2:
            events.append(json.loads(ws.recv(timeout=5)))
    canceled = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert sorted(o["i"] for o in canceled) == sorted(ids)
    assert {(o["x"], o["X"]) for o in canceled} == {("CANCELED", "CANCELED")}
    for oid in ids:
        assert c.query_order(symbol="BTCUSDT", orderId=oid)["status"] == "CANCELED"
    # other symbols and the algo orders are left alone
    assert [o["orderId"] for o in c.get_orders(symbol="ETHUSDT")] == [eth]
    algo = _signed(port, "GET", "/fapi/v1/algoOrder", {"algoId": stop["algoId"]}).json()
    assert algo["algoStatus"] == "NEW"
    # the countdown is gone once it fired: new orders stay
    again = _rest_orders(port, c, 1)
    time.sleep(0.8)
    assert _open(c) == again


def test_countdown_zero_stops_the_timer(procs, home):
    _, port, _ = start_exchange(procs, home)
    c = um_client(port)
    ids = _rest_orders(port, c)
    assert _signed(port, "POST", "/fapi/v1/countdownCancelAll",
                   {"symbol": "BTCUSDT", "countdownTime": 400}).json()["countdownTime"] == "400"
    assert _signed(port, "POST", "/fapi/v1/countdownCancelAll",
                   {"symbol": "BTCUSDT", "countdownTime": 0}).json() == \
        {"symbol": "BTCUSDT", "countdownTime": "0"}
    time.sleep(1.0)
    assert _open(c) == sorted(ids)
    bad = _signed(port, "POST", "/fapi/v1/countdownCancelAll", {"symbol": "BTCUSDT"})
    assert (bad.status_code, bad.json()["code"]) == (400, -1102)
    bad = _signed(port, "POST", "/fapi/v1/countdownCancelAll",
                  {"symbol": "NOPEUSDT", "countdownTime": 1000})
    assert bad.json()["code"] == -1121
