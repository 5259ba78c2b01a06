"""Listen keys of the user data stream: create (same key while active), keep alive, close, expire.

A key is valid ``expire_s`` after its creation or last keepalive (Binance: 60 min). An expired
key gets one ``listenKeyExpired`` event on its stream, then nothing until a new key is made.
"""
from __future__ import annotations

import secrets
import string

from . import errors

_ALPHABET = string.ascii_letters + string.digits


def new_key() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(64))


class ListenKeys:
    """listenKey <-> API key, with expiry times in ms."""

    def __init__(self, expire_s: float = 3600.0):
        self.expire_ms = int(expire_s * 1000)
        self.expiry: dict[str, int] = {}      # listenKey -> expiry ms
        self.owner_of: dict[str, str] = {}    # listenKey -> API key
        self.key_of: dict[str, str] = {}      # API key -> listenKey

    def create(self, api_key: str, now: int) -> str:
        """POST: the account's active key (extended), or a new one."""
        lk = self.key_of.get(api_key)
        if lk is None or self.expiry.get(lk, 0) <= now:
            if lk is not None:
                self._drop(lk)
            lk = new_key()
            self.key_of[api_key] = lk
            self.owner_of[lk] = api_key
        self.expiry[lk] = now + self.expire_ms
        return lk

    def keepalive(self, api_key: str, now: int) -> str:
        """PUT: extend the account's active key; -1125 when there is none."""
        lk = self.key_of.get(api_key)
        if lk is None or self.expiry.get(lk, 0) <= now:
            raise errors.invalid_listen_key()
        self.expiry[lk] = now + self.expire_ms
        return lk

    def close(self, api_key: str) -> None:
        """DELETE: close the account's key (no error when there is none)."""
        lk = self.key_of.get(api_key)
        if lk is not None:
            self._drop(lk)

    def active(self, api_key: str, now: int) -> str | None:
        lk = self.key_of.get(api_key)
        if lk is not None and self.expiry.get(lk, 0) > now:
            return lk
        return None

    def is_key(self, name: str) -> bool:
        return name in self.owner_of

    def expire(self, now: int) -> list[str]:
        """Remove and return the keys whose time is up."""
        gone = [lk for lk, t in self.expiry.items() if t <= now]
        for lk in gone:
            self._drop(lk)
        return gone

    def _drop(self, lk: str) -> None:
        api_key = self.owner_of.pop(lk, None)
        self.expiry.pop(lk, None)
        if api_key is not None and self.key_of.get(api_key) == lk:
            del self.key_of[api_key]


def expired_event(listen_key: str, now: int) -> dict:
    return {"e": "listenKeyExpired", "E": now, "listenKey": listen_key}
