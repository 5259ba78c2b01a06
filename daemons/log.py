"""Structured logs: one JSON object a line on stdout (supervisord captures and rotates it).

Through the standard :mod:`logging` module: :class:`Logger` is the project's face of a logger
whose handler writes :class:`JsonFormatter` lines, and :func:`install` puts the same formatter
on the root logger, so what libraries log (websockets, urllib3, aiohttp; ``warnings``) becomes
a structured line too, at WARNING and above: ``{"ts", "level", "stage", "event": <message>,
"logger": <library logger>}``.

Secrets never reach a log: :func:`redact` masks the values of keys that look like credentials,
and callers pass values, not whole configs.
"""
from __future__ import annotations

import logging
import sys

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_NAMES = {v: k for k, v in LEVELS.items()} | {logging.CRITICAL: "error"}
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


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "stage", "event", ...fields}``; a record of another logger (a library)
    has its message as ``event`` and its logger's name as ``logger``."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        ours = hasattr(record, "ofi_fields")
        line = {"ts": round(record.created, 3),
                "level": _NAMES.get(record.levelno, record.levelname.lower()),
                "stage": self.stage, "event": record.msg if ours else record.getMessage()}
        if ours:
            line.update(record.ofi_fields)
        else:
            line["logger"] = record.name
            if record.exc_info:
                line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _StreamHandler(logging.StreamHandler):
    """Flushes every line (supervisord tails the file); a closed pipe is not an error.

    While ``held`` is a list, lines below WARNING are formatted (their ``ts`` is the event's)
    and kept there until :meth:`write_held`; a warning or an error writes them first."""

    held: list[str] | None = None

    def emit(self, record) -> None:
        held = self.held
        if held is not None and record.levelno < logging.WARNING:
            try:
                held.append(self.format(record))
            except Exception:
                self.handleError(record)
            return
        if held:
            self._write_held()
        super().emit(record)

    def write_held(self) -> None:
        """Write the held lines, in one write."""
        if self.held:
            with self.lock:
                self._write_held()

    def _write_held(self) -> None:
        lines = self.held[:]
        del self.held[:]
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.flush()
        except Exception:
            pass

    def handleError(self, record) -> None:   # noqa: N802 (logging's name)
        pass


def install(stage: str, level: str = "info", stream=None) -> None:
    """Route every other logger (the root's) through :class:`JsonFormatter` at WARNING and
    above, and Python warnings with it. Once per process, in a program's entry point."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "ofi", False):
            root.removeHandler(h)
    handler = _StreamHandler(stream or sys.stdout)
    handler.ofi = True
    handler.setFormatter(JsonFormatter(stage))
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, LEVELS.get(level, 20)))
    logging.captureWarnings(True)


class Logger:
    """Writes ``{"ts", "level", "stage", "event", ...}`` lines to a stream, through a logger of
    its own (not in logging's registry: two of them never share a handler)."""

    def __init__(self, stage: str, level: str = "info", stream=None):
        self.stage = stage
        self.threshold = LEVELS.get(level, 20)
        self.stream = stream or sys.stdout
        self._logger = logging.Logger(f"ofi.{stage}", self.threshold)
        self._handler = handler = _StreamHandler(self.stream)
        handler.setFormatter(JsonFormatter(stage))
        self._logger.addHandler(handler)

    def hold(self, on: bool = True) -> None:
        """Keep info and debug lines in memory until :meth:`write_held` (a warning or an error
        writes them first, then itself). The runtime holds a daemon's lines while its input
        is busy: each line written wakes supervisord and its event listener, which would
        otherwise take the CPUs the next stage needs just then. ``hold(False)`` writes what is
        held and stops holding."""
        h = self._handler
        if on:
            if h.held is None:
                h.held = []
        else:
            h.write_held()
            h.held = None

    def write_held(self) -> None:
        """Write the lines held so far (nothing when none are)."""
        self._handler.write_held()

    def has_held(self) -> bool:
        """Whether lines wait to be written."""
        return bool(self._handler.held)

    def log(self, level: str, event: str, **fields) -> None:
        no = LEVELS[level]
        if no < self.threshold:
            return
        self._logger.log(no, event, extra={"ofi_fields": redact(fields)})

    def debug(self, event: str, **fields) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self.log("error", event, **fields)
