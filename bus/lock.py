"""The one-writer-per-topic rule, kept with an advisory ``flock`` on the topic's lock file.

The kernel drops the lock when its holder dies, even by SIGKILL, so a crashed writer never
leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os

from .errors import WriterLockedError


class TopicLock:
    """Exclusive lock on ``<topic dir>/writer.lock``."""

    def __init__(self, topic_dir: str, topic: str):
        self.path = os.path.join(topic_dir, "writer.lock")
        self.topic = topic
        self._fd = -1

    def acquire(self, blocking: bool = False) -> None:
        """Take the lock; without ``blocking`` a held lock raises :class:`WriterLockedError`."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WriterLockedError(
                f"topic {self.topic!r} already has a writer (pid {holder}); one writer per topic"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc):
        self.release()
