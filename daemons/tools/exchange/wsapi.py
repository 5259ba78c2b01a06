"""The WebSocket API: Binance USD-M's request/response trading over a websocket
(``wss://ws-fapi.binance.com/ws-fapi/v1``), served on the exchange's port at ``/ws-fapi/v1``.

Wire format (developers.binance.com derivatives/usds-margined-futures websocket-api-general-info):
one JSON request per text frame, ``{"id": <int|str|null>, "method": "order.place",
"params": {...}}`` (a method may carry a version prefix, ``v1/order.place``); one JSON answer
per frame, ``{"id", "status": 200, "result": ..., "rateLimits": [...]}`` or ``{"id", "status":
4xx/5xx, "error": {"code", "msg"[, "data"]}, "rateLimits": [...]}``. Answers may come out of
order (an added latency delays one answer, not the connection).

Methods: ``order.place`` (weight 0, one order on the order counts), ``order.cancel`` and
``order.status`` (weight 1), ``algoOrder.place`` (an algo order as ``POST /fapi/v1/algoOrder``
takes it: weight 0, one order on the order counts) and ``algoOrder.cancel`` (by ``algoId`` or
``clientAlgoId``, weight 1), ``session.logon`` / ``session.status`` / ``session.logout``
(weight 2). The handshake costs 5. Weights and order counts go to the same limiter as REST
(one budget per IP and per account, shared with REST, as on Binance).

Signed requests carry ``apiKey``, ``timestamp`` (``recvWindow`` optional) and ``signature``:
the HMAC-SHA256 (hex) of every other parameter sorted by name, ``name=value`` joined with
``&``, values as sent (strings as they are, integers in decimal, booleans ``true``/``false``),
nothing URL-encoded. After a ``session.logon`` a request may leave ``apiKey`` and ``signature``
out. Binance accepts ``session.logon`` only from Ed25519 keys; this exchange holds HMAC key
pairs, so it refuses the logon as Binance refuses an HMAC one (-1022): clients with HMAC keys
sign every request, as Binance documents for them.

``rateLimits`` (REQUEST_WEIGHT per minute of the IP; for ``order.place`` and ``algoOrder.place``
also ORDERS per 10 s and per minute of the account) is in every answer unless the connection was
opened with ``?returnRateLimits=false`` or the request says ``"returnRateLimits": false`` (a
request's ``true`` turns it back on).

Faults are drawn exactly as for REST (the same seeded streams and number of draws): http5xx and
r429 before processing; latency delays the answer; ``late`` answers a new order 503/-1007 (or
never, late_mode timeout) and places it later; after an order was processed ``unknown503``
answers 503/-1007 and ``timeout`` sends no answer and closes the connection ``timeout_s`` later.
"""
from __future__ import annotations

import asyncio
import re
import time

import orjson
from aiohttp import WSMsgType, web

from . import errors, signing

PATH = "/ws-fapi/v1"
HANDSHAKE_WEIGHT = 5
#: method -> (request weight, needs a signed key, counts on the order counts)
METHODS = {
    "order.place": (0, True, True),
    "order.cancel": (1, True, False),
    "order.status": (1, True, False),
    "algoOrder.place": (0, True, True),
    "algoOrder.cancel": (1, True, False),
    "session.logon": (2, False, False),
    "session.status": (2, False, False),
    "session.logout": (2, False, False),
}
ORDER_METHODS = ("order.place", "order.cancel")
VERSION_RE = re.compile(r"^v\d+/")


def is_order_count(method: str) -> bool:
    """Does ``method`` count on the order counts (its answer then shows them)?"""
    spec = METHODS.get(method)
    return spec is not None and spec[2]


def now_ms() -> int:
    return int(time.time() * 1000)


def payload_of(params: dict) -> str:
    """The signed payload: every parameter but ``signature``, sorted by name, ``k=v&...``."""
    return "&".join(f"{k}={text(params[k])}" for k in sorted(params) if k != "signature")


def text(value) -> str:
    """A parameter's value as the venue reads it (JSON scalars to their text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


class Session:
    """One WebSocket API connection."""

    def __init__(self, ws, transport, ip: str, return_rate_limits: bool, now: int):
        self.ws = ws
        self.transport = transport
        self.ip = ip
        self.return_rate_limits = return_rate_limits
        self.connected_since = now
        self.api_key: str | None = None
        self.authorized_since: int | None = None
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        #: while a request is handled: the replies due at once, which serve() writes before the
        #: loop runs anything else (the market and user-stream messages the order caused)
        self.inline: list[str] | None = None

    def status(self, now: int) -> dict:
        return {"apiKey": self.api_key, "authorizedSince": self.authorized_since,
                "connectedSince": self.connected_since,
                "returnRateLimits": self.return_rate_limits, "serverTime": now}


class WsApi:
    """The WebSocket API of one :class:`daemons.tools.exchange.app.Exchange` (its venue, limiter,
    credentials and fault plan)."""

    def __init__(self, exchange):
        self.ex = exchange
        self.sessions: set[Session] = set()
        self.requests = 0
        self.methods: dict[str, int] = {}     # answered requests by method (health)

    # --- connection ------------------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.StreamResponse:
        ex = self.ex
        ip = request.remote or "?"
        now = now_ms()
        try:
            ex.limiter.request(ip, HANDSHAKE_WEIGHT, now)
        except errors.ApiError as exc:
            return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        rrl = request.query.get("returnRateLimits", "true").lower() != "false"
        ws = web.WebSocketResponse(heartbeat=180.0, autoping=True)
        await ws.prepare(request)
        sess = Session(ws, request.transport, ip, rrl, now)
        self.sessions.add(sess)
        ex.log.info("wsapi-connect", ip=ip)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    sess.inline = []
                    self._on_text(sess, msg.data)
                    replies, sess.inline = sess.inline, None
                    for data in replies:
                        await self._write(sess, data)
                elif msg.type == WSMsgType.BINARY:
                    self._send(sess, self._error(sess, None, errors.ApiError(
                        -1102, "Requests must be JSON in text frames."), None, now_ms()))
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                if sess.closed:
                    break
        finally:
            sess.closed = True
            self.sessions.discard(sess)
            for t in list(sess.tasks):
                t.cancel()
            await asyncio.gather(*sess.tasks, return_exceptions=True)
            if not ws.closed:
                await ws.close()
            ex.log.info("wsapi-disconnect", ip=ip)
        return ws

    async def close(self) -> None:
        for sess in list(self.sessions):
            sess.closed = True
            for t in list(sess.tasks):
                t.cancel()
            try:
                await sess.ws.close()
            except Exception:
                pass

    def _spawn(self, sess: Session, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        sess.tasks.add(task)
        task.add_done_callback(sess.tasks.discard)

    def _send(self, sess: Session, reply: dict, delay_s: float = 0.0) -> None:
        """Answer a request: at once (by serve(), ahead of what the request set off, as a venue
        answers before its streams catch up), or after ``delay_s`` (the latency fault)."""
        data = orjson.dumps(reply).decode()
        if delay_s <= 0 and sess.inline is not None:
            sess.inline.append(data)
            return

        async def go() -> None:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await self._write(sess, data)
        self._spawn(sess, go())

    @staticmethod
    async def _write(sess: Session, data: str) -> None:
        if not sess.closed and not sess.ws.closed:
            try:
                await sess.ws.send_str(data)
            except (ConnectionResetError, RuntimeError):
                pass

    def _stall(self, sess: Session, method: str) -> None:
        """The timeout faults: no answer; the connection is cut ``timeout_s`` later."""
        self.ex.log.info("fault-timeout", path=PATH, method=method)

        async def go() -> None:
            await asyncio.sleep(self.ex.fault_spec.timeout_s)
            sess.closed = True
            if sess.transport is not None:
                sess.transport.close()
        self._spawn(sess, go())

    # --- one request -----------------------------------------------------------------------------
    def _rate_limits(self, sess: Session, key: str | None, order: bool, now: int) -> list[dict]:
        lim = self.ex.limiter
        out = []
        if order and key:
            c10, c1 = lim.order_counts(key, now)
            out += [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                     "limit": lim.order_limit_10s, "count": c10},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                     "limit": lim.order_limit, "count": c1}]
        out.append({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                    "limit": lim.weight_limit, "count": lim.used(sess.ip, now)})
        return out

    def _error(self, sess, rid, exc: errors.ApiError, rrl, now, key=None, order=False) -> dict:
        err = {"code": exc.code, "msg": exc.msg}
        retry = exc.headers.get("Retry-After")
        if exc.status in (418, 429) and retry is not None:
            err["data"] = {"serverTime": now, "retryAfter": now + int(retry) * 1000}
        out = {"id": rid, "status": exc.status, "error": err}
        if rrl is not False and (rrl or sess.return_rate_limits):
            out["rateLimits"] = self._rate_limits(sess, key, order, now)
        return out

    def _on_text(self, sess: Session, data: str) -> None:
        ex = self.ex
        now = now_ms()
        self.requests += 1
        ex.requests += 1
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._send(sess, self._error(sess, None, errors.ApiError(
                -1102, "Malformed request: not valid JSON."), None, now))
            return
        if not isinstance(req, dict):
            self._send(sess, self._error(sess, None, errors.ApiError(
                -1102, "Malformed request: a request is a JSON object."), None, now))
            return
        rid = req.get("id")
        if not (rid is None or isinstance(rid, str)
                or (isinstance(rid, int) and not isinstance(rid, bool))):
            self._send(sess, self._error(sess, None, errors.ApiError(
                -1102, "Malformed request: 'id' must be an integer, a string or null."), None, now))
            return
        method = VERSION_RE.sub("", str(req.get("method") or ""))
        params = req.get("params")
        if params is None:
            params = {}
        rrl = params.get("returnRateLimits") if isinstance(params, dict) else None
        if not isinstance(rrl, bool):
            rrl = None
        fault = ex.faults.rest()
        latency = ex.faults.latency_s()
        spec = METHODS.get(method)
        if spec is not None:
            self.methods[method] = self.methods.get(method, 0) + 1
        key = None
        try:
            if spec is None:
                raise errors.ApiError(-5000, f"Method {method or '(none)'} is invalid", 400)
            if not isinstance(params, dict):
                raise errors.ApiError(-1102, "Malformed request: 'params' must be an object.")
            weight, signed, is_new = spec
            ex.limiter.request(sess.ip, weight, now)
            if fault == "r429":
                retry = ex.fault_spec.r429_retry_s or 60 - (now // 1000) % 60
                raise errors.too_many_requests(ex.limiter.weight_limit, max(1, int(retry)))
            if fault and fault.startswith("http5xx"):
                raise errors.service_unavailable(int(fault.split(":")[1]))
            if method.startswith("session."):
                result = self._session(sess, method, params, now)
                reply = {"id": rid, "status": 200, "result": result}
                if rrl is not False and (rrl or sess.return_rate_limits):
                    reply["rateLimits"] = self._rate_limits(sess, None, False, now)
                self._send(sess, reply, latency)
                return
            key = self._authenticate(sess, params, now)
            p = {k: text(v) for k, v in params.items()
                 if k not in ("apiKey", "signature", "returnRateLimits")}
            if method == "algoOrder.place":
                ex.limiter.order(key, now)
                result = ex.venue.new_algo_order(key, p, now)
            elif method == "algoOrder.cancel":
                result = ex.venue.cancel_algo(key, p, now)
            elif is_new:
                ex.limiter.order(key, now)
                late = ex.faults.late()
                if late is not None:
                    ex.venue.new_order(key, p, now, test=True)   # refused now, or late
                    ex.faults.skip_order()
                    ex._send_late(key, p, *late)
                    if late[0] == "late503":
                        raise errors.timeout_unknown()
                    self._stall(sess, method)
                    return
                result = ex.venue.new_order(key, p, now)
            elif method == "order.cancel":
                result = ex.venue.cancel_order(key, p, now)
            else:
                result = ex.venue.query_order(key, p)
            if method in ORDER_METHODS:
                after = ex.faults.order()
                if after == "unknown503":
                    raise errors.timeout_unknown()
                if after == "timeout":
                    self._stall(sess, method)
                    return
        except errors.ApiError as exc:
            self._send(sess, self._error(sess, rid, exc, rrl, now, key, is_order_count(method)),
                       latency)
            if exc.code == -2015 and sess.api_key is not None and key == sess.api_key:
                sess.api_key = sess.authorized_since = None    # a revoked key ends the session
            return
        reply = {"id": rid, "status": 200, "result": result}
        if rrl is not False and (rrl or sess.return_rate_limits):
            reply["rateLimits"] = self._rate_limits(sess, key, is_order_count(method), now)
        self._send(sess, reply, latency)

    def _authenticate(self, sess: Session, params: dict, now: int) -> str:
        """The account a signed request acts for: its own ``apiKey`` + ``signature``, else the
        session's logged-on key. Raises -1102 / -2015 / -1022 / -1021 like REST."""
        sig = params.get("signature")
        api_key = params.get("apiKey")
        if sig is None and api_key is None and sess.api_key is not None:
            key = sess.api_key
            if key not in self.ex.credentials:
                raise errors.rejected_key()
        else:
            if not isinstance(api_key, str) or not api_key:
                raise errors.mandatory("apiKey")
            secret = self.ex.credentials.get(api_key)
            if secret is None:
                raise errors.rejected_key()
            if not isinstance(sig, str) or not sig:
                raise errors.mandatory("signature")
            expected = signing.sign(secret, payload_of(params))
            if not _equal(expected, sig.strip().lower()):
                raise errors.bad_signature()
            key = api_key
        ts = params.get("timestamp")
        rw = params.get("recvWindow")
        signing.check_timestamp(None if ts is None else text(ts), None if rw is None else text(rw),
                                now)
        return key

    def _session(self, sess: Session, method: str, params: dict, now: int) -> dict:
        if method == "session.status":
            return sess.status(now)
        if method == "session.logout":
            sess.api_key = sess.authorized_since = None
            return sess.status(now)
        # session.logon: Binance takes Ed25519 keys only; every key here is an HMAC pair
        api_key = params.get("apiKey")
        if not isinstance(api_key, str) or not api_key:
            raise errors.mandatory("apiKey")
        if api_key not in self.ex.credentials:
            raise errors.rejected_key()
        if not params.get("signature"):
            raise errors.mandatory("signature")
        ts = params.get("timestamp")
        signing.check_timestamp(None if ts is None else text(ts), None, now)
        raise errors.bad_signature()


def _equal(a: str, b: str) -> bool:
    import hmac
    return hmac.compare_digest(a, b)
