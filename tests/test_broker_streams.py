"""The broker's venue streams (daemons/broker/binance/userstream.py) against ``ofi exchange``:
an attached stream's events are read in the owner's thread with no thread waking it, an
unattached one is read by its own thread, a combined stream is unwrapped, and a dropped or
closed connection comes back with its connection events."""
from __future__ import annotations

import select
import threading
import time

import pytest

from daemons.broker.binance import urls
from daemons.broker.binance.userstream import UserStream
from tests.exchange_harness import start_exchange, um_client, wait_for


class Wakes:
    """``on_event``: counts the calls and the threads they came from."""

    def __init__(self):
        self.threads: list[int] = []

    def __call__(self) -> None:
        self.threads.append(threading.get_ident())


def _stream(url: str) -> tuple[UserStream, Wakes]:
    wakes = Wakes()
    s = UserStream(lambda: url, wakes)
    s.start()
    wait_for(s.connected.is_set, 10, "the stream's connection")
    return s, wakes


def _marks(procs, tmp_path) -> tuple:
    """An exchange (process, port) and a stream of its BTCUSDT mark prices, connected."""
    p, port, _ = start_exchange(procs, tmp_path / "ex")
    s, wakes = _stream(urls.market_stream_url(f"ws://127.0.0.1:{port}",
                                              ["btcusdt@markPrice@1s"]))
    return p, port, s, wakes


def _own_loop(s: UserStream, until, timeout: float = 10.0) -> list[dict]:
    """The owner's loop: wait for the descriptor, service, drain, until ``until(events)``."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(got) and time.monotonic() < deadline:
        fd = s.fileno()
        if fd >= 0:
            select.select([fd], [], [], 0.2)
        else:
            time.sleep(0.01)
        s.service()
        got += s.drain()
    return got


def _kinds(events) -> list[str]:
    return [e.get("e") for e in events]


@pytest.mark.timeout(60)
def test_an_attached_user_stream_is_read_in_the_owners_thread(procs, tmp_path):
    # Arrange
    _p, port, _ = start_exchange(procs, tmp_path / "ex")
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    s, wakes = _stream(urls.user_stream_url(f"ws://127.0.0.1:{port}", lk))
    try:
        s.attach()
        assert _kinds(s.drain()) == ["_connected"]
        woken = len(wakes.threads)
        # Act
        c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                    newClientOrderId="us-1")
        got = _own_loop(s, lambda ev: "ACCOUNT_UPDATE" in _kinds(ev))
    finally:
        s.stop()
    # Assert: the order's events, read here; the stream's thread did not wake us for them
    updates = [e["o"] for e in got if e.get("e") == "ORDER_TRADE_UPDATE"]
    assert [u["c"] for u in updates] and {u["c"] for u in updates} == {"us-1"}
    assert updates[-1]["X"] == "FILLED"
    assert len(wakes.threads) == woken + 1      # the stop's _disconnected only
    assert _kinds(s.drain()) == ["_disconnected"]
    assert s.fileno() == -1 and not s.connected.is_set()


@pytest.mark.timeout(60)
def test_an_unattached_mark_stream_is_read_by_its_thread_and_unwrapped(procs, tmp_path):
    # Arrange
    _p, _port, s, wakes = _marks(procs, tmp_path)
    try:
        # Act: nobody services it; its thread reads and wakes the owner
        marks = wait_for(lambda: [e for e in s.drain() if e.get("e") == "markPriceUpdate"]
                         or None, 10, "a mark price")
    finally:
        s.stop()
    # Assert
    assert marks[0]["s"] == "BTCUSDT" and float(marks[0]["p"]) > 0
    assert len(wakes.threads) >= 2                   # connected, then the events
    assert threading.get_ident() not in wakes.threads


@pytest.mark.timeout(60)
def test_a_dropped_connection_comes_back_and_events_go_on(procs, tmp_path):
    # Arrange
    _p, _port, s, _ = _marks(procs, tmp_path)
    s.attach()
    try:
        _own_loop(s, lambda ev: "markPriceUpdate" in _kinds(ev))
        # Act: the owner drops it (as after a new listenKey)
        s.reconnect()
        got = _own_loop(s, lambda ev: "markPriceUpdate" in _kinds(ev), timeout=15)
    finally:
        s.stop()
    # Assert
    kinds = _kinds(got)
    assert kinds.index("_disconnected") < kinds.index("_connected") < \
        kinds.index("markPriceUpdate")
    assert s.connects == 2


@pytest.mark.timeout(60)
def test_the_venue_going_away_is_a_disconnection_then_a_reconnection(procs, tmp_path):
    # Arrange
    p, port, s, _ = _marks(procs, tmp_path)
    s.attach()
    try:
        # Act: the exchange stops (the owner's read sees the connection end), then comes back
        p.terminate()
        p.wait(10)
        gone = _own_loop(s, lambda ev: "_disconnected" in _kinds(ev))
        down = s.fileno()
        start_exchange(procs, tmp_path / "ex", port=port)
        back = _own_loop(s, lambda ev: "markPriceUpdate" in _kinds(ev), timeout=20)
    finally:
        s.stop()
    # Assert
    assert "_disconnected" in _kinds(gone) and down == -1
    assert _kinds(back).index("_connected") < _kinds(back).index("markPriceUpdate")
    assert s.connects == 2
