"""A venue's websocket stream: the user data stream on the listenKey (ORDER_TRADE_UPDATE,
ACCOUNT_UPDATE, ALGO_UPDATE, listenKeyExpired) or market streams (``<symbol>@markPrice@1s``).

:meth:`UserStream.drain` gives the decoded JSON events in the order they came; a combined
stream's ``{"stream", "data"}`` wrapper is taken off. A background thread connects and reconnects
with an exponential backoff, and puts ``{"e": "_connected"}`` / ``{"e": "_disconnected"}`` among
the events (waking the owner through ``on_event``): while it is down the broker falls back to
REST polling, and after each reconnect it polls once to pick up what it missed.

Who reads the socket (the connection is :class:`.wsconn.Conn`, no thread of websockets'):

* unattached, the background thread reads it and calls ``on_event`` when events came;
* an owner with an event loop (the broker daemon) calls :meth:`UserStream.attach`, polls
  :meth:`UserStream.fileno` with its other descriptors and calls :meth:`UserStream.service`
  when it is readable, then :meth:`UserStream.drain`: the events are read and handled in the
  owner's thread, and no thread is woken between the venue's message and its handling.
"""
from __future__ import annotations

import queue
import threading

import orjson

from .wsconn import IDLE_READ_S, Conn, fd_of, open_conn


class UserStream:
    """Reads ``url_fn()``'s websocket; ``drain()`` gives the decoded JSON events."""

    def __init__(self, url_fn, on_event=None, reconnect_max_s: float = 10.0,
                 open_timeout_s: float = 5.0, name: str = "user-stream"):
        self.url_fn = url_fn
        self.on_event = on_event or (lambda: None)
        self.reconnect_max_s = reconnect_max_s
        self.open_timeout_s = open_timeout_s
        self.name = name
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.connected = threading.Event()
        self.connects = 0           # successful connections so far (a change means "poll now")
        self._stop = threading.Event()
        self._conn: Conn | None = None
        self._attached = False
        self._read_lock = threading.Lock()     # one reader of the socket at a time
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.dead.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def reconnect(self) -> None:
        """Drop the connection (e.g. after a new listenKey); the thread connects again."""
        conn = self._conn
        if conn is not None:
            conn.dead.set()

    def attach(self, on: bool = True) -> None:
        """The owner reads the socket from now on: it polls :meth:`fileno` and calls
        :meth:`service`."""
        self._attached = on

    def fileno(self) -> int:
        """The open connection's descriptor (-1: none)."""
        return fd_of(self._conn)

    def service(self) -> int:
        """Read what the socket holds now into the events (never blocks; nothing when another
        thread is reading or there is no connection). Returns how many events came."""
        conn = self._conn
        if conn is None or not self._read_lock.acquire(blocking=False):
            return 0
        try:
            if conn.dead.is_set():    # (checked under the lock: the thread closes it under it)
                return 0
            messages, gone = conn.read()
        finally:
            self._read_lock.release()
        n = 0
        for message in messages:
            n += self._put(message)
        if gone:
            conn.dead.set()     # the thread closes it and connects again
        return n

    def drain(self, max_events: int = 10000) -> list[dict]:
        out = []
        while len(out) < max_events:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def _put(self, message: bytes) -> int:
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            return 0
        if isinstance(event, dict) and "data" in event and "stream" in event:
            event = event["data"]    # combined-stream wrapper
        self.events.put(event)
        return 1

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                conn = open_conn(self.url_fn(), self.open_timeout_s)
            except Exception:
                conn = None
            if conn is not None:
                delay = 0.2
                self._conn = conn
                self.connects += 1
                self.connected.set()
                self.events.put({"e": "_connected"})
                for message in conn.early:
                    self._put(message)
                self.on_event()
                while not self._stop.is_set() and not conn.dead.is_set():
                    if self._attached:
                        conn.dead.wait(IDLE_READ_S)   # the owner reads; it marks a lost one dead
                    elif conn.poller.poll(int(IDLE_READ_S * 1000)) and not self._attached \
                            and self.service():
                        self.on_event()   # (attached meanwhile: the owner reads it)
                with self._read_lock:     # not under a reader's feet
                    conn.close()
                self._conn = None
                self.connected.clear()
                self.events.put({"e": "_disconnected"})
                self.on_event()
            if self._stop.wait(delay):
                break
            delay = min(self.reconnect_max_s, delay * 2)
