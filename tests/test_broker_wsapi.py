"""The broker daemon placing orders over ``ofi exchange``'s WebSocket API (/ws-fapi/v1), falling
back to REST while it is unreachable, and settling an ambiguous websocket placement by query
without ever placing it twice.

The broker reaches the exchange's REST and WebSocket API through a TCP relay on loopback that
can refuse and cut the websocket connections (``Relay.block_ws``) while REST goes through: a
websocket outage with a healthy REST API, as after Binance's 24 h disconnect."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter

import orjson
import pytest

from bus import open_bus
from tests.conftest import wait_for
from tests.test_broker_exchange import (SYMBOL, Broker, Venue, _assert_books_agree,
                                        _intent, _last_status, _records)


class Relay:
    """Forwards TCP connections from its port to ``target``; with ``block_ws`` set, a connection
    asking for the WebSocket API is closed before it reaches the target, and open ones are cut."""

    def __init__(self, target: int):
        self.target = target
        self.block_ws = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.ws_conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    return
                head += chunk
        except OSError:
            client.close()
            return
        is_ws = b"/ws-fapi/" in head.split(b"\r\n", 1)[0]
        if is_ws and self.block_ws:
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target))
        with self._lock:
            self._socks += [client, upstream]
            if is_ws:
                self.ws_conns.append(client)
        upstream.sendall(head)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut_ws(self) -> None:
        """Refuse new WebSocket API connections and cut the open ones."""
        self.block_ws = True
        with self._lock:
            conns, self.ws_conns = self.ws_conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def _heartbeat(venue: Venue, after: float) -> dict:
    """The exchange's next heartbeat written after ``after`` (epoch s)."""
    path = venue.dir / "run" / "exchange.json"

    def newer():
        try:
            beat = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return beat if beat.get("ts", 0) > after else None
    return wait_for(newer, 10, "the exchange's heartbeat")


def _ws_places(venue: Venue) -> int:
    return _heartbeat(venue, time.time()).get("wsapi_methods", {}).get("order.place", 0)


def _place(writer, i: int, side: str) -> str:
    rec = _intent(i, side, 0.002)
    writer.append(rec)
    return rec["client_order_id"]


def _filled(home, cids) -> bool:
    last = _last_status(home)
    return all(last.get(c, {}).get("status") == "FILLED" for c in cids)


def _exec_places(home) -> Counter:
    return Counter(e.get("client_order_id") for e in _exec_lines(home)
                   if e.get("action") == "place")


def _ws_connects(home) -> int:
    """WebSocket API connections the broker has made (the exec log notes each once open)."""
    return sum(e.get("action") == "ws_api_connect" and e.get("outcome") == "ok"
               for e in _exec_lines(home))


def _exec_lines(home) -> list[dict]:
    return [orjson.loads(x) for x in
            (home / "log" / "exec_log.jsonl").read_text().splitlines()]


@pytest.mark.timeout(120)
def test_broker_places_over_the_ws_api_and_falls_back_to_rest_while_it_is_down(
        procs, home, tmp_path):
    # Arrange: REST and the WebSocket API through the relay, the user stream direct
    venue = Venue(procs, tmp_path)
    relay = Relay(venue.port)
    broker = Broker(procs, home, venue, extra=(
        "  order_transport: ws\n"
        f"venue:\n  rest_url: http://127.0.0.1:{relay.port}\n"
        f"  ws_url: ws://127.0.0.1:{venue.port}\n"))
    try:
        broker.start()
        wait_for(lambda: relay.ws_conns, 10, "the broker's WebSocket API connection")
        bus = open_bus(home)
        writer = bus.writer("intents")
        # Act 1: websocket up
        over_ws = [_place(writer, i, "BUY" if i % 2 == 0 else "SELL") for i in range(4)]
        wait_for(lambda: _filled(home, over_ws), 20, "the orders placed over the websocket")
        ws_before = _ws_places(venue)
        # Act 2: websocket down (cut, reconnects refused), REST up
        relay.cut_ws()
        time.sleep(0.5)
        over_rest = [_place(writer, i, "BUY" if i % 2 == 0 else "SELL") for i in range(4, 8)]
        wait_for(lambda: _filled(home, over_rest), 20, "the orders placed during the outage")
        ws_during = _ws_places(venue)
        # Act 3: websocket back: the broker reconnects and uses it again
        relay.block_ws = False
        wait_for(lambda: _ws_connects(home) >= 2, 30, "the broker's WebSocket API reconnection")
        again = [_place(writer, i, "BUY" if i % 2 == 0 else "SELL") for i in range(8, 10)]
        wait_for(lambda: _filled(home, again), 20, "the orders after the reconnection")
        ws_after = _ws_places(venue)
        writer.close()
        bus.close()
        broker.stop()
    finally:
        relay.close()
    # Assert: placed over the websocket, over REST during the outage, over the websocket again
    assert ws_before == len(over_ws)
    assert ws_during == ws_before
    assert ws_after == ws_before + len(again)
    places = _exec_places(home)
    assert all(places[c] == 1 for c in over_ws + over_rest + again), places
    way = {e["client_order_id"]: e.get("transport") for e in _exec_lines(home)
           if e.get("action") == "place"}
    assert {way[c] for c in over_ws + again} == {"ws"}, way
    assert {way[c] for c in over_rest} == {"rest"}, way
    _assert_books_agree(home, venue)


@pytest.mark.timeout(120)
def test_broker_places_and_cancels_protective_stops_over_the_ws_api(procs, home, tmp_path):
    # Arrange
    venue = Venue(procs, tmp_path)
    broker = Broker(procs, home, venue, extra="  order_transport: ws\n")
    broker.start()
    bus = open_bus(home)
    writer = bus.writer("intents")

    def stops() -> list[dict]:
        return venue.call(lambda: venue.http.open_algo_orders(SYMBOL))
    # Act: a long position, then flat again
    opened = _place(writer, 0, "BUY")
    wait_for(lambda: _filled(home, [opened]), 20, "the long position")
    (stop,) = wait_for(lambda: stops() or None, 10, "the protective stop at the venue")
    closed = _place(writer, 1, "SELL")
    wait_for(lambda: _filled(home, [closed]), 20, "the position closed")
    wait_for(lambda: stops() == [], 10, "the stop canceled once flat")
    methods = _heartbeat(venue, time.time()).get("wsapi_methods", {})
    writer.close()
    bus.close()
    broker.stop()
    # Assert: the stop went over the websocket both ways, once each; the journal saw it
    assert (stop["orderType"], stop["side"], stop["closePosition"]) == ("STOP_MARKET", "SELL", True)
    assert methods.get("algoOrder.place") == 1 and methods.get("algoOrder.cancel") == 1, methods
    stop_calls = [(e["action"], e.get("transport"), e.get("outcome")) for e in _exec_lines(home)
                  if e.get("action") in ("algo_place", "algo_cancel")]
    assert stop_calls == [("algo_place", "ws", "ok"), ("algo_cancel", "ws", "ok")], stop_calls
    events = [(r["event"], r["client_algo_id"]) for r in _records(home, "protection")]
    assert events == [("placed", stop["clientAlgoId"]), ("canceled", stop["clientAlgoId"])]
    _assert_books_agree(home, venue)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("faults", [
    # answered 503/-1007 at once; the order reaches the matching engine 1.5 s later
    "late=1.0,late_mode=503,late_min_ms=1500,late_max_ms=1500",
    # placed, then no answer at all (the broker's timeout is 1 s); the connection cut 2 s later
    "timeout=1.0,timeout_s=2",
], ids=["late-1007", "no-answer"])
def test_broker_settles_an_ambiguous_ws_placement_by_query_without_a_duplicate(
        procs, home, tmp_path, faults):
    # Arrange: no user stream, so that only a query can tell the broker what became of it
    venue = Venue(procs, tmp_path, faults)
    broker = Broker(procs, home, venue, extra="  order_transport: ws\n  user_stream: false\n")
    broker.start()
    bus = open_bus(home)
    writer = bus.writer("intents")
    # Act
    cid = _place(writer, 0, "BUY")
    wait_for(lambda: _filled(home, [cid]), 40, "the ambiguous order settled by query",
             interval=0.2)
    writer.close()
    bus.close()
    time.sleep(2.5)         # past the stall: nothing may be sent again after it
    ws_places = _ws_places(venue)
    broker.stop()
    # Assert: sent once over the websocket, ambiguous, settled by the venue's word, never re-sent
    statuses = [r["status"] for r in _records_of(home, cid)]
    assert "UNKNOWN" in statuses and statuses[-1] == "FILLED", statuses
    assert ws_places == 1
    assert _exec_places(home)[cid] == 1
    assert [o["clientOrderId"] for o in venue.all_orders()] == [cid]
    _assert_books_agree(home, venue)


def _records_of(home, cid: str) -> list[dict]:
    bus = open_bus(home)
    reader = bus.reader("orders", start="beginning")
    out = []
    while True:
        items = reader.read(10000)
        if not items:
            break
        out += [r for r, _ in items if r.get("client_order_id") == cid]
    reader.close()
    bus.close()
    return out

