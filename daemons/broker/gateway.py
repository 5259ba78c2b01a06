"""The gateway interface, and its Binance USD-M implementation (sim, testnet, live).

=============================  =================================================================
method                         contract
=============================  =================================================================
``connect()``                  sync the clock, read exchangeInfo (filters, rate limits)
``place(order, mark)``         send a new order under its client order id; a ``VenueOrder``, or
                               Rejected / NotSent / Ambiguous (see ``binance.errors``)
``cancel(symbol, cid)``        cancel by client order id; NotFound (-2011) when not open
``query(symbol, cid)``         the venue's view of an order; None when it does not exist (-2013)
``open_orders(symbol)``        the open orders of a symbol
``all_orders(symbol)``         its recent orders, open or not (duplicates and late orders show)
``trades(symbol, ...)``        the account's fills (``fills`` payloads)
``positions(symbols)``         the venue's positions (``positions`` payloads)
``place_stop(...)``            a STOP_MARKET closePosition algo order (a protective stop)
``cancel_stop(symbol, id)``    cancel one by client algo id; NotFound (-2011) when not open
``open_stops(symbol)``         the open algo orders of a symbol (``VenueStop``)
``start_stream(wake)``         start the user data stream (None if the gateway has none)
``start_marks(symbols, wake)`` start the mark-price stream (``markPriceUpdate`` events)
``keepalive(now)``             periodic upkeep (listenKey keepalive)
``close()``                    stop the stream, close the session
=============================  =================================================================

Transports: with ``order_transport="ws"`` (the default) ``place``, ``cancel`` and ``query`` go
over Binance's WebSocket API (``binance.wsapi``: one persistent connection, every request
HMAC-signed) while it is connected, and over REST when it is not (nothing was sent then, so
nothing can be doubled). An unanswered or -1007 websocket request is Ambiguous exactly like a
REST one: never sent again, over either transport, until a query settles it. Everything else
(positions, income, listenKey, the lists of algo orders) is REST. ``order_transport="rest"``:
REST only. ``place_nowait`` sends an order over the websocket and returns; its answer is read
by the caller's loop (``attach``, ``fileno``, ``service``): the broker daemon places orders so,
with no thread between the send and the answer. ``place_stop_nowait`` and ``cancel_stop_nowait``
do the same for protective stops (``algoOrder.place`` / ``algoOrder.cancel``); their blocking
forms are REST.

:class:`daemons.broker.mock.MockGateway` implements the same interface in process.
"""
from __future__ import annotations

import time

from .binance import urls
from .binance.errors import GatewayError, InvalidListenKey, NotFound, Rejected
from .binance.filters import apply_filters, stop_price
from .binance.http import BinanceHttp
from .binance.schemas import (VenueOrder, VenueStop, parse_algo_order, parse_exchange_info,
                              parse_funding, parse_order, parse_position_risk, parse_trade)
from .binance.userstream import UserStream
from .binance.wsapi import WsApiClient, WsUnavailable
from .orders import Order

INCOME_PAGE = 1000                 # rows per /fapi/v1/income call (the venue's maximum)
LISTEN_KEY_KEEPALIVE_S = 30 * 60   # the key lives 60 min; Binance suggests a keepalive well before


class AccountError(Exception):
    """The account cannot be traded as configured (hedge mode, a refused setting); one line."""


class BinanceGateway:
    """The REST client plus the user data stream, for one venue (URLs + key pair)."""

    name = "binance"

    def __init__(self, rest_url: str, ws_url: str | None, api_key: str | None,
                 api_secret: str | None, *, limiter, exec_log=None, timeout_s: float = 5.0,
                 recv_window_ms: int = 5000, stream_route: str = "private",
                 order_resp_type: str = "RESULT", order_transport: str = "ws",
                 ws_api_url: str | None = None):
        self.rest_url = rest_url
        self.ws_url = ws_url
        self.limiter = limiter
        self.http = BinanceHttp(rest_url, api_key, api_secret, limiter=limiter,
                                exec_log=exec_log, timeout_s=timeout_s,
                                recv_window_ms=recv_window_ms)
        self.exec_log = exec_log
        self.stream_route = stream_route
        self.order_resp_type = order_resp_type
        self.filters: dict = {}
        self.stream: UserStream | None = None
        self._listen_key: str | None = None
        self._keepalive_at = 0.0
        self.order_transport = order_transport
        self.ws_api_url = ws_api_url or urls.ws_api_url(rest_url)
        self.wsapi: WsApiClient | None = None
        if order_transport == "ws" and api_key and api_secret:
            self.wsapi = WsApiClient(self.ws_api_url, api_key, api_secret, limiter=limiter,
                                     server_clock=self.http.server_clock, exec_log=exec_log,
                                     timeout_s=timeout_s, recv_window_ms=recv_window_ms,
                                     resync=self.http.sync_time)

    # -- setup -----------------------------------------------------------------------------------
    def connect(self) -> None:
        self.http.sync_time()
        self.filters, rate_limits = parse_exchange_info(self.http.exchange_info())
        if rate_limits:
            self.limiter.set_limits(rate_limits)
        if self.wsapi is not None:
            # the first connection is awaited briefly; until it is up, orders go over REST
            self.wsapi.start(wait_s=min(2.0, self.http.timeout[1]))

    def start_stream(self, wake) -> UserStream | None:
        if not self.ws_url:
            return None
        self._listen_key = self.http.new_listen_key()
        self._keepalive_at = time.time() + LISTEN_KEY_KEEPALIVE_S
        self.stream = UserStream(
            lambda: urls.user_stream_url(self.ws_url, self._listen_key, self.stream_route), wake)
        self.stream.start()
        return self.stream

    def start_marks(self, symbols, wake) -> UserStream | None:
        """The venue's mark prices (``<symbol>@markPrice@1s``), read like the user stream."""
        if not self.ws_url:
            return None
        streams = [f"{s.lower()}@markPrice@1s" for s in symbols]
        marks = UserStream(lambda: urls.market_stream_url(self.ws_url, streams), wake,
                           name="mark-stream")
        marks.start()
        return marks

    def renew_listen_key(self) -> None:
        """After listenKeyExpired or -1125: a new key, and a fresh connection on it."""
        self._listen_key = self.http.new_listen_key()
        self._keepalive_at = time.time() + LISTEN_KEY_KEEPALIVE_S
        if self.stream is not None:
            self.stream.reconnect()

    def keepalive(self, now: float) -> None:
        if self._listen_key is None or now < self._keepalive_at:
            return
        self._keepalive_at = now + 60.0   # retried in a minute if this fails
        try:
            self.http.keepalive_listen_key()
            self._keepalive_at = now + LISTEN_KEY_KEEPALIVE_S
        except InvalidListenKey:
            self.renew_listen_key()
        except GatewayError:
            pass

    def close(self) -> None:
        if self.wsapi is not None:
            self.wsapi.stop()
        if self.stream is not None:
            self.stream.stop()
            self.stream = None
        if self._listen_key is not None:
            try:
                self.http.close_listen_key()
            except Exception:
                pass
            self._listen_key = None
        self.http.close()

    # -- orders ----------------------------------------------------------------------------------
    def order_params(self, order: Order, mark_price: float | None = None) -> dict:
        """The POST /fapi/v1/order parameters, filters applied (FilterRejected if impossible)."""
        qty, price = apply_filters(self.filters.get(order.symbol), order.side, order.order_type,
                                   order.qty, order.price, mark_price, order.reduce_only)
        params = {"symbol": order.symbol, "side": order.side, "type": order.order_type,
                  "quantity": qty}
        if order.order_type == "LIMIT":
            params["price"] = price
            params["timeInForce"] = "GTC"
        if order.reduce_only:
            params["reduceOnly"] = "true"
        params["newClientOrderId"] = order.client_order_id
        params["newOrderRespType"] = self.order_resp_type
        return params

    def _checked_params(self, order: Order, mark_price: float | None) -> tuple[dict, dict]:
        """``(params, log fields)`` of an order; a filter's refusal is logged and raised."""
        log = {"symbol": order.symbol, "client_order_id": order.client_order_id}
        try:
            return self.order_params(order, mark_price), log
        except GatewayError as exc:
            if self.exec_log is not None:
                self.exec_log.write("place", outcome="rejected", error=f"filter: {exc.msg}", **log)
            raise

    def place(self, order: Order, mark_price: float | None = None) -> VenueOrder:
        params, log = self._checked_params(order, mark_price)
        if self.wsapi is not None:
            try:
                return parse_order(self.wsapi.new_order(params, log=log))
            except WsUnavailable:
                pass          # not connected: nothing was sent
        return parse_order(self.http.new_order(params, log=log))

    def place_nowait(self, order: Order, mark_price: float | None, done) -> bool:
        """Send ``order`` over the WebSocket API and return at once: ``done`` gets the
        ``VenueOrder`` or the typed error (see :meth:`WsApiClient.begin`, in the thread that
        reads the answer). False when the websocket is not connected: nothing was sent (use
        :meth:`place`). Raises what is known before sending (a filter's Rejected, the limiter's
        RateLimited) and Ambiguous when the write failed."""
        ws = self.wsapi
        if ws is None or not ws.connected.is_set():
            return False
        params, log = self._checked_params(order, mark_price)

        def answered(result) -> None:
            if not isinstance(result, Exception):
                try:
                    result = parse_order(result)
                except Exception as exc:   # an answer we cannot read: as the pool would see it
                    result = exc
            done(result)

        try:
            ws.place_order(params, answered, log=log)
        except WsUnavailable:
            return False
        return True

    def attach(self) -> None:
        """The caller's loop reads the WebSocket API's answers (see :meth:`service`)."""
        if self.wsapi is not None:
            self.wsapi.attach()

    def fileno(self) -> int:
        """The descriptor to poll for the WebSocket API's answers (-1: none)."""
        return self.wsapi.fileno() if self.wsapi is not None else -1

    def service(self) -> None:
        """Read the WebSocket API's answers and time out the overdue ones."""
        if self.wsapi is not None:
            self.wsapi.service()

    def next_due(self) -> float | None:
        """Seconds until a request of :meth:`place_nowait` times out (None: none waits)."""
        return self.wsapi.next_due() if self.wsapi is not None else None

    def cancel(self, symbol: str, client_order_id: str) -> VenueOrder:
        if self.wsapi is not None:
            try:
                return parse_order(self.wsapi.cancel_order(symbol, client_order_id))
            except WsUnavailable:
                pass
        return parse_order(self.http.cancel_order(symbol, client_order_id))

    def query(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        try:
            if self.wsapi is not None:
                try:
                    return parse_order(self.wsapi.query_order(symbol, client_order_id))
                except WsUnavailable:
                    pass
            return parse_order(self.http.query_order(symbol, client_order_id))
        except NotFound:
            return None

    def _stop_params(self, symbol: str, side: str, trigger_price: float,
                     client_algo_id: str) -> dict:
        return {"symbol": symbol, "side": side, "type": "STOP_MARKET",
                "triggerPrice": stop_price(self.filters.get(symbol), side, trigger_price),
                "closePosition": "true", "workingType": "MARK_PRICE",
                "clientAlgoId": client_algo_id, "newOrderRespType": "ACK"}

    def place_stop(self, symbol: str, side: str, trigger_price: float,
                   client_algo_id: str) -> VenueStop:
        """A protective stop: STOP_MARKET with closePosition on the mark price, through the Algo
        Order API (conditional types on /fapi/v1/order get -4120). The trigger goes on the tick
        grid away from the market (a SELL stop down, a BUY stop up)."""
        params = self._stop_params(symbol, side, trigger_price, client_algo_id)
        return parse_algo_order(self.http.new_algo_order(
            params, log={"symbol": symbol, "client_algo_id": client_algo_id}))

    def place_stop_nowait(self, symbol: str, side: str, trigger_price: float,
                          client_algo_id: str, done) -> bool:
        """:meth:`place_stop` over the WebSocket API (``algoOrder.place``), answered through
        ``done`` as :meth:`place_nowait` is; False when the websocket is not connected (nothing
        was sent)."""
        ws = self.wsapi
        if ws is None or not ws.connected.is_set():
            return False
        params = self._stop_params(symbol, side, trigger_price, client_algo_id)

        def answered(result) -> None:
            if not isinstance(result, Exception):
                try:
                    result = parse_algo_order(result)
                except Exception as exc:
                    result = exc
            done(result)

        try:
            ws.place_algo_order(params, answered,
                                log={"symbol": symbol, "client_algo_id": client_algo_id})
        except WsUnavailable:
            return False
        return True

    def cancel_stop(self, symbol: str, client_algo_id: str) -> None:
        self.http.cancel_algo_order(symbol, client_algo_id)

    def cancel_stop_nowait(self, symbol: str, client_algo_id: str, done) -> bool:
        """:meth:`cancel_stop` over the WebSocket API (``algoOrder.cancel``): ``done`` gets None
        or the typed error (NotFound: not open); False when not connected (nothing sent)."""
        ws = self.wsapi
        if ws is None or not ws.connected.is_set():
            return False
        try:
            ws.cancel_algo_order(symbol, client_algo_id,
                                 lambda r: done(r if isinstance(r, Exception) else None))
        except WsUnavailable:
            return False
        return True

    def open_stops(self, symbol: str) -> list[VenueStop]:
        return [parse_algo_order(a) for a in self.http.open_algo_orders(symbol)]

    def account_settings(self, symbols, leverage: int, margin_type: str) -> None:
        """Refuse a hedge-mode account (:class:`AccountError`); set each symbol's leverage and
        margin type when asked (0 / "": leave them as the account has them)."""
        if self.http.position_mode().get("dualSidePosition") is True:
            raise AccountError("the account is in hedge mode (dualSidePosition); the broker "
                               "keeps one-way positions only: switch the account to one-way "
                               "mode (POST /fapi/v1/positionSide/dual dualSidePosition=false)")
        for symbol in symbols:
            if leverage:
                try:
                    self.http.set_leverage(symbol, leverage)
                except Rejected as exc:
                    raise AccountError(f"{symbol}: the venue refused leverage {leverage}: "
                                       f"{exc}") from None
            if margin_type:
                try:
                    self.http.set_margin_type(symbol, margin_type)
                except Rejected as exc:
                    if exc.code != -4046:   # "No need to change margin type."
                        raise AccountError(f"{symbol}: the venue refused margin type "
                                           f"{margin_type}: {exc}") from None

    def funding(self, since_ms: int | None) -> list[dict]:
        """The account's funding payments from ``since_ms`` on (inclusive), oldest first, as
        ``funding`` payloads, every page of them."""
        return [parse_funding(r) for r in self._income("FUNDING_FEE", since_ms)]

    def wallet(self, since_ms: int) -> tuple[float, list[dict], int]:
        """The USDT wallet balance, then every income row (all types) from ``since_ms`` on
        (what the runtime reconciliation explains the balance's changes with), and the
        balance's ``updateTime`` (ms; 0 unknown): rows after it are not in the balance yet."""
        rows = self.http.balance()
        usdt = [r for r in rows if r.get("asset") == "USDT"]
        balance = float(usdt[0]["balance"]) if usdt else 0.0
        updated = int(usdt[0].get("updateTime") or 0) if usdt else 0
        return balance, self._income("", since_ms), updated

    def _income(self, kind: str, since_ms: int | None) -> list[dict]:
        """Every page of ``/fapi/v1/income`` rows of ``kind`` ("" = all) from ``since_ms``."""
        out, seen, start = [], set(), since_ms
        while True:
            rows = self.http.income(kind, start, limit=INCOME_PAGE)
            out += [r for r in rows if r.get("tranId") not in seen]
            seen.update(r.get("tranId") for r in rows)
            if len(rows) < INCOME_PAGE:
                return out
            start = int(rows[-1]["time"])   # the next page from the last time (ids dedupe)

    def countdown(self, symbol: str, countdown_ms: int) -> dict:
        """Refresh the venue's dead-man switch of ``symbol`` (countdownCancelAll)."""
        return self.http.countdown_cancel_all(symbol, countdown_ms)

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        return [parse_order(o) for o in self.http.open_orders(symbol)]

    def all_orders(self, symbol: str) -> list[VenueOrder]:
        return [parse_order(o) for o in self.http.all_orders(symbol)]

    def trades(self, symbol: str, order_id: int | None = None,
               from_id: int | None = None) -> list[dict]:
        return [parse_trade(t) for t in self.http.user_trades(symbol, order_id, from_id)]

    def positions(self, symbols) -> list[dict]:
        wanted = set(symbols)
        return [parse_position_risk(p) for p in self.http.position_risk()
                if p.get("symbol") in wanted and p.get("positionSide", "BOTH") == "BOTH"]
