"""The bus side of the gateway: reading the topics it shows, and short-lived writers.

``proposals`` (the MCP servers), ``decisions`` (``ofi approve`` / ``ofi reject``) and ``audit``
(the MCP servers) each keep one writer per topic: a writer is opened for one append and closed
at once, so several MCP server processes and CLI calls take turns on the topic's lock (a busy
lock is retried for a moment). What must be checked against a topic (a client order id already
proposed, a proposal still pending) is read *while the lock is held*, so two callers cannot both
pass the check.
"""
from __future__ import annotations

import os
import time
from collections import deque
from contextlib import contextmanager

from bus import BadRecord, WriterLockedError, open_bus

from ...strategy.core import parse_position
from ... import proposals as P

LOCK_WAIT_S = 3.0          # how long a busy topic lock is retried
TERMINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED", "ABANDONED")


class Tail:
    """The records of one topic, read incrementally (a topic that does not exist yet is read
    once it does). ``start_back``: begin that many records before the end (big topics)."""

    def __init__(self, bus, topic: str, start_back: int | None = None):
        self.bus = bus
        self.topic = topic
        self.start_back = start_back
        self.reader = None

    def new(self) -> list[dict]:
        if self.reader is None:
            if not os.path.isdir(os.path.join(self.bus.root, self.topic)):
                return []
            position = None
            if self.start_back is not None:
                last = self.bus.last_seq(self.topic)
                position = {"seq": max(0, last - self.start_back)} if last > self.start_back \
                    else None
            self.reader = self.bus.reader(self.topic, position)
        out = []
        while True:
            items = self.reader.read(5000)
            if not items:
                return out
            out.extend(rec for rec, *_ in items if not isinstance(rec, BadRecord))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class View:
    """What the read tools show, folded from the spools as they grow.

    orders (last record per client order id), positions (last record per symbol), fills,
    recent signals per symbol, and the proposals ledger. ``refresh()`` reads what is new.
    """

    def __init__(self, bus, signals_kept: int = 1000):
        self.bus = bus
        self.tails = {t: Tail(bus, t) for t in ("orders", "positions", "fills", "proposals",
                                                "decisions", "intents")}
        self.tails["signals"] = Tail(bus, "signals", start_back=20 * signals_kept)
        self.orders: dict[str, dict] = {}
        self.positions: dict[str, dict] = {}
        self.fills: list[dict] = []
        self.signals: dict[str, deque] = {}
        self.signals_kept = signals_kept
        self.ledger = P.Ledger()

    def refresh(self, *topics: str) -> "View":
        for topic in topics or tuple(self.tails):
            for rec in self.tails[topic].new():
                self._add(topic, rec)
        return self

    def _add(self, topic: str, rec: dict) -> None:
        if topic == "orders":
            if isinstance(rec.get("client_order_id"), str):
                self.orders[rec["client_order_id"]] = rec
        elif topic == "positions":
            if rec.get("type") == "position" and isinstance(rec.get("symbol"), str):
                self.positions[rec["symbol"]] = rec
        elif topic == "fills":
            if rec.get("type") == "fill":
                self.fills.append(rec)
        elif topic == "signals":
            if rec.get("type") == "signal" and isinstance(rec.get("symbol"), str):
                self.signals.setdefault(rec["symbol"], deque(maxlen=self.signals_kept)).append(rec)
        elif topic == "proposals":
            self.ledger.add_proposal(rec)
        elif topic == "decisions":
            self.ledger.add_decision(rec)
        elif topic == "intents":
            self.ledger.add_intent(rec)

    def open_orders(self) -> dict[str, dict]:
        """Orders the broker has not finished: client order id -> last ``orders`` record."""
        return {c: o for c, o in self.orders.items() if o.get("status") not in TERMINAL}

    def position_qty(self, symbol: str) -> float:
        rec = self.positions.get(symbol)
        if rec is None:
            return 0.0
        try:
            _sym, pos, _mark = parse_position(rec)
        except BadRecord:
            return P.risk_view(rec)
        return pos.qty + pos.flight_qty

    def last_mid(self, symbol: str) -> float | None:
        for rec in reversed(self.signals.get(symbol) or ()):
            if isinstance(rec.get("mid"), (int, float)):
                return float(rec["mid"])
        return None

    def close(self) -> None:
        for t in self.tails.values():
            t.close()


@contextmanager
def writer(bus, topic: str, wait_s: float = LOCK_WAIT_S):
    """The writer of ``topic`` for one short use; a busy lock is retried up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            w = bus.writer(topic)
            break
        except WriterLockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
    try:
        yield w
    finally:
        w.close()


def open_home_bus(cfg: dict):
    from ... import config as configmod

    return open_bus(configmod.home_of(cfg), sink=cfg["sink"], **cfg["bus"])


def ledger_of(bus) -> P.Ledger:
    """The proposals ledger of a home, read whole (the CLI's one-shot view)."""
    return P.fold(bus.read_all("proposals"), bus.read_all("decisions"),
                  (r for r in bus.read_all("intents") if r.get("proposal_id")))
