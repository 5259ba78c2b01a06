"""The WebSocket API client: orders placed, canceled and queried over Binance USD-M's trading
websocket (``wss://ws-fapi.binance.com/ws-fapi/v1``; testnet
``wss://testnet.binancefuture.com/ws-fapi/v1``; ``ofi exchange``: ``ws://HOST:PORT/ws-fapi/v1``).

One connection, kept by a background thread that reads every answer and hands it to the caller
waiting on its request ``id``; any number of threads may have a request in flight at once.
Requests are JSON ``{"id", "method", "params"}``; each one is signed on its own with the HMAC
key pair: ``signature`` = hex HMAC-SHA256 of every other parameter (``apiKey``, ``timestamp``,
``recvWindow`` included) sorted by name, ``name=value`` joined by ``&``; integers as JSON
integers, decimals as JSON strings (Binance's websocket-api-general-info). ``session.logon``
is not used: Binance accepts it only from Ed25519 keys, and the broker's keys are HMAC.

What an outcome means is the same as over REST (:mod:`.errors`):

* :class:`WsUnavailable` (a :class:`NotSent`): the socket is not connected, so nothing left;
  the gateway sends the request over REST instead.
* an answer with ``status`` 200: the result; ``rateLimits`` update the rate limiter as the
  REST headers do.
* an answer with an error: :func:`.errors.classify` on its status and ``{"code", "msg"}``, so
  -1007 / 5xx are Ambiguous, 429 / 418 / -1021 NotSent, -2013 / -2011 NotFound; -1021 resyncs
  the clock and sends once more (it was not processed).
* no answer within ``timeout_s``, or the connection lost while waiting, or a failed write:
  :class:`.errors.Ambiguous`. The request may have reached the venue: it is never sent again
  (over either transport) until a query settles it.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from decimal import Decimal

import orjson

from .errors import Ambiguous, GatewayError, NotSent, RateLimited, classify

_LETTER = {"SECOND": "s", "MINUTE": "m", "HOUR": "h", "DAY": "d"}


class WsUnavailable(NotSent):
    """The websocket is not connected: nothing was sent (send it over REST)."""


def _value(v):
    """A parameter as JSON: ints stay ints, booleans become "true"/"false", floats and
    Decimals become plain decimal strings."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (float, Decimal)):
        s = format(Decimal(str(v)), "f")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s or "0"
    return v


def _text(v) -> str:
    return v if isinstance(v, str) else str(v)


def payload(params: dict) -> str:
    """What is signed: every parameter but ``signature``, sorted by name, ``k=v`` joined by ``&``."""
    return "&".join(f"{k}={_text(params[k])}" for k in sorted(params) if k != "signature")


def sign_params(params: dict, api_key: str, secret: str, timestamp_ms: int,
                recv_window_ms: int | None = None) -> dict:
    """``params`` with apiKey, recvWindow, timestamp and the signature added."""
    out = {k: _value(v) for k, v in params.items() if v is not None}
    out["apiKey"] = api_key
    if recv_window_ms:
        out["recvWindow"] = int(recv_window_ms)
    out["timestamp"] = int(timestamp_ms)
    out["signature"] = hmac.new(secret.encode(), payload(out).encode(),
                                hashlib.sha256).hexdigest()
    return out


def rate_limit_headers(rate_limits) -> dict:
    """An answer's ``rateLimits`` as the REST headers the rate limiter reads
    (``x-mbx-used-weight-1m``, ``x-mbx-order-count-10s``, ...)."""
    out = {}
    for r in rate_limits or ():
        if not isinstance(r, dict) or r.get("interval") not in _LETTER or "count" not in r:
            continue
        kind = r.get("rateLimitType")
        prefix = {"REQUEST_WEIGHT": "x-mbx-used-weight-",
                  "ORDERS": "x-mbx-order-count-"}.get(kind)
        if prefix:
            out[f"{prefix}{int(r.get('intervalNum', 1))}{_LETTER[r['interval']]}"] = str(r["count"])
    return out


class _Slot:
    __slots__ = ("event", "answer", "lost")

    def __init__(self):
        self.event = threading.Event()
        self.answer: dict | None = None
        self.lost = False


class WsApiClient:
    """A websocket to one venue's WebSocket API, shared by every calling thread."""

    def __init__(self, url: str, api_key: str, api_secret: str, *, limiter, server_clock,
                 exec_log=None, timeout_s: float = 5.0, recv_window_ms: int = 5000,
                 resync=None, open_timeout_s: float = 5.0, reconnect_max_s: float = 10.0,
                 clock=time.time):
        self.url = url
        self._key = api_key
        self._secret = api_secret
        self.limiter = limiter
        self.server_clock = server_clock
        self.exec_log = exec_log
        self.timeout_s = timeout_s
        self.recv_window_ms = recv_window_ms
        self.resync = resync
        self.open_timeout_s = open_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self.clock = clock
        self.connected = threading.Event()
        self.connects = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, _Slot] = {}
        self._lock = threading.Lock()          # _pending
        self._send_lock = threading.Lock()     # one writer at a time
        self._stop = threading.Event()
        self._ws = None
        self._thread: threading.Thread | None = None

    # -- the connection ---------------------------------------------------------------------------
    def start(self, wait_s: float = 0.0) -> bool:
        """Start the connection thread; wait up to ``wait_s`` for the first connection."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ws-api", daemon=True)
            self._thread.start()
        return self.connected.wait(wait_s) if wait_s > 0 else self.connected.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._drop()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _drop(self) -> None:
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _run(self) -> None:
        from websockets.sync.client import connect

        delay = 0.2
        while not self._stop.is_set():
            try:
                with connect(self.url, open_timeout=self.open_timeout_s, close_timeout=1,
                             max_size=2 ** 22, compression=None) as ws:
                    self._ws = ws
                    self.connects += 1
                    self.connected.set()
                    self._log("ws_api_connect", "ok", {})
                    delay = 0.2
                    for message in ws:
                        self._dispatch(message)
            except Exception as exc:
                if not self._stop.is_set():
                    self._log("ws_api_connect", "failed", {}, error=type(exc).__name__)
            finally:
                was = self.connected.is_set()
                self.connected.clear()
                self._ws = None
                self._fail_pending()
                if was:
                    self._log("ws_api_disconnect", "lost", {})
            if self._stop.wait(delay):
                break
            delay = min(self.reconnect_max_s, delay * 2)

    def _dispatch(self, message) -> None:
        try:
            answer = orjson.loads(message)
        except orjson.JSONDecodeError:
            return
        if not isinstance(answer, dict):
            return
        rid = answer.get("id")
        with self._lock:
            slot = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if slot is None:
            return      # an answer after its caller gave up (it was settled by a query)
        slot.answer = answer
        slot.event.set()

    def _fail_pending(self) -> None:
        with self._lock:
            slots = list(self._pending.values())
            self._pending.clear()
        for slot in slots:
            slot.lost = True
            slot.event.set()

    # -- one request ------------------------------------------------------------------------------
    def request(self, method: str, params: dict, *, weight: int = 1, orders: int = 0,
                action: str = "", log: dict | None = None, _retried: bool = False):
        """Send one signed request; its ``result``, or a typed :mod:`.errors` exception."""
        log = dict(log or {})
        ws = self._ws
        if ws is None or not self.connected.is_set():
            raise WsUnavailable("the WebSocket API is not connected")
        now = self.clock()
        wait = self.limiter.reserve(weight, orders, now)
        if wait > 0:
            exc = RateLimited(f"held back by the rate limiter for {wait:.2f}s", retry_at=now + wait)
            exc.local = True
            self._log(action, "not_sent", log, error=str(exc))
            raise exc
        rid = next(self._ids)
        signed = sign_params(params, self._key, self._secret, self.server_clock.now_ms(),
                             self.recv_window_ms)
        frame = orjson.dumps({"id": rid, "method": method, "params": signed}).decode()
        slot = _Slot()
        with self._lock:
            self._pending[rid] = slot
        t0 = time.perf_counter()
        with self._send_lock:
            if not _is_open(ws):
                with self._lock:
                    self._pending.pop(rid, None)
                self._log(action, "not_sent", log, error="not connected", t0=t0)
                raise WsUnavailable("the WebSocket API connection is closed")
            try:
                ws.send(frame)
            except Exception as e:
                with self._lock:
                    self._pending.pop(rid, None)
                self._log(action, "ambiguous", log, error=f"send: {type(e).__name__}", t0=t0)
                raise Ambiguous(f"{method}: the websocket failed while sending") from e
        if not slot.event.wait(self.timeout_s):
            with self._lock:
                self._pending.pop(rid, None)
            if slot.answer is None and not slot.lost:
                self._log(action, "ambiguous", log, error="no answer", t0=t0)
                raise Ambiguous(f"{method}: no answer within {self.timeout_s}s")
        answer = slot.answer
        if answer is None:
            self._log(action, "ambiguous", log, error="disconnected", t0=t0)
            raise Ambiguous(f"{method}: the websocket closed before the answer")
        done = self.clock()
        status = int(answer.get("status") or 0)
        headers = rate_limit_headers(answer.get("rateLimits"))
        error = answer.get("error") if isinstance(answer.get("error"), dict) else None
        retry_after = _retry_after(error, done)
        if retry_after is not None:
            headers["retry-after"] = str(max(1, int(round(retry_after))))
        self.limiter.update(headers, status, done)
        if status == 200 and error is None:
            result = answer.get("result")
            self._log(action, "ok", log, t0=t0, http=status,
                      status=result.get("status") if isinstance(result, dict) else None)
            return result
        exc = classify(status or 500, error, "" if error else str(answer)[:200], retry_after, done)
        outcome = {"NotSent": "not_sent", "RateLimited": "not_sent", "Banned": "not_sent",
                   "Ambiguous": "ambiguous", "NotFound": "not_found"}.get(type(exc).__name__,
                                                                         "rejected")
        self._log(action, outcome, log, t0=t0, http=status, code=exc.code,
                  error=exc.msg[:120])
        if exc.code == -1021 and not _retried and self.resync is not None:
            try:
                self.resync()
            except GatewayError:
                raise exc from None
            return self.request(method, params, weight=weight, orders=orders, action=action,
                                log=log, _retried=True)
        raise exc

    def _log(self, action, outcome, log, t0=None, **fields) -> None:
        if self.exec_log is None:
            return
        ms = round((time.perf_counter() - t0) * 1000, 3) if t0 is not None else None
        self.exec_log.write(action, outcome=outcome, ms=ms, transport="ws", **log, **fields)

    # -- methods (weights: Binance's USD-M WebSocket API pages) -----------------------------------
    def new_order(self, params: dict, log: dict | None = None) -> dict:
        """order.place (TRADE; IP weight 0, one order on the 10 s and 1 min order counts)."""
        return self.request("order.place", params, weight=0, orders=1, action="place", log=log)

    def cancel_order(self, symbol: str, client_order_id: str) -> dict:
        """order.cancel (TRADE, weight 1); -2011 when not open."""
        return self.request("order.cancel", {"symbol": symbol,
                                             "origClientOrderId": client_order_id},
                            weight=1, action="cancel",
                            log={"symbol": symbol, "client_order_id": client_order_id})

    def query_order(self, symbol: str, client_order_id: str) -> dict:
        """order.status (USER_DATA, weight 1); -2013 when absent."""
        return self.request("order.status", {"symbol": symbol,
                                             "origClientOrderId": client_order_id},
                            weight=1, action="query",
                            log={"symbol": symbol, "client_order_id": client_order_id})


def _is_open(ws) -> bool:
    try:
        from websockets.protocol import State
        return ws.protocol.state is State.OPEN
    except Exception:
        return True


def _retry_after(error: dict | None, now: float) -> float | None:
    """Seconds until ``error.data.retryAfter`` (epoch ms), as a 429/418 answer carries it."""
    data = (error or {}).get("data")
    if not isinstance(data, dict) or data.get("retryAfter") is None:
        return None
    try:
        return max(0.0, int(data["retryAfter"]) / 1000.0 - now)
    except (TypeError, ValueError):
        return None
