"""harvest's pure parts: stream routing, backoff, message handling without a network."""
from __future__ import annotations

import random

import orjson
import pytest

from daemons.harvest import streams
from daemons.harvest.live import LiveBooks
from daemons.harvest.replay import Pacer
from daemons.harvest.wsclient import backoff_delay, snapshot_url


def test_connection_urls_routed_splits_book_and_trade_streams():
    urls = streams.connection_urls("wss://fstream.binance.com", ["BTCUSDT", "ETHUSDT"],
                                   ["aggTrade", "bookTicker", "depth@100ms"], "routed")
    assert urls == {
        "market": "wss://fstream.binance.com/market/stream?streams="
                  "btcusdt@aggTrade/ethusdt@aggTrade",
        "public": "wss://fstream.binance.com/public/stream?streams="
                  "btcusdt@bookTicker/btcusdt@depth@100ms/ethusdt@bookTicker/ethusdt@depth@100ms",
    }


@pytest.mark.parametrize("route,path", [("market", "/market/stream"), ("public", "/public/stream"),
                                        ("legacy", "/stream")])
def test_connection_urls_single_route_puts_every_stream_on_one_path(route, path):
    urls = streams.connection_urls("ws://127.0.0.1:9/ws/", ["BTCUSDT"], ["trade", "depth"], route)
    assert urls == {route: f"ws://127.0.0.1:9{path}?streams=btcusdt@trade/btcusdt@depth"}


def test_connection_urls_unknown_route_raises():
    with pytest.raises(ValueError, match="unknown route"):
        streams.connection_urls("ws://x", ["BTCUSDT"], ["trade"], "sideways")


def test_connection_urls_http_url_raises():
    with pytest.raises(ValueError, match="ws:// or wss://"):
        streams.connection_urls("https://fapi.binance.com", ["BTCUSDT"], ["trade"])


def test_category_of_book_streams_is_public_and_trades_market():
    assert streams.category_of("btcusdt@depth@0ms") == "public"
    assert streams.category_of("btcusdt@bookTicker") == "public"
    assert streams.category_of("btcusdt@aggTrade") == "market"
    assert streams.category_of("btcusdt@trade") == "market"


def test_backoff_delay_doubles_to_cap_with_jitter_never_zero():
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2 ** attempt)
        for _ in range(50):
            d = backoff_delay(attempt, 0.5, 30.0, rng.random())
            assert ceiling / 2 <= d <= ceiling
    assert backoff_delay(100, 0.5, 30.0, 0.999) <= 30.0


def test_snapshot_url_asks_for_1000_levels():
    assert snapshot_url("http://h:1/", "btcusdt", 1000) == \
        "http://h:1/fapi/v1/depth?symbol=BTCUSDT&limit=1000"


# -- LiveBooks: feed items -> actions ---------------------------------------------------------


def _diff(U, u, pu, b=(), a=(), E=1000):
    return {"e": "depthUpdate", "E": E, "T": E, "s": "BTCUSDT", "U": U, "u": u, "pu": pu,
            "b": [list(x) for x in b], "a": [list(x) for x in a]}


def _msg(data, stream="btcusdt@depth@0ms", recv=2000):
    return ("msg", "public", recv, orjson.dumps({"stream": stream, "data": data}))


def _kinds(actions):
    return [(a.kind, a.a if a.kind != "emit" else a.b["type"]) for a in actions]


def _snap(last, bids=(("100.0", "1"),), asks=(("101.0", "2"),)):
    return ("snapshot", "BTCUSDT", 3000,
            orjson.dumps({"lastUpdateId": last, "bids": list(bids), "asks": list(asks)}))


def test_livebooks_first_diff_buffers_and_asks_one_snapshot():
    lb = LiveBooks(["public"])
    assert _kinds(lb.handle(_msg(_diff(10, 12, 9)))) == [("snapshot", "BTCUSDT")]
    assert _kinds(lb.handle(_msg(_diff(13, 15, 12)))) == []  # a request is in flight already
    out = lb.handle(_snap(11))
    assert _kinds(out) == [("log", "info"), ("emit", "snapshot"), ("emit", "depth"),
                           ("emit", "depth")]
    assert out[-1].b["u"] == 15 and out[-1].b["recv_ts"] == 2000


def test_livebooks_broken_chain_emits_gap_then_asks_new_snapshot():
    lb = LiveBooks(["public"])
    lb.handle(_msg(_diff(10, 12, 9)))
    lb.handle(_snap(11))
    out = lb.handle(_msg(_diff(20, 22, 19, b=[("100.5", "3")])))
    assert _kinds(out) == [("log", "warning"), ("emit", "gap"), ("snapshot", "BTCUSDT")]
    gap = out[1].b
    assert (gap["expected_pu"], gap["got_pu"], gap["u"]) == (12, 19, 22)
    assert lb.health()["gaps"] == 1 and lb.health()["synced"] == {"BTCUSDT": False}


def test_livebooks_gap_after_reconnect_says_so():
    lb = LiveBooks(["public"])
    lb.handle(("up", "public", "ws://x"))
    lb.handle(_msg(_diff(10, 12, 9)))
    lb.handle(_snap(11))
    lb.handle(("down", "public", "connection closed", 0.1))
    assert lb.health()["connected"] is False
    lb.handle(("up", "public", "ws://x"))
    out = lb.handle(_msg(_diff(30, 31, 29)))
    assert "reconnect" in out[1].b["reason"] and lb.reconnects == 1


def test_livebooks_reconnect_without_loss_keeps_the_chain():
    lb = LiveBooks(["public"])
    lb.handle(("up", "public", "ws://x"))
    lb.handle(_msg(_diff(10, 12, 9)))
    lb.handle(_snap(11))
    lb.handle(("down", "public", "stall", 0.1))
    lb.handle(("up", "public", "ws://x"))
    assert _kinds(lb.handle(_msg(_diff(13, 14, 12)))) == [("emit", "depth")]


@pytest.mark.parametrize("raw,why", [
    (b"{not json", "unparseable JSON"),
    (b"[1, 2]", "not a JSON object"),
    (orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT", "T": 1,
                                                       "t": 1, "p": "abc", "q": "1", "m": True}}),
     "bad trade"),
    (b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","s":"BTCUSDT","u":1,'
     b'"b":"NaN","B":"1","a":"2","A":"1","E":1}}', "bid out of range"),
    (orjson.dumps({"stream": "btcusdt@depth", "data": _diff(1, 2, 0, b=[("x", "1")])}),
     "b price is not a number"),
    (orjson.dumps({"stream": "btcusdt@depth", "data": {**_diff(1, 2, 0), "u": "2"}}),
     "u is not an integer"),
    (b'{"code": -1121, "msg": "Invalid symbol."}', "venue error -1121"),
])
def test_livebooks_malformed_message_goes_to_deadletter(raw, why):
    lb = LiveBooks(["public"])
    out = lb.handle(("msg", "public", 5, raw))
    assert len(out) == 1 and out[0].kind == "dead"
    assert why in out[0].a and out[0].b == raw.decode() and out[0].c == "websocket:public"
    # and the next good message goes through
    ok = {"e": "trade", "E": 9, "T": 8, "s": "BTCUSDT", "t": 7, "p": "1.5", "q": "2",
          "X": "MARKET", "m": True}
    out = lb.handle(_msg(ok, "btcusdt@trade", recv=11))
    assert out[0].b == {"type": "trade", "symbol": "BTCUSDT", "E": 9, "T": 8, "t": 7,
                        "price": 1.5, "qty": 2.0, "side": "sell", "X": "MARKET", "recv_ts": 11}
    assert lb.deadletters == 1 and lb.messages == 2 and lb.health()["event_lag_ms"] == 2


def test_livebooks_bad_snapshot_is_deadlettered_and_asked_again():
    lb = LiveBooks(["public"])
    lb.handle(_msg(_diff(10, 12, 9)))
    out = lb.handle(("snapshot", "BTCUSDT", 1, b"<html>maintenance</html>"))
    assert _kinds(out)[0][0] == "dead" and _kinds(out)[-1] == ("snapshot", "BTCUSDT")


def test_livebooks_subscription_reply_ignored_and_unknown_stream_told_once():
    lb = LiveBooks(["market"])
    assert lb.handle(("msg", "market", 1, b'{"result": null, "id": 1}')) == []
    mark = {"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1"}
    assert _kinds(lb.handle(_msg(mark, "btcusdt@markPrice"))) == [("log", "info")]
    assert lb.handle(_msg(mark, "btcusdt@markPrice")) == []
    assert lb.ignored == 2 and lb.deadletters == 0


def test_livebooks_book_ticker_becomes_book_record():
    lb = LiveBooks(["public"])
    bt = {"e": "bookTicker", "u": 5, "s": "BTCUSDT", "b": "10.5", "B": "1", "a": "10.6",
          "A": "2", "T": 7, "E": 8}
    assert lb.handle(_msg(bt, "btcusdt@bookTicker", recv=9))[0].b == {
        "type": "book", "symbol": "BTCUSDT", "u": 5, "E": 8, "T": 7, "bid": 10.5,
        "bid_qty": 1.0, "ask": 10.6, "ask_qty": 2.0, "recv_ts": 9}


# -- Pacer ------------------------------------------------------------------------------------

def _recs(times):
    return [{"type": "book", "E": t, "i": i} for i, t in enumerate(times)]


def test_pacer_speed_zero_releases_everything_in_batches():
    p = Pacer(_recs(range(0, 10000, 1)), speed=0, batch=4000)
    sizes = []
    while not p.done or p.wait(0) is not None:
        got = p.take(0.0)
        if not got:
            break
        sizes.append(len(got))
    assert sizes == [4000, 4000, 2000] and p.wait(0) is None


def test_pacer_speed_two_releases_at_half_the_exchange_time():
    p = Pacer(_recs([1000, 1500, 3000, 5000]), speed=2.0)
    assert [r["E"] for r in p.take(10.0)] == [1000]   # the first record sets the clock
    assert p.wait(10.0) == pytest.approx(0.25)
    assert [r["E"] for r in p.take(10.25)] == [1500]
    assert [r["E"] for r in p.take(11.0)] == [3000]
    assert p.take(11.9) == []
    assert [r["E"] for r in p.take(12.0)] == [5000] and p.wait(12.0) is None


def test_pacer_skip_resumes_after_records_already_written():
    p = Pacer(_recs([1, 2, 3, 4]), skip=3)
    assert [r["i"] for r in p.take(0)] == [3] and p.emitted == 4
