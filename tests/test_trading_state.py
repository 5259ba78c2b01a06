"""The trading state file (kill switch) and the status the strategy exposes."""
from __future__ import annotations

import os
import time

import orjson
import pytest

from daemons import trading as state


def test_state_missing_file_reads_active(home):
    st = state.load_state(home)
    assert (st.state, st.reason, st.since) == (state.ACTIVE, "", 0.0)


def test_state_save_then_load_round_trips(home):
    saved = state.save_state(home, state.HALTED, "reconcile mismatch", by="broker")
    loaded = state.load_state(home)
    assert loaded == saved and loaded.halted
    assert abs(loaded.since - time.time()) < 5
    assert "HALTED" in loaded.line() and "reconcile mismatch" in loaded.line()
    # atomic: no temporary file is left beside it
    assert os.listdir(home / "state") == ["trading.json"]


def test_state_corrupt_file_raises_not_active(home):
    (home / "state").mkdir()
    (home / "state" / "trading.json").write_text("{not json")
    with pytest.raises(state.StateError):
        state.load_state(home)
    assert state.status(home)["state"] == "UNKNOWN"


def test_state_unknown_value_refused(home):
    with pytest.raises(state.StateError):
        state.save_state(home, "PAUSED", "x")


def test_state_status_includes_risk_usage_from_heartbeat(home):
    state.save_state(home, state.REDUCING, "daily loss limit", by="strategy")
    (home / "run").mkdir()
    risk = {"orders_last_minute": 3, "max_orders_per_minute": 30, "daily_pnl_usdt": -1.5,
            "daily_loss_limit_usdt": 200.0, "max_position_usdt": 1000.0, "denied": 2,
            "symbols": {"BTCUSDT": {"position_qty": 0.002, "position_usdt": 100.0}}}
    (home / "run" / "strategy.json").write_bytes(orjson.dumps({"ts": time.time(), "risk": risk}))
    st = state.status(home)
    assert st["state"] == state.REDUCING and st["by"] == "strategy"
    assert st["risk"] == risk and st["heartbeat_age_s"] < 5
    assert st["summary"] == ("orders 3/30 per min, day PnL -1.50 USDT (limit -200), "
                             "BTCUSDT 0.002 = 100.0/1000 USDT, denied 2")
