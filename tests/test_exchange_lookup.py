"""Lookups by client id on the local venue: the open order (or algo order) with that id, else the
latest one, also after a restart from ``--state``, and without scanning the account's history."""
from decimal import Decimal

import pytest

from daemons.tools.exchange import errors, filters
from daemons.tools.exchange.state import StateStore
from daemons.tools.exchange.venue import Venue
from exchange_harness import StillFeed

BTC = filters.spec_for("BTCUSDT")


def _venue(state_dir=None):
    v = Venue({"BTCUSDT": BTC}, StillFeed(), {"k": "s", "other": "s2"}, Decimal("100000"),
              store=StateStore(state_dir) if state_dir else None)
    v.user_sink = lambda key, ev: None
    return v


def _rest(v, cid, price, key="k"):
    return v.new_order(key, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                             "timeInForce": "GTC", "quantity": "0.010", "price": price,
                             "newClientOrderId": cid}, 1000)["orderId"]


def _stop(v, cid, trigger="60000.00", key="k"):
    return v.new_algo_order(key, {"algoType": "CONDITIONAL", "symbol": "BTCUSDT",
                                  "side": "SELL", "type": "STOP_MARKET", "quantity": "0.010",
                                  "triggerPrice": trigger, "clientAlgoId": cid}, 1000)["algoId"]


def _by_cid(v, cid, key="k"):
    return v.query_order(key, {"symbol": "BTCUSDT", "origClientOrderId": cid})


def test_an_order_id_reused_after_a_cancel_finds_the_open_one_else_the_latest(tmp_path):
    v = _venue(str(tmp_path))
    first = _rest(v, "same", "64000.00")
    v.cancel_order("k", {"symbol": "BTCUSDT", "orderId": first}, 1001)
    second = _rest(v, "same", "63000.00")
    assert _by_cid(v, "same")["orderId"] == second            # open
    v.cancel_order("k", {"symbol": "BTCUSDT", "origClientOrderId": "same"}, 1002)
    assert _by_cid(v, "same")["orderId"] == second            # latest of two closed
    assert _by_cid(v, "same")["status"] == "CANCELED"
    with pytest.raises(errors.ApiError):                      # another account's id is not ours
        _by_cid(v, "same", key="other")
    v.store.close()

    again = _venue(str(tmp_path))                             # the index is rebuilt from state
    assert _by_cid(again, "same")["orderId"] == second
    again.store.close()


def test_a_client_algo_id_reused_finds_the_open_algo_order_else_the_latest(tmp_path):
    v = _venue(str(tmp_path))
    old = _stop(v, "guard")
    v.cancel_algo("k", {"symbol": "BTCUSDT", "clientAlgoId": "guard"}, 1001)
    new = _stop(v, "guard", trigger="59000.00")
    assert v.query_algo("k", {"clientAlgoId": "guard"})["algoId"] == new
    assert v.cancel_algo("k", {"symbol": "BTCUSDT", "clientAlgoId": "guard"}, 1002)["algoId"] == new
    assert v.query_algo("k", {"clientAlgoId": "guard"})["algoId"] == new   # the latest, canceled
    assert v.query_algo("k", {"algoId": old})["algoStatus"] == "CANCELED"
    with pytest.raises(errors.ApiError):
        v.query_algo("other", {"clientAlgoId": "guard"})
    v.store.close()

    again = _venue(str(tmp_path))
    assert again.query_algo("k", {"clientAlgoId": "guard"})["algoId"] == new
    again.store.close()


def test_lookups_by_client_id_do_not_read_the_history():
    """Thousands of closed orders and stops later, a lookup touches only the ids it asks for."""
    v = _venue()
    for i in range(3000):
        oid = _rest(v, f"o-{i}", "64000.00")
        v.cancel_order("k", {"symbol": "BTCUSDT", "orderId": oid}, 1001)
        _stop(v, f"s-{i}")
        v.cancel_algo("k", {"symbol": "BTCUSDT", "clientAlgoId": f"s-{i}"}, 1001)
    reads = []

    class Counting(dict):
        def __getitem__(self, k):
            reads.append(k)
            return super().__getitem__(k)
    v.orders, v.algos = Counting(v.orders), Counting(v.algos)
    assert _by_cid(v, "o-5")["clientOrderId"] == "o-5"
    assert v.query_algo("k", {"clientAlgoId": "s-7"})["clientAlgoId"] == "s-7"
    assert len(reads) <= 4
