"""HMAC-SHA256 request signing exactly as Binance verifies it.

The signed payload is the raw query string concatenated with the raw body (no separator), with
the trailing ``signature=...`` parameter taken out of whichever of the two carries it. Nothing is
decoded, sorted or re-encoded: the signature covers the bytes the client sent.
"""
from __future__ import annotations

import hashlib
import hmac

from . import errors

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000


def sign(secret: str, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` under ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def split_signature(part: str) -> tuple[str, str | None]:
    """``part`` without its last ``signature=`` parameter, and that signature (None if absent)."""
    if part.startswith("signature="):
        rest, _, sig = "", None, part[len("signature="):]
        return rest, sig
    idx = part.rfind("&signature=")
    if idx < 0:
        return part, None
    return part[:idx], part[idx + len("&signature="):]


def signed_payload(query: str, body: str) -> tuple[str, str | None]:
    """(payload to verify, signature) from the raw query string and raw body."""
    q, sig = split_signature(query)
    if sig is not None:
        return q + body, sig
    b, sig = split_signature(body)
    return query + b, sig


def verify(secret: str, query: str, body: str) -> None:
    """Raise -1102 when no signature is sent, -1022 when it does not match."""
    payload, sig = signed_payload(query, body)
    if not sig:
        raise errors.mandatory("signature")
    expected = sign(secret, payload)
    # signatures are not case sensitive (hex); compare in constant time
    if not hmac.compare_digest(expected, sig.strip().lower()):
        raise errors.bad_signature()


def check_timestamp(timestamp: str | None, recv_window: str | None, server_ms: int) -> None:
    """Binance's rule: ``timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow``."""
    if timestamp is None or timestamp == "":
        raise errors.mandatory("timestamp")
    try:
        ts = int(timestamp)
    except ValueError:
        raise errors.illegal_chars("timestamp", "^[0-9]{1,20}$") from None
    window = DEFAULT_RECV_WINDOW
    if recv_window not in (None, ""):
        try:
            window = int(recv_window)
        except ValueError:
            raise errors.illegal_chars("recvWindow", "^[0-9]{1,20}$") from None
        if window <= 0 or window > MAX_RECV_WINDOW:
            raise errors.ApiError(-1131, "recvWindow must be less than 60000")
    if ts >= server_ms + 1000:
        raise errors.invalid_timestamp(ahead=True)
    if server_ms - ts > window:
        raise errors.invalid_timestamp(ahead=False)
