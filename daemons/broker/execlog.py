"""The execution log ``<home>/log/exec_log.jsonl``: one JSON line per gateway action.

Fields: ts (epoch s), mode, action, symbol, client_order_id, order_id, outcome (ok | rejected |
ambiguous | not_sent | not_found | error), status (the order's venue status), http (HTTP status),
code (venue error code), ms (round-trip time), transport (rest | ws: the way the call went). Never keys, signatures, listen keys or URLs with
query strings: only the fields above are written.
"""
from __future__ import annotations

import os
import threading
import time

import orjson

FIELDS = ("mode", "action", "symbol", "client_order_id", "order_id", "outcome", "status", "http",
          "code", "ms", "error", "transport")


class ExecLog:
    """Appends one line per call; safe to share between threads."""

    def __init__(self, home: str, mode: str):
        self.dir = os.path.join(home, "log")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "exec_log.jsonl")
        self.mode = mode
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, action: str, **fields) -> None:
        line = {"ts": round(time.time(), 4), "mode": self.mode, "action": action}
        for k in FIELDS:
            v = fields.get(k)
            if v is not None and k not in line:
                line[k] = v
        data = orjson.dumps(line, default=str) + b"\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self.lines += 1
