"""The live market-data client: websocket connections and REST snapshots on a background thread.

:class:`LiveFeed` runs its own asyncio loop in a thread. Each connection (one per route group,
see :mod:`.streams`) lives in a task that connects, reads, and on any loss reconnects with
exponential backoff and jitter. It also reconnects on purpose:

* when nothing arrived for ``stall_timeout_s`` (a silent connection is as good as a dead one);
* before Binance's 24-hour connection limit (``rotate_after_s``), so the cut is ours.

The subscription is part of the combined-stream URL, so a reconnect resubscribes by itself.
websockets answers the server's pings with pongs on its own while the connection is read, and
sends its own keepalive pings. REST depth snapshots are fetched on request with ``requests`` in
the loop's executor.

Everything that happens is handed to ``sink`` as a tuple (the stage queues it and wakes its loop):

* ``("msg", group, recv_ms, raw_bytes)`` a websocket message
* ``("up", group, url)`` a connection opened
* ``("down", group, reason, retry_in_s)`` a connection closed or failed to open
* ``("snapshot", symbol, recv_ms, body_bytes)`` a REST depth snapshot
* ``("snapshot_error", symbol, reason, retry_in_s)`` a failed snapshot request (it is retried)
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Callable

import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

Sink = Callable[[tuple], None]


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: float) -> float:
    """Delay before reconnect ``attempt`` (0-based): ``base * 2**attempt`` capped at ``cap``,
    then jittered into its upper half by ``rand`` in [0, 1) so that clients don't reconnect in
    lockstep, and never zero."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return ceiling * (0.5 + 0.5 * rand)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def snapshot_url(rest_url: str, symbol: str, limit: int) -> str:
    """``GET /fapi/v1/depth`` for one symbol (Binance's local-book method, step 3)."""
    return f"{rest_url.rstrip('/')}/fapi/v1/depth?symbol={symbol.upper()}&limit={limit}"


class LiveFeed:
    """Websocket connections plus snapshot fetches on one background asyncio loop."""

    def __init__(self, urls: dict[str, str], rest_url: str | None, sink: Sink, *,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 stall_timeout_s: float = 30.0, rotate_after_s: float = 82800.0,
                 open_timeout_s: float = 10.0, snapshot_limit: int = 1000,
                 rest_timeout_s: float = 10.0, snapshot_min_interval_s: float = 1.0,
                 seed: int | None = None):
        self.urls = dict(urls)
        self.rest_url = rest_url
        self.sink = sink
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stall_timeout_s = stall_timeout_s
        self.rotate_after_s = rotate_after_s
        self.open_timeout_s = open_timeout_s
        self.snapshot_limit = snapshot_limit
        self.rest_timeout_s = rest_timeout_s
        self.snapshot_min_interval_s = snapshot_min_interval_s
        self._rand = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task] = []
        self._snapshot_tasks: dict[str, asyncio.Task] = {}
        self._last_snapshot: dict[str, float] = {}
        self._started = threading.Event()
        self._stopping = False

    # -- control (any thread) ----------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread and every connection task."""
        self._thread = threading.Thread(target=self._run, name="harvest-ws", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def request_snapshot(self, symbol: str) -> None:
        """Fetch a depth snapshot of ``symbol`` (replaces a request still in flight)."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        loop.call_soon_threadsafe(self._start_snapshot, symbol.upper())

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connections (close frames sent) and end the thread."""
        self._stopping = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._cancel_all)
            except RuntimeError:
                pass  # the loop has just finished
        if self._thread is not None:
            self._thread.join(timeout)

    # -- loop thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._connection(group, url), name=f"ws-{group}")
                       for group, url in self.urls.items()]
        self._started.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._snapshot_tasks.values()):
            task.cancel()
        await asyncio.gather(*self._snapshot_tasks.values(), return_exceptions=True)

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._snapshot_tasks.values():
            task.cancel()

    async def _connection(self, group: str, url: str) -> None:
        attempt = 0
        while not self._stopping:
            reason = "closed"
            try:
                async with connect(url, open_timeout=self.open_timeout_s, close_timeout=2,
                                   max_size=1 << 24, max_queue=1024,
                                   compression=None) as ws:
                    self.sink(("up", group, url))
                    try:
                        reason, got_any = await self._read(group, ws)
                    except asyncio.CancelledError:
                        # asked to stop: a normal close (1000), not the context's 1011
                        await ws.close(1000, "client stopping")
                        raise
                    if got_any:
                        attempt = 0  # a connection that delivered resets the backoff
            except asyncio.CancelledError:
                return
            except ConnectionClosed as exc:
                reason = f"connection closed: {exc}"
            except InvalidURI as exc:
                reason = f"invalid URL: {exc}"
            except (OSError, InvalidHandshake, TimeoutError, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except Exception as exc:  # whatever it is, the connection must come back
                reason = f"unexpected {type(exc).__name__}: {exc}"
            if self._stopping:
                return
            if reason == "rotate":
                reason = "rotate: planned reconnect before the venue's 24 h limit"
                delay = 0.0  # our own cut: reconnect at once
            else:
                delay = backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s,
                                      self._rand.random())
                attempt += 1
            self.sink(("down", group, reason, round(delay, 3)))
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                return

    async def _read(self, group: str, ws) -> tuple[str, bool]:
        """Read until the connection ends, stalls or is due for rotation; returns (why, got_any)."""
        opened = time.monotonic()
        rotate_at = opened + self.rotate_after_s if self.rotate_after_s > 0 else None
        got_any = False
        while True:
            now = time.monotonic()
            waits = []
            if self.stall_timeout_s > 0:
                waits.append(self.stall_timeout_s)
            if rotate_at is not None:
                waits.append(max(0.0, rotate_at - now))
            timeout = min(waits) if waits else None
            try:
                raw = await asyncio.wait_for(ws.recv(decode=False), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                if rotate_at is not None and time.monotonic() >= rotate_at:
                    return "rotate", got_any
                return f"stall: no message for {self.stall_timeout_s:g} s", got_any
            except ConnectionClosed as exc:
                return f"connection closed: {exc}", got_any
            got_any = True
            self.sink(("msg", group, now_ms(), raw))

    def _start_snapshot(self, symbol: str) -> None:
        old = self._snapshot_tasks.get(symbol)
        if old is not None and not old.done():
            old.cancel()
        self._snapshot_tasks[symbol] = asyncio.get_running_loop().create_task(
            self._snapshot(symbol), name=f"snapshot-{symbol}")

    async def _snapshot(self, symbol: str) -> None:
        if not self.rest_url:
            self.sink(("snapshot_error", symbol, "venue.rest_url is not set", None))
            return
        url = snapshot_url(self.rest_url, symbol, self.snapshot_limit)
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # the snapshot costs request weight (20 at limit=1000): space repeated ones out
            since = time.monotonic() - self._last_snapshot.get(symbol, -1e9)
            if since < self.snapshot_min_interval_s:
                await asyncio.sleep(self.snapshot_min_interval_s - since)
            self._last_snapshot[symbol] = time.monotonic()
            try:
                resp = await loop.run_in_executor(
                    None, lambda: requests.get(url, timeout=self.rest_timeout_s))
                if resp.status_code == 200:
                    self.sink(("snapshot", symbol, now_ms(), resp.content))
                    return
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                retry_after = _retry_after(resp)
            except requests.RequestException as exc:
                reason, retry_after = f"{type(exc).__name__}: {exc}", None
            delay = backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s,
                                  self._rand.random())
            if retry_after is not None:
                delay = max(delay, retry_after)
            attempt += 1
            self.sink(("snapshot_error", symbol, reason, round(delay, 3)))
            await asyncio.sleep(delay)


def _retry_after(resp) -> float | None:
    """Seconds from a 418/429 ``Retry-After`` header, if any."""
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
