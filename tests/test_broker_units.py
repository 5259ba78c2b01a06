"""Pure parts of the broker: signing, filters, rate limits, errors, schemas, reconciliation,
the journal's positions, the backtest and live executors."""
from __future__ import annotations

import pytest

from daemons.broker import orders as fsm
from daemons.broker.binance import errors, signing, urls
from daemons.broker.binance.filters import apply_filters
from daemons.broker.binance.schemas import (SymbolFilters, parse_exchange_info, parse_order,
                                            parse_order_update, parse_trade)
from daemons.broker.executors import BacktestExecutor, ExecutorError, LiveExecutor
from daemons.broker.journal import Journal, PositionBook
from daemons.broker.orders import Order
from daemons.broker.ratelimit import RateLimiter
from daemons.broker.reconcile import reconcile

# Binance's documented HMAC example (developers.binance.com usds-margined-futures general-info)
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_PAYLOAD = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
               "&recvWindow=5000&timestamp=1591702613943")


def test_signing_documented_example_matches():
    assert signing.sign(DOC_SECRET, DOC_PAYLOAD) == \
        "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_signing_mixed_query_and_body_concatenated_without_separator():
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"
    assert signing.sign(DOC_SECRET, query + body) == \
        "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"


def test_signing_signed_query_puts_signature_last_over_exact_bytes():
    params = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"),
              ("price", "9000"), ("timeInForce", "GTC")]
    q = signing.signed_query(params, DOC_SECRET, 1591702613943, 5000)
    assert q == DOC_PAYLOAD + "&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_signing_decimals_never_in_exponent_form():
    assert signing.fmt_decimal(0.00001) == "0.00001"
    assert signing.fmt_decimal(50000.0) == "50000"
    assert signing.encode_params({"q": 1e-05, "r": True}) == "q=0.00001&r=true"


def test_server_clock_offset_from_round_trip():
    c = signing.ServerClock(clock=lambda: 100.0)
    assert c.update(101_000, 99.9, 100.1) == 1000
    assert c.now_ms() == 101_000


def test_urls_user_stream_routed_and_legacy():
    assert urls.user_stream_url("ws://h:1", "K") == "ws://h:1/private/ws/K"
    assert urls.user_stream_url("wss://x/ws", "K", "legacy") == "wss://x/ws/K"


F = SymbolFilters("BTCUSDT", tick_size="0.10", min_price="0.10", max_price="1000000",
                  step_size="0.001", min_qty="0.001", max_qty="1000", market_step_size="0.001",
                  market_min_qty="0.001", market_max_qty="120", min_notional="5",
                  multiplier_up="1.05", multiplier_down="0.95")


def test_filters_round_qty_down_and_price_away_from_market():
    assert apply_filters(F, "BUY", "LIMIT", 0.0019, 50000.17, 50000) == ("0.001", "50000.1")
    assert apply_filters(F, "SELL", "LIMIT", 0.0019, 50000.11, 50000) == ("0.001", "50000.2")


@pytest.mark.parametrize("args,match", [
    (("BUY", "MARKET", 0.0004, None, 50000), "below the minimum"),
    (("BUY", "MARKET", 121, None, 50000), "above the maximum"),
    (("BUY", "LIMIT", 0.001, 4000.0, 4000), "notional"),
    (("BUY", "LIMIT", 0.01, 60000.0, 50000), "above mark"),
    (("SELL", "LIMIT", 0.01, 40000.0, 50000), "below mark"),
])
def test_filters_refuse_before_sending(args, match):
    with pytest.raises(errors.FilterRejected, match=match):
        apply_filters(F, *args)


def test_filters_reduce_only_exempt_from_min_notional():
    assert apply_filters(F, "SELL", "MARKET", 0.001, None, 1000, reduce_only=True)[0] == "0.001"


def test_exchange_info_parsed_into_filters_and_limits():
    info = {"rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": 2400}],
            "symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "1", "maxPrice": "9"},
                {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "5"},
                {"filterType": "MIN_NOTIONAL", "notional": "100"}]}]}
    filters, limits = parse_exchange_info(info)
    assert filters["BTCUSDT"].tick_size == "0.10" and filters["BTCUSDT"].min_notional == "100"
    assert limits[0]["limit"] == 2400


def test_ratelimit_holds_requests_over_budget_until_window_ends():
    rl = RateLimiter(margin=0.2, limits=[{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                          "intervalNum": 1, "limit": 100}])
    rl.update({"X-MBX-USED-WEIGHT-1M": "79"}, 200, now=60.0)
    assert rl.wait_for(1, 0, now=61.0) == 0.0
    rl.note_sent(1, 0, now=61.0)
    assert rl.wait_for(1, 0, now=62.0) == pytest.approx(58.0)
    assert rl.wait_for(1, 0, now=120.5) == 0.0   # new window


def test_ratelimit_order_count_headers_tracked():
    rl = RateLimiter(margin=0.0, limits=[{"rateLimitType": "ORDERS", "interval": "SECOND",
                                          "intervalNum": 10, "limit": 5}])
    rl.update({"x-mbx-order-count-10s": "5"}, 200, now=10.0)
    assert rl.wait_for(0, 1, now=11.0) == pytest.approx(9.0)
    assert rl.wait_for(1, 0, now=11.0) == 0.0


def test_ratelimit_429_retry_after_and_418_ban_block_everything():
    rl = RateLimiter()
    rl.update({"Retry-After": "3"}, 429, now=100.0)
    assert rl.wait_for(1, 0, now=101.0) == pytest.approx(2.0)
    rl.update({"Retry-After": "30"}, 418, now=101.0)
    assert rl.wait_for(0, 0, now=110.0) == pytest.approx(21.0)
    assert rl.wait_for(0, 0, now=131.5) == 0.0


@pytest.mark.parametrize("status,body,cls", [
    (503, {"code": -1007, "msg": "Timeout waiting for response"}, errors.Ambiguous),
    (503, None, errors.Ambiguous),
    (503, {"code": -1001, "msg": "Service Unavailable."}, errors.NotSent),
    (500, {"code": -1000, "msg": "x"}, errors.Ambiguous),
    (429, {"code": -1003, "msg": "Too many"}, errors.RateLimited),
    (418, {"code": -1003, "msg": "banned"}, errors.Banned),
    (400, {"code": -2013, "msg": "Order does not exist."}, errors.NotFound),
    (400, {"code": -2011, "msg": "Unknown order sent."}, errors.NotFound),
    (400, {"code": -1021, "msg": "Timestamp"}, errors.NotSent),
    (400, {"code": -2019, "msg": "Margin is insufficient."}, errors.Rejected),
    (401, {"code": -2015, "msg": "Invalid API-key"}, errors.AuthError),
])
def test_errors_classified_by_what_the_broker_must_do(status, body, cls):
    exc = errors.classify(status, body, "", None, 0.0)
    assert type(exc) is cls


def test_schemas_order_update_trade_gives_fill():
    ev = {"e": "ORDER_TRADE_UPDATE", "E": 2, "T": 1, "o": {
        "s": "XRPUSDT", "c": "10002", "S": "SELL", "o": "LIMIT", "f": "GTC", "q": "20",
        "p": "0.5332", "ap": "0.53320", "sp": "0", "x": "TRADE", "X": "FILLED", "i": 246411433,
        "l": "20", "z": "20", "L": "0.5332", "n": "0.00213279", "N": "USDT", "T": 1685466798560,
        "t": 19334107, "m": True, "R": False, "rp": "0.24773076"}}
    vo, fill = parse_order_update(ev)
    assert vo.status == "FILLED" and vo.executed_qty == 20.0 and vo.client_order_id == "10002"
    assert fill["trade_id"] == 19334107 and fill["qty"] == 20.0 and fill["maker"] is True


def test_schemas_rest_order_and_trade():
    vo = parse_order({"clientOrderId": "a", "orderId": 7, "symbol": "BTCUSDT", "side": "BUY",
                      "status": "PARTIALLY_FILLED", "origQty": "2", "price": "10",
                      "executedQty": "1", "avgPrice": "10", "type": "LIMIT"})
    assert vo.executed_qty == 1.0 and vo.price == 10.0
    f = parse_trade({"symbol": "BTCUSDT", "id": 3, "orderId": 7, "side": "BUY", "qty": "1",
                     "price": "10", "commission": "0.01", "commissionAsset": "USDT",
                     "realizedPnl": "0", "maker": False, "time": 5})
    assert f["trade_id"] == 3 and f["fee"] == 0.01


def test_position_book_average_entry_realized_and_flip():
    b = PositionBook()
    b.apply({"symbol": "S", "side": "BUY", "qty": 1, "price": 100})
    b.apply({"symbol": "S", "side": "BUY", "qty": 1, "price": 110})
    p = b.apply({"symbol": "S", "side": "SELL", "qty": 3, "price": 120})
    assert p.qty == pytest.approx(-1) and p.entry_price == 120
    assert p.realized_pnl == pytest.approx(30.0)


def _journal_with(order: Order, fills=()):
    j = Journal()
    j.put(order)
    for f in fills:
        j.load_fill(f)
    return j


def _fill(tid, qty, oid=1, side="BUY", T=1000):
    return {"type": "fill", "symbol": "BTCUSDT", "client_order_id": None, "order_id": oid,
            "trade_id": tid, "side": side, "qty": qty, "price": 100.0, "fee": 0, "T": T}


def test_reconcile_missing_fill_of_our_order_is_recorded_not_a_problem():
    o = Order("c1", "BTCUSDT", "BUY", 2.0, status=fsm.FILLED, order_id=1, filled_qty=2.0)
    j = _journal_with(o, [_fill(1, 1.0)])
    r = reconcile(j, ["BTCUSDT"], {}, {"BTCUSDT": [_fill(1, 1.0), _fill(2, 1.0)]},
                  {"BTCUSDT": 2.0})
    assert r.ok and [f["trade_id"] for f in r.missing_fills] == [2]
    assert r.missing_fills[0]["client_order_id"] == "c1"


def test_reconcile_unknown_fill_and_position_difference_are_problems():
    o = Order("c1", "BTCUSDT", "BUY", 1.0, status=fsm.FILLED, order_id=1, filled_qty=1.0)
    j = _journal_with(o, [_fill(1, 1.0)])
    r = reconcile(j, ["BTCUSDT"], {}, {"BTCUSDT": [_fill(1, 1.0), _fill(9, 0.5, oid=99)]},
                  {"BTCUSDT": 1.5})
    assert not r.ok
    assert any("belongs to no order" in p for p in r.problems)
    assert any("venue position 1.5" in p for p in r.problems)


def test_reconcile_foreign_open_order_is_a_problem_and_closed_ones_are_queried():
    from daemons.broker.binance.schemas import VenueOrder
    mine = Order("c1", "BTCUSDT", "BUY", 1.0, price=90.0, order_type="LIMIT", status=fsm.NEW,
                 order_id=1)
    j = _journal_with(mine)
    foreign = VenueOrder("zz", 5, "BTCUSDT", "SELL", "NEW", 1.0, 120.0, 0.0, None, "LIMIT")
    r = reconcile(j, ["BTCUSDT"], {"BTCUSDT": [foreign]}, {}, {"BTCUSDT": 0.0})
    assert r.to_query == ["c1"]
    assert any("zz" in p for p in r.problems)


def test_backtest_market_order_fills_at_touch_after_latency_with_taker_fee():
    bt = BacktestExecutor(taker_fee_bps=4, maker_fee_bps=2, latency_ms=50)
    bt.on_book({"symbol": "S", "bid": 99.0, "ask": 101.0, "bid_qty": 5, "ask_qty": 5, "E": 1000})
    vo = bt.submit(Order("m1", "S", "BUY", 2.0), now_ms=1000)
    assert vo.status == "NEW"
    assert bt.on_book({"symbol": "S", "bid": 99, "ask": 102, "bid_qty": 5, "ask_qty": 5, "E": 1020}) == []
    fills = bt.on_book({"symbol": "S", "bid": 100, "ask": 103, "bid_qty": 5, "ask_qty": 5, "E": 1060})
    assert [(f["qty"], f["price"], f["maker"]) for f in fills] == [(2.0, 103.0, False)]
    assert fills[0]["fee"] == pytest.approx(2 * 103 * 4e-4)
    assert bt.get_position("S")["qty"] == 2.0
    assert bt.report("m1").status == "FILLED"


def test_backtest_limit_order_fills_as_maker_when_trade_prints_through():
    bt = BacktestExecutor(taker_fee_bps=5.0, maker_fee_bps=2.0, latency_ms=0)
    bt.on_book({"symbol": "S", "bid": 99.0, "ask": 101.0, "E": 1})
    bt.submit(Order("l1", "S", "BUY", 1.0, price=99.5, order_type="LIMIT"), now_ms=1)
    assert bt.on_trade({"symbol": "S", "price": 99.5, "qty": 3, "T": 2}) == []
    fills = bt.on_trade({"symbol": "S", "price": 99.4, "qty": 3, "T": 3})
    assert fills[0]["price"] == 99.5 and fills[0]["maker"] is True
    with pytest.raises(errors.NotFound):
        bt.cancel("S", "l1")
    assert bt.fetch_fills("S") == fills


def test_backtest_duplicate_client_id_rejected():
    bt = BacktestExecutor(taker_fee_bps=5.0, maker_fee_bps=2.0, latency_ms=50)
    bt.submit(Order("x", "S", "BUY", 1.0))
    with pytest.raises(errors.Rejected):
        bt.submit(Order("x", "S", "BUY", 1.0))


def test_live_executor_refuses_without_keys_or_confirmation():
    with pytest.raises(ExecutorError, match="API keys"):
        LiveExecutor(object(), has_keys=False, confirmed=True)
    with pytest.raises(ExecutorError, match="confirm"):
        LiveExecutor(object(), has_keys=True, confirmed=False)
    ex = LiveExecutor(object(), has_keys=True, confirmed=True, max_parallel_orders=2)
    assert ex.max_parallel_orders == 2
