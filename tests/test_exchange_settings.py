"""Account settings on ``ofi exchange``: POST /fapi/v1/leverage, /fapi/v1/marginType and
GET/POST /fapi/v1/positionSide/dual, through binance-futures-connector and ccxt."""
import json

import pytest
from binance.error import ClientError
from websockets.sync.client import connect

from exchange_harness import ccxt_client, start_exchange, um_client

pytestmark = pytest.mark.timeout(60)


def _code(call, *a, **kw):
    with pytest.raises(ClientError) as exc:
        call(*a, **kw)
    return exc.value.status_code, exc.value.error_code


def test_leverage_margin_type_and_position_mode(procs, home):
    _, port, _ = start_exchange(procs, home)
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    with connect(f"ws://127.0.0.1:{port}/ws/{lk}") as ws:
        assert c.change_leverage(symbol="BTCUSDT", leverage=7)["leverage"] == 7
        ev = json.loads(ws.recv(timeout=5))
    assert ev["e"] == "ACCOUNT_CONFIG_UPDATE" and ev["ac"] == {"s": "BTCUSDT", "l": 7}
    assert c.get_position_risk(symbol="BTCUSDT") == []
    assert _code(c.change_leverage, symbol="BTCUSDT", leverage=200) == (400, -4028)
    # margin type: changed once, -4046 when unchanged, reported by positionRisk and account
    assert c.change_margin_type(symbol="BTCUSDT", marginType="ISOLATED") == \
        {"code": 200, "msg": "success"}
    assert _code(c.change_margin_type, symbol="BTCUSDT", marginType="ISOLATED") == (400, -4046)
    assert _code(c.change_margin_type, symbol="BTCUSDT", marginType="HALF") == (400, -1130)
    v2 = c.sign_request("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})[0]
    assert v2["marginType"] == "isolated" and v2["leverage"] == "7"
    assert c.sign_request("GET", "/fapi/v2/account", {})["positions"][0]["isolated"] is True
    assert c.change_margin_type(symbol="BTCUSDT", marginType="CROSSED")["code"] == 200
    assert _code(c.change_margin_type, symbol="BTCUSDT", marginType="CROSSED") == (400, -4046)
    bid = float(c.book_ticker("BTCUSDT")["bidPrice"])
    rest = c.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                       price=f"{round(bid * 0.98, 1):.1f}", timeInForce="GTC")
    assert _code(c.change_margin_type, symbol="BTCUSDT", marginType="ISOLATED") == (400, -4047)
    assert _code(c.change_position_mode, dualSidePosition="true") == (400, -4067)
    c.cancel_order(symbol="BTCUSDT", orderId=rest["orderId"])
    c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert _code(c.change_margin_type, symbol="BTCUSDT", marginType="ISOLATED") == (400, -4048)
    assert _code(c.change_position_mode, dualSidePosition="true") == (400, -4068)
    # one-way mode: LONG/SHORT refused
    assert _code(c.new_order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010",
                 positionSide="LONG") == (400, -4061)
    c.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010", reduceOnly="true")
    # the hedge-mode flag: stored and answered; hedge positions are not simulated, so orders
    # are refused while it is on
    assert c.get_position_mode() == {"dualSidePosition": False}
    assert _code(c.change_position_mode, dualSidePosition="false") == (400, -4059)
    assert c.change_position_mode(dualSidePosition="true") == {"code": 200, "msg": "success"}
    assert c.get_position_mode() == {"dualSidePosition": True}
    assert _code(c.change_position_mode, dualSidePosition="true") == (400, -4059)
    for side in ("LONG", "BOTH"):
        assert _code(c.new_order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                     positionSide=side) == (400, -4061)
    assert c.change_position_mode(dualSidePosition="false")["code"] == 200
    assert c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                       newOrderRespType="RESULT")["status"] == "FILLED"


def test_settings_survive_a_restart_and_ccxt_calls(procs, home, tmp_path):
    from exchange_harness import stop_exchange
    state = str(tmp_path / "state")
    p, port, _ = start_exchange(procs, home, "--state", state)
    e = ccxt_client(port)
    e.load_markets()
    e.set_leverage(5, "BTC/USDT:USDT")
    e.set_margin_mode("isolated", "BTC/USDT:USDT")
    e.set_position_mode(True)
    assert e.fetch_position_mode()["hedged"] is True
    assert stop_exchange(p) == 0
    _, port, _ = start_exchange(procs, home, "--state", state)
    c = um_client(port)
    assert c.get_position_mode() == {"dualSidePosition": True}
    v2 = c.sign_request("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})[0]
    assert (v2["marginType"], v2["leverage"]) == ("isolated", "5")
