"""Algo (conditional) orders on ``ofi exchange``: POST/GET/DELETE /fapi/v1/algoOrder,
openAlgoOrders, algoOpenOrders, the trigger on the mark or the last trade price, the order it
places, the ALGO_UPDATE / ORDER_TRADE_UPDATE events, -4120 on /fapi/v1/order, and --state."""
import json
import time

import pytest
import requests
from websockets.sync.client import connect

from daemons.tools.exchange import signing
from exchange_harness import KEY, SECRET, ccxt_client, start_exchange, stop_exchange, wait_for

pytestmark = pytest.mark.timeout(90)

PUSHER = ("pusher-key", "pusher-secret")     # a second trader whose market orders move the price
FLAGS = ("--balance", "1000000", "--extra-key", f"{PUSHER[0]}:{PUSHER[1]}")


def _px(x):
    """A price on BTCUSDT's 0.1 tick, as the venue prints it (two decimals)."""
    return f"{round(x, 1):.2f}"


def _signed(port, method, path, params, key=KEY, secret=SECRET):
    q = "&".join(f"{k}={v}" for k, v in {**params, "timestamp": int(time.time() * 1000)}.items())
    q += "&signature=" + signing.sign(secret, q)
    return requests.request(method, f"http://127.0.0.1:{port}{path}?{q}",
                            headers={"X-MBX-APIKEY": key}, timeout=10)


def _ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def _market(port, side, qty, key=KEY, secret=SECRET):
    return _ok(_signed(port, "POST", "/fapi/v1/order",
                       {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": qty,
                        "newOrderRespType": "RESULT"}, key, secret))


def _algo(port, **kw):
    return _signed(port, "POST", "/fapi/v1/algoOrder",
                   {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", **kw})


def _position(port, key=KEY, secret=SECRET):
    rows = _ok(_signed(port, "GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"}, key, secret))
    return rows[0]["positionAmt"]


def _push_down(port, usd):
    """The second trader sells enough to take the bids within ``usd`` of the best one."""
    book = requests.get(f"http://127.0.0.1:{port}/fapi/v1/depth",
                        params={"symbol": "BTCUSDT", "limit": 1000}, timeout=5).json()
    top = float(book["bids"][0][0])
    qty = sum(float(q) for p, q in book["bids"] if float(p) >= top - usd) + 0.5
    return _market(port, "SELL", f"{qty:.3f}", *PUSHER)


def _top(port):
    t = requests.get(f"http://127.0.0.1:{port}/fapi/v1/ticker/bookTicker",
                     params={"symbol": "BTCUSDT"}, timeout=5).json()
    return float(t["bidPrice"]), float(t["askPrice"])


def _events(ws, until, timeout=10.0):
    out, deadline = [], time.monotonic() + timeout
    while not until(out):
        out.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
    return out


def test_protective_stop_market_close_position_on_mark_closes_the_long(procs, home):
    _, port, _ = start_exchange(procs, home, *FLAGS)
    lk = _ok(requests.post(f"http://127.0.0.1:{port}/fapi/v1/listenKey",
                           headers={"X-MBX-APIKEY": KEY}, timeout=5))["listenKey"]
    with connect(f"ws://127.0.0.1:{port}/private/ws?listenKey={lk}") as ws:
        entry = _market(port, "BUY", "0.050")
        assert _position(port) == "0.050"
        bid, ask = _top(port)
        trigger = _px(bid - 0.8)
        placed = _ok(_algo(port, side="SELL", type="STOP_MARKET", triggerPrice=trigger,
                           closePosition="true", workingType="MARK_PRICE",
                           clientAlgoId="protect-1"))
        assert placed["clientAlgoId"] == "protect-1" and placed["algoStatus"] == "NEW"
        assert placed["algoType"] == "CONDITIONAL" and placed["orderType"] == "STOP_MARKET"
        assert placed["triggerPrice"] == trigger and placed["closePosition"] is True
        assert placed["workingType"] == "MARK_PRICE" and placed["quantity"] == "0.000"
        assert isinstance(placed["algoId"], int) and placed["triggerTime"] == 0
        assert {"activatePrice", "callbackRate", "createTime", "updateTime", "priceProtect",
                "reduceOnly", "positionSide", "timeInForce", "goodTillDate"} <= set(placed)
        listed = _ok(_signed(port, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"}))
        assert [(a["algoId"], a["actualOrderId"]) for a in listed] == [(placed["algoId"], "")]
        # not an order of the matching engine until it triggers
        assert _ok(_signed(port, "GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})) == []
        _push_down(port, 3.0)                   # the market falls through the trigger
        done = wait_for(lambda: (lambda a: a["algoStatus"] == "FINISHED" and a)(
            _ok(_signed(port, "GET", "/fapi/v1/algoOrder", {"clientAlgoId": "protect-1"}))),
            timeout=10)
        assert _position(port) == "0.000"
        order_id = int(done["actualOrderId"])
        assert float(done["actualPrice"]) < float(entry["avgPrice"])
        assert done["triggerTime"] > 0
        assert _ok(_signed(port, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})) == []
        order = _ok(_signed(port, "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": order_id}))
        assert (order["type"], order["origType"], order["status"], order["side"]) == \
            ("MARKET", "STOP_MARKET", "FILLED", "SELL")
        assert order["clientOrderId"] == "protect-1" and order["executedQty"] == "0.050"
        assert order["reduceOnly"] is True and order["closePosition"] is True
        assert order["stopPrice"] == trigger and order["workingType"] == "MARK_PRICE"
        trades = _ok(_signed(port, "GET", "/fapi/v1/userTrades",
                             {"symbol": "BTCUSDT", "orderId": order_id}))
        assert sum(float(t["realizedPnl"]) for t in trades) < 0      # a stop-loss: a loss
        events = _events(ws, lambda ev: any(e["e"] == "ALGO_UPDATE" and e["o"]["X"] == "FINISHED"
                                            for e in ev))
    algo = [e["o"] for e in events if e["e"] == "ALGO_UPDATE"]
    assert [a["X"] for a in algo] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    assert {a["caid"] for a in algo} == {"protect-1"} and {a["aid"] for a in algo} == {placed["algoId"]}
    assert algo[0]["ai"] == "" and algo[2]["ai"] == algo[3]["ai"] == str(order_id)
    assert algo[3]["aq"] == "0.050" and algo[3]["act"] == "MARKET" and algo[3]["cp"] is True
    assert algo[1]["tt"] > 0 and algo[0]["wt"] == "MARK_PRICE" and algo[0]["tp"] == trigger
    for a in algo:
        assert {"caid", "aid", "at", "o", "s", "S", "ps", "f", "q", "X", "ai", "ap", "aq", "act",
                "tp", "p", "V", "wt", "pm", "cp", "pP", "R", "tt", "gtd"} <= set(a)
    ups = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["i"] == order_id]
    assert [(u["x"], u["X"]) for u in ups][0] == ("NEW", "NEW")
    assert ups[-1]["X"] == "FILLED" and ups[-1]["z"] == "0.050"
    assert all(u["ot"] == "STOP_MARKET" and u["cp"] is True and u["R"] is True for u in ups)
    kinds = [(e["e"], e["o"].get("X")) for e in events if e["e"] in ("ALGO_UPDATE", "ORDER_TRADE_UPDATE")
             and (e["e"] == "ALGO_UPDATE" or e["o"]["i"] == order_id)]
    assert kinds.index(("ALGO_UPDATE", "TRIGGERED")) < kinds.index(("ORDER_TRADE_UPDATE", "NEW"))
    assert kinds[-1] == ("ALGO_UPDATE", "FINISHED")
    pos_events = [e for e in events if e["e"] == "ACCOUNT_UPDATE"]
    assert pos_events[-1]["a"]["P"][0]["pa"] == "0.000"


def test_stop_limit_on_last_trade_price_places_a_limit_order(procs, home):
    _, port, _ = start_exchange(procs, home, *FLAGS)
    _market(port, "BUY", "0.020")
    bid, _ = _top(port)
    trigger, limit = _px(bid - 0.8), _px(bid - 40)
    placed = _ok(_algo(port, side="SELL", type="STOP", triggerPrice=trigger, price=limit,
                       quantity="0.020", reduceOnly="true", timeInForce="GTC"))
    assert placed["workingType"] == "CONTRACT_PRICE"              # Binance's default
    assert len(placed["clientAlgoId"]) == 22 and placed["price"] == limit
    _push_down(port, 3.0)
    done = wait_for(lambda: (lambda a: a["algoStatus"] == "FINISHED" and a)(
        _ok(_signed(port, "GET", "/fapi/v1/algoOrder", {"algoId": placed["algoId"]}))), timeout=10)
    order = _ok(_signed(port, "GET", "/fapi/v1/order",
                        {"symbol": "BTCUSDT", "orderId": done["actualOrderId"]}))
    assert (order["type"], order["origType"], order["price"], order["status"]) == \
        ("LIMIT", "STOP", limit, "FILLED")
    assert _position(port) == "0.000"
    everything = _ok(_signed(port, "GET", "/fapi/v1/allAlgoOrders", {"symbol": "BTCUSDT"}))
    assert [a["algoStatus"] for a in everything] == ["FINISHED"]


def test_algo_order_refusals_cancel_and_the_old_endpoint(procs, home):
    _, port, _ = start_exchange(procs, home, *FLAGS)
    bid, ask = _top(port)
    # conditional types on the old endpoint: -4120
    r = _signed(port, "POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "SELL",
                                                 "type": "STOP_MARKET", "stopPrice": _px(bid - 50),
                                                 "closePosition": "true"})
    assert (r.status_code, r.json()) == (400, {"code": -4120, "msg": "Order type not supported for "
                                               "this endpoint. Please use the Algo Order API "
                                               "endpoints instead."})
    below, above = _px(bid - 50), _px(ask + 50)
    cases = [
        (dict(side="SELL", type="STOP_MARKET", triggerPrice=above, closePosition="true"), -2021),
        (dict(side="BUY", type="TAKE_PROFIT_MARKET", triggerPrice=above, quantity="0.010"), -2021),
        (dict(side="SELL", type="STOP_MARKET", triggerPrice=below, closePosition="true",
              quantity="0.010"), -4137),
        (dict(side="SELL", type="STOP_MARKET", triggerPrice=below, closePosition="true",
              reduceOnly="true"), -1106),
        (dict(side="SELL", type="STOP", triggerPrice=below, quantity="0.010"), -1102),
        (dict(side="SELL", type="STOP_MARKET", quantity="0.010"), -1102),
        (dict(side="SELL", type="TRAILING_STOP_MARKET", quantity="0.010", callbackRate="1"), -1116),
        (dict(side="SELL", type="STOP_MARKET", triggerPrice=below[:-1] + "5", quantity="0.010"), -4014),
        (dict(side="SELL", type="STOP_MARKET", triggerPrice=below, quantity="0.010",
              workingType="INDEX"), -1130),
        (dict(side="SELL", type="STOP_MARKET", triggerPrice=below, quantity="0.010",
              positionSide="LONG"), -4061),
    ]
    for params, code in cases:
        r = _algo(port, **params)
        assert (r.status_code, r.json()["code"]) == (400, code), (params, r.text)
    assert _signed(port, "POST", "/fapi/v1/algoOrder",
                   {"algoType": "VP", "symbol": "BTCUSDT", "side": "BUY", "type": "STOP_MARKET",
                    "triggerPrice": above, "quantity": "0.010"}).json()["code"] == -1130
    # a take-profit above the market, canceled by its client id
    tp = _ok(_algo(port, side="SELL", type="TAKE_PROFIT_MARKET", triggerPrice=above,
                   quantity="0.010", reduceOnly="true", clientAlgoId="tp-1"))
    assert _algo(port, side="SELL", type="TAKE_PROFIT_MARKET", triggerPrice=above,
                 quantity="0.010", clientAlgoId="tp-1").json()["code"] == -4116
    c = _ok(_signed(port, "DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "tp-1"}))
    assert c == {"algoId": tp["algoId"], "clientAlgoId": "tp-1", "code": "200", "msg": "success"}
    again = _signed(port, "DELETE", "/fapi/v1/algoOrder", {"algoId": tp["algoId"]})
    assert again.json()["code"] == -2011
    assert _ok(_signed(port, "GET", "/fapi/v1/algoOrder",
                       {"algoId": tp["algoId"]}))["algoStatus"] == "CANCELED"
    assert _signed(port, "GET", "/fapi/v1/algoOrder", {"algoId": 1}).json()["code"] == -2013
    assert _signed(port, "GET", "/fapi/v1/algoOrder", {}).json()["code"] == -1102
    # cancel all of a symbol
    for i in range(3):
        _ok(_algo(port, side="BUY", type="STOP_MARKET", triggerPrice=_px(ask + 100 + i),
                  quantity="0.010"))
    assert len(_ok(_signed(port, "GET", "/fapi/v1/openAlgoOrders", {}))) == 3
    assert _ok(_signed(port, "DELETE", "/fapi/v1/algoOpenOrders", {"symbol": "BTCUSDT"})) == \
        {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert _ok(_signed(port, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})) == []


def test_close_position_with_nothing_to_close_is_rejected_at_trigger(procs, home):
    _, port, _ = start_exchange(procs, home, *FLAGS)
    bid, _ = _top(port)
    a = _ok(_algo(port, side="SELL", type="STOP_MARKET", triggerPrice=_px(bid - 0.8),
                  closePosition="true", workingType="MARK_PRICE"))
    _push_down(port, 3.0)
    got = wait_for(lambda: (lambda x: x["algoStatus"] != "NEW" and x)(
        _ok(_signed(port, "GET", "/fapi/v1/algoOrder", {"algoId": a["algoId"]}))), timeout=10)
    assert got["algoStatus"] == "REJECTED" and got["actualOrderId"] == ""
    assert _position(port) == "0.000"


def test_open_algo_orders_survive_a_restart_with_state(procs, home, tmp_path):
    state = str(tmp_path / "state")
    p, port, _ = start_exchange(procs, home, "--state", state)
    _, ask = _top(port)
    a = _ok(_algo(port, side="BUY", type="STOP_MARKET", triggerPrice=_px(ask + 500),
                  quantity="0.010", clientAlgoId="kept"))
    b = _ok(_algo(port, side="BUY", type="STOP_MARKET", triggerPrice=_px(ask + 600),
                  quantity="0.010", clientAlgoId="gone"))
    _ok(_signed(port, "DELETE", "/fapi/v1/algoOrder", {"algoId": b["algoId"]}))
    assert stop_exchange(p) == 0
    _, port, _ = start_exchange(procs, home, "--state", state)
    listed = _ok(_signed(port, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"}))
    assert [(x["algoId"], x["clientAlgoId"]) for x in listed] == [(a["algoId"], "kept")]
    assert _ok(_signed(port, "GET", "/fapi/v1/algoOrder",
                       {"clientAlgoId": "gone"}))["algoStatus"] == "CANCELED"
    c = _ok(_algo(port, side="BUY", type="STOP_MARKET", triggerPrice=_px(ask + 700),
                  quantity="0.010"))
    assert c["algoId"] > b["algoId"]


def test_ccxt_stop_loss_goes_to_the_algo_order_api(procs, home):
    _, port, _ = start_exchange(procs, home)
    e = ccxt_client(port)
    e.load_markets()
    e.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
    bid = e.fetch_order_book("BTC/USDT:USDT")["bids"][0][0]
    o = e.create_order("BTC/USDT:USDT", "market", "sell", 0.01,
                       params={"stopLossPrice": round(bid - 100, 1), "reduceOnly": True,
                               "clientOrderId": "ccxt-sl-1"})
    assert o["id"] and o["clientOrderId"] == "ccxt-sl-1" and o["status"] == "open"
    assert o["triggerPrice"] == pytest.approx(round(bid - 100, 1))
    assert o["info"]["orderType"] == "STOP_MARKET"
    opened = e.fetch_open_orders("BTC/USDT:USDT", params={"trigger": True})
    assert [x["id"] for x in opened] == [o["id"]]
    assert e.fetch_order(o["id"], "BTC/USDT:USDT", params={"trigger": True})["status"] == "open"
    e.cancel_order(o["id"], "BTC/USDT:USDT", params={"trigger": True})
    assert e.fetch_open_orders("BTC/USDT:USDT", params={"trigger": True}) == []
