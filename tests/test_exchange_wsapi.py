"""``ofi exchange``'s WebSocket API (/ws-fapi/v1), driven by a raw websocket client that signs
its requests as Binance documents it: HMAC-SHA256 over every parameter but ``signature``,
sorted by name, ``k=v`` joined by ``&``."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests
from websockets.sync.client import connect

from tests.conftest import wait_for
from tests.exchange_harness import KEY, SECRET, start_exchange

SYMBOL = "BTCUSDT"


def _signed(params: dict, key: str = KEY, secret: str = SECRET, ts: int | None = None) -> dict:
    out = dict(params, apiKey=key, timestamp=int(time.time() * 1000) if ts is None else ts)
    payload = "&".join(f"{k}={json.dumps(out[k]) if isinstance(out[k], bool) else out[k]}"
                       for k in sorted(out))
    out["signature"] = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return out


class Client:
    """A raw WebSocket API connection: one request, its answer."""

    def __init__(self, port: int, query: str = ""):
        self._conn = connect(f"ws://127.0.0.1:{port}/ws-fapi/v1{query}", open_timeout=10)
        self.ws = self._conn.__enter__()
        self.n = 0

    def call(self, method: str, params: dict | None = None, timeout: float = 10.0) -> dict:
        self.n += 1
        rid = f"req-{self.n}"
        req = {"id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.ws.send(json.dumps(req))
        while True:
            answer = json.loads(self.ws.recv(timeout=timeout))
            if answer.get("id") == rid:
                return answer

    def close(self) -> None:
        self._conn.__exit__(None, None, None)


def _mark(port: int) -> float:
    r = requests.get(f"http://127.0.0.1:{port}/fapi/v1/premiumIndex", params={"symbol": SYMBOL},
                     timeout=5)
    return float(r.json()["markPrice"])


def _rest_order(port: int, cid: str) -> dict:
    q = f"symbol={SYMBOL}&origClientOrderId={cid}&timestamp={int(time.time() * 1000)}"
    sig = hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
    return requests.get(f"http://127.0.0.1:{port}/fapi/v1/order?{q}&signature={sig}",
                        headers={"X-MBX-APIKEY": KEY}, timeout=5).json()


def _limits(answer: dict) -> dict:
    return {(r["rateLimitType"], r["interval"], r["intervalNum"]): r
            for r in answer.get("rateLimits", [])}


@pytest.mark.timeout(60)
def test_signed_place_status_cancel_share_the_venue_with_rest(procs, tmp_path):
    # Arrange
    _p, port, _ = start_exchange(procs, tmp_path / "ex", "--symbols", SYMBOL)
    client = Client(port)
    price = f"{round(_mark(port) * 0.98, 1):.1f}"    # a BUY that rests
    try:
        # Act
        placed = client.call("order.place", _signed({
            "symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.002", "price": price, "newClientOrderId": "wsapi-1",
            "newOrderRespType": "RESULT"}))
        status = client.call("v1/order.status", _signed({"symbol": SYMBOL,
                                                         "origClientOrderId": "wsapi-1"}))
        via_rest = _rest_order(port, "wsapi-1")
        canceled = client.call("order.cancel", _signed({"symbol": SYMBOL,
                                                        "orderId": placed["result"]["orderId"]}))
        after = client.call("order.status", _signed({"symbol": SYMBOL,
                                                     "origClientOrderId": "wsapi-1"}))
        market = client.call("order.place", _signed({
            "symbol": SYMBOL, "side": "SELL", "type": "MARKET", "quantity": "0.002",
            "reduceOnly": "false", "newOrderRespType": "RESULT", "recvWindow": 5000}))
    finally:
        client.close()
    # Assert
    assert placed["id"] == "req-1" and placed["status"] == 200
    r = placed["result"]
    assert (r["clientOrderId"], r["status"], float(r["price"]), r["origQty"]) == \
        ("wsapi-1", "NEW", float(price), "0.002")
    assert isinstance(r["orderId"], int)
    assert status["status"] == 200 and status["result"]["status"] == "NEW"
    assert via_rest["orderId"] == r["orderId"] and via_rest["status"] == "NEW"
    assert canceled["status"] == 200 and canceled["result"]["status"] == "CANCELED"
    assert after["result"]["status"] == "CANCELED"
    assert market["status"] == 200 and market["result"]["status"] == "FILLED"
    # order.place: the account's order counts and the IP's weight (placing weighs 0)
    lim = _limits(placed)
    assert lim[("ORDERS", "SECOND", 10)]["count"] >= 1
    assert lim[("ORDERS", "MINUTE", 1)]["limit"] == 1200
    assert lim[("REQUEST_WEIGHT", "MINUTE", 1)]["limit"] == 2400
    # order.status / order.cancel: weight only
    assert set(_limits(status)) == {("REQUEST_WEIGHT", "MINUTE", 1)}


def _rest_open_algos(port: int) -> list[dict]:
    q = f"symbol={SYMBOL}&timestamp={int(time.time() * 1000)}"
    sig = hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
    return requests.get(f"http://127.0.0.1:{port}/fapi/v1/openAlgoOrders?{q}&signature={sig}",
                        headers={"X-MBX-APIKEY": KEY}, timeout=5).json()


@pytest.mark.timeout(60)
def test_algo_orders_are_placed_and_canceled_as_over_rest(procs, tmp_path):
    # Arrange: a long position, so that a closePosition stop below the mark has one to close
    _p, port, _ = start_exchange(procs, tmp_path / "ex", "--symbols", SYMBOL)
    client = Client(port)
    trigger = f"{round(_mark(port) * 0.95, 1):.1f}"
    stop = {"algoType": "CONDITIONAL", "symbol": SYMBOL, "side": "SELL", "type": "STOP_MARKET",
            "triggerPrice": trigger, "closePosition": "true", "workingType": "MARK_PRICE",
            "clientAlgoId": "ws-stop-1"}
    try:
        long = client.call("order.place", _signed({
            "symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.002",
            "newOrderRespType": "RESULT"}))
        # Act
        placed = client.call("algoOrder.place", _signed(stop))
        twice = client.call("algoOrder.place", _signed(stop))
        at_once = client.call("algoOrder.place", _signed(dict(
            stop, clientAlgoId="ws-stop-2", triggerPrice=f"{round(_mark(port) * 1.05, 1):.1f}")))
        held = _rest_open_algos(port)
        canceled = client.call("v1/algoOrder.cancel", _signed({"symbol": SYMBOL,
                                                               "clientAlgoId": "ws-stop-1"}))
        again = client.call("algoOrder.cancel", _signed({"symbol": SYMBOL,
                                                         "clientAlgoId": "ws-stop-1"}))
        after = _rest_open_algos(port)
    finally:
        client.close()
    # Assert: the venue holds the stop placed over the websocket, as REST lists it
    assert long["status"] == 200 and long["result"]["status"] == "FILLED"
    assert placed["status"] == 200, placed
    r = placed["result"]
    assert (r["clientAlgoId"], r["algoStatus"], r["orderType"], r["side"]) == \
        ("ws-stop-1", "NEW", "STOP_MARKET", "SELL")
    assert r["closePosition"] is True and float(r["triggerPrice"]) == float(trigger)
    assert [(a["algoId"], a["clientAlgoId"]) for a in held] == [(r["algoId"], "ws-stop-1")]
    # refusals as over REST: the same client algo id while open; a SELL stop above the mark
    assert twice["status"] == 400 and twice["error"]["code"] == -4116
    assert at_once["status"] == 400 and at_once["error"]["code"] == -2021
    assert canceled["status"] == 200
    assert (canceled["result"]["algoId"], canceled["result"]["clientAlgoId"]) == \
        (r["algoId"], "ws-stop-1")
    assert again["status"] == 400 and again["error"]["code"] == -2011
    assert after == []
    # algoOrder.place counts on the order counts, algoOrder.cancel weighs only
    assert _limits(placed)[("ORDERS", "SECOND", 10)]["count"] >= 2
    assert set(_limits(canceled)) == {("REQUEST_WEIGHT", "MINUTE", 1)}


@pytest.mark.timeout(60)
def test_refusals_carry_binance_codes_the_request_id_and_rate_limits(procs, tmp_path):
    # Arrange
    _p, port, _ = start_exchange(procs, tmp_path / "ex", "--symbols", SYMBOL)
    client = Client(port)
    order = {"symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.002"}
    try:
        # Act
        bad_sig = client.call("order.place", _signed(order, secret="not-the-secret"))
        bad_key = client.call("order.place", _signed(order, key="nobody", secret=SECRET))
        unsigned = client.call("order.place", dict(order, apiKey=KEY,
                                                   timestamp=int(time.time() * 1000)))
        stale = client.call("order.place", _signed(order, ts=int(time.time() * 1000) - 60000))
        tampered = _signed(order)
        tampered["quantity"] = "0.003"
        changed = client.call("order.place", tampered)
        unknown = client.call("order.nothing", _signed({}))
        missing = client.call("order.status", _signed({"symbol": SYMBOL,
                                                       "origClientOrderId": "never-placed"}))
        logon = client.call("session.logon", _signed({}))
        session = client.call("session.status")
        quiet = client.call("order.status", _signed({"symbol": SYMBOL, "origClientOrderId": "x",
                                                     "returnRateLimits": False}))
    finally:
        client.close()
    quiet_conn = Client(port, "?returnRateLimits=false")
    try:
        hidden = quiet_conn.call("session.status")
    finally:
        quiet_conn.close()
    # Assert
    assert (bad_sig["status"], bad_sig["error"]["code"]) == (400, -1022)
    assert (bad_key["status"], bad_key["error"]["code"]) == (401, -2015)
    assert (unsigned["status"], unsigned["error"]["code"]) == (400, -1102)
    assert "signature" in unsigned["error"]["msg"]
    assert (stale["status"], stale["error"]["code"]) == (400, -1021)
    assert changed["error"]["code"] == -1022
    assert unknown["status"] == 400 and unknown["error"]["code"] < 0
    assert (missing["status"], missing["error"]["code"]) == (400, -2013)
    # HMAC keys cannot log a session on (Binance: Ed25519 only); the session stays anonymous
    assert logon["error"]["code"] == -1022
    assert session["status"] == 200 and session["result"]["apiKey"] is None
    for answer in (bad_sig, bad_key, unsigned, stale, missing):
        assert answer["id"].startswith("req-")
        assert ("REQUEST_WEIGHT", "MINUTE", 1) in _limits(answer)
    assert "rateLimits" in session
    # returnRateLimits: a request's false hides them (it is a signed parameter like any other)
    # ... and a connection opened with ?returnRateLimits=false hides them by default
    assert quiet["error"]["code"] == -2013 and "rateLimits" not in quiet
    assert "rateLimits" not in hidden and hidden["result"]["returnRateLimits"] is False


@pytest.mark.timeout(60)
def test_weight_is_counted_with_rest_and_over_the_limit_is_429(procs, tmp_path):
    # Arrange: a tiny weight budget; the handshake costs 5, order.status 1
    _p, port, _ = start_exchange(procs, tmp_path / "ex", "--symbols", SYMBOL,
                                 "--faults", "weight_limit=20,ban_after=100")

    def attempt():
        minute = int(time.time() // 60)
        client = Client(port)
        try:
            counts = []
            for _ in range(6):
                a = client.call("order.status", _signed({"symbol": SYMBOL,
                                                         "origClientOrderId": "x"}))
                counts.append(_limits(a)[("REQUEST_WEIGHT", "MINUTE", 1)]["count"])
            rest = requests.get(f"http://127.0.0.1:{port}/fapi/v1/time", timeout=5)
            over = [client.call("order.status", _signed({"symbol": SYMBOL,
                                                         "origClientOrderId": "x"}))
                    for _ in range(10)]
        finally:
            client.close()
        if int(time.time() // 60) != minute:
            return None        # the one-minute window turned over meanwhile: measure again
        return counts, rest, over

    # Act
    got = wait_for(attempt, 40, "a measurement within one weight window", interval=0.5)
    counts, rest, over = got
    # Assert: each order.status weighs 1 on the IP's budget, which REST shares
    assert counts == list(range(counts[0], counts[0] + 6))
    assert int(rest.headers["X-MBX-USED-WEIGHT-1M"]) == counts[-1] + 1
    refused = [a for a in over if a["status"] == 429]
    assert refused, over
    err = refused[0]["error"]
    assert err["code"] == -1003
    assert err["data"]["retryAfter"] > time.time() * 1000


@pytest.mark.timeout(60)
def test_minus_1007_means_executed_or_executed_later(procs, tmp_path):
    # Arrange: every order answered 503/-1007 after it was placed
    _p, port, _ = start_exchange(procs, tmp_path / "a", "--symbols", SYMBOL,
                                 "--faults", "unknown503=1.0")
    client = Client(port)
    try:
        # Act
        placed = client.call("order.place", _signed({
            "symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.002",
            "newClientOrderId": "unknown-1"}))
        status = client.call("order.status", _signed({"symbol": SYMBOL,
                                                     "origClientOrderId": "unknown-1"}))
    finally:
        client.close()
    # Assert: the answer says "unknown"; the order is there
    assert (placed["status"], placed["error"]["code"]) == (503, -1007)
    assert "execution status unknown" in placed["error"]["msg"]
    assert status["status"] == 200 and status["result"]["status"] == "FILLED"

    # Arrange: every new order reaches the matching engine 0.5 s after its -1007 answer
    _p, port, _ = start_exchange(procs, tmp_path / "b", "--symbols", SYMBOL, "--faults",
                                 "late=1.0,late_mode=503,late_min_ms=500,late_max_ms=500")
    client = Client(port)
    try:
        # Act
        placed = client.call("order.place", _signed({
            "symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.002",
            "newClientOrderId": "late-1"}))
        first = client.call("order.status", _signed({"symbol": SYMBOL,
                                                    "origClientOrderId": "late-1"}))
        landed = wait_for(lambda: (lambda a: a if a["status"] == 200 else None)(
            client.call("order.status", _signed({"symbol": SYMBOL,
                                                 "origClientOrderId": "late-1"}))),
            10, "the late order at the venue", interval=0.1)
    finally:
        client.close()
    # Assert: -1007, not there yet, then there: why an ambiguous order is only ever queried
    assert (placed["status"], placed["error"]["code"]) == (503, -1007)
    assert first["error"]["code"] == -2013
    assert landed["result"]["clientOrderId"] == "late-1"
    assert landed["result"]["status"] == "FILLED"


@pytest.mark.timeout(60)
def test_a_timed_out_order_gets_no_answer_and_the_connection_is_cut(procs, tmp_path):
    # Arrange: orders processed, then no answer; the connection closed 1 s later
    _p, port, _ = start_exchange(procs, tmp_path / "ex", "--symbols", SYMBOL,
                                 "--faults", "timeout=1.0,timeout_s=1")
    client = Client(port)
    try:
        # Act
        client.ws.send(json.dumps({"id": 7, "method": "order.place", "params": _signed({
            "symbol": SYMBOL, "side": "BUY", "type": "MARKET", "quantity": "0.002",
            "newClientOrderId": "hang-1"})}))
        t0 = time.monotonic()
        with pytest.raises(Exception) as closed:
            client.ws.recv(timeout=10)
        waited = time.monotonic() - t0
    finally:
        client.close()
    # Assert
    assert "ConnectionClosed" in type(closed.value).__name__ and waited < 10
    assert _rest_order(port, "hang-1")["status"] == "FILLED"
