"""Partial maker fills: a resting limit order fills only by what the market trades through it."""
import json
import time
from decimal import Decimal

import pytest
from websockets.sync.client import connect

from daemons.tools.exchange import filters
from daemons.tools.exchange.venue import Venue
from exchange_harness import StillFeed, start_exchange, um_client

BTC = filters.spec_for("BTCUSDT")
P = BTC.price_units
Q = BTC.qty_units


def _venue():
    v = Venue({"BTCUSDT": BTC}, StillFeed(), {"k": "s"}, Decimal("10000"))
    events = []
    v.user_sink = lambda key, ev: events.append(ev)
    return v, events


def _print(price, qty, buyer_maker=True):
    return ("trade", "BTCUSDT", {"e": "trade", "s": "BTCUSDT", "p": price, "q": qty,
                                 "m": buyer_maker, "X": "MARKET"})


def _buy(v, cid, price="64980.00", qty="0.050", **kw):
    return v.new_order("k", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                             "timeInForce": "GTC", "quantity": qty, "price": price,
                             "newClientOrderId": cid, **kw}, 1000)


def test_partial_resting_order_fills_by_the_quantity_traded_through_its_price():
    v, events = _venue()
    oid = _buy(v, "maker-1")["orderId"]
    v.on_market([_print("64990.00", "0.500")], 2000)          # above the buy: nothing
    v.on_market([_print("64980.00", "0.500")], 2001)          # at its price: queue unknown
    assert v.query_order("k", {"symbol": "BTCUSDT", "orderId": oid})["executedQty"] == "0.000"
    # a sweep through it: two prints in one batch, then a later one; each fills at most its qty
    v.on_market([_print("64970.00", "0.012"), _print("64960.00", "0.008")], 2002)
    q = v.query_order("k", {"symbol": "BTCUSDT", "orderId": oid})
    assert (q["status"], q["executedQty"], q["avgPrice"]) == ("PARTIALLY_FILLED", "0.020",
                                                              "64980.00000")
    assert [o["orderId"] for o in v.open_orders("k", {"symbol": "BTCUSDT"})] == [oid]
    v.on_market([_print("64975.00", "0.100", buyer_maker=False)], 2003)   # more than is left
    q = v.query_order("k", {"symbol": "BTCUSDT", "orderId": oid})
    assert (q["status"], q["executedQty"], q["cumQuote"]) == ("FILLED", "0.050", "3249.00000")
    assert v.open_orders("k", {"symbol": "BTCUSDT"}) == []
    # one trade per fill event, each a maker fill at the order's price with the maker fee
    trades = v.user_trades("k", {"symbol": "BTCUSDT"})
    assert [t["qty"] for t in trades] == ["0.012", "0.008", "0.030"]
    assert all(t["price"] == "64980.00" and t["maker"] is True for t in trades)
    assert [t["commission"] for t in trades] == ["0.15595200", "0.10396800", "0.38988000"]
    assert [t["time"] for t in trades] == [2002, 2002, 2003]
    ups = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert [(u["x"], u["X"], u["l"], u["z"]) for u in ups] == [
        ("NEW", "NEW", "0.000", "0.000"),
        ("TRADE", "PARTIALLY_FILLED", "0.012", "0.012"),
        ("TRADE", "PARTIALLY_FILLED", "0.008", "0.020"),
        ("TRADE", "FILLED", "0.030", "0.050")]
    assert all(u["m"] is True and u["L"] == "64980.00" and u["N"] == "USDT" for u in ups[1:])
    assert [e["a"]["P"][0]["pa"] for e in events if e["e"] == "ACCOUNT_UPDATE"] == [
        "0.012", "0.020", "0.050"]
    assert v.account("k").balance == Decimal("10000") - Decimal("0.64980000")


def test_partial_one_print_is_shared_in_price_time_priority():
    v, _ = _venue()
    first = _buy(v, "a", price="64980.00", qty="0.010")["orderId"]
    second = _buy(v, "b", price="64980.00", qty="0.010")["orderId"]
    better = _buy(v, "c", price="64985.00", qty="0.010")["orderId"]
    sell = v.new_order("k", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                             "timeInForce": "GTC", "quantity": "0.010", "price": "65020.00",
                             "newClientOrderId": "s"}, 1000)["orderId"]
    v.on_market([_print("64970.00", "0.015")], 2000)
    got = {o: v.query_order("k", {"symbol": "BTCUSDT", "orderId": o})["executedQty"]
           for o in (first, second, better, sell)}
    assert got == {better: "0.010", first: "0.005", second: "0.000", sell: "0.000"}
    v.on_market([_print("65030.00", "0.004")], 2001)         # through the sell only
    assert v.query_order("k", {"symbol": "BTCUSDT", "orderId": sell})["executedQty"] == "0.004"
    assert v.query_order("k", {"symbol": "BTCUSDT", "orderId": second})["executedQty"] == "0.000"


def test_partial_reduce_only_fills_up_to_the_position_then_expires():
    v, events = _venue()
    v.new_order("k", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010"},
                1000)
    oid = v.new_order("k", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                            "timeInForce": "GTC", "quantity": "0.030", "price": "65020.00",
                            "reduceOnly": "true"}, 1000)["orderId"]
    v.on_market([_print("65030.00", "0.004")], 2000)
    assert v.query_order("k", {"symbol": "BTCUSDT", "orderId": oid})["status"] == "PARTIALLY_FILLED"
    v.on_market([_print("65030.00", "0.100")], 2001)
    q = v.query_order("k", {"symbol": "BTCUSDT", "orderId": oid})
    assert (q["status"], q["executedQty"]) == ("EXPIRED", "0.010")
    assert v.account("k").position("BTCUSDT").qty == 0
    last = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"][-1]
    assert (last["x"], last["er"]) == ("EXPIRED", "4")


@pytest.mark.timeout(60)
def test_partial_fills_over_http_from_replayed_trades_and_the_user_stream(procs, home, tmp_path):
    # recorded prints (data.binance.vision trades CSV) through a resting buy at 64980.00
    src = tmp_path / "BTCUSDT-trades-2026-01-01.csv"
    rows = [(1, "64995.00", "0.300"), (2, "64975.00", "0.003"), (3, "64980.00", "1.000"),
            (4, "64970.00", "0.004"), (5, "64990.00", "0.500")]
    src.write_text("id,price,qty,quote_qty,time,is_buyer_maker\n" + "".join(
        f"{i},{p},{q},0,{1767225600000000 + i * 1000},true\n" for i, p, q in rows))
    _, port, _ = start_exchange(procs, home, "--feed", "replay", "--input", str(src),
                                "--speed", "0", "--replay-wait")
    c = um_client(port)
    r = c.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                    price="64980.00", timeInForce="GTC", newClientOrderId="rest-partial")
    assert r["status"] == "NEW"
    lk = c.new_listen_key()["listenKey"]
    got = []
    with connect(f"ws://127.0.0.1:{port}/ws/{lk}") as ws:    # the subscription starts the replay
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(
                e.get("o", {}).get("x") == "TRADE" for e in got) < 2:
            try:
                got.append(json.loads(ws.recv(timeout=1)))
            except TimeoutError:
                pass
    fills = [e["o"] for e in got if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert [(f["l"], f["z"], f["X"], f["m"]) for f in fills] == [
        ("0.003", "0.003", "PARTIALLY_FILLED", True), ("0.004", "0.007", "PARTIALLY_FILLED", True)]
    q = c.query_order(symbol="BTCUSDT", origClientOrderId="rest-partial")
    assert (q["status"], q["executedQty"], q["avgPrice"]) == ("PARTIALLY_FILLED", "0.007",
                                                              "64980.00000")
    assert [o["clientOrderId"] for o in c.get_orders(symbol="BTCUSDT")] == ["rest-partial"]
    trades = c.get_account_trades(symbol="BTCUSDT")
    assert [(t["qty"], t["price"], t["maker"]) for t in trades] == [
        ("0.003", "64980.00", True), ("0.004", "64980.00", True)]
    done = c.cancel_order(symbol="BTCUSDT", orderId=r["orderId"])
    assert (done["status"], done["executedQty"]) == ("CANCELED", "0.007")
    assert c.get_position_risk(symbol="BTCUSDT")[0]["positionAmt"] == "0.007"
