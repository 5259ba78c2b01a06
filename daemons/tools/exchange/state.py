"""Persistence of the venue's state (``--state DIR``): accounts, orders, algo orders, trades,
income records, id counters.

One SQLite database (WAL) written through on every change, so that a restart - clean or not -
finds the orders, positions and balances as they were. Without a directory nothing is kept.

The WAL is checkpointed from a thread of its own (:class:`bus.sqlite.Checkpointer`), as the
bus's SQLite sink does, not by SQLite's automatic checkpoint inside a commit: that one syncs
the disk (4-6 ms here, every ~300 commits) in the exchange's event loop, between an order's
matching and its answer, and every order and message in flight waits for it.
"""
from __future__ import annotations

import os
import sqlite3

import orjson

from bus.sqlite import WAL_KEEP, Checkpointer

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, account TEXT NOT NULL, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trades (id INTEGER PRIMARY KEY, account TEXT NOT NULL, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS algo_orders (id INTEGER PRIMARY KEY, account TEXT NOT NULL, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS income (id INTEGER PRIMARY KEY, account TEXT NOT NULL, v TEXT NOT NULL);
"""


#: commits between two background checkpoints (a venue operation writes a few pages)
CHECKPOINT_COMMITS = 64


class StateStore:
    """Write-through store; every method is a no-op without a directory."""

    def __init__(self, directory: str | None):
        self.db = None
        self.path = None
        self._dirty = False
        self._commits = 0
        self._checkpointer: Checkpointer | None = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            self.path = os.path.join(directory, "exchange.sqlite")
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")
            self.db.executescript(SCHEMA)
            self._checkpointer = Checkpointer(self.path)
            self.db.execute("BEGIN")

    def load(self) -> dict:
        """{"kv": {key: value}, "orders" | "trades" | "algo_orders" | "income": [(account, row)]}."""
        if self.db is None:
            return {"kv": {}, "orders": [], "trades": [], "algo_orders": [], "income": []}
        kv = {k: orjson.loads(v) for k, v in self.db.execute("SELECT k, v FROM kv")}
        out = {"kv": kv}
        for table in ("orders", "trades", "algo_orders", "income"):
            out[table] = [(a, orjson.loads(v)) for a, v in
                          self.db.execute(f"SELECT account, v FROM {table} ORDER BY id")]
        return out

    def put_row(self, table: str, account: str, row_id: int, value: dict) -> None:
        """One row of ``algo_orders`` or ``income``."""
        if self.db is not None:
            self.db.execute(f"INSERT OR REPLACE INTO {table} (id, account, v) VALUES (?, ?, ?)",
                            (row_id, account, orjson.dumps(value).decode()))
            self._dirty = True

    def put(self, key: str, value) -> None:
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)",
                            (key, orjson.dumps(value).decode()))
            self._dirty = True

    def put_order(self, account: str, order_id: int, value: dict) -> None:
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO orders (id, account, v) VALUES (?, ?, ?)",
                            (order_id, account, orjson.dumps(value).decode()))
            self._dirty = True

    def put_trade(self, account: str, trade_id: int, value: dict) -> None:
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO trades (id, account, v) VALUES (?, ?, ?)",
                            (trade_id, account, orjson.dumps(value).decode()))
            self._dirty = True

    def commit(self) -> None:
        """Make everything put so far durable (one transaction per venue operation)."""
        if self.db is not None and self._dirty:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")
            self._dirty = False
            self._commits += 1
            if self._commits >= CHECKPOINT_COMMITS:
                self._commits = 0
                self._checkpointer.request()

    def close(self) -> None:
        if self.db is not None:
            self.commit()
            self.db.execute("COMMIT")
            self._checkpointer.close()
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()
            self.db = None
