"""The local exchange's state store: commits never checkpoint the WAL themselves (a checkpoint
syncs the disk for milliseconds, in the event loop between an order's matching and its answer);
a thread of its own does, every CHECKPOINT_COMMITS commits, and nothing is lost by a reopen."""
import os
import sqlite3

from conftest import wait_for
from daemons.tools.exchange import state


def _fill(store, first: int, n: int) -> None:
    for i in range(first, first + n):
        store.put_order("k", i, {"orderId": i, "pad": "x" * 800})
        store.put("account:k", {"balance": i})
        store.commit()


def test_commits_leave_the_checkpoint_to_the_store_thread(tmp_path):
    store = state.StateStore(str(tmp_path))
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        db_size = os.path.getsize(store.path)
        _fill(store, 1, state.CHECKPOINT_COMMITS - 1)
        assert store._checkpointer.runs == 0
        assert os.path.getsize(store.path) == db_size          # everything still in the WAL
        _fill(store, state.CHECKPOINT_COMMITS, 1)
        wait_for(lambda: store._checkpointer.runs == 1, 10, "the background checkpoint")
        assert os.path.getsize(store.path) > db_size           # pages moved into the database
    finally:
        store.close()
    assert not os.path.exists(store.path + "-wal") or os.path.getsize(store.path + "-wal") == 0
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == state.CHECKPOINT_COMMITS
    again = state.StateStore(str(tmp_path))
    try:
        loaded = again.load()
        assert len(loaded["orders"]) == state.CHECKPOINT_COMMITS
        assert loaded["kv"]["account:k"] == {"balance": state.CHECKPOINT_COMMITS}
    finally:
        again.close()
