"""Waking consumers when a spool changes: watchdog's inotify binding, a slow poll behind it.

One :class:`Waker` per process holds one inotify instance (the kernel allows 128 per user) and
any number of watched directories. ``wait`` blocks until a spool file under a watched directory
was written, or until the timeout: callers then read every topic to its end,
since inotify merges and may drop events. Where inotify is missing (not Linux), watchdog's
observer sets the same event from its own thread.

During a burst (the last two spool wake-ups less than ``BURST_GAP_S`` apart) ``wait`` naps in
short sleeps and checks the fd without blocking on it, for up to ``BURST_NAPS`` naps, before it
blocks. A writer's event then never wakes the reader directly: on this 2-core machine, such
wake-ups make the scheduler pull the reader onto the writer's CPU (wake-affine), where the two
take turns in slices of milliseconds while the other CPU idles. A timer wake-up keeps the
reader where it is. Outside bursts (e.g. 1,000 records/s) every wait blocks on the fd,
costing no CPU. The gap is measured between wake-ups, not from the last wake-up to the next
wait: a reader that handles a record quickly is always back within ``BURST_GAP_S``, and napping
then would only make the next record wait for the end of a nap (~150 µs of timer slack).

A loop that also reads a socket (the broker's WebSocket API) adds its descriptor
(``add_fd``): a wait then ends when the socket is readable, and the loop's own thread reads it,
with no thread between the answer and its handling. A nap ends early too when such a socket
becomes readable or another thread kicks: only spool events are deferred to the end of a nap.

The inotify fd is read in the consumer's own loop rather than through watchdog's observer
thread: the hand-off across the observer's threads costs ~100 µs per event and milliseconds in
bursts (see the bus baselines). Only events on spool files count (``*.jsonl`` segments, a SQLite
topic's ``bell``). A SQLite ``-wal`` write comes before its commit is visible, so waking on it
would mostly find nothing and cost a second wake-up: a SQLite topic's ``bell`` file is watched
instead of its directory as soon as it exists.
"""
from __future__ import annotations

import os
import select
import struct
import threading
import time

try:  # Linux: the raw inotify calls from watchdog, read in the consumer's own loop.
    from watchdog.observers.inotify_c import (InotifyConstants, inotify_add_watch, inotify_init,
                                              inotify_rm_watch)
except Exception:  # pragma: no cover - other platforms
    inotify_init = None

_MASK = 0
_OVERFLOW = 0x4000
if inotify_init is not None:
    # New records always come with a write (a new segment's creation comes before its first
    # write, and would only cost a wake-up that finds nothing)
    _MASK = InotifyConstants.IN_MODIFY
    _OVERFLOW = InotifyConstants.IN_Q_OVERFLOW

_HEADER = struct.Struct("iIII")     # wd, mask, cookie, len; then len bytes of name
_READ_SIZE = 1 << 16
BURST_GAP_S = 0.0005    # two spool wake-ups this close together mean a burst
NAP_S = 0.0001          # one nap during a burst
BURST_NAPS = 5          # naps without news before waiting on the fd again
_SELECT_LIMIT = 1024    # select(2) takes descriptors below FD_SETSIZE only


def is_spool_file(name: bytes) -> bool:
    """Whether a change to file ``name`` in a topic directory may mean new records."""
    return name.endswith(b".jsonl") or name == b"bell"


class Waker:
    """Blocks until a watched directory changes; see the module docstring."""

    def __init__(self):
        self._paths: set[str] = set()
        self._dir_wds: dict[int, str] = {}      # directory watches, by watch descriptor
        self._fd = -1
        self._observer = None
        self._event = threading.Event()
        self.wakeups = 0        # how many waits ended on a file-system event
        self.timeouts = 0       # how many ended on the slow poll
        self.kicks = 0          # how many ended on kick()
        self.readable = 0       # how many ended on a descriptor of add_fd (a socket)
        self.ignored = 0        # events on other files (locks, -wal, temporary files)
        self.naps = 0           # short sleeps taken during bursts (see the module docstring)
        self._last_wake = float("-inf")
        self._wake_gap = float("inf")   # time between the last two spool wake-ups
        # a self-pipe lets other threads (a websocket reader, a timer) wake the loop too
        self._kick_r, self._kick_w = os.pipe()
        os.set_blocking(self._kick_r, False)
        os.set_blocking(self._kick_w, False)
        self._poll = select.poll()
        self._poll.register(self._kick_r, select.POLLIN)
        self._fds: set[int] = set()     # other descriptors that end a wait (add_fd)
        self._nap_fds: list[int] | None = None   # what ends a nap early (None: only its time)
        self._set_nap_fds()
        if inotify_init is not None:
            fd = inotify_init()
            if fd >= 0:
                os.set_blocking(fd, False)
                self._fd = fd
                self._poll.register(fd, select.POLLIN)

    def watch(self, path: str | os.PathLike) -> None:
        """Watch a directory (idempotent)."""
        path = os.fspath(path)
        if path in self._paths:
            return
        os.makedirs(path, exist_ok=True)
        self._paths.add(path)
        if self._fd < 0:  # pragma: no cover - other platforms
            self._watch_with_observer(path)
        elif not self._watch_bell(path):
            wd = inotify_add_watch(self._fd, path.encode(), _MASK)
            if wd < 0:
                raise OSError(f"inotify_add_watch failed on {path}")
            self._dir_wds[wd] = path

    def _watch_bell(self, path: str) -> bool:
        """Watch a SQLite topic's bell file rather than its directory; False if it has none."""
        bell = os.path.join(path, "bell").encode()
        if not os.path.exists(bell):
            return False
        return inotify_add_watch(self._fd, bell, _MASK) >= 0

    def wait(self, timeout: float) -> bool:
        """Wait for a change; True if woken by the file system or a kick, False on timeout."""
        if self._fd < 0:  # pragma: no cover - other platforms
            woke = self._event.wait(timeout)
            self._event.clear()
            if woke:
                self.wakeups += 1
            else:
                self.timeouts += 1
            return woke
        now = time.monotonic()
        deadline = now + timeout
        poll = self._poll.poll
        naps = BURST_NAPS if self._wake_gap < BURST_GAP_S else 0
        while True:
            if naps:
                naps -= 1
                nap = min(NAP_S, max(0.0, deadline - time.monotonic()))
                if self._nap_fds is not None:
                    select.select(self._nap_fds, (), (), nap)   # a socket or a kick ends it
                else:
                    time.sleep(nap)
                self.naps += 1
                ready = poll(0)
            else:
                ready = poll(max(0, int(timeout * 1000 + 0.999)))
            if ready:
                fds = [fd for fd, _ in ready]
                if self._kick_r in fds:
                    self._drain_kicks()
                    self.kicks += 1
                    return True
                if self._fds and not self._fds.isdisjoint(fds):
                    self.readable += 1
                    return True
                if self._spool_changed():
                    self.wakeups += 1
                    woke = time.monotonic()
                    self._wake_gap = woke - self._last_wake
                    self._last_wake = woke
                    return True
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                self.timeouts += 1
                return False

    def _spool_changed(self) -> bool:
        """Read the pending events; True if one of them concerns a spool file."""
        changed = False
        while True:
            try:
                buf = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return changed
            i, n = 0, len(buf)
            while i < n:
                wd, mask, _cookie, length = _HEADER.unpack_from(buf, i)
                i += 16
                name = buf[i:i + length].rstrip(b"\0")
                i += length
                if wd not in self._dir_wds:
                    changed = changed or bool(mask & (_MASK | _OVERFLOW))   # a bell
                elif is_spool_file(name):
                    changed = True
                    if name == b"bell" and self._watch_bell(self._dir_wds[wd]):
                        inotify_rm_watch(self._fd, wd)   # a SQLite topic: its bell will do
                        del self._dir_wds[wd]
                else:
                    self.ignored += 1
            if n < _READ_SIZE - 4096:
                return changed

    def add_fd(self, fd: int) -> None:
        """End waits when ``fd`` is readable (or hung up): a socket whose owner reads it in
        the same loop, with no thread to hand its data over. The owner reads it before the
        next wait, and removes it (:meth:`remove_fd`) before closing it."""
        if self._fd < 0:  # pragma: no cover - other platforms
            raise OSError("descriptors can be waited on with inotify only")
        self._poll.register(fd, select.POLLIN)
        self._fds.add(fd)
        self._set_nap_fds()

    def remove_fd(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.discard(fd)
            try:
                self._poll.unregister(fd)
            except (KeyError, ValueError):
                pass
            self._set_nap_fds()

    def _set_nap_fds(self) -> None:
        fds = [self._kick_r, *self._fds]
        self._nap_fds = fds if max(fds) < _SELECT_LIMIT else None

    def kick(self) -> None:
        """Wake a thread blocked in :meth:`wait` (safe from any thread)."""
        if self._fd < 0:  # pragma: no cover - other platforms
            self._event.set()
            return
        try:
            os.write(self._kick_w, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def _drain_kicks(self) -> None:
        try:
            while os.read(self._kick_r, 4096):
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
        self._kick_r = self._kick_w = -1
        if self._observer is not None:  # pragma: no cover - other platforms
            self._observer.stop()
            self._observer.join(2)
            self._observer = None
