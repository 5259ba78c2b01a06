"""Client order ids derived from the signal (or the timer second) that caused the order.

    <prefix>-<symbol>-<bucket_ms in base 36>-<code><hash>      e.g. ofi-BTCUSDT-lxk3v7s0-E3f9a1c

``code`` is the trigger (E entry, S stop, R reversal, T time); exits decided by the timer use
WS / WT with the wall-clock second (in ms) in place of the bucket, so they never equal a signal's
id, and the core sends at most one per symbol and second. ``hash`` is 6 hex digits of BLAKE2b
over every input, so a symbol shortened to fit the 36 characters cannot make two ids equal.
The same inputs always give the same id (across processes and restarts): a re-sent intent carries
the id of the first, and the broker (and Binance, among open orders) refuses the duplicate.
Binance accepts ``^[.A-Z:/a-z0-9_-]{1,36}$``.
"""
from __future__ import annotations

import hashlib
import re

PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
MAX_LEN = 36
_UNSAFE = re.compile(r"[^.A-Z:/a-z0-9_]")   # '-' is our separator, so it is dropped from parts
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    """``n`` (>= 0) in base 36, lower case."""
    if n < 0:
        raise ValueError("base36 of a negative number")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if not n:
            return out


def client_order_id(prefix: str, symbol: str, bucket_ms: int, code: str, side: str) -> str:
    """The id of the order ``code`` on ``side`` caused by the signal of ``bucket_ms``."""
    digest = hashlib.blake2b(f"{prefix}|{symbol}|{int(bucket_ms)}|{code}|{side}".encode(),
                             digest_size=8).hexdigest()[:6]
    head = _UNSAFE.sub("", prefix)[:8] or "ofi"
    tail = f"{base36(int(bucket_ms))}-{_UNSAFE.sub('', code)[:2]}{digest}"
    room = MAX_LEN - len(head) - len(tail) - 2
    sym = _UNSAFE.sub("", symbol)[:max(room, 0)]
    coid = f"{head}-{sym}-{tail}" if sym else f"{head}-{tail}"
    return coid[:MAX_LEN]
