"""Request parameters as Binance USD-M reads them, and HMAC-SHA256 signing as it verifies it.

Parameters come from the query string and, on POST/PUT/DELETE, from an
``application/x-www-form-urlencoded`` body (a body without a Content-Type is read the same way);
both may be mixed, and a parameter in both places takes the query string's value. A GET's body
is not read, nor a body of another media type (e.g. JSON): what a request carries only there
is missing (-1102). A parameter repeated within the query string or within the body is refused
with -1101.

The signed payload is the raw query string concatenated with the raw body that was read (no
separator: Binance's ``totalParams``), with the trailing ``signature=...`` parameter taken out of
whichever of the two carries it. Nothing is decoded, sorted or re-encoded: the signature covers
the bytes the client sent.
"""
from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from . import errors

FORM = "application/x-www-form-urlencoded"

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000


def body_is_read(method: str, content_type: str | None) -> bool:
    """Whether Binance reads a request's body as parameters: not on GET; on other methods when
    it is form-urlencoded or carries no Content-Type at all."""
    if method.upper() in ("GET", "HEAD"):
        return False
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("", FORM)


def _pairs(part: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in parse_qsl(part, keep_blank_values=True):
        if name in out:
            raise errors.duplicate_values()
        out[name] = value
    return out


def request_params(method: str, query: str, body: str,
                   content_type: str | None) -> tuple[dict[str, str], str]:
    """(parameters, the body that counts) from the raw query string and raw body.

    The body that counts is ``body`` when it is read (:func:`body_is_read`), else "": it is
    what the signature covers after the query string. Raises -1101 for a parameter repeated
    within one part."""
    read = body if body and body_is_read(method, content_type) else ""
    params = _pairs(read) if read else {}
    params.update(_pairs(query))               # the query string wins
    return params, read


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
