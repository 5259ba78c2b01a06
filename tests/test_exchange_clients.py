"""The real third-party clients against ``ofi exchange``: binance-futures-connector and ccxt."""
import time

import pytest
import requests

from daemons.tools.exchange import signing
from exchange_harness import (KEY, SECRET, ccxt_client, start_exchange, stop_exchange,
                              um_client)

pytestmark = pytest.mark.timeout(60)


def test_exchange_umfutures_orders_positions_balance_trades_round_trip(procs, home):
    _, port, ready = start_exchange(procs, home)
    assert ready["rest_url"] == f"http://127.0.0.1:{port}"
    c = um_client(port)
    assert abs(c.time()["serverTime"] - time.time() * 1000) < 5000
    info = c.exchange_info()
    assert info["symbols"][0]["symbol"] == "BTCUSDT"
    bt = c.book_ticker("BTCUSDT")
    bid = float(bt["bidPrice"])
    # a resting LIMIT below the market: placed, queried by id and client id, listed, canceled
    price = f"{round(bid * 0.98, 1):.1f}"
    r = c.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010", price=price,
                    timeInForce="GTC", newClientOrderId="um-limit-1")
    assert r["status"] == "NEW" and isinstance(r["orderId"], int) and r["price"] == price + "0"
    q = c.query_order(symbol="BTCUSDT", orderId=r["orderId"])
    assert q["clientOrderId"] == "um-limit-1" and q["origQty"] == "0.010"
    assert c.query_order(symbol="BTCUSDT", origClientOrderId="um-limit-1")["orderId"] == r["orderId"]
    assert [o["orderId"] for o in c.get_orders(symbol="BTCUSDT")] == [r["orderId"]]
    assert c.get_open_orders(symbol="BTCUSDT", orderId=r["orderId"])["status"] == "NEW"
    assert c.cancel_order(symbol="BTCUSDT", orderId=r["orderId"])["status"] == "CANCELED"
    assert c.get_orders(symbol="BTCUSDT") == []
    # a MARKET order fills at once (RESULT) and opens a long position with a taker fee
    m = c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.020",
                    newOrderRespType="RESULT")
    assert m["status"] == "FILLED" and m["executedQty"] == "0.020"
    pos = c.get_position_risk(symbol="BTCUSDT")[0]
    assert pos["positionAmt"] == "0.020" and float(pos["entryPrice"]) == pytest.approx(float(m["avgPrice"]))
    trades = c.get_account_trades(symbol="BTCUSDT")
    assert sum(float(t["qty"]) for t in trades) == pytest.approx(0.02)
    fee = sum(float(t["commission"]) for t in trades)
    assert fee == pytest.approx(float(m["cumQuote"]) * 0.0005, rel=1e-6)
    bal = c.balance()[0]
    assert bal["asset"] == "USDT" and float(bal["balance"]) == pytest.approx(10000 - fee)
    acct = c.account()
    assert float(acct["totalPositionInitialMargin"]) > 0 and acct["positions"][0]["symbol"] == "BTCUSDT"
    # reduce-only close realizes the PnL; leverage and brackets answer like Binance
    assert c.change_leverage(symbol="BTCUSDT", leverage=10)["leverage"] == 10
    close = c.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.020",
                        reduceOnly="true", newOrderRespType="RESULT")
    assert close["status"] == "FILLED"
    assert c.get_position_risk(symbol="BTCUSDT") == []    # v3 lists active positions only
    assert len(c.get_all_orders(symbol="BTCUSDT")) == 3
    assert c.leverage_brackets()[0]["brackets"][0]["initialLeverage"] == 125


def test_exchange_ccxt_orders_positions_balance_trades_round_trip(procs, home):
    _, port, _ = start_exchange(procs, home, "--symbols", "BTCUSDT", "ETHUSDT")
    e = ccxt_client(port)
    e.load_markets()
    assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(e.markets)
    book = e.fetch_order_book("BTC/USDT:USDT")
    bid = book["bids"][0][0]
    o = e.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, round(bid * 0.98, 1))
    assert o["status"] == "open" and o["id"]
    assert e.fetch_order(o["id"], "BTC/USDT:USDT")["status"] == "open"
    assert [x["id"] for x in e.fetch_open_orders("BTC/USDT:USDT")] == [o["id"]]
    assert e.cancel_order(o["id"], "BTC/USDT:USDT")["status"] == "canceled"
    m = e.create_order("ETH/USDT:USDT", "market", "sell", 0.5)
    assert m["status"] == "closed" and m["filled"] == 0.5 and m["average"] > 0
    positions = {p["symbol"]: p for p in e.fetch_positions()}
    assert positions["ETH/USDT:USDT"]["side"] == "short"
    assert positions["ETH/USDT:USDT"]["contracts"] == 0.5
    trades = e.fetch_my_trades("ETH/USDT:USDT")
    assert sum(t["amount"] for t in trades) == pytest.approx(0.5)
    assert all(t["fee"]["currency"] == "USDT" for t in trades)
    bal = e.fetch_balance()
    # ccxt's total is the margin balance (wallet + unrealized PnL, which moves with the market);
    # the wallet balance itself has only paid the fees
    usdt = next(a for a in bal["info"]["assets"] if a["asset"] == "USDT")
    fees = sum(t["fee"]["cost"] for t in trades)
    assert float(usdt["walletBalance"]) == pytest.approx(10000 - fees)
    assert bal["USDT"]["total"] == pytest.approx(10000 - fees + float(usdt["unrealizedProfit"]))


def test_exchange_clients_bad_signature_and_filter_violation_get_binance_errors(procs, home):
    import ccxt
    from binance.error import ClientError

    _, port, _ = start_exchange(procs, home)
    bad = um_client(port, secret="not-the-secret")
    with pytest.raises(ClientError) as exc:
        bad.account()
    assert (exc.value.status_code, exc.value.error_code) == (400, -1022)
    c = um_client(port)
    with pytest.raises(ClientError) as exc:       # tick size 0.10
        c.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                    price="60000.05", timeInForce="GTC")
    assert exc.value.error_code == -4014
    with pytest.raises(ClientError) as exc:       # 0.001 BTC is under the 100 USDT minimum
        c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
    assert exc.value.error_code == -4164
    e = ccxt_client(port)
    e.load_markets()
    e_bad = ccxt_client(port, secret="not-the-secret")
    e_bad.markets, e_bad.markets_by_id = e.markets, e.markets_by_id
    with pytest.raises(ccxt.AuthenticationError):
        e_bad.fetch_balance()
    with pytest.raises(ccxt.InvalidOrder) as exc:   # ccxt sends it; the venue refuses notional
        e.create_order("BTC/USDT:USDT", "limit", "buy", 0.001, 50000)
    assert "-4164" in str(exc.value)


def _signed(port, method, path, params, key=KEY, secret=SECRET):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    q += "&signature=" + signing.sign(secret, q)
    return requests.request(method, f"http://127.0.0.1:{port}{path}?{q}",
                            headers={"X-MBX-APIKEY": key}, timeout=10)


def test_exchange_business_errors_have_binance_codes_and_statuses(procs, home):
    _, port, _ = start_exchange(procs, home, "--balance", "1000")
    now = lambda: int(time.time() * 1000)   # noqa: E731
    r = _signed(port, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 1, "timestamp": now()})
    assert (r.status_code, r.json()["code"]) == (400, -2013)
    r = _signed(port, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 1, "timestamp": now()})
    assert r.json() == {"code": -2011, "msg": "Unknown order sent."}
    r = _signed(port, "GET", "/fapi/v3/account", {"timestamp": now() - 6000})
    assert r.json()["code"] == -1021
    assert _signed(port, "GET", "/fapi/v3/account", {"timestamp": now() - 6000,
                                                     "recvWindow": 10000}).status_code == 200
    r = _signed(port, "GET", "/fapi/v3/account", {"timestamp": now()}, key="unknown-key")
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    assert requests.get(f"http://127.0.0.1:{port}/fapi/v3/account", timeout=5).json()["code"] == -2014
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
             "price": "50000.0", "timeInForce": "GTC", "newClientOrderId": "dup-1"}
    assert _signed(port, "POST", "/fapi/v1/order", {**order, "timestamp": now()}).status_code == 200
    r = _signed(port, "POST", "/fapi/v1/order", {**order, "timestamp": now()})
    assert r.json()["code"] == -4116
    r = _signed(port, "POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                                                 "quantity": "0.010", "reduceOnly": "true",
                                                 "timestamp": now()})
    assert r.json()["code"] == -2022
    # 1000 USDT at 20x carries about 20000 USDT of notional: 1 BTC (~65000) is too much
    r = _signed(port, "POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                 "quantity": "1.000", "timestamp": now()})
    assert (r.status_code, r.json()["code"], r.json()["msg"]) == (400, -2019, "Margin is insufficient.")
    r = _signed(port, "POST", "/fapi/v1/order", {**order, "newClientOrderId": "x", "price": "90000.0",
                                                 "timestamp": now()})
    assert r.json()["code"] == -4016                      # PERCENT_PRICE
    r = _signed(port, "POST", "/fapi/v1/order", {**order, "newClientOrderId": "y", "type": "STOP_MARKET",
                                                 "timestamp": now()})
    assert r.json()["code"] == -4120
    assert "X-MBX-USED-WEIGHT-1M" in r.headers and "X-MBX-ORDER-COUNT-1M" in r.headers


def test_exchange_state_survives_restart(procs, home, tmp_path):
    state = str(tmp_path / "state")
    p, port, _ = start_exchange(procs, home, "--state", state)
    c = um_client(port)
    c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    bid = float(c.book_ticker("BTCUSDT")["bidPrice"])
    rest = c.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                       price=f"{round(bid * 0.97, 1):.1f}", timeInForce="GTC", newClientOrderId="keep-me")
    before = (c.get_position_risk(symbol="BTCUSDT")[0]["positionAmt"],
              c.balance()[0]["balance"], c.get_account_trades(symbol="BTCUSDT"))
    assert stop_exchange(p) == 0
    _, port2, _ = start_exchange(procs, home, "--state", state)
    c2 = um_client(port2)
    after = (c2.get_position_risk(symbol="BTCUSDT")[0]["positionAmt"],
             c2.balance()[0]["balance"], c2.get_account_trades(symbol="BTCUSDT"))
    assert after == before
    assert [o["clientOrderId"] for o in c2.get_orders(symbol="BTCUSDT")] == ["keep-me"]
    new = c2.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010")
    assert new["orderId"] > rest["orderId"]               # ids keep counting


def test_exchange_rate_limit_429_then_418_ban_with_retry_after(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", "weight_limit=6,ban_after=1,ban_s=3")
    url = f"http://127.0.0.1:{port}/fapi/v1/ping"
    statuses, used = [], []
    for _ in range(9):
        r = requests.get(url, timeout=5)
        statuses.append(r.status_code)
        used.append(r.headers.get("X-MBX-USED-WEIGHT-1M"))
        if r.status_code in (418, 429):
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["code"] == -1003
    assert statuses[:6] == [200] * 6 and statuses[6] == 429 and statuses[7:] == [418, 418]
    assert used[:3] == ["1", "2", "3"]


def _outcomes(port, n=40):
    out = []
    for i in range(n):
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
                  "price": "50000.0", "timeInForce": "GTC", "newClientOrderId": f"f-{i}",
                  "timestamp": int(time.time() * 1000)}
        r = _signed(port, "POST", "/fapi/v1/order", params)
        out.append((r.status_code, r.json().get("code")))
    return out


def test_exchange_faults_reproducible_by_seed_and_unknown_status_orders_exist(procs, home):
    spec = "http5xx=0.15,r429=0.1,unknown503=0.25,seed=11,weight_limit=100000"
    p1, port1, _ = start_exchange(procs, home, "--faults", spec)
    first = _outcomes(port1)
    stop_exchange(p1)
    _, port2, _ = start_exchange(procs, home, "--faults", spec)
    second = _outcomes(port2)
    assert first == second
    kinds = {s for s, _ in first}
    assert {200, 429, 503} <= kinds and kinds & {500, 502}
    unknown = [i for i, (s, code) in enumerate(second) if s == 503 and code == -1007]
    assert unknown
    # the 503 -1007 answers were sent AFTER the order was placed: it exists
    r = _query_through_faults(port2, f"f-{unknown[0]}")
    assert r.status_code == 200 and r.json()["status"] == "NEW"
    # plain 5xx/429 answers came BEFORE processing: no order
    failed = [i for i, (s, code) in enumerate(second) if s in (429, 500, 502) or code == -1008]
    assert _query_through_faults(port2, f"f-{failed[0]}").json()["code"] == -2013


def _query_through_faults(port, client_id):
    """GET /fapi/v1/order, retried while the injected 429/5xx answer instead."""
    for _ in range(50):
        r = _signed(port, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT",
                                                    "origClientOrderId": client_id,
                                                    "timestamp": int(time.time() * 1000)})
        if r.status_code not in (429, 500, 502, 503):
            return r
    raise AssertionError("every query met a fault")


def test_exchange_timeout_fault_places_order_then_stalls(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", "timeout=1,timeout_s=2")
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
              "price": "50000.0", "timeInForce": "GTC", "newClientOrderId": "stalled",
              "timestamp": int(time.time() * 1000)}
    with pytest.raises(requests.exceptions.ReadTimeout):
        _signed_timeout(port, params, 0.5)
    r = _signed(port, "GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT",
                                                     "timestamp": int(time.time() * 1000)})
    assert [o["clientOrderId"] for o in r.json()] == ["stalled"]
    # after timeout_s the venue closes the connection without an answer
    with pytest.raises(requests.exceptions.ConnectionError):
        _signed_timeout(port, dict(params, newClientOrderId="stalled-2",
                                   timestamp=int(time.time() * 1000)), 5)


def _signed_timeout(port, params, timeout):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    q += "&signature=" + signing.sign(SECRET, q)
    return requests.post(f"http://127.0.0.1:{port}/fapi/v1/order?{q}",
                         headers={"X-MBX-APIKEY": KEY}, timeout=timeout)


def test_exchange_cli_bad_fault_spec_one_line_exit_2(home):
    import subprocess
    from conftest import OFI
    r = subprocess.run(OFI + ["exchange", "--faults", "bogus=1", "--home", str(home)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown fault 'bogus'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(OFI + ["exchange", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "unknown503=P" in r.stdout and "ws_drop" in r.stdout
    assert "late=P" in r.stdout and "late_mode=M" in r.stdout and "late_max_ms=MS" in r.stdout


def test_exchange_cli_symbols_and_input_take_several_values():
    from daemons.tools.exchange import _spread
    greedy = ("--symbols", "--input")
    assert _spread(["--symbols", "a", "b", "--port", "1", "--input=x", "y", "--replay-wait"],
                   greedy) == ["--symbols", "a", "--symbols", "b", "--input", "x", "--input", "y",
                               "--port", "1", "--replay-wait"]
    # a later occurrence replaces an earlier one, as before
    assert _spread(["--symbols", "a", "--symbols", "c"], greedy) == ["--symbols", "c"]
