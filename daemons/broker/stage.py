"""The broker daemon: ``intents`` in; ``orders``, ``fills`` and ``positions`` out.

The order logic is :class:`~.manager.OrderManager` (pure, clock injected). This shell does the
I/O around it:

    start   build the executor (one clear line if it cannot: keys, confirmation, host, venue);
            fold ``orders`` + ``fills`` into the journal; connect; reconcile with the venue
            (open orders, all recent orders, fills, positions: HALTED + reason if unexplained);
            start the user data stream
    handle  an intent -> the core; write its records; hand its actions to the worker pool
    tick    answers from the WebSocket API and the pool, user stream events and the kill-switch
            file -> the core; the core's timers
    stop    settle: nothing new is sent, orders in flight are looked up until
            ``broker.settle_on_stop_s``

Records are written before the actions they allow (PENDING is on disk before the send). While
the WebSocket API is connected an order is sent from the loop's own thread right after its
PENDING record, without waiting, and so are a protective stop's placement and cancel: the loop
polls the websocket's descriptor with the bus's (the waker's ``add_fd``) and reads each answer
itself, so no thread is woken between the intent and the acknowledgement, and an order waiting
for its answer (up to the timeout) holds up nothing. The user data stream and the mark prices are
read the same way, in this loop (the answers first), and their threads only connect.
Otherwise (REST) sends run on a pool of ``max_parallel_orders`` threads, and lookups always run
on a pool of their own, so an order hanging for the HTTP timeout delays no other, and no lookup
delays a send.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .. import config as configmod
from ..runtime import Stage
from .. import trading as tstate
from .binance.errors import AuthError, Banned, GatewayError, RateLimited
from .execlog import ExecLog
from .executors import ExecutorError, make_executor
from .gateway import AccountError
from .keys import KeysError
from .manager import (Cancel, Countdown, FetchFunding, FetchOpenOrders, FetchOrders,
                      FetchPositions, FetchTrades, FetchWallet, Halt, OrderManager, Query, Send,
                      Settings)
from . import wallet as wallet_check
from .protection import CancelStop, FetchStops, PlaceStop
from .ratelimit import RateLimiter

START_DEADLINE_S = 30.0
LOOKUP_THREADS = 4
#: how long a thread may keep the GIL while another waits for it (Python's default: 5 ms). The
#: loop's thread sends orders and reads their answers and the streams; a lookup thread must not
#: hold it up for milliseconds after each system call
SWITCH_INTERVAL_S = 0.0005


class BrokerStage(Stage):
    """Places intents at the venue and publishes orders, fills and positions."""

    name = "broker"
    inputs = ("intents",)
    outputs = ("orders", "fills", "positions", "funding", "protection")

    def __init__(self, ctx):
        super().__init__(ctx)
        self.core: OrderManager | None = None
        self.executor = None
        self.sends: ThreadPoolExecutor | None = None     # order sends only
        self.lookups: ThreadPoolExecutor | None = None   # queries, cancels, fetches
        self.stream = None
        self.marks = None     # the venue's mark prices (markPrice stream)
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self._state_mtime = None
        self._loop_thread = threading.get_ident()
        self._ws_fd = -1      # the WebSocket API's descriptor, polled with the bus
        self._fds: set[int] = set()   # every descriptor this loop reads (API and streams)

    # -- start -----------------------------------------------------------------------------------
    def start(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        cfg = self.ctx.config
        b = self.b = self.ctx.settings.broker   # typed; allowed values checked at load
        self.log = self.ctx.log
        self.mode = b.mode
        self.exec_log = ExecLog(self.ctx.home, self.mode)
        self.limiter = RateLimiter(margin=b.weight_margin)
        try:
            self.executor = make_executor(cfg, self.ctx.home, self.exec_log, self.limiter)
        except (ExecutorError, KeysError) as exc:
            raise configmod.ConfigError(str(exc)) from None
        self.gateway = self.executor.gateway
        settings = Settings.from_settings(self.ctx.settings)
        core = OrderManager(settings, log=self.log)
        for topic in ("orders", "fills", "funding"):
            for rec in self.ctx.bus.read_all(topic):
                core.load(topic, rec)
        self._with_retry(self.executor.prepare, "connect")
        if hasattr(self.gateway, "account_settings"):   # a venue account (not the mock)
            try:
                self._with_retry(lambda: self.gateway.account_settings(
                    settings.symbols, b.leverage, b.margin_type), "account settings")
            except AccountError as exc:
                raise configmod.ConfigError(f"broker: {exc}") from None
        now = time.time()
        core.start(now)   # first: an order left PENDING may be at the venue (UNKNOWN, not rejected)
        core.set_trading(self._read_trading_state(force=True) or core.trading, now)
        self.core = core
        self._reconcile_at_start()
        # two pools: a send never waits behind a slow lookup
        self.sends = ThreadPoolExecutor(settings.max_parallel_orders, thread_name_prefix="send")
        self.lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="lookup")
        self._flush()
        if self.mode != "mock":
            try:
                self.stream = self.gateway.start_stream(self.ctx.wake)
            except GatewayError as exc:
                self.log.warning("user_stream_unavailable", error=str(exc))
            self.marks = self.gateway.start_marks(settings.symbols, self.ctx.wake)
        if hasattr(self.gateway, "attach"):
            self.gateway.attach()      # its answers are read by this loop from now on
        for s in self._streams():
            s.attach()                 # and so are the streams' events
        self._watch_fds()
        j = core.journal
        self.log.info("broker_started", mode=self.mode, venue=getattr(self.gateway, "rest_url", "mock"),
                      orders=len(j.orders), fills=len(j.fill_keys), active=len(j.active()),
                      trading=core.trading.state, max_parallel_orders=settings.max_parallel_orders)

    def _with_retry(self, fn, what: str, deadline_s: float = START_DEADLINE_S):
        """Call ``fn`` until it works (start-up only); a clear error when the venue stays away."""
        deadline = time.time() + deadline_s
        while True:
            try:
                return fn()
            except AuthError as exc:
                raise configmod.ConfigError(f"venue refused the API key ({what}): {exc}") from None
            except GatewayError as exc:
                now = time.time()
                if isinstance(exc, (RateLimited, Banned)) and exc.retry_at > now:
                    # a 429 Retry-After or a 418 ban is honoured, not counted as unreachable
                    deadline = max(deadline, exc.retry_at + 5.0)
                if isinstance(exc, Banned):
                    self._alert({"kind": "banned", "subject": "ip", "retry_at": exc.retry_at,
                                 "message": f"the venue banned this IP (418) until "
                                            f"{exc.retry_at:.0f}: {exc} (while: {what})"})
                if now > deadline or self.ctx.stopping:
                    raise configmod.ConfigError(
                        f"venue {getattr(self.gateway, 'rest_url', '')} unavailable ({what}): "
                        f"{exc}") from None
                retry_at = getattr(exc, "retry_at", 0.0) or now + 0.3
                wait = min(max(0.05, retry_at - now), max(0.05, deadline - now))
                if wait >= 1.0:
                    self.log.warning("venue_wait", what=what, error=str(exc), wait_s=round(wait, 1))
                self.ctx.pause(wait, what=what, error=type(exc).__name__)

    def _reconcile_at_start(self) -> None:
        ex, symbols = self.executor, self.core.s.symbols
        opens, trades, everything = {}, {}, {}
        for s in symbols:
            opens[s] = self._with_retry(lambda s=s: ex.open_orders(s), "open orders")
            trades[s] = self._with_retry(lambda s=s: ex.fetch_fills(s), "user trades")
            if self.mode != "mock":
                everything[s] = self._with_retry(lambda s=s: ex.all_orders(s), "all orders")
        rows = self._with_retry(lambda: ex.positions(list(symbols)), "positions")
        positions = {p["symbol"]: p["qty"] for p in rows}
        for p in rows:   # the venue's marks, for the protective stops' first placement
            if p.get("mark_price"):
                self.core.marks[p["symbol"]] = float(p["mark_price"])
        stops, wallet = {}, None
        if self.mode != "mock":
            for s in symbols:
                stops[s] = self._with_retry(lambda s=s: ex.open_stops(s), "open algo orders")
            wallet = self._with_retry(lambda: ex.wallet(int(time.time() * 1000)
                                                        - wallet_check.OVERLAP_MS), "balance")
        problems = self.core.reconcile_start(opens, trades, positions, time.time(), everything,
                                             stops, wallet)
        if problems:
            self.log.error("reconciliation_mismatch", problems=problems)
        else:
            self.log.info("reconciled")

    # -- the loop --------------------------------------------------------------------------------
    def handle(self, topic: str, record: dict) -> None:
        now = time.time()
        self._sync_trading(now)   # an intent is judged by the kill switch of now
        try:
            self.core.on_intent(record, now)
        finally:
            self._flush()

    def tick(self, now: float) -> None:
        core = self.core
        self._watch_fds()
        self._drain(now)
        self._sync_trading(now)
        core.tick(now)
        self._flush()
        self.gateway.keepalive(now)

    def _drain(self, now: float) -> None:
        """Answers from the WebSocket API and the pool, and events from the user stream and
        the mark prices, into the core (the answers first: they are what an order waits for)."""
        core = self.core
        if self._ws_fd >= 0:
            self.gateway.service()   # answers read here are handed over through self.results
        while True:
            try:
                action, outcome = self.results.get_nowait()
            except queue.Empty:
                break
            core.on_result(action, outcome, now)
        self._flush()   # an acknowledgement is written before the streams' events are read
        if self.stream is not None:
            self.stream.service()
            for ev in self.stream.drain():
                kind = ev.get("e")
                if kind == "listenKeyExpired":
                    try:
                        self.gateway.renew_listen_key()
                    except GatewayError as exc:
                        self.log.warning("listen_key_renewal_failed", error=str(exc))
                elif kind in ("_connected", "_disconnected"):
                    self.log.info("user_stream", state=kind[1:])
                    core.on_stream_state(kind == "_connected", now)
                else:
                    core.on_stream_event(ev, now)
        if self.marks is not None:
            self.marks.service()
            for ev in self.marks.drain():
                if ev.get("e") == "markPriceUpdate":
                    try:
                        core.on_mark(ev["s"], float(ev["p"]), now)
                    except (KeyError, TypeError, ValueError):
                        pass

    def _flush(self) -> None:
        """Write the core's records, then start its actions."""
        records, actions = self.core.take()
        for topic, payload in records:
            if topic == "alerts":
                self._alert(payload)
            else:
                self.ctx.emit(topic, payload)
        for a in actions:
            if isinstance(a, Halt):
                st = tstate.save_state(self.ctx.home, tstate.HALTED, a.reason, by="broker")
                self._read_trading_state(force=True)
                self.core.set_trading(st, time.time())
            elif not self._send_now(a):
                (self.sends if isinstance(a, Send) else self.lookups).submit(self._call, a)

    def _send_now(self, a) -> bool:
        """Send an order, or a protective stop's placement or cancel, from this thread over the
        WebSocket API, its answer to come through ``self.results``; False when that cannot be
        done (nothing was sent: use the pool)."""
        if self._ws_fd < 0 or not isinstance(a, (Send, PlaceStop, CancelStop)):
            return False
        ex = self.executor

        def done(outcome, a=a) -> None:
            self._answered(a, outcome)
        try:
            if isinstance(a, Send):
                return ex.submit_nowait(a.order, a.mark, done)
            if isinstance(a, PlaceStop):
                return ex.place_stop_nowait(a.symbol, a.side, a.trigger_price, a.client_algo_id,
                                            done)
            return ex.cancel_stop_nowait(a.symbol, a.client_algo_id, done)
        except Exception as exc:   # refused before sending, or the write failed (ambiguous)
            self._answered(a, exc)
            return True

    def _answered(self, action, outcome) -> None:
        self.results.put((action, outcome))
        if threading.get_ident() != self._loop_thread:
            self.ctx.wake()

    def _streams(self) -> list:
        return [s for s in (self.stream, self.marks) if s is not None]

    def _watch_fds(self) -> None:
        """Poll the descriptors of the WebSocket API and of the streams with the bus (each
        changes with its connection; a number closed by one may come back for another)."""
        fileno = getattr(self.gateway, "fileno", None)
        self._ws_fd = fileno() if fileno is not None else -1
        wanted = {fd for fd in (self._ws_fd, *(s.fileno() for s in self._streams())) if fd >= 0}
        if wanted == self._fds:
            return
        waker = self.ctx.bus.waker    # there is one: the runtime watches the intents topic
        for fd in self._fds - wanted:
            waker.remove_fd(fd)
        for fd in wanted - self._fds:
            waker.add_fd(fd)
        self._fds = wanted

    def _alert(self, a: dict) -> None:
        a = dict(a)
        kind, message, subject = a.pop("kind"), a.pop("message"), a.pop("subject", "")
        alert = getattr(self.ctx, "alert", None)
        if alert is not None:
            alert(kind, message, subject=subject, **a)
        else:
            self.log.error("alert", kind=kind, subject=subject, message=message)

    def _call(self, action) -> None:
        """On a pool thread: one venue call; its answer (or error) goes back to the loop."""
        try:
            outcome = self._venue(action)
        except Exception as exc:   # typed GatewayErrors, and anything else as ambiguous
            outcome = exc
        self.results.put((action, outcome))
        self.ctx.wake()

    def _venue(self, a):
        ex = self.executor
        if isinstance(a, Send):
            return ex.submit(a.order, a.mark)
        if isinstance(a, Query):
            return ex.query(a.symbol, a.client_order_id)
        if isinstance(a, Cancel):
            return ex.cancel(a.symbol, a.client_order_id)
        if isinstance(a, FetchTrades):
            return ex.fetch_fills(a.symbol, order_id=a.order_id)
        if isinstance(a, FetchOpenOrders):
            return ex.open_orders(a.symbol)
        if isinstance(a, FetchOrders):
            return ex.all_orders(a.symbol)
        if isinstance(a, FetchPositions):
            return ex.positions(list(a.symbols))
        if isinstance(a, Countdown):
            return ex.countdown(a.symbol, a.countdown_ms)
        if isinstance(a, FetchFunding):
            return ex.funding(a.since_ms)
        if isinstance(a, FetchWallet):
            return ex.wallet(a.since_ms)
        if isinstance(a, PlaceStop):
            return ex.place_stop(a.symbol, a.side, a.trigger_price, a.client_algo_id)
        if isinstance(a, CancelStop):
            return ex.cancel_stop(a.symbol, a.client_algo_id)
        if isinstance(a, FetchStops):
            return ex.open_stops(a.symbol)
        raise TypeError(f"unknown action {a!r}")

    def _sync_trading(self, now: float) -> None:
        """Hand the kill-switch file to the core when it changed."""
        st = self._read_trading_state()
        if st is not None:
            self.core.set_trading(st, now)

    def _read_trading_state(self, force: bool = False) -> tstate.TradingState | None:
        """The kill-switch file when it changed (None: unchanged); unreadable means HALTED."""
        path = tstate.state_path(self.ctx.home)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if not force and mtime == self._state_mtime:
            return None
        self._state_mtime = mtime
        try:
            return tstate.load_state(self.ctx.home)
        except tstate.StateError as exc:
            # a corrupt kill switch must not read as ACTIVE
            return tstate.TradingState(tstate.HALTED, str(exc), time.time(), "broker")

    def idle_timeout(self) -> float | None:
        due = self.core.next_due() if self.core is not None else None
        wait = None if due is None else max(0.0, due - time.time())
        ws_due = self.gateway.next_due() if self._ws_fd >= 0 else None
        if ws_due is not None:
            wait = ws_due if wait is None else min(wait, ws_due)
        return wait

    def health(self) -> dict:
        if self.core is None:
            return {"mode": self.ctx.settings.broker.mode}
        return {"mode": self.mode, "trading": self.core.trading.state, **self.core.health(),
                "stream": bool(self.stream is not None and self.stream.connected.is_set()),
                "exec_log_lines": self.exec_log.lines, "rate_limits": self.limiter.snapshot()}

    def stop(self) -> None:
        """Settle, then close: resolve orders in flight and record fills the venue already made.

        Nothing new is sent. What is still unsettled after ``broker.settle_on_stop_s`` is left to
        the start-up reconciliation of the next run. A broker that never started has nothing to
        settle.
        """
        if self.core is None:
            if self.executor is not None:
                self.executor.close()
            return
        core = self.core
        deadline = time.time() + self.b.settle_on_stop_s
        try:
            core.begin_stop(time.time())
            self._flush()
            while time.time() < deadline and core.unsettled():
                now = time.time()
                self._drain(now)
                core.settle_step(now)
                self._flush()
                time.sleep(0.02)
            left = core.unsettled()
            if left:
                self.log.warning("unsettled_at_stop", orders=left)
        except Exception as exc:   # never let settling block the exit
            self.log.warning("settle_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            for pool in (self.sends, self.lookups):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
            for fd in self._fds:
                self.ctx.bus.waker.remove_fd(fd)
            self._fds, self._ws_fd = set(), -1
            if self.marks is not None:
                self.marks.stop()
            try:
                self.executor.close()
            except Exception:
                pass
