"""When a writer forces its records to disk: a small policy object shared by both sinks."""
from __future__ import annotations

import os
import time

MODES = ("none", "record", "batch", "interval")


class SyncPolicy:
    """Decides after each append whether to fsync.

    ``none`` leaves it to the kernel (records reach the page cache at once, so readers and a
    crashed writer lose nothing; a power cut may), ``record`` syncs every append, ``batch`` every
    ``every`` records, ``interval`` at most every ``interval_ms``.
    """

    def __init__(self, mode: str = "none", every: int = 1000, interval_ms: int = 10):
        if mode not in MODES:
            raise ValueError(f"fsync mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.every = max(1, int(every))
        self.interval_ns = int(interval_ms) * 1_000_000
        self._pending = 0
        self._last = time.monotonic_ns()

    def after_append(self, fd: int, count: int = 1) -> None:
        """Called with the file descriptor after ``count`` records were written."""
        mode = self.mode
        if mode == "none":
            return
        if mode == "record":
            os.fsync(fd)
            return
        self._pending += count
        if mode == "batch":
            if self._pending >= self.every:
                os.fsync(fd)
                self._pending = 0
        else:
            now = time.monotonic_ns()
            if now - self._last >= self.interval_ns:
                os.fsync(fd)
                self._pending = 0
                self._last = now

    def flush(self, fd: int) -> None:
        """Sync what is pending (at close or rotation)."""
        if self.mode != "none" and self._pending:
            os.fsync(fd)
        self._pending = 0
