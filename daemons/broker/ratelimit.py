"""Request-weight and order-count budgets, kept under the venue's limits with a margin.

The limits come from exchangeInfo ``rateLimits``; what has been used comes from the response
headers ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` (authoritative), and
from our own count between responses. Binance's windows are fixed (a new minute starts at :00),
so a budget frees up at the window boundary. On 429 we wait ``Retry-After`` (else 1 s); on 418
nothing at all is sent until the ban ends.

Pure bookkeeping with an injected clock: no sleeping, no sockets.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
_LETTER = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}

# Binance's documented defaults, used until exchangeInfo has been read
DEFAULT_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
]


@dataclass
class Window:
    kind: str          # REQUEST_WEIGHT | ORDERS
    seconds: int
    limit: int
    header: str        # lower-case response header carrying the used amount
    used: int = 0
    start: float = 0.0

    def roll(self, now: float) -> None:
        start = (now // self.seconds) * self.seconds
        if start != self.start:
            self.start = start
            self.used = 0


class RateLimiter:
    """``wait_for(weight, orders)`` says how long to hold a request; ``update`` reads headers."""

    def __init__(self, margin: float = 0.2, limits: list[dict] | None = None, clock=time.time):
        self.margin = min(max(float(margin), 0.0), 0.9)
        self.clock = clock
        self.windows: list[Window] = []
        self.blocked_until = 0.0     # 429: Retry-After
        self.banned_until = 0.0      # 418: nothing is sent before this
        self._lock = threading.RLock()   # venue calls run on several threads
        self.set_limits(limits or DEFAULT_LIMITS)

    def set_limits(self, rate_limits: list[dict]) -> None:
        """Adopt exchangeInfo ``rateLimits`` (REQUEST_WEIGHT and ORDERS)."""
        windows = []
        for r in rate_limits:
            kind = r.get("rateLimitType")
            if kind not in ("REQUEST_WEIGHT", "ORDERS") or r.get("interval") not in _SECONDS:
                continue
            n = int(r.get("intervalNum", 1))
            suffix = f"{n}{_LETTER[r['interval']]}".lower()
            header = ("x-mbx-used-weight-" if kind == "REQUEST_WEIGHT" else "x-mbx-order-count-") + suffix
            old = next((w for w in self.windows if w.header == header), None)
            windows.append(Window(kind, n * _SECONDS[r["interval"]], int(r["limit"]), header,
                                  old.used if old else 0, old.start if old else 0.0))
        if windows:
            self.windows = windows

    def budget(self, w: Window) -> int:
        return max(1, int(w.limit * (1.0 - self.margin)))

    def wait_for(self, weight: int = 1, orders: int = 0, now: float | None = None) -> float:
        """Seconds to wait before a request of this cost may go (0.0: go now)."""
        now = self.clock() if now is None else now
        wait = max(0.0, self.banned_until - now, self.blocked_until - now)
        for w in self.windows:
            w.roll(now)
            cost = weight if w.kind == "REQUEST_WEIGHT" else orders
            if cost and w.used + cost > self.budget(w):
                wait = max(wait, w.start + w.seconds - now)
        return wait

    def reserve(self, weight: int = 1, orders: int = 0, now: float | None = None) -> float:
        """Atomically: the wait before this request may go, or (0.0) count it as sent."""
        with self._lock:
            wait = self.wait_for(weight, orders, now)
            if wait <= 0:
                self.note_sent(weight, orders, now)
            return wait

    def note_sent(self, weight: int = 1, orders: int = 0, now: float | None = None) -> None:
        """Count a request as it leaves (headers later correct the estimate)."""
        now = self.clock() if now is None else now
        for w in self.windows:
            w.roll(now)
            w.used += weight if w.kind == "REQUEST_WEIGHT" else orders

    def update(self, headers, status: int, now: float | None = None) -> None:
        """Read the used amounts, and 429/418 with Retry-After, from one response."""
        with self._lock:
            self._update(headers, status, now)

    def _update(self, headers, status: int, now: float | None) -> None:
        now = self.clock() if now is None else now
        lower = {k.lower(): v for k, v in dict(headers or {}).items()}
        for w in self.windows:
            w.roll(now)
            value = lower.get(w.header)
            if value is not None:
                try:
                    # never lower: requests sent after this one (other threads) are not in it
                    w.used = max(w.used, int(value))
                except ValueError:
                    pass
        retry_after = _retry_after(lower.get("retry-after"))
        if status == 429:
            self.blocked_until = max(self.blocked_until, now + (retry_after or 1.0))
        elif status == 418:
            self.banned_until = max(self.banned_until, now + (retry_after or 120.0))

    def snapshot(self, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        out = {w.header: {"used": w.used, "limit": w.limit, "budget": self.budget(w)}
               for w in self.windows}
        if self.banned_until > now:
            out["banned_s"] = round(self.banned_until - now, 3)
        if self.blocked_until > now:
            out["blocked_s"] = round(self.blocked_until - now, 3)
        return out


def _retry_after(value) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
