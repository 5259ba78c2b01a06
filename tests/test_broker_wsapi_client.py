"""The broker's WebSocket API client (daemons/broker/binance/wsapi.py) against ``ofi exchange``:
blocking requests read their own answers, ``begin`` answers through its callback in the thread
that services the socket, several callers share the connection, and a lost connection makes the
requests in flight ambiguous."""
from __future__ import annotations

import queue
import select
import threading
import time

import pytest
import requests

from daemons.broker.binance.errors import Ambiguous, NotFound
from daemons.broker.binance.signing import ServerClock
from daemons.broker.binance.wsapi import WsApiClient, WsUnavailable
from daemons.broker.ratelimit import RateLimiter
from tests.exchange_harness import KEY, SECRET, start_exchange

SYMBOL = "BTCUSDT"


def _client(port: int, **kw) -> WsApiClient:
    clock = ServerClock(time.time)
    c = WsApiClient(f"ws://127.0.0.1:{port}/ws-fapi/v1", KEY, SECRET, limiter=RateLimiter(),
                    server_clock=clock, timeout_s=kw.pop("timeout_s", 5.0), **kw)
    assert c.start(wait_s=10), "no connection to the WebSocket API"
    return c


def _venue(procs, tmp_path, *faults: str) -> tuple:
    """The exchange (process, port), with ``--faults`` when given."""
    args = ("--faults", *faults) if faults else ()
    p, port, _ = start_exchange(procs, tmp_path / "ex", "--symbols", SYMBOL, *args)
    return p, port


def _owner(port: int, **kw) -> tuple[WsApiClient, queue.SimpleQueue]:
    """A client whose answers the test's own loop reads (:func:`_serve_until`), and a queue
    for the answers of its ``begin`` requests."""
    client = _client(port, **kw)
    client.attach()
    return client, queue.SimpleQueue()


def _serve_until(client: WsApiClient, done, timeout: float = 10.0) -> None:
    """The owner's loop: wait for the descriptor (or the next request's deadline) and service
    the client until ``done()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        due = client.next_due()
        wait = 0.2 if due is None else min(0.2, due)
        fd = client.fileno()
        if fd >= 0:
            select.select([fd], [], [], wait)
        else:
            time.sleep(min(wait, 0.01))
        client.service()


def _price(port: int, below: float) -> str:
    r = requests.get(f"http://127.0.0.1:{port}/fapi/v1/premiumIndex", params={"symbol": SYMBOL},
                     timeout=5)
    return f"{round(float(r.json()['markPrice']) * below, 1):.1f}"


def _limit(cid: str, price: str) -> dict:
    return {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": 0.002, "price": price, "newClientOrderId": cid,
            "newOrderRespType": "RESULT"}


@pytest.mark.timeout(60)
def test_requests_from_several_threads_share_the_connection(procs, tmp_path):
    # Arrange
    _p, port = _venue(procs, tmp_path)
    client = _client(port)
    price = _price(port, 0.97)
    results: dict[int, dict] = {}

    def place(i: int) -> None:
        for j in range(5):
            results[i * 10 + j] = client.new_order(_limit(f"t-{i}-{j}", price))

    try:
        # Act
        threads = [threading.Thread(target=place, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        status = client.query_order(SYMBOL, "t-2-3")
        with pytest.raises(NotFound):
            client.query_order(SYMBOL, "never-placed")
    finally:
        client.stop()
    # Assert
    assert sorted(results) == sorted(i * 10 + j for i in range(4) for j in range(5))
    assert {r["clientOrderId"] for r in results.values()} == \
        {f"t-{i}-{j}" for i in range(4) for j in range(5)}
    assert all(r["status"] == "NEW" for r in results.values())
    assert status["clientOrderId"] == "t-2-3" and status["status"] == "NEW"
    assert client.connects == 1


@pytest.mark.timeout(60)
def test_begin_answers_in_the_thread_that_services_the_socket(procs, tmp_path):
    # Arrange
    _p, port = _venue(procs, tmp_path)
    client, answers = _owner(port)
    price = _price(port, 0.97)
    me = threading.get_ident()
    try:
        # Act: the owner's loop: poll the descriptor, service it
        for i in range(3):
            client.place_order(_limit(f"b-{i}", price),
                               lambda res: answers.put((threading.get_ident(), res)))
        _serve_until(client, lambda: answers.qsize() >= 3)
        got = [answers.get() for _ in range(answers.qsize())]
        # a blocking request of another thread is read by the owner too
        other: list = []
        t = threading.Thread(target=lambda: other.append(client.query_order(SYMBOL, "b-1")))
        t.start()
        _serve_until(client, lambda: not t.is_alive())
        t.join(5)
    finally:
        client.stop()
    # Assert
    assert len(got) == 3
    assert all(tid == me for tid, _ in got)
    assert sorted(res["clientOrderId"] for _, res in got) == ["b-0", "b-1", "b-2"]
    assert other and other[0]["clientOrderId"] == "b-1"
    assert client.next_due() is None


@pytest.mark.timeout(60)
def test_a_lost_connection_makes_requests_in_flight_ambiguous(procs, tmp_path):
    # Arrange: the exchange never answers a new order (timeout fault), then dies
    p, port = _venue(procs, tmp_path, "timeout=1,timeout_s=30,seed=1")
    client, answers = _owner(port, timeout_s=20.0)
    price = _price(port, 0.97)
    try:
        client.place_order(_limit("lost-1", price), answers.put)
        assert client.next_due() is not None
        # Act
        p.kill()
        p.wait(10)
        _serve_until(client, lambda: not answers.empty())
        outcome = answers.get(timeout=1)
        with pytest.raises(WsUnavailable):
            client.new_order(_limit("lost-2", price))
    finally:
        client.stop()
    # Assert
    assert isinstance(outcome, Ambiguous)
    assert not client.connected.is_set()


@pytest.mark.timeout(60)
def test_an_overdue_answer_is_ambiguous_through_the_callback(procs, tmp_path):
    # Arrange
    _p, port = _venue(procs, tmp_path, "timeout=1,timeout_s=30,seed=1")
    client, answers = _owner(port, timeout_s=0.3)
    price = _price(port, 0.97)
    try:
        # Act
        client.place_order(_limit("late-1", price), answers.put)
        _serve_until(client, lambda: not answers.empty())
        outcome = answers.get(timeout=1)
    finally:
        client.stop()
    # Assert
    assert isinstance(outcome, Ambiguous) and "no answer" in str(outcome)


@pytest.mark.timeout(60)
def test_an_old_connection_is_replaced_while_idle_and_requests_go_on(procs, tmp_path):
    # Arrange: connections live 0.6 s (Binance's 24 h, shortened)
    _p, port = _venue(procs, tmp_path)
    client = _client(port, max_age_s=0.6)
    price = _price(port, 0.97)
    placed, refused = [], 0
    try:
        # Act: orders one after another across several rollovers
        deadline = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < deadline:
            try:
                placed.append(client.new_order(_limit(f"r-{i}", price)))
            except WsUnavailable:   # between two connections: the caller goes over REST
                refused += 1
            i += 1
            time.sleep(0.05)
        connects = client.connects
    finally:
        client.stop()
    # Assert: replaced, and every order sent was answered (none lost to a closing connection)
    assert connects >= 3
    assert len(placed) + refused == i and len(placed) >= i // 2
    assert all(r["status"] == "NEW" for r in placed)


@pytest.mark.timeout(60)
def test_algo_orders_are_placed_and_canceled_through_the_callback(procs, tmp_path):
    # Arrange: a long position for a closePosition stop to close
    _p, port = _venue(procs, tmp_path)
    client = _client(port)
    answers: queue.SimpleQueue = queue.SimpleQueue()
    trigger = _price(port, 0.95)
    stop = {"symbol": SYMBOL, "side": "SELL", "type": "STOP_MARKET", "triggerPrice": trigger,
            "closePosition": "true", "workingType": "MARK_PRICE", "clientAlgoId": "cb-stop-1"}
    try:
        filled = client.new_order({"symbol": SYMBOL, "side": "BUY", "type": "MARKET",
                                   "quantity": 0.002, "newOrderRespType": "RESULT"})
        client.attach()
        # Act
        client.place_algo_order(stop, answers.put)
        _serve_until(client, lambda: not answers.empty())
        placed = answers.get()
        cancels = []
        for _ in range(2):
            client.cancel_algo_order(SYMBOL, "cb-stop-1", answers.put)
            _serve_until(client, lambda: not answers.empty())
            cancels.append(answers.get(timeout=1))
        canceled, again = cancels
    finally:
        client.stop()
    # Assert
    assert filled["status"] == "FILLED"
    assert (placed["clientAlgoId"], placed["algoStatus"], placed["closePosition"]) == \
        ("cb-stop-1", "NEW", True)
    assert float(placed["triggerPrice"]) == float(trigger)
    assert canceled["clientAlgoId"] == "cb-stop-1"
    assert isinstance(again, NotFound)
