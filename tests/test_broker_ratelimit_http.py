"""The REST client against a scripted loopback server: 429 Retry-After honoured, nothing sent
during a 418 ban, used-weight headers keep it under the budget, -1021 resyncs the clock."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from daemons.broker.binance.errors import Banned, NotSent, RateLimited
from daemons.broker.gateway import BinanceGateway
from daemons.broker.orders import Order
from daemons.broker.ratelimit import RateLimiter

ORDER = {"clientOrderId": "c1", "orderId": 1, "symbol": "BTCUSDT", "side": "BUY", "status": "FILLED",
         "origQty": "0.01", "price": "0", "executedQty": "0.01", "avgPrice": "100", "type": "MARKET"}


class Script:
    def __init__(self, answers):
        self.answers = list(answers)     # (status, headers, body) per order request
        self.hits: list[tuple[float, str, str]] = []


def _server(script: Script):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self):
            path, _, query = self.path.partition("?")
            script.hits.append((time.time(), self.command, path))
            if path == "/fapi/v1/time":
                status, headers, body = 200, {"X-MBX-USED-WEIGHT-1M": "3"}, {"serverTime": int(time.time() * 1000) + 5000}
            else:
                status, headers, body = script.answers.pop(0)
            data = orjson.dumps(body)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = _answer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def scripted():
    servers = []

    def make(answers):
        script = Script(answers)
        srv = _server(script)
        servers.append(srv)
        gw = BinanceGateway(f"http://127.0.0.1:{srv.server_address[1]}", None, "k", "s",
                            limiter=RateLimiter(margin=0.2), timeout_s=2.0)
        return script, gw

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def _order():
    return Order("c1", "BTCUSDT", "BUY", 0.01)


def _wait_until_free(limiter, deadline_s=5.0):
    end = time.time() + deadline_s
    while limiter.wait_for(0, 1) > 0:
        assert time.time() < end
        time.sleep(0.02)


def test_ratelimit_429_then_418_nothing_sent_until_they_end(scripted):
    script, gw = scripted([
        (429, {"Retry-After": "1"}, {"code": -1003, "msg": "Too many requests"}),
        (418, {"Retry-After": "1"}, {"code": -1003, "msg": "IP banned"}),
        (200, {"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1M": "1"}, ORDER),
    ])
    with pytest.raises(RateLimited) as first:
        gw.place(_order())
    assert first.value.retry_at == pytest.approx(time.time() + 1, abs=0.3)
    hits = len(script.hits)
    with pytest.raises(NotSent):
        gw.place(_order())           # held back locally: nothing reaches the server
    assert len(script.hits) == hits
    _wait_until_free(gw.limiter)
    assert time.time() >= first.value.retry_at - 0.01
    with pytest.raises(Banned) as ban:
        gw.place(_order())
    hits = len(script.hits)
    for _ in range(5):
        with pytest.raises(NotSent):
            gw.place(_order())
    assert len(script.hits) == hits, "a request was sent during the 418 ban"
    _wait_until_free(gw.limiter)
    assert time.time() >= ban.value.retry_at - 0.01
    vo = gw.place(_order())
    assert vo.status == "FILLED" and script.answers == []


def test_ratelimit_used_weight_header_holds_back_before_the_limit(scripted):
    script, gw = scripted([(200, {"X-MBX-USED-WEIGHT-1M": "1916"}, [])])
    gw.http.user_trades("BTCUSDT")          # the venue says 1916 of 2400 are used
    hits = len(script.hits)
    with pytest.raises(RateLimited, match="held back"):
        gw.http.user_trades("BTCUSDT")      # weight 5 would pass 80 % of 2400
    assert len(script.hits) == hits


def test_signing_1021_resyncs_clock_and_sends_once_more(scripted):
    script, gw = scripted([
        (400, {}, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}),
        (200, {}, ORDER),
    ])
    vo = gw.place(_order())
    assert vo.order_id == 1
    assert [p for _, _, p in script.hits] == ["/fapi/v1/order", "/fapi/v1/time", "/fapi/v1/order"]
    assert gw.http.server_clock.offset_ms > 4000
