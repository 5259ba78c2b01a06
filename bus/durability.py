"""When a writer forces its records to disk: a small policy object shared by both sinks."""
from __future__ import annotations

import os
import threading
import time

MODES = ("none", "record", "batch", "interval")


class SyncPolicy:
    """Decides after each append whether to fsync.

    ``none`` leaves it to the kernel (every append is one ``write(2)``, so records reach the
    page cache at once and a crashed writer loses nothing; a power cut may), ``record`` syncs
    every append call, ``batch`` every ``every`` records, ``interval`` within ``interval_ms`` of
    an append: on the next append past the deadline, or from a background thread when the
    writer has gone quiet.

    The policy syncs through a file descriptor, or through ``syncer`` (a callable) when given.
    """

    def __init__(self, mode: str = "none", every: int = 1000, interval_ms: int = 10):
        if mode not in MODES:
            raise ValueError(f"fsync mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.every = max(1, int(every))
        self.interval_ns = max(0, int(interval_ms)) * 1_000_000
        self.syncs = 0
        self._pending = 0
        self._last = time.monotonic_ns()
        self._fd = -1
        self._syncer = None
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def set_syncer(self, syncer) -> None:
        """Sync by calling ``syncer()`` instead of fsyncing the descriptor given to appends."""
        self._syncer = syncer

    def after_append(self, fd: int, count: int = 1) -> None:
        """Called with the file descriptor after ``count`` records were written."""
        mode = self.mode
        if mode == "none":
            return
        if mode == "record":
            self._sync(fd)
            return
        if mode == "batch":
            self._pending += count
            if self._pending >= self.every:
                self._sync(fd)
                self._pending = 0
            return
        with self._lock:
            self._fd = fd
            self._pending += count
            now = time.monotonic_ns()
            if now - self._last >= self.interval_ns:
                self._sync(fd)
                self._pending = 0
                self._last = now
                return
        if self._thread is None:
            self._thread = threading.Thread(target=self._background, name="bus-fsync",
                                            daemon=True)
            self._thread.start()
        self._due.set()

    def flush(self, fd: int) -> None:
        """Sync what is pending (at close or rotation)."""
        with self._lock:
            if self.mode != "none" and self._pending:
                self._sync(fd)
            self._pending = 0
            self._fd = -1

    def close(self) -> None:
        """Stop the background thread (pending records must be flushed before)."""
        self._closed = True
        self._due.set()
        if self._thread is not None:
            self._thread.join(1)
            self._thread = None

    def _sync(self, fd: int) -> None:
        if self._syncer is not None:
            self._syncer()
        elif fd >= 0:
            os.fsync(fd)
        self.syncs += 1

    def _background(self) -> None:
        # Syncs what a quiet writer left pending once the interval since the last sync is over.
        while not self._closed:
            self._due.wait()
            self._due.clear()
            if self._closed:
                return
            wait = (self._last + self.interval_ns - time.monotonic_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
            with self._lock:
                fd, pending = self._fd, self._pending
                self._pending = 0
                self._last = time.monotonic_ns()
            if pending and (fd >= 0 or self._syncer is not None):
                # outside the lock, so that appends never wait for the disk
                try:
                    self._sync(fd)
                except OSError:
                    pass  # the segment was closed meanwhile; closing synced it
