"""Structured logs: one JSON object a line on stdout (supervisord captures and rotates it).

Secrets never reach a log: :func:`redact` masks the values of keys that look like credentials,
and callers pass values, not whole configs.
"""
from __future__ import annotations

import sys
import time

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_SECRET_KEYS = ("secret", "api_key", "apikey", "signature", "password", "token", "listenkey")


def redact(fields: dict) -> dict:
    """Copy of ``fields`` with credential-looking values masked."""
    out = {}
    for k, v in fields.items():
        if any(s in k.lower() for s in _SECRET_KEYS) and v:
            out[k] = "****"
        else:
            out[k] = v
    return out


class Logger:
    """Writes ``{"ts", "level", "stage", "event", ...}`` lines to a stream."""

    def __init__(self, stage: str, level: str = "info", stream=None):
        self.stage = stage
        self.threshold = LEVELS.get(level, 20)
        self.stream = stream or sys.stdout

    def log(self, level: str, event: str, **fields) -> None:
        if LEVELS[level] < self.threshold:
            return
        line = {"ts": round(time.time(), 3), "level": level, "stage": self.stage, "event": event}
        line.update(redact(fields))
        try:
            self.stream.write(orjson.dumps(line, default=str).decode() + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    def debug(self, event: str, **fields) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self.log("error", event, **fields)
