"""The REST client: one method per endpoint, signed with HMAC, under the rate limiter.

Every call writes one line to the execution log. Parameters go in the query string for every
verb (as binance-futures-connector does), so the signature covers exactly the bytes sent.
Timestamps use the venue's clock (offset measured on ``sync_time``); a -1021 answer resyncs
the offset and sends the request once more (-1021 means it was not processed).
"""
from __future__ import annotations

import threading
import time

import requests

from . import urls
from .errors import (Ambiguous, GatewayError, NotSent, RateLimited, classify)
from .signing import ServerClock, encode_params, signed_query


class BinanceHttp:
    """A requests session bound to one venue (REST base URL and key pair)."""

    def __init__(self, rest_url: str, api_key: str | None, api_secret: str | None, *,
                 limiter, exec_log=None, timeout_s: float = 5.0, recv_window_ms: int = 5000,
                 clock=time.time):
        self.base = rest_url.rstrip("/")
        self._key = api_key
        self._secret = api_secret
        self.limiter = limiter
        self.exec_log = exec_log
        self.timeout = (min(2.0, timeout_s), timeout_s)   # (connect, read)
        self.recv_window_ms = recv_window_ms
        self.clock = clock
        self.server_clock = ServerClock(clock)
        self._local = threading.local()   # one session per thread: calls run concurrently
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = "ofi-broker/0.1"
            if self._key:
                s.headers["X-MBX-APIKEY"] = self._key
            with self._sessions_lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        with self._sessions_lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    # -- the one place requests go out -----------------------------------------------------------
    def request(self, method: str, path: str, params: dict | None = None, *, signed: bool = False,
                weight: int = 1, orders: int = 0, action: str = "", log: dict | None = None,
                _retried: bool = False):
        """Send one request; the decoded JSON, or a typed :mod:`errors` exception."""
        log = dict(log or {})
        now = self.clock()
        wait = self.limiter.reserve(weight, orders, now)
        if wait > 0:
            exc = RateLimited(f"held back by the rate limiter for {wait:.2f}s", retry_at=now + wait)
            exc.local = True   # nothing left the process
            self._log(action, "not_sent", log, error=str(exc))
            raise exc
        if signed:
            if not self._secret:
                raise GatewayError("no API secret configured for a signed request")
            query = signed_query(params or {}, self._secret, self.server_clock.now_ms(),
                                 self.recv_window_ms)
        else:
            query = encode_params(params or {})
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        t0 = time.perf_counter()
        try:
            resp = self._session().request(method, url, timeout=self.timeout)
        except requests.exceptions.ConnectTimeout as e:
            self._log(action, "not_sent", log, error="connect timeout", t0=t0)
            raise NotSent(f"connect timeout to {self.base}", retry_at=self.clock() + 0.5) from e
        except requests.exceptions.ConnectionError as e:
            # refused before a byte left -> not sent; reset/closed mid-exchange -> ambiguous
            if _never_connected(e):
                self._log(action, "not_sent", log, error="connection refused", t0=t0)
                raise NotSent(f"cannot connect to {self.base}", retry_at=self.clock() + 0.5) from e
            self._log(action, "ambiguous", log, error="disconnected", t0=t0)
            raise Ambiguous(f"connection lost during {method} {path}") from e
        except requests.exceptions.Timeout as e:
            self._log(action, "ambiguous", log, error="read timeout", t0=t0)
            raise Ambiguous(f"timeout after {self.timeout[1]}s on {method} {path}") from e
        except requests.exceptions.RequestException as e:
            self._log(action, "ambiguous", log, error=type(e).__name__, t0=t0)
            raise Ambiguous(f"{type(e).__name__} during {method} {path}") from e
        done = self.clock()
        self.limiter.update(resp.headers, resp.status_code, done)
        try:
            body = resp.json()
        except ValueError:
            body = None
        ok = resp.status_code < 400 and not (
            isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] < 0)
        if ok:
            self._log(action, "ok", log, http=resp.status_code, t0=t0,
                      status=body.get("status") if isinstance(body, dict) else None)
            return body
        exc = classify(resp.status_code, body, resp.text if body is None else "",
                       _retry_after(resp.headers), done)
        outcome = {"NotSent": "not_sent", "RateLimited": "not_sent", "Banned": "not_sent",
                   "Ambiguous": "ambiguous", "NotFound": "not_found"}.get(type(exc).__name__,
                                                                         "rejected")
        self._log(action, outcome, log, http=resp.status_code, code=exc.code, t0=t0,
                  error=exc.msg[:120])
        if exc.code == -1021 and signed and not _retried:
            self.sync_time()
            return self.request(method, path, params, signed=signed, weight=weight, orders=orders,
                                action=action, log=log, _retried=True)
        raise exc

    def _log(self, action, outcome, log, t0=None, **fields) -> None:
        if self.exec_log is None:
            return
        ms = round((time.perf_counter() - t0) * 1000, 3) if t0 is not None else None
        self.exec_log.write(action, outcome=outcome, ms=ms, transport="rest", **log, **fields)

    # -- endpoints ------------------------------------------------------------------------------
    def sync_time(self) -> int:
        """GET /fapi/v1/time (weight 1): measure the server-time offset; returns it in ms."""
        sent = self.clock()
        body = self.request("GET", urls.TIME, action="time")
        return self.server_clock.update(int(body["serverTime"]), sent, self.clock())

    def exchange_info(self) -> dict:
        """GET /fapi/v1/exchangeInfo (weight 1): symbols, filters, rateLimits."""
        return self.request("GET", urls.EXCHANGE_INFO, action="exchange_info")

    def new_order(self, params: dict, log: dict | None = None) -> dict:
        """POST /fapi/v1/order (TRADE; 1 order on the 10s and 1m order counts, IP weight 0)."""
        return self.request("POST", urls.ORDER, params, signed=True, weight=0, orders=1,
                            action="place", log=log)

    def query_order(self, symbol: str, client_order_id: str) -> dict:
        """GET /fapi/v1/order?origClientOrderId= (USER_DATA, weight 1); -2013 when absent."""
        return self.request("GET", urls.ORDER, {"symbol": symbol,
                                                "origClientOrderId": client_order_id},
                            signed=True, weight=1, action="query",
                            log={"symbol": symbol, "client_order_id": client_order_id})

    def cancel_order(self, symbol: str, client_order_id: str) -> dict:
        """DELETE /fapi/v1/order (TRADE, weight 1); -2011 when not open."""
        return self.request("DELETE", urls.ORDER, {"symbol": symbol,
                                                   "origClientOrderId": client_order_id},
                            signed=True, weight=1, action="cancel",
                            log={"symbol": symbol, "client_order_id": client_order_id})

    def balance(self) -> list:
        """GET /fapi/v2/balance (USER_DATA, weight 5): the wallet balance of every asset."""
        return self.request("GET", urls.BALANCE, {}, signed=True, weight=5, action="balance")

    def income(self, income_type: str, start_ms: int | None = None, limit: int = 1000) -> list:
        """GET /fapi/v1/income (USER_DATA, weight 30): oldest first from ``start_ms``
        (inclusive; None: the venue's default, the last 7 days); every type with ``""``."""
        params = {"limit": limit}
        if income_type:
            params["incomeType"] = income_type
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        return self.request("GET", urls.INCOME, params, signed=True, weight=30, action="income")

    def position_mode(self) -> dict:
        """GET /fapi/v1/positionSide/dual (USER_DATA, weight 30): ``{"dualSidePosition": bool}``
        (true: hedge mode)."""
        return self.request("GET", urls.POSITION_MODE, {}, signed=True, weight=30,
                            action="position_mode")

    def set_leverage(self, symbol: str, leverage: int) -> dict:
        """POST /fapi/v1/leverage (TRADE, weight 1)."""
        return self.request("POST", urls.LEVERAGE, {"symbol": symbol, "leverage": int(leverage)},
                            signed=True, weight=1, action="leverage", log={"symbol": symbol})

    def set_margin_type(self, symbol: str, margin_type: str) -> dict:
        """POST /fapi/v1/marginType (TRADE, weight 1): ISOLATED or CROSSED; -4046 when it is
        already that."""
        return self.request("POST", urls.MARGIN_TYPE, {"symbol": symbol,
                                                       "marginType": margin_type},
                            signed=True, weight=1, action="margin_type", log={"symbol": symbol})

    def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> dict:
        """POST /fapi/v1/countdownCancelAll (TRADE, weight 10): the venue cancels every open
        order of ``symbol`` unless this is called again within ``countdown_ms`` (0 stops it)."""
        return self.request("POST", urls.COUNTDOWN_CANCEL_ALL,
                            {"symbol": symbol, "countdownTime": int(countdown_ms)},
                            signed=True, weight=10, action="countdown", log={"symbol": symbol})

    def new_algo_order(self, params: dict, log: dict | None = None) -> dict:
        """POST /fapi/v1/algoOrder (TRADE; algoType CONDITIONAL: a stop or take-profit held by
        the venue's Algo Service until it triggers; 1 order on the order counts)."""
        return self.request("POST", urls.ALGO_ORDER, {"algoType": "CONDITIONAL", **params},
                            signed=True, weight=0, orders=1, action="algo_place", log=log)

    def cancel_algo_order(self, symbol: str, client_algo_id: str) -> dict:
        """DELETE /fapi/v1/algoOrder (TRADE, weight 1); -2011 when not open (triggered or gone)."""
        return self.request("DELETE", urls.ALGO_ORDER, {"symbol": symbol,
                                                       "clientAlgoId": client_algo_id},
                            signed=True, weight=1, action="algo_cancel",
                            log={"symbol": symbol, "client_algo_id": client_algo_id})

    def open_algo_orders(self, symbol: str) -> list:
        """GET /fapi/v1/openAlgoOrders (USER_DATA, weight 1 with a symbol)."""
        return self.request("GET", urls.OPEN_ALGO_ORDERS, {"symbol": symbol}, signed=True,
                            weight=1, action="open_algo_orders", log={"symbol": symbol})

    def open_orders(self, symbol: str | None = None) -> list:
        """GET /fapi/v1/openOrders (USER_DATA, weight 1 with a symbol, 40 without)."""
        return self.request("GET", urls.OPEN_ORDERS, {"symbol": symbol} if symbol else {},
                            signed=True, weight=1 if symbol else 40, action="open_orders",
                            log={"symbol": symbol})

    def all_orders(self, symbol: str, limit: int = 1000) -> list:
        """GET /fapi/v1/allOrders (USER_DATA, weight 5)."""
        return self.request("GET", urls.ALL_ORDERS, {"symbol": symbol, "limit": limit},
                            signed=True, weight=5, action="all_orders", log={"symbol": symbol})

    def user_trades(self, symbol: str, order_id: int | None = None, from_id: int | None = None,
                    limit: int = 1000) -> list:
        """GET /fapi/v1/userTrades (USER_DATA, weight 5): the account's fills."""
        params = {"symbol": symbol}
        if order_id is not None:
            params["orderId"] = order_id
        if from_id is not None:
            params["fromId"] = from_id
        params["limit"] = limit
        return self.request("GET", urls.USER_TRADES, params, signed=True, weight=5,
                            action="user_trades", log={"symbol": symbol, "order_id": order_id})

    def position_risk(self, symbol: str | None = None) -> list:
        """GET /fapi/v2/positionRisk (USER_DATA, weight 5)."""
        return self.request("GET", urls.POSITION_RISK, {"symbol": symbol} if symbol else {},
                            signed=True, weight=5, action="positions", log={"symbol": symbol})

    def new_listen_key(self) -> str:
        """POST /fapi/v1/listenKey (USER_STREAM, weight 1)."""
        return self.request("POST", urls.LISTEN_KEY, action="listen_key")["listenKey"]

    def keepalive_listen_key(self) -> None:
        """PUT /fapi/v1/listenKey (USER_STREAM, weight 1): extend 60 min; -1125 if expired."""
        self.request("PUT", urls.LISTEN_KEY, action="listen_key_keepalive")

    def close_listen_key(self) -> None:
        """DELETE /fapi/v1/listenKey (USER_STREAM, weight 1)."""
        self.request("DELETE", urls.LISTEN_KEY, action="listen_key_close")


def _never_connected(exc: Exception) -> bool:
    text = repr(exc)
    return any(s in text for s in ("NewConnectionError", "Connection refused", "ConnectTimeout",
                                   "Failed to establish", "Name or service not known"))


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
