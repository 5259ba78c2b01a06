"""Request signing (HMAC-SHA256 over the exact bytes sent) and the server-time offset.

Binance signs ``totalParams`` = query string concatenated with the body; ``signature`` is the
last parameter. We send every parameter in the query string (as the official connector does), so
the signed payload is exactly the query string before ``&signature=``.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from decimal import Decimal
from urllib.parse import urlencode


def sign(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` keyed with ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def fmt_decimal(value) -> str:
    """A number as a plain decimal string (never ``1e-05``)."""
    if isinstance(value, str):
        return value
    d = Decimal(str(value))
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def encode_params(params: dict | list) -> str:
    """URL-encode parameters in the given order; booleans as true/false, numbers as decimals."""
    items = params.items() if isinstance(params, dict) else params
    out = []
    for k, v in items:
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, float):
            v = fmt_decimal(v)
        out.append((k, v))
    return urlencode(out)


def signed_query(params: dict | list, secret: str, timestamp_ms: int,
                 recv_window_ms: int | None = None) -> str:
    """``params`` + recvWindow + timestamp + signature, as a query string."""
    items = list(params.items() if isinstance(params, dict) else params)
    if recv_window_ms:
        items.append(("recvWindow", int(recv_window_ms)))
    items.append(("timestamp", int(timestamp_ms)))
    query = encode_params(items)
    return f"{query}&signature={sign(secret, query)}"


class ServerClock:
    """Local time corrected by the venue's offset (resynced on start and on -1021)."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.offset_ms = 0
        self.synced_at = 0.0

    def now_ms(self) -> int:
        return int(self.clock() * 1000) + self.offset_ms

    def update(self, server_time_ms: int, sent_at: float, received_at: float) -> int:
        """Set the offset from one ``/fapi/v1/time`` round trip; returns it (ms)."""
        midpoint_ms = (sent_at + received_at) * 500.0
        self.offset_ms = int(round(server_time_ms - midpoint_ms))
        self.synced_at = received_at
        return self.offset_ms
