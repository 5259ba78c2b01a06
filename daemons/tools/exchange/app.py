"""The HTTP + websocket server (aiohttp): REST under /fapi, streams under /ws, /stream,
/public, /market and /private, the WebSocket API (order.place, order.cancel, order.status,
session.*) under /ws-fapi/v1 (see wsapi), all on one port.

The REST pipeline of every request: seeded fault draw -> parameters from the query string and
the form body (see signing) -> rate limit (weight) -> injected 429/5xx -> authentication (API
key, HMAC over the raw query+body, timestamp/recvWindow) -> order-count limit -> for a new
order, the late draw (checked now, answered 503 -1007 or stalled, placed after a delay) -> venue
call -> for orders, an injected unknown-status 503 or a stalled connection after the order was
processed -> headers (X-MBX-USED-WEIGHT-1M, X-MBX-ORDER-COUNT-*) -> added latency.
"""
from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import orjson
from aiohttp import WSMsgType, web

from . import errors, filters, signing, wire
from .faults import FaultPlan
from .market import SimFeed
from .ratelimit import RateLimiter, weight
from .replay import ReplayFeed
from .state import StateStore
from .streams import DEPTH_SPEEDS, Conn, DepthAggregator, Hub, valid_stream
from .userstream import ListenKeys, expired_event
from .venue import Venue
from .wsapi import PATH as WS_API_PATH
from .wsapi import WsApi

NONE, KEY, SIGNED = "NONE", "KEY", "SIGNED"
ORDER_PATHS = {("POST", "/fapi/v1/order"), ("DELETE", "/fapi/v1/order")}


def now_ms() -> int:
    return int(time.time() * 1000)


class Exchange:
    """Everything one running venue holds; ``routes`` maps (method, path) to handlers."""

    def __init__(self, settings: dict, log):
        self.settings = settings
        self.log = log
        symbols = [s.upper() for s in settings["symbols"]]
        specs = {s: filters.spec_for(s) for s in symbols}
        start = now_ms()
        if settings["feed"] == "replay":
            given = settings.get("symbols_given")
            self.feed = ReplayFeed(settings["inputs"], specs if given else None,
                                   speed=settings["speed"], start_ms=start,
                                   symbol=symbols[0] if given and len(symbols) == 1 else None)
            specs = self.feed.specs
        else:
            self.feed = SimFeed(specs, settings["seed"], start)
        self.specs = specs
        fs = settings["faults"]
        self.fault_spec = fs
        self.faults = FaultPlan(fs, settings["seed"])
        self.limiter = RateLimiter(fs.weight_limit, fs.order_limit, fs.order_limit_10s,
                                   fs.ban_after, fs.ban_s)
        self.store = StateStore(settings.get("state_dir"))
        self.credentials = dict(settings["credentials"])
        self.venue = Venue(specs, self.feed, self.credentials,
                           Decimal(str(settings["balance"])), self.store,
                           funding_interval_s=settings["funding_interval_s"],
                           funding_rate=Decimal(str(settings["funding_rate"])))
        self.venue.user_sink = self._user_event
        self.venue.public_sink = self._route
        self.hub = Hub(self.faults)
        self.listen_keys = ListenKeys(fs.listenkey_expire_s)
        self.aggs = {(s, ms): DepthAggregator(ms) for s in specs for ms in DEPTH_SPEEDS.values()}
        self.agg_ids = {s: 0 for s in specs}
        self.requests = 0
        self._tasks: list[asyncio.Task] = []
        self._conns: set[Conn] = set()
        self._late: set[asyncio.TimerHandle] = set()     # late orders not landed yet
        self.routes = self._routes()
        self.wsapi = WsApi(self)           # the WebSocket API (order.place, ...) on /ws-fapi/v1

    # --- market data -------------------------------------------------------------------------
    def _route(self, events) -> None:
        hub = self.hub
        for kind, sym, data in events:
            s = sym.lower()
            if kind == "depth":
                hub.publish(f"{s}@depth@0ms", data)
                for ms in DEPTH_SPEEDS.values():
                    self.aggs[(sym, ms)].add(data)
            elif kind == "trade":
                hub.publish(f"{s}@trade", data)
                self.agg_ids[sym] += 1
                if hub.has(f"{s}@aggTrade"):
                    hub.publish(f"{s}@aggTrade", {
                        "e": "aggTrade", "E": data["E"], "a": self.agg_ids[sym], "s": sym,
                        "p": data["p"], "q": data["q"], "nq": data["q"], "f": data["t"],
                        "l": data["t"], "T": data["T"], "m": data["m"]})
            elif kind == "aggTrade":        # recorded aggregate trades (aggTrades CSV, streams)
                hub.publish(f"{s}@aggTrade", data)
            elif kind == "bookTicker":
                hub.publish(f"{s}@bookTicker", data)
                hub.publish("!bookTicker", data)
            elif kind == "markPrice":
                hub.publish(f"{s}@markPrice@1s", data)
                hub.publish(f"{s}@markPrice", data)

    def _flush_depth(self, ms: int) -> None:
        for sym in self.specs:
            out = self.aggs[(sym, ms)].flush()
            if out is None:
                continue
            # as on Binance: E is when the update is pushed, T the last transaction in it
            out["E"] = self.feed.market_ms(now_ms())
            s = sym.lower()
            name = "depth" if ms == 250 else f"depth@{ms}ms"
            self.hub.publish(f"{s}@{name}", out)
            suffix = "" if ms == 250 else f"@{ms}ms"
            for n in (5, 10, 20):
                stream = f"{s}@depth{n}{suffix}"
                if self.hub.has(stream):
                    self.hub.publish(stream, self._partial(sym, out, n))

    def _partial(self, sym: str, diff: dict, n: int) -> dict:
        spec, book = self.specs[sym], self.feed.books[sym]
        return {"e": "depthUpdate", "E": diff["E"], "T": diff["T"], "s": sym, "U": diff["U"],
                "u": diff["u"], "pu": diff["pu"],
                "b": [[spec.fmt_price(p), spec.fmt_qty(q)] for p, q in book.top("b", n)],
                "a": [[spec.fmt_price(p), spec.fmt_qty(q)] for p, q in book.top("a", n)]}

    async def _market_loop(self) -> None:
        if self.settings.get("replay_wait") and isinstance(self.feed, ReplayFeed):
            while not self.hub.subs:     # nobody would see the start of the replay yet
                await asyncio.sleep(0.01)
            self.feed.start_clock(now_ms())
        while True:
            now = now_ms()
            events = self.feed.advance(now)
            if events:
                self._route(events)
                self.venue.on_market(events, now)
            delay = self.feed.seconds_to_next(now_ms())
            await asyncio.sleep(min(max(delay, 0.002), 0.05))

    async def _depth_loop(self, ms: int) -> None:
        while True:
            await asyncio.sleep(ms / 1000 - (time.time() * 1000 % ms) / 1000)
            self._flush_depth(ms)

    def mark_event(self, sym: str, now: int) -> dict:
        """A markPriceUpdate: mark = index = estimated settle price = the book's mid (rounded
        down to a tick), so the premium is 0 and the funding rate is the configured one."""
        mark = wire.dec(self.venue.mark_dec(sym))
        return {"e": "markPriceUpdate", "E": now, "s": sym, "p": mark, "ap": mark,
                "i": mark, "P": mark, "r": wire.dec(self.venue.funding_rate),
                "T": self.venue.next_funding_time(now)}

    async def _mark_loop(self) -> None:
        """markPriceUpdate every second (<s>@markPrice@1s) and every third (<s>@markPrice) with
        the sim feed; replays publish their recorded ones."""
        tick = 0
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            tick += 1
            if not self.feed.live:
                continue
            now = now_ms()
            for sym in self.specs:
                s = sym.lower()
                if not (self.hub.has(f"{s}@markPrice@1s") or self.hub.has(f"{s}@markPrice")):
                    continue
                ev = self.mark_event(sym, now)
                self.hub.publish(f"{s}@markPrice@1s", ev)
                if tick % 3 == 0:
                    self.hub.publish(f"{s}@markPrice", ev)

    async def _funding_loop(self) -> None:
        """Funding at every funding time (--funding-interval-s; Binance: 8 h)."""
        while True:
            now = now_ms()
            due = self.venue.next_funding_time(now)
            await asyncio.sleep(max(0.0, (due - now) / 1000))
            while now_ms() < due:
                await asyncio.sleep(0.001)
            rows = self.venue.charge_funding(due)
            if rows:
                self.log.info("funding", time=due, payments=len(rows))

    async def _listen_key_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = now_ms()
            for lk in self.listen_keys.expire(now):
                self.hub.publish(lk, expired_event(lk, now))
                self.log.info("listenkey-expired")

    async def _countdown_loop(self) -> None:
        """The dead-man switches: checked every 10 ms, as Binance says it does."""
        while True:
            await asyncio.sleep(0.01)
            if self.venue.countdowns:
                for key, sym, n in self.venue.expire_countdowns(now_ms()):
                    self.log.info("countdown-cancel", symbol=sym, orders=n)

    def _user_event(self, api_key: str, event: dict) -> None:
        lk = self.listen_keys.active(api_key, now_ms())
        if lk is not None:
            self.hub.publish(lk, event)

    # --- REST --------------------------------------------------------------------------------
    def _routes(self) -> dict:
        v = self.venue
        lk = self.listen_keys
        r = {
            ("GET", "/fapi/v1/ping"): (NONE, lambda k, p, t: {}),
            ("GET", "/fapi/v1/time"): (NONE, lambda k, p, t: {"serverTime": t}),
            ("GET", "/fapi/v1/exchangeInfo"): (NONE, lambda k, p, t: filters.exchange_info(
                [self.specs[s] for s in sorted(self.specs)], self.limiter.rate_limits(), t)),
            ("GET", "/fapi/v1/depth"): (NONE, self.depth),
            ("GET", "/fapi/v1/ticker/bookTicker"): (NONE, self.book_ticker),
            ("GET", "/fapi/v1/ticker/price"): (NONE, self.ticker_price),
            ("GET", "/fapi/v2/ticker/price"): (NONE, self.ticker_price),
            ("GET", "/fapi/v1/ticker/24hr"): (NONE, self.ticker_24hr),
            ("GET", "/fapi/v1/premiumIndex"): (NONE, self.premium_index),
            ("POST", "/fapi/v1/order"): (SIGNED, v.new_order),
            ("POST", "/fapi/v1/order/test"): (SIGNED, lambda k, p, t: v.new_order(k, p, t, test=True)),
            ("GET", "/fapi/v1/order"): (SIGNED, lambda k, p, t: v.query_order(k, p)),
            ("DELETE", "/fapi/v1/order"): (SIGNED, v.cancel_order),
            ("GET", "/fapi/v1/openOrder"): (SIGNED, lambda k, p, t: v.open_order(k, p)),
            ("GET", "/fapi/v1/openOrders"): (SIGNED, lambda k, p, t: v.open_orders(k, p)),
            ("DELETE", "/fapi/v1/allOpenOrders"): (SIGNED, v.cancel_all),
            ("GET", "/fapi/v1/allOrders"): (SIGNED, lambda k, p, t: v.all_orders(k, p)),
            ("GET", "/fapi/v1/userTrades"): (SIGNED, lambda k, p, t: v.user_trades(k, p)),
            ("POST", "/fapi/v1/algoOrder"): (SIGNED, v.new_algo_order),
            ("GET", "/fapi/v1/algoOrder"): (SIGNED, lambda k, p, t: v.query_algo(k, p)),
            ("DELETE", "/fapi/v1/algoOrder"): (SIGNED, v.cancel_algo),
            ("GET", "/fapi/v1/openAlgoOrders"): (SIGNED, lambda k, p, t: v.open_algo_orders(k, p)),
            ("GET", "/fapi/v1/allAlgoOrders"): (SIGNED, lambda k, p, t: v.all_algo_orders(k, p)),
            ("DELETE", "/fapi/v1/algoOpenOrders"): (SIGNED, v.cancel_all_algos),
            ("POST", "/fapi/v1/countdownCancelAll"): (SIGNED, v.countdown_cancel_all),
            ("GET", "/fapi/v1/income"): (SIGNED, v.income_history),
            ("POST", "/fapi/v1/leverage"): (SIGNED, v.set_leverage),
            ("POST", "/fapi/v1/marginType"): (SIGNED, v.set_margin_type),
            ("POST", "/fapi/v1/positionSide/dual"): (SIGNED, v.set_position_mode),
            ("GET", "/fapi/v1/leverageBracket"): (SIGNED, lambda k, p, t: v.leverage_bracket(k, p)),
            ("GET", "/fapi/v2/positionRisk"): (SIGNED, lambda k, p, t: v.position_risk(k, p, 2)),
            ("GET", "/fapi/v3/positionRisk"): (SIGNED, lambda k, p, t: v.position_risk(k, p, 3)),
            ("GET", "/fapi/v2/account"): (SIGNED, lambda k, p, t: v.account_info(k, 2)),
            ("GET", "/fapi/v3/account"): (SIGNED, lambda k, p, t: v.account_info(k, 3)),
            ("GET", "/fapi/v2/balance"): (SIGNED, lambda k, p, t: v.balance(k, 2)),
            ("GET", "/fapi/v3/balance"): (SIGNED, lambda k, p, t: v.balance(k, 3)),
            ("GET", "/fapi/v1/positionSide/dual"): (SIGNED, lambda k, p, t: v.position_mode(k)),
            ("GET", "/fapi/v1/multiAssetsMargin"): (SIGNED, lambda k, p, t: {"multiAssetsMargin": False}),
            ("GET", "/fapi/v1/rateLimit/order"): (SIGNED, lambda k, p, t: self.limiter.rate_limits()[1:]),
            ("POST", "/fapi/v1/listenKey"): (KEY, lambda k, p, t: {"listenKey": lk.create(k, t)}),
            ("PUT", "/fapi/v1/listenKey"): (KEY, lambda k, p, t: {"listenKey": lk.keepalive(k, t)}),
            ("DELETE", "/fapi/v1/listenKey"): (KEY, lambda k, p, t: lk.close(k) or {}),
            # ccxt with keys asks for these before exchangeInfo unless told not to: no spot wallet here
            ("GET", "/sapi/v1/capital/config/getall"): (SIGNED, lambda k, p, t: []),
            ("GET", "/sapi/v1/margin/allPairs"): (SIGNED, lambda k, p, t: []),
        }
        return r

    def depth(self, key, p, now) -> dict:
        spec = self.venue.spec(p)
        limit = int(p.get("limit") or 500) if str(p.get("limit") or "500").isdigit() else 500
        if limit not in (5, 10, 20, 50, 100, 500, 1000):
            raise errors.ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        book = self.feed.books[spec.symbol]
        t = self.feed.market_ms(now)
        return {"lastUpdateId": book.last_update_id, "E": t, "T": t,
                "bids": [[spec.fmt_price(px), spec.fmt_qty(q)] for px, q in book.top("b", limit)],
                "asks": [[spec.fmt_price(px), spec.fmt_qty(q)] for px, q in book.top("a", limit)]}

    def _ticker(self, spec, now) -> dict:
        book = self.feed.books[spec.symbol]
        bb, ba = book.best_bid() or (0, 0), book.best_ask() or (0, 0)
        return {"symbol": spec.symbol, "bidPrice": spec.fmt_price(bb[0]), "bidQty": spec.fmt_qty(bb[1]),
                "askPrice": spec.fmt_price(ba[0]), "askQty": spec.fmt_qty(ba[1]), "time": now,
                "lastUpdateId": book.last_update_id}

    def book_ticker(self, key, p, now):
        spec = self.venue.spec(p, required=False)
        if spec:
            return self._ticker(spec, now)
        return [self._ticker(self.specs[s], now) for s in sorted(self.specs)]

    def ticker_price(self, key, p, now):
        spec = self.venue.spec(p, required=False)
        rows = [{"symbol": s.symbol, "price": s.fmt_price(self.feed.mark(s.symbol)), "time": now}
                for s in ([spec] if spec else [self.specs[x] for x in sorted(self.specs)])]
        return rows[0] if spec else rows

    def ticker_24hr(self, key, p, now):
        spec = self.venue.spec(p, required=False)
        rows = []
        for s in ([spec] if spec else [self.specs[x] for x in sorted(self.specs)]):
            m = s.fmt_price(self.feed.mark(s.symbol))
            rows.append({"symbol": s.symbol, "priceChange": "0", "priceChangePercent": "0.000",
                         "weightedAvgPrice": m, "lastPrice": m, "lastQty": s.fmt_qty(s.min_qty),
                         "openPrice": m, "highPrice": m, "lowPrice": m, "volume": "0",
                         "quoteVolume": "0", "openTime": now - 86400000, "closeTime": now,
                         "firstId": 0, "lastId": 0, "count": 0})
        return rows[0] if spec else rows

    def premium_index(self, key, p, now):
        """GET /fapi/v1/premiumIndex (one object with a symbol, else a list)."""
        spec = self.venue.spec(p, required=False)
        rows = []
        for s in ([spec] if spec else [self.specs[x] for x in sorted(self.specs)]):
            ev = self.mark_event(s.symbol, now)
            rows.append({"symbol": s.symbol, "markPrice": ev["p"], "indexPrice": ev["i"],
                         "estimatedSettlePrice": ev["P"], "lastFundingRate": ev["r"],
                         "interestRate": "0.00010000", "nextFundingTime": ev["T"], "time": now})
        return rows[0] if spec else rows

    def _authenticate(self, security: str, request, query: str, body: str, params: dict,
                      now: int) -> str:
        key = request.headers.get("X-MBX-APIKEY", "").strip()
        if not key:
            raise errors.ApiError(-2014, "API-key format invalid.", 401)
        secret = self.credentials.get(key)
        if secret is None:
            raise errors.rejected_key()
        if security == SIGNED:
            signing.verify(secret, query, body)
            signing.check_timestamp(params.get("timestamp"), params.get("recvWindow"), now)
        return key

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.websocket(request)
        method, path = request.method, request.path
        query = request.raw_path.partition("?")[2]
        raw_body = await request.read()
        ip = request.remote or "?"
        self.requests += 1
        fault = self.faults.rest()
        latency = self.faults.latency_s()
        route = self.routes.get((method, path))
        headers = {}
        is_order = (method, path) in ORDER_PATHS
        key = None
        status, payload = 200, None
        now = now_ms()
        try:
            if route is None:
                raise errors.ApiError(-5000, f"Path {path}, Method {method} is invalid", 404)
            params, body = signing.request_params(method, query,
                                                  raw_body.decode("utf-8", "replace"),
                                                  request.headers.get("Content-Type"))
            self.limiter.request(ip, weight(method, path, params), now)
            if fault == "r429":
                retry = self.faults.spec.r429_retry_s or 60 - (now // 1000) % 60
                raise errors.too_many_requests(self.limiter.weight_limit, max(1, int(retry)))
            if fault and fault.startswith("http5xx"):
                raise errors.service_unavailable(int(fault.split(":")[1]))
            security, fn = route
            if security != NONE:
                key = self._authenticate(security, request, query, body, params, now)
            if method == "POST" and path == "/fapi/v1/algoOrder":
                self.limiter.order(key, now)
            if method == "POST" and path == "/fapi/v1/order":
                self.limiter.order(key, now)
                late = self.faults.late()
                if late is not None:
                    self.venue.new_order(key, params, now, test=True)   # refused now, or late
                    self.faults.skip_order()
                    self._send_late(key, params, *late)
                    if late[0] == "late503":
                        raise errors.timeout_unknown()
                    await self._stall(request, path)
            payload = fn(key, params, now)
            if is_order:
                after = self.faults.order()
                if after == "unknown503":
                    raise errors.timeout_unknown()
                if after == "timeout":
                    await self._stall(request, path)
        except errors.ApiError as exc:
            status, payload = exc.status, exc.body()
            headers.update(exc.headers)
        headers["X-MBX-USED-WEIGHT-1M"] = str(self.limiter.used(ip, now))
        if (is_order or path == "/fapi/v1/algoOrder") and key:
            c10, c1 = self.limiter.order_counts(key, now)
            headers["X-MBX-ORDER-COUNT-10S"] = str(c10)
            headers["X-MBX-ORDER-COUNT-1M"] = str(c1)
        if latency > 0:
            await asyncio.sleep(latency)
        return web.Response(body=orjson.dumps(payload), status=status, headers=headers,
                            content_type="application/json")

    async def _stall(self, request: web.Request, path: str) -> None:
        """The timeout faults: hold the request timeout_s, then close without an answer."""
        self.log.info("fault-timeout", path=path)
        await asyncio.sleep(self.fault_spec.timeout_s)
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError()

    # --- late orders -------------------------------------------------------------------------
    def _send_late(self, key: str, params: dict, kind: str, delay_s: float) -> None:
        """A new order on its way to the matching engine: it lands after ``delay_s``."""
        self.faults.count(kind)
        cid = params.get("newClientOrderId")
        self.log.info("fault-late", kind=kind, client_order_id=cid, delay_s=round(delay_s, 3))
        handle = None

        def land() -> None:
            self._late.discard(handle)
            now = now_ms()
            try:
                ack = self.venue.new_order(key, params, now, unique_id=False)
            except errors.ApiError as exc:
                self.faults.count("late_rejected")
                self.log.info("late-rejected", client_order_id=cid, code=exc.code, msg=exc.msg)
                return
            self.faults.count("late_landed")
            self.log.info("late-landed", client_order_id=ack.get("clientOrderId"),
                          order_id=ack.get("orderId"))

        handle = asyncio.get_running_loop().call_later(delay_s, land)
        self._late.add(handle)

    # --- websocket ---------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.rstrip("/") == WS_API_PATH:
            return await self.wsapi.serve(request)
        for prefix in ("/public", "/market", "/private"):
            if path.startswith(prefix + "/"):
                path = path[len(prefix):]
                break
        if path == "/stream" or path.startswith("/stream/"):
            combined = True
            names = [s for s in request.query.get("streams", "").split("/") if s]
        elif path == "/ws" or path.startswith("/ws/"):
            combined = False
            names = [s for s in path[len("/ws/"):].split("/") if s] if path.startswith("/ws/") else []
            if request.query.get("listenKey"):
                names.append(request.query["listenKey"])
        else:
            return web.json_response({"code": -5000, "msg": f"Path {request.path} is invalid"},
                                     status=404)
        ws = web.WebSocketResponse(heartbeat=180.0, autoping=True)
        await ws.prepare(request)
        conn = Conn(ws, combined)
        conn.transport = request.transport
        self._conns.add(conn)
        for name in names:
            if valid_stream(name, self.listen_keys.is_key):
                self.hub.subscribe(conn, name)
        writer = asyncio.create_task(self._ws_writer(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = self._ws_request(conn, msg.data)
                    if reply is not None:
                        conn.queue.put_nowait(orjson.dumps(reply))
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                if conn.dropped:
                    break
        finally:
            self.hub.remove(conn)
            self._conns.discard(conn)
            conn.drop()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await ws.close()
        return ws

    async def _ws_writer(self, conn: Conn) -> None:
        ws = conn.ws
        try:
            while True:
                msg = await conn.queue.get()
                if msg is None:
                    break
                await ws.send_str(msg.decode())
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            conn.dropped = True
            self.hub.remove(conn)
            if not ws.closed and conn.transport is not None:
                # a fault drop or a slow client: cut the socket without a close handshake
                conn.transport.close()

    def _ws_request(self, conn: Conn, text: str) -> dict | None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None}
        if not isinstance(req, dict):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None}
        rid = req.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
            return {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                    "id": None}
        method = req.get("method")
        params = req.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(s, str) for s in params):
                return {"error": {"code": 2, "msg": "Invalid request: params must be a list of streams"},
                        "id": rid}
            bad = [s for s in params if not valid_stream(s, self.listen_keys.is_key)]
            if bad and method == "SUBSCRIBE":
                return {"error": {"code": 2, "msg": f"Invalid request: unknown stream name {bad[0]}"},
                        "id": rid}
            for s in params:
                if method == "SUBSCRIBE":
                    self.hub.subscribe(conn, s)
                else:
                    self.hub.unsubscribe(conn, s)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": rid}
        if method == "SET_PROPERTY":
            if params and params[0] == "combined" and len(params) == 2 and isinstance(params[1], bool):
                conn.combined = params[1]
                return {"result": None, "id": rid}
            return {"error": {"code": 2, "msg": "Invalid request: unknown property"}, "id": rid}
        if method == "GET_PROPERTY":
            if params and params[0] == "combined":
                return {"result": conn.combined, "id": rid}
            return {"error": {"code": 2, "msg": "Invalid request: unknown property"}, "id": rid}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"}, "id": rid}

    # --- life cycle --------------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._market_loop()),
                       loop.create_task(self._mark_loop()),
                       loop.create_task(self._listen_key_loop()),
                       loop.create_task(self._countdown_loop()),
                       loop.create_task(self._funding_loop())]
        self._tasks += [loop.create_task(self._depth_loop(ms)) for ms in DEPTH_SPEEDS.values()]

    async def stop(self) -> None:
        for handle in list(self._late):    # late orders still on their way never land
            handle.cancel()
        if self._late:
            self.log.info("late-dropped", orders=len(self._late))
        self._late.clear()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.wsapi.close()
        for conn in list(self._conns):
            conn.drop()
            try:
                await conn.ws.close()
            except Exception:
                pass
        self.store.close()

    def health(self) -> dict:
        return {"requests": self.requests, "ws_connections": len(self._conns),
                "ws_sent": self.hub.sent,
                "wsapi_connections": len(self.wsapi.sessions),
                "wsapi_requests": self.wsapi.requests, "wsapi_methods": dict(self.wsapi.methods),
                "faults": dict(self.faults.counts),
                "orders": len(self.venue.orders), "late_pending": len(self._late)}
