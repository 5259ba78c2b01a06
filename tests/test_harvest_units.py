"""harvest's pure parts: stream routing, backoff, message handling without a network."""
from __future__ import annotations

import random

import pytest

from daemons.harvest import streams
from daemons.harvest.wsclient import backoff_delay, snapshot_url


def test_connection_urls_routed_splits_book_and_trade_streams():
    urls = streams.connection_urls("wss://fstream.binance.com", ["BTCUSDT", "ETHUSDT"],
                                   ["aggTrade", "bookTicker", "depth@100ms"], "routed")
    assert urls == {
        "market": "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade",
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
