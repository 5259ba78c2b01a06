"""What can go wrong talking to the venue, typed by what the broker must do next.

==============  ===================================================  ============================
error           meaning                                              the broker then
==============  ===================================================  ============================
Rejected        the venue refused it; no order exists                marks it REJECTED
NotSent         provably not processed (connect refused, 429, 418,   sends it again later
                -1021, 503 "Service Unavailable", -1008 throttled)
Ambiguous       sent, outcome unknown (read timeout, disconnect,     marks it UNKNOWN, queries the
                503 "Unknown error", -1006, -1007, other 5xx)        client order id
NotFound        -2013 (query) / -2011 (cancel): no such open order   query says "never placed"
AuthError       bad key or signature (-2014, -2015, -1022)           stops with one clear line
==============  ===================================================  ============================

Sources: Binance USD-M general-info (HTTP 503 and 5xx semantics) and error-code pages.
"""
from __future__ import annotations


class GatewayError(Exception):
    """Base of the venue errors; ``code`` is Binance's (negative) code when there is one."""

    def __init__(self, msg: str, code: int | None = None, http_status: int | None = None):
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        bits = [self.msg]
        if self.code is not None:
            bits.append(f"code {self.code}")
        if self.http_status is not None:
            bits.append(f"HTTP {self.http_status}")
        return " | ".join(bits)


class Rejected(GatewayError):
    """The venue refused the request for good (a business error)."""


class FilterRejected(Rejected):
    """Refused locally by an exchangeInfo filter before anything was sent."""


class AuthError(Rejected):
    """Bad API key, permissions or signature: a configuration problem."""


class Ambiguous(GatewayError):
    """Sent, but whether the venue processed it is unknown."""


class NotSent(GatewayError):
    """Provably not processed; may be sent again after ``retry_at`` (epoch seconds)."""

    def __init__(self, msg: str, code: int | None = None, http_status: int | None = None,
                 retry_at: float = 0.0):
        super().__init__(msg, code, http_status)
        self.retry_at = retry_at


class RateLimited(NotSent):
    """HTTP 429, or our own limiter holding the request back (then ``local`` is True)."""

    local = False


class Banned(NotSent):
    """HTTP 418: the IP is banned until ``retry_at``."""


class NotFound(GatewayError):
    """No such order (-2013), or no such open order to cancel (-2011)."""


class InvalidListenKey(GatewayError):
    """-1125: the listenKey expired; create a new one."""


AMBIGUOUS_CODES = {-1000, -1006, -1007}
NOT_SENT_CODES = {-1001, -1003, -1008, -1015, -1021, -5028}
NOT_FOUND_CODES = {-2011, -2013}
AUTH_CODES = {-1022, -2014, -2015}
# 503 bodies that the venue documents as a certain failure (safe to send again)
FAILED_503 = ("service unavailable", "internal error; unable to process your request")


def classify(http_status: int, body: dict | None, text: str = "",
             retry_after: float | None = None, now: float = 0.0) -> GatewayError:
    """The typed error for a non-2xx answer (or a 2xx carrying an error code)."""
    code = body.get("code") if isinstance(body, dict) else None
    msg = (body.get("msg") if isinstance(body, dict) else None) or text[:200] or f"HTTP {http_status}"
    if http_status == 418:
        return Banned(msg, code, http_status, retry_at=now + (retry_after if retry_after else 120.0))
    if http_status == 429:
        return RateLimited(msg, code, http_status, retry_at=now + (retry_after if retry_after else 1.0))
    if code in NOT_FOUND_CODES:
        return NotFound(msg, code, http_status)
    if code == -1125:
        return InvalidListenKey(msg, code, http_status)
    if code in AUTH_CODES or http_status in (401,):
        return AuthError(msg, code, http_status)
    if code in AMBIGUOUS_CODES:
        return Ambiguous(msg, code, http_status)
    if code in NOT_SENT_CODES:
        return NotSent(msg, code, http_status, retry_at=now + (retry_after or 0.5))
    if http_status == 408:
        return Ambiguous(msg, code, http_status)
    if http_status >= 500:
        if http_status == 503 and any(t in msg.lower() for t in FAILED_503):
            return NotSent(msg, code, http_status, retry_at=now + (retry_after or 0.5))
        return Ambiguous(msg, code, http_status)
    if http_status == 403:  # WAF: the request did not reach the engine
        return NotSent(msg, code, http_status, retry_at=now + (retry_after or 5.0))
    return Rejected(msg, code, http_status)
