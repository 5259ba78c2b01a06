"""The user data stream: a websocket on the listenKey, read by a background thread.

Events (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, listenKeyExpired) go into a queue and the daemon's
loop is woken (``on_event``); the loop applies them on its own thread. The thread reconnects
with an exponential backoff; while it is down, the broker falls back to REST polling, and after
each reconnect it polls once to pick up what it missed.
"""
from __future__ import annotations

import queue
import threading

import orjson


class UserStream:
    """Reads ``url_fn()`` in a thread; ``events`` is the queue of decoded JSON events."""

    def __init__(self, url_fn, on_event=None, reconnect_max_s: float = 10.0,
                 open_timeout_s: float = 5.0):
        self.url_fn = url_fn
        self.on_event = on_event or (lambda: None)
        self.reconnect_max_s = reconnect_max_s
        self.open_timeout_s = open_timeout_s
        self.events: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self.connects = 0           # successful connections so far (a change means "poll now")
        self._stop = threading.Event()
        self._ws = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="user-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def reconnect(self) -> None:
        """Drop the connection (e.g. after a new listenKey); the thread connects again."""
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
                url = self.url_fn()
                with connect(url, open_timeout=self.open_timeout_s, close_timeout=1,
                             max_size=2 ** 22) as ws:
                    self._ws = ws
                    self.connects += 1
                    self.connected.set()
                    self.events.put({"e": "_connected"})
                    self.on_event()
                    delay = 0.2
                    for message in ws:
                        try:
                            event = orjson.loads(message)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(event, dict) and "data" in event and "stream" in event:
                            event = event["data"]    # combined-stream wrapper
                        self.events.put(event)
                        self.on_event()
            except Exception:
                pass
            finally:
                self._ws = None
                if self.connected.is_set():
                    self.connected.clear()
                    self.events.put({"e": "_disconnected"})
                    self.on_event()
            if self._stop.wait(delay):
                break
            delay = min(self.reconnect_max_s, delay * 2)

    def drain(self, max_events: int = 10000) -> list[dict]:
        out = []
        while len(out) < max_events:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out
