"""Waking consumers when a spool changes: watchdog's inotify binding, a slow poll behind it.

One :class:`Waker` per process holds one inotify instance (the kernel allows 128 per user) and
any number of watched directories. ``wait`` blocks until something under a watched directory was
written, created or moved, or until the timeout: callers then read every topic to its end, since
inotify merges and may drop events. Where inotify is missing (not Linux), watchdog's observer
sets the same event from its own thread.
"""
from __future__ import annotations

import os
import select
import threading

try:  # Linux: the raw inotify calls from watchdog, read in the consumer's own loop.
    from watchdog.observers.inotify_c import InotifyConstants, inotify_add_watch, inotify_init
except Exception:  # pragma: no cover - other platforms
    inotify_init = None

_MASK = 0
if inotify_init is not None:
    _MASK = (InotifyConstants.IN_MODIFY | InotifyConstants.IN_CREATE
             | InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_CLOSE_WRITE)


class Waker:
    """Blocks until a watched directory changes; see the module docstring."""

    def __init__(self):
        self._paths: set[str] = set()
        self._fd = -1
        self._observer = None
        self._event = threading.Event()
        self.wakeups = 0        # how many waits ended on a file-system event
        self.timeouts = 0       # how many ended on the slow poll
        # a self-pipe lets other threads (a websocket reader, a timer) wake the loop too
        self._kick_r, self._kick_w = os.pipe()
        os.set_blocking(self._kick_r, False)
        os.set_blocking(self._kick_w, False)
        if inotify_init is not None:
            fd = inotify_init()
            if fd >= 0:
                os.set_blocking(fd, False)
                self._fd = fd

    def watch(self, path: str | os.PathLike) -> None:
        """Watch a directory (idempotent)."""
        path = os.fspath(path)
        if path in self._paths:
            return
        os.makedirs(path, exist_ok=True)
        self._paths.add(path)
        if self._fd >= 0:
            if inotify_add_watch(self._fd, path.encode(), _MASK) < 0:
                raise OSError(f"inotify_add_watch failed on {path}")
        else:  # pragma: no cover - other platforms
            self._watch_with_observer(path)

    def wait(self, timeout: float) -> bool:
        """Wait for a change; True if woken by the file system, False on timeout."""
        if self._fd >= 0:
            ready, _, _ = select.select([self._fd, self._kick_r], [], [], timeout)
            if not ready:
                self.timeouts += 1
                return False
            self._drain(self._kick_r)
            if self._fd in ready:
                self._drain(self._fd)
                self.wakeups += 1
            return True
        woke = self._event.wait(timeout)  # pragma: no cover - other platforms
        self._event.clear()
        if woke:
            self.wakeups += 1
        else:
            self.timeouts += 1
        return woke

    def kick(self) -> None:
        """Wake a thread blocked in :meth:`wait` (safe from any thread)."""
        if self._fd < 0:  # pragma: no cover - other platforms
            self._event.set()
            return
        try:
            os.write(self._kick_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway

    @staticmethod
    def _drain(fd: int) -> None:
        # Events only say "look again"; their content is not needed, so discard it unparsed.
        try:
            while os.read(fd, 65536):
                pass
        except BlockingIOError:
            pass

    def _watch_with_observer(self, path: str) -> None:  # pragma: no cover - other platforms
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        waker = self

        class _Kick(FileSystemEventHandler):
            def on_any_event(self, event):
                waker._event.set()

        if self._observer is None:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        self._observer.schedule(_Kick(), path, recursive=False)

    def close(self) -> None:
        """Release the inotify instance or stop the observer."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in (self._kick_r, self._kick_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._observer is not None:  # pragma: no cover - other platforms
            self._observer.stop()
            self._observer.join(2)
            self._observer = None
