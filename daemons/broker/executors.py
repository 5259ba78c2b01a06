"""Executors: one interface for backtest, testnet (also sim and mock) and live.

=================  =============================================================================
method             contract (all executors)
=================  =============================================================================
``prepare()``      get ready to trade (connect, sync the clock, read the filters); idempotent
``submit(order)``  send one :class:`~daemons.broker.orders.Order` (its client order id is the
                   idempotency key); returns the venue's :class:`VenueOrder` report or raises a
                   ``binance.errors`` error (Rejected, NotSent, Ambiguous)
``cancel(s, cid)`` cancel by client order id; the report, or NotFound when not open
``fetch_fills()``  fills of a symbol (optionally of one order / from a trade id): ``fills`` payloads
``get_position()`` the position of a symbol: a ``positions`` payload
``close()``        release connections
=================  =============================================================================

The live executor refuses to start without keys and an explicit confirmation
(``broker.confirm_live: true``, which ``ofi daemon broker --confirm-live`` sets) and keeps at
most ``max_parallel_orders`` submissions in flight. The backtest executor is a pure class fed with book and trade records
(no clock, no sockets): it fills against the recorded book with latency and fees.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .binance.errors import NotFound, Rejected
from .binance.schemas import VenueOrder
from .journal import PositionBook
from .orders import Order


class ExecutorError(Exception):
    """The executor cannot be built or started (missing keys, no confirmation); one line."""


class Executor:
    """The shared interface (see the module docstring)."""

    mode = "base"

    def prepare(self) -> None:
        raise NotImplementedError

    def submit(self, order: Order, mark_price: float | None = None) -> VenueOrder:
        raise NotImplementedError

    def cancel(self, symbol: str, client_order_id: str) -> VenueOrder:
        raise NotImplementedError

    def fetch_fills(self, symbol: str, order_id: int | None = None,
                    from_id: int | None = None) -> list[dict]:
        raise NotImplementedError

    def get_position(self, symbol: str) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        pass


class GatewayExecutor(Executor):
    """An executor over a gateway (mock or Binance REST); also exposes the gateway's lookups."""

    mode = "gateway"

    def __init__(self, gateway):
        self.gateway = gateway
        self._prepared = False

    def prepare(self) -> None:
        if not self._prepared:
            self.gateway.connect()
            self._prepared = True

    def submit(self, order: Order, mark_price: float | None = None) -> VenueOrder:
        return self.gateway.place(order, mark_price)

    def submit_nowait(self, order: Order, mark_price: float | None, done) -> bool:
        """Send ``order`` and return; ``done(outcome)`` gets what :meth:`submit` would return
        or raise. False: this executor cannot (nothing was sent; use :meth:`submit`)."""
        place = getattr(self.gateway, "place_nowait", None)
        return place is not None and place(order, mark_price, done)

    def cancel(self, symbol: str, client_order_id: str) -> VenueOrder:
        return self.gateway.cancel(symbol, client_order_id)

    def query(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        return self.gateway.query(symbol, client_order_id)

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        return self.gateway.open_orders(symbol)

    def countdown(self, symbol: str, countdown_ms: int) -> dict:
        return self.gateway.countdown(symbol, countdown_ms)

    def place_stop(self, symbol: str, side: str, trigger_price: float, client_algo_id: str):
        return self.gateway.place_stop(symbol, side, trigger_price, client_algo_id)

    def cancel_stop(self, symbol: str, client_algo_id: str) -> None:
        return self.gateway.cancel_stop(symbol, client_algo_id)

    def place_stop_nowait(self, symbol: str, side: str, trigger_price: float,
                          client_algo_id: str, done) -> bool:
        """:meth:`place_stop` sent and left to ``done`` (as :meth:`submit_nowait`); False: not
        sent, use :meth:`place_stop`."""
        place = getattr(self.gateway, "place_stop_nowait", None)
        return place is not None and place(symbol, side, trigger_price, client_algo_id, done)

    def cancel_stop_nowait(self, symbol: str, client_algo_id: str, done) -> bool:
        """:meth:`cancel_stop` sent and left to ``done``; False: not sent."""
        cancel = getattr(self.gateway, "cancel_stop_nowait", None)
        return cancel is not None and cancel(symbol, client_algo_id, done)

    def open_stops(self, symbol: str) -> list:
        return self.gateway.open_stops(symbol)

    def funding(self, since_ms: int | None) -> list[dict]:
        return self.gateway.funding(since_ms)

    def wallet(self, since_ms: int) -> tuple[float, list[dict], int]:
        return self.gateway.wallet(since_ms)

    def all_orders(self, symbol: str) -> list[VenueOrder]:
        return self.gateway.all_orders(symbol)

    def fetch_fills(self, symbol: str, order_id: int | None = None,
                    from_id: int | None = None) -> list[dict]:
        return self.gateway.trades(symbol, order_id, from_id)

    def positions(self, symbols) -> list[dict]:
        return self.gateway.positions(symbols)

    def get_position(self, symbol: str) -> dict:
        rows = self.gateway.positions([symbol])
        return rows[0] if rows else {"type": "position", "symbol": symbol, "qty": 0.0,
                                     "entry_price": 0.0, "realized_pnl": None,
                                     "unrealized_pnl": None, "mark_price": None}

    def close(self) -> None:
        self.gateway.close()


class MockExecutor(GatewayExecutor):
    """In process: every order fills at once (``mock_orders.jsonl``)."""

    mode = "mock"


class TestnetExecutor(GatewayExecutor):
    """Binance USD-M REST against a test venue: Binance's testnet, or ``ofi exchange`` (sim)."""

    __test__ = False   # not a pytest class
    mode = "testnet"


class LiveExecutor(GatewayExecutor):
    """Binance USD-M REST with real money: keys and an explicit confirmation required."""

    mode = "live"

    def __init__(self, gateway, *, has_keys: bool, confirmed: bool, max_parallel_orders: int = 4):
        if not has_keys:
            raise ExecutorError("live mode needs API keys (OFI_API_KEY/OFI_API_SECRET, "
                                "venue.api_key/api_secret, or `ofi keys add live`)")
        if not confirmed:
            raise ExecutorError("live mode trades real money: set broker.confirm_live: true "
                                "or pass --confirm-live")
        super().__init__(gateway)
        self.max_parallel_orders = max(1, int(max_parallel_orders))
        self._slots = threading.BoundedSemaphore(self.max_parallel_orders)

    def submit(self, order: Order, mark_price: float | None = None) -> VenueOrder:
        with self._slots:
            return super().submit(order, mark_price)

    def submit_nowait(self, order: Order, mark_price: float | None, done) -> bool:
        if not self._slots.acquire(blocking=False):
            return False

        def answered(outcome) -> None:
            self._slots.release()
            done(outcome)

        try:
            sent = super().submit_nowait(order, mark_price, answered)
        except BaseException:
            self._slots.release()
            raise
        if not sent:
            self._slots.release()
        return sent


# -- backtest -----------------------------------------------------------------------------------
@dataclass
class _SimOrder:
    order: Order
    active_at: int          # ms: when the order reaches the simulated venue
    order_id: int
    status: str = "NEW"
    filled: float = 0.0
    avg_price: float | None = None
    cancel_at: int | None = None
    fills: list = field(default_factory=list)


class BacktestExecutor(Executor):
    """Fills intents against recorded book and trade records, with latency and fees.

    Feed it in time order: ``on_book(rec)`` (``book`` records: bid/ask and their sizes),
    ``on_trade(rec)`` (``trades`` records), ``submit(order, now_ms=...)``. An order reaches the
    book ``latency_ms`` after it is submitted. A MARKET order (or a LIMIT order that crosses)
    then takes the opposite best price for up to its displayed size, the rest at the next book
    updates (taker fee). A resting LIMIT order fills when a trade prints through its price
    (strictly better, so no queue position is assumed) at its own price (maker fee).
    """

    mode = "backtest"

    def __init__(self, *, taker_fee_bps: float, maker_fee_bps: float, latency_ms: int,
                 fee_asset: str = "USDT"):
        self.taker_fee = taker_fee_bps / 10_000
        self.maker_fee = maker_fee_bps / 10_000
        self.latency_ms = int(latency_ms)
        self.fee_asset = fee_asset
        self.now_ms = 0
        self.books: dict[str, dict] = {}
        self.orders: dict[str, _SimOrder] = {}
        # matching walks only the open orders, so a long backtest stays linear in its orders
        self._open: dict[str, _SimOrder] = {}
        self.fills: list[dict] = []
        self.book = PositionBook()
        self._next_order_id = 1
        self._next_trade_id = 1

    def prepare(self) -> None:
        pass

    # -- events ------------------------------------------------------------------------------
    def on_book(self, rec: dict) -> list[dict]:
        """A best bid/ask update; returns the fills it caused."""
        t = int(rec.get("E") or rec.get("T") or rec.get("ts") or self.now_ms)
        self.now_ms = max(self.now_ms, t)
        self.books[rec["symbol"]] = {"bid": float(rec["bid"]), "ask": float(rec["ask"]),
                                     "bid_qty": float(rec.get("bid_qty") or 0.0),
                                     "ask_qty": float(rec.get("ask_qty") or 0.0)}
        return self._match(rec["symbol"], trade=None)

    def on_trade(self, rec: dict) -> list[dict]:
        """A market trade; returns the fills it caused (resting LIMIT orders)."""
        t = int(rec.get("T") or rec.get("E") or self.now_ms)
        self.now_ms = max(self.now_ms, t)
        return self._match(rec["symbol"], trade=rec)

    # -- executor interface ------------------------------------------------------------------
    def submit(self, order: Order, mark_price: float | None = None,
               now_ms: int | None = None) -> VenueOrder:
        if order.client_order_id in self.orders:
            raise Rejected("clientOrderId is duplicated", -4116, 400)
        if order.qty <= 0:
            raise Rejected("Quantity less than or equal to zero.", -4003, 400)
        now = self.now_ms if now_ms is None else max(self.now_ms, int(now_ms))
        so = _SimOrder(order, now + self.latency_ms, self._next_order_id)
        self._next_order_id += 1
        self.orders[order.client_order_id] = so
        self._open[order.client_order_id] = so
        return self._report(so)

    def cancel(self, symbol: str, client_order_id: str, now_ms: int | None = None) -> VenueOrder:
        so = self.orders.get(client_order_id)
        if so is None or so.status not in ("NEW", "PARTIALLY_FILLED"):
            raise NotFound("Unknown order sent.", -2011, 400)
        now = self.now_ms if now_ms is None else max(self.now_ms, int(now_ms))
        so.cancel_at = now + self.latency_ms
        return self._report(so)

    def fetch_fills(self, symbol: str, order_id: int | None = None,
                    from_id: int | None = None) -> list[dict]:
        return [f for f in self.fills if f["symbol"] == symbol
                and (order_id is None or f["order_id"] == order_id)
                and (from_id is None or f["trade_id"] >= from_id)]

    def get_position(self, symbol: str) -> dict:
        b = self.books.get(symbol)
        mark = (b["bid"] + b["ask"]) / 2 if b else None
        return self.book.get(symbol).payload(mark)

    def report(self, client_order_id: str) -> VenueOrder:
        return self._report(self.orders[client_order_id])

    # -- matching ----------------------------------------------------------------------------
    def _report(self, so: _SimOrder) -> VenueOrder:
        o = so.order
        return VenueOrder(o.client_order_id, so.order_id, o.symbol, o.side, so.status, o.qty,
                          o.price, so.filled, so.avg_price, o.order_type, o.reduce_only,
                          self.now_ms, tuple(so.fills))

    def _match(self, symbol: str, trade: dict | None) -> list[dict]:
        out = []
        if not self._open:
            return out
        book = self.books.get(symbol)
        for cid, so in list(self._open.items()):
            o = so.order
            if so.status not in ("NEW", "PARTIALLY_FILLED"):
                del self._open[cid]
                continue
            if o.symbol != symbol:
                continue
            if so.cancel_at is not None and self.now_ms >= so.cancel_at:
                so.status = "CANCELED"
                del self._open[cid]
                continue
            if self.now_ms < so.active_at:
                continue
            remaining = o.qty - so.filled
            if book is not None and trade is None:
                px, avail = (book["ask"], book["ask_qty"]) if o.side == "BUY" else (book["bid"], book["bid_qty"])
                crosses = o.order_type == "MARKET" or (
                    o.price is not None and (px <= o.price if o.side == "BUY" else px >= o.price))
                if crosses and px > 0:
                    qty = remaining if avail <= 0 else min(remaining, avail)
                    out.append(self._fill(so, qty, px, maker=False))
                    continue
            if trade is not None and o.order_type == "LIMIT" and o.price is not None:
                tp = float(trade["price"])
                through = tp < o.price if o.side == "BUY" else tp > o.price
                if through:
                    qty = min(remaining, float(trade["qty"]))
                    out.append(self._fill(so, qty, o.price, maker=True))
        return out

    def _fill(self, so: _SimOrder, qty: float, price: float, maker: bool) -> dict:
        o = so.order
        prev = so.filled
        so.filled = prev + qty
        so.avg_price = ((so.avg_price or 0.0) * prev + price * qty) / so.filled
        so.status = "FILLED" if so.filled >= o.qty - 1e-12 else "PARTIALLY_FILLED"
        fee = qty * price * (self.maker_fee if maker else self.taker_fee)
        before = self.book.get(o.symbol).realized_pnl
        self.book.apply({"symbol": o.symbol, "side": o.side, "qty": qty, "price": price, "fee": fee})
        fill = {"type": "fill", "symbol": o.symbol, "client_order_id": o.client_order_id,
                "order_id": so.order_id, "trade_id": self._next_trade_id, "side": o.side,
                "qty": qty, "price": price, "fee": fee, "fee_asset": self.fee_asset,
                "realized_pnl": self.book.get(o.symbol).realized_pnl - before, "maker": maker,
                "T": self.now_ms}
        self._next_trade_id += 1
        so.fills.append(fill)
        self.fills.append(fill)
        return fill


# -- building one from the config ---------------------------------------------------------------
def resolve_keys(cfg: dict, home: str, venue: dict) -> tuple[str | None, str | None]:
    """Keys: config/environment first, then the credentials file profile, then sim's demo pair."""
    from . import keys as keysmod

    key, secret = venue.get("api_key"), venue.get("api_secret")
    mode = cfg["broker"]["mode"]
    if key and secret:
        return key, secret
    profile = cfg["broker"].get("keys_profile") or mode
    found = keysmod.lookup(home, profile)
    if found:
        return found
    return key, secret


def make_executor(cfg: dict, home: str, exec_log=None, limiter=None):
    """The executor for ``broker.mode``: mock, sim / testnet (TestnetExecutor) or live.

    Raises ``venue.ProductionHostError`` (a ``ConfigError``) for a production Binance host in any
    mode but live, and :class:`ExecutorError` for missing URLs, keys or confirmation; both before
    anything connects.
    """
    from .. import venue as venuemod
    from .gateway import BinanceGateway
    from .mock import MockGateway
    from .ratelimit import RateLimiter

    b = cfg["broker"]
    mode = b["mode"]
    # first, before any key lookup or connection: no mode but live on a production host
    # (mock too: its URLs are configured for the stages that do connect)
    v = venuemod.resolve(cfg)
    limiter = limiter or RateLimiter(margin=b["weight_margin"])
    if mode == "mock":
        return MockExecutor(MockGateway(home, exec_log=exec_log, limiter=limiter))
    key, secret = resolve_keys(cfg, home, v)
    if not v.get("rest_url"):
        raise ExecutorError(f"{mode} mode needs venue.rest_url (or OFI_REST_URL)")
    if mode == "testnet" and not (key and secret):
        raise ExecutorError(f"{mode} mode needs API keys (OFI_API_KEY/OFI_API_SECRET, "
                            f"venue.api_key/api_secret, or `ofi keys add {mode}`)")
    gw = BinanceGateway(v["rest_url"], v.get("ws_url") if b["user_stream"] else None, key, secret,
                        limiter=limiter, exec_log=exec_log, timeout_s=b["http_timeout_s"],
                        recv_window_ms=int(cfg["venue"]["recv_window_ms"]),
                        stream_route=b["user_stream_route"],
                        order_transport=b["order_transport"])
    if mode == "live":
        return LiveExecutor(gw, has_keys=bool(key and secret),
                            confirmed=bool(b["confirm_live"]),
                            max_parallel_orders=b["max_parallel_orders"])
    return TestnetExecutor(gw)
