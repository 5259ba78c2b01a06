"""The WebSocket API client: orders placed, canceled and queried over Binance USD-M's trading
websocket (``wss://ws-fapi.binance.com/ws-fapi/v1``; testnet
``wss://testnet.binancefuture.com/ws-fapi/v1``; ``ofi exchange``: ``ws://HOST:PORT/ws-fapi/v1``).

One connection; any number of threads may have a request in flight at once. Requests are JSON
``{"id", "method", "params"}``; each one is signed on its own with the HMAC key pair:
``signature`` = hex HMAC-SHA256 of every other parameter (``apiKey``, ``timestamp``,
``recvWindow`` included) sorted by name, ``name=value`` joined by ``&``; integers as JSON
integers, decimals as JSON strings (Binance's websocket-api-general-info). ``session.logon``
is not used: Binance accepts it only from Ed25519 keys, and the broker's keys are HMAC.

No thread stands between a request and its answer. The frames are made and read by websockets'
sans-I/O protocol over a plain (or TLS) socket that this module reads itself:

* :meth:`WsApiClient.request` sends from the calling thread and waits for its answer; a waiting
  caller reads the socket itself (one reader at a time; the others' answers are handed to them).
* :meth:`WsApiClient.begin` sends and returns at once; ``done(result or error)`` is called by
  whichever thread reads the answer (or finds it timed out or lost). An owner with an event loop
  (the broker daemon) calls :meth:`WsApiClient.attach`, polls :meth:`WsApiClient.fileno` with
  its other descriptors and calls :meth:`WsApiClient.service` when it is readable and on its
  timers: the answer is then read and handled in the owner's thread, with no other thread woken.
  While attached, callers of ``request`` leave the reading to the owner.
* A background thread connects and reconnects; unattached, it also reads every
  :data:`IDLE_READ_S` what no caller reads (pings, a closed connection) and times out the
  overdue requests of :meth:`WsApiClient.begin` (attached, the owner does both, on
  :meth:`WsApiClient.next_due`). A connection older than :data:`MAX_AGE_S` is replaced when no
  request waits on it (a planned rollover: the requests of the moment go over REST, none is
  ever made ambiguous by it).

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
from .wsconn import IDLE_READ_S, Conn, fd_of, open_conn

_LETTER = {"SECOND": "s", "MINUTE": "m", "HOUR": "h", "DAY": "d"}
#: Binance closes a WebSocket API connection after 24 h; the client replaces it before then, at a
#: moment no request waits on it, rather than have the venue cut it under an order in flight
MAX_AGE_S = 23 * 3600.0


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
    """One request in flight: answered (``answer``), lost with its connection, or timed out."""

    __slots__ = ("rid", "event", "answer", "lost", "conn", "deadline", "t0", "method", "params",
                 "weight", "orders", "action", "log", "retried", "done")

    def __init__(self, rid, conn, deadline, method, params, weight, orders, action, log, retried,
                 done):
        self.rid = rid
        self.event = threading.Event()
        self.answer: dict | None = None
        self.lost = False
        self.conn = conn
        self.deadline = deadline      # time.monotonic()
        self.t0 = time.perf_counter()
        self.method, self.params, self.weight, self.orders = method, params, weight, orders
        self.action, self.log, self.retried, self.done = action, log, retried, done


class WsApiClient:
    """A websocket to one venue's WebSocket API, shared by every calling thread."""

    def __init__(self, url: str, api_key: str, api_secret: str, *, limiter, server_clock,
                 exec_log=None, timeout_s: float = 5.0, recv_window_ms: int = 5000,
                 resync=None, open_timeout_s: float = 5.0, reconnect_max_s: float = 10.0,
                 max_age_s: float = MAX_AGE_S, clock=time.time):
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
        self.max_age_s = max_age_s
        self.clock = clock
        self.connected = threading.Event()
        self.connects = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, _Slot] = {}
        self._lock = threading.Lock()          # _pending
        self._read_lock = threading.Lock()     # one reader of the socket at a time
        self._stop = threading.Event()
        self._conn: Conn | None = None
        self._attached = False
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
        conn = self._conn
        if conn is not None:
            self._lose(conn)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def attach(self, on: bool = True) -> None:
        """The owner reads the socket from now on (see the module docstring): it polls
        :meth:`fileno` and calls :meth:`service`."""
        self._attached = on

    def fileno(self) -> int:
        """The open connection's descriptor (-1: none)."""
        return fd_of(self._conn)

    def _open(self) -> Conn:
        conn = open_conn(self.url, self.open_timeout_s, self.timeout_s)
        for message in conn.early:   # answers that came with the handshake's
            self._dispatch(message)
        return conn

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                conn = self._open()
            except Exception as exc:
                if not self._stop.is_set():
                    self._log("ws_api_connect", "failed", {}, error=type(exc).__name__)
            else:
                self._conn = conn
                self.connects += 1
                self.connected.set()
                self._log("ws_api_connect", "ok", {})
                delay = 0.2
                retire_at = time.monotonic() + self.max_age_s
                retired = False
                while not self._stop.is_set() and not conn.dead.wait(IDLE_READ_S):
                    if not self._attached:   # else the owner reads and times out on its timers
                        self.pump()
                        self.service(read=False)
                    if time.monotonic() >= retire_at and self._retire(conn):
                        retired = True
                        break
                self._lose(conn)
                with conn.lock:
                    try:
                        conn.sock.close()
                    except OSError:
                        pass
                self._log("ws_api_disconnect", "retired" if retired else "lost", {})
                if retired:
                    continue          # the next connection at once
            if self._stop.wait(delay):
                break
            delay = min(self.reconnect_max_s, delay * 2)

    def _retire(self, conn: Conn) -> bool:
        """Close ``conn`` to new requests if none waits on it (True); a request already sent
        keeps it open until answered. A sender that comes after finds it closed, and nothing
        sent: it goes over REST."""
        with conn.lock, self._lock:
            if any(s.conn is conn for s in self._pending.values()):
                return False
            self.connected.clear()
            conn.dead.set()
            return True

    def _lose(self, conn: Conn) -> None:
        """The connection is gone: nothing more is sent on it, its requests are lost."""
        first = not conn.dead.is_set()
        conn.dead.set()
        if self._conn is conn:
            self.connected.clear()
        if not first:
            return
        with self._lock:
            slots = [s for s in self._pending.values() if s.conn is conn]
            for s in slots:
                del self._pending[s.rid]
        for slot in slots:
            slot.lost = True
            self._settle(slot)

    # -- reading ----------------------------------------------------------------------------------
    def pump(self) -> int:
        """Read what the socket holds now and hand out the answers (never blocks; nothing when
        another thread is reading). Returns how many answers were handed out."""
        conn = self._conn
        if conn is None or conn.dead.is_set() or not self._read_lock.acquire(blocking=False):
            return 0
        try:
            return self._read(conn)
        finally:
            self._read_lock.release()

    def _read(self, conn: Conn) -> int:
        """Read until the socket would block (with the read lock held)."""
        messages, gone = conn.read()
        n = 0
        for message in messages:
            n += self._dispatch(message)
        if gone:
            self._lose(conn)
        return n

    def _dispatch(self, message) -> int:
        try:
            answer = orjson.loads(message)
        except orjson.JSONDecodeError:
            return 0
        if not isinstance(answer, dict):
            return 0
        rid = answer.get("id")
        with self._lock:
            slot = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if slot is None:
            return 0      # an answer after its caller gave up (it was settled by a query)
        slot.answer = answer
        self._settle(slot)
        return 1

    def _settle(self, slot: _Slot) -> None:
        """An answer, a loss or a timeout: wake the waiting caller, or call ``done``."""
        slot.event.set()
        if slot.done is not None:
            try:
                outcome = self._outcome(slot)
            except _Resend as r:
                threading.Thread(target=self._resend, args=(slot, r.exc), name="ws-api-resync",
                                 daemon=True).start()
                return
            except Exception as exc:
                outcome = exc
            slot.done(outcome)

    def service(self, read: bool = True) -> None:
        """Read what came (``read``) and time out the requests of :meth:`begin` whose answer is
        overdue; the owner calls this when :meth:`fileno` is readable and on its timers."""
        if read:
            self.pump()
        now = time.monotonic()
        with self._lock:
            late = [rid for rid, s in self._pending.items()
                    if s.done is not None and s.deadline <= now]
            slots = [self._pending.pop(rid) for rid in late]
        for slot in slots:
            self._settle(slot)

    def next_due(self) -> float | None:
        """Seconds until the first request of :meth:`begin` times out (None: none waits)."""
        with self._lock:
            due = [s.deadline for s in self._pending.values() if s.done is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    # -- one request ------------------------------------------------------------------------------
    def request(self, method: str, params: dict, *, weight: int = 1, orders: int = 0,
                action: str = "", log: dict | None = None, _retried: bool = False):
        """Send one signed request; its ``result``, or a typed :mod:`.errors` exception."""
        slot = self._send(method, params, weight, orders, action, dict(log or {}), _retried,
                          None)
        self._wait(slot)
        try:
            return self._outcome(slot)
        except _Resend as r:
            return self._resync_and_send(slot, r.exc)

    def begin(self, method: str, params: dict, done, *, weight: int = 1, orders: int = 0,
              action: str = "", log: dict | None = None) -> None:
        """Send one signed request and return; ``done`` gets its ``result`` or the typed
        error, in the thread that reads the answer (the owner's, when attached) or finds it
        lost or overdue. Raises what :meth:`request` raises before anything was sent
        (:class:`WsUnavailable`, the limiter's :class:`RateLimited`) and :class:`Ambiguous`
        when the write failed; ``done`` is then never called."""
        self._send(method, params, weight, orders, action, dict(log or {}), False, done)

    def _send(self, method, params, weight, orders, action, log, retried, done) -> _Slot:
        conn = self._conn
        if conn is None or conn.dead.is_set() or not self.connected.is_set():
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
        frame = orjson.dumps({"id": rid, "method": method, "params": signed})
        slot = _Slot(rid, conn, time.monotonic() + self.timeout_s, method, params, weight, orders,
                     action, log, retried, done)
        with self._lock:
            self._pending[rid] = slot
        with conn.lock:
            if conn.dead.is_set():
                with self._lock:
                    self._pending.pop(rid, None)
                self._log(action, "not_sent", log, error="not connected", t0=slot.t0)
                raise WsUnavailable("the WebSocket API connection is closed")
            try:
                conn.send_text(frame)
            except Exception as e:
                with self._lock:
                    self._pending.pop(rid, None)
                failed = e
            else:
                failed = None
        if failed is not None:
            self._lose(conn)     # a frame may be cut short: the connection is unusable
            self._log(action, "ambiguous", log, error=f"send: {type(failed).__name__}",
                      t0=slot.t0)
            raise Ambiguous(f"{method}: the websocket failed while sending") from failed
        return slot

    def _wait(self, slot: _Slot) -> None:
        """Until the answer, the loss or the timeout; reading the socket when no one else does."""
        conn = slot.conn
        while not slot.event.is_set():
            left = slot.deadline - time.monotonic()
            if left <= 0:
                break
            if self._attached or conn.dead.is_set():
                slot.event.wait(left)
                continue
            if not self._read_lock.acquire(blocking=False):
                slot.event.wait(min(left, 0.001))   # another caller reads: it hands ours over
                continue
            try:
                if slot.event.is_set() or conn.dead.is_set():
                    continue
                if conn.poller.poll(max(1, int(min(left, 0.05) * 1000 + 0.999))):
                    self._read(conn)
            finally:
                self._read_lock.release()
        with self._lock:
            if self._pending.get(slot.rid) is slot:
                del self._pending[slot.rid]

    def _outcome(self, slot: _Slot):
        """The ``result`` of a finished request, or its typed error (:class:`_Resend`: -1021,
        to be sent again after a clock resync)."""
        action, log, t0, method = slot.action, slot.log, slot.t0, slot.method
        answer = slot.answer
        if answer is None:
            if slot.lost:
                self._log(action, "ambiguous", log, error="disconnected", t0=t0)
                raise Ambiguous(f"{method}: the websocket closed before the answer")
            self._log(action, "ambiguous", log, error="no answer", t0=t0)
            raise Ambiguous(f"{method}: no answer within {self.timeout_s}s")
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
        if exc.code == -1021 and not slot.retried and self.resync is not None:
            raise _Resend(exc)
        raise exc

    def _resync_and_send(self, slot: _Slot, exc: GatewayError):
        """-1021: the clock is read again from the venue and the request sent once more."""
        try:
            self.resync()
        except GatewayError:
            raise exc from None
        return self.request(slot.method, slot.params, weight=slot.weight, orders=slot.orders,
                            action=slot.action, log=slot.log, _retried=True)

    def _resend(self, slot: _Slot, exc: GatewayError) -> None:
        """:meth:`_resync_and_send` for a request of :meth:`begin` (on a thread of its own)."""
        try:
            outcome = self._resync_and_send(slot, exc)
        except Exception as exc:
            outcome = exc
        slot.done(outcome)

    def _log(self, action, outcome, log, t0=None, **fields) -> None:
        if self.exec_log is None:
            return
        ms = round((time.perf_counter() - t0) * 1000, 3) if t0 is not None else None
        self.exec_log.write(action, outcome=outcome, ms=ms, transport="ws", **log, **fields)

    # -- methods (weights: Binance's USD-M WebSocket API pages) -----------------------------------
    def new_order(self, params: dict, log: dict | None = None) -> dict:
        """order.place (TRADE; IP weight 0, one order on the 10 s and 1 min order counts)."""
        return self.request("order.place", params, weight=0, orders=1, action="place", log=log)

    def place_order(self, params: dict, done, log: dict | None = None) -> None:
        """order.place, answered through ``done`` (:meth:`begin`)."""
        self.begin("order.place", params, done, weight=0, orders=1, action="place", log=log)

    def place_algo_order(self, params: dict, done, log: dict | None = None) -> None:
        """algoOrder.place (TRADE; weight 0, one order on the order counts, as
        ``POST /fapi/v1/algoOrder``), answered through ``done`` (:meth:`begin`)."""
        self.begin("algoOrder.place", {"algoType": "CONDITIONAL", **params}, done, weight=0,
                   orders=1, action="algo_place", log=log)

    def cancel_algo_order(self, symbol: str, client_algo_id: str, done) -> None:
        """algoOrder.cancel (TRADE, weight 1; -2011 when not open), answered through ``done``."""
        self.begin("algoOrder.cancel", {"symbol": symbol, "clientAlgoId": client_algo_id}, done,
                   weight=1, action="algo_cancel",
                   log={"symbol": symbol, "client_algo_id": client_algo_id})

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


class _Resend(Exception):
    """-1021 on the first try: resync the clock and send once more."""

    def __init__(self, exc: GatewayError):
        super().__init__(str(exc))
        self.exc = exc


def _retry_after(error: dict | None, now: float) -> float | None:
    """Seconds until ``error.data.retryAfter`` (epoch ms), as a 429/418 answer carries it."""
    data = (error or {}).get("data")
    if not isinstance(data, dict) or data.get("retryAfter") is None:
        return None
    try:
        return max(0.0, int(data["retryAfter"]) / 1000.0 - now)
    except (TypeError, ValueError):
        return None
