"""The trading state (kill switch): ACTIVE, REDUCING or HALTED, in ``<home>/state/trading.json``.

    ACTIVE    every intent that passes the risk limits is sent
    REDUCING  only reduce-only intents that do not flip the position pass
    HALTED    nothing passes; the broker cancels open orders and places nothing new

``ofi halt`` / ``ofi resume`` write it (``ofi halt --flatten`` / ``ofi flatten``: HALTED with
``flatten``, the broker then also closes every position); the strategy and the broker read it (the broker may also
set HALTED itself, e.g. on a reconciliation mismatch). Writes are atomic (temporary file, fsync,
rename), so a reader never sees a half-written file. A missing file means ACTIVE.

File format::

    {"state": "HALTED", "reason": "manual", "since": 1718000000.123, "by": "cli", "flatten": false}
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import orjson

ACTIVE = "ACTIVE"
REDUCING = "REDUCING"
HALTED = "HALTED"
STATES = (ACTIVE, REDUCING, HALTED)

FILE = "trading.json"


class StateError(Exception):
    """The trading state file is unreadable or holds an unknown state (one-line message)."""


@dataclass(frozen=True)
class TradingState:
    """The current trading state, why it was set, when (epoch seconds) and by whom."""

    state: str = ACTIVE
    reason: str = ""
    since: float = 0.0
    by: str = ""
    flatten: bool = False     # HALTED and every position closed (reduce-only MARKET orders)

    @property
    def halted(self) -> bool:
        return self.state == HALTED

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One human line, e.g. ``trading HALTED (reason: manual, by cli, since 2024-...)``."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)) if self.since else "-"
        return (f"trading {self.state} (reason: {self.reason or '-'}, by {self.by or '-'}, "
                f"since {when})")


def state_path(home: str | os.PathLike) -> str:
    """``<home>/state/trading.json``."""
    return os.path.join(os.path.abspath(os.fspath(home)), "state", FILE)


def load_state(home: str | os.PathLike) -> TradingState:
    """The saved trading state; ACTIVE when none was ever saved.

    Raises :class:`StateError` if the file exists but cannot be read or parsed: a corrupt
    kill switch must not silently read as ACTIVE.
    """
    path = state_path(home)
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except FileNotFoundError:
        return TradingState()
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StateError(f"{path}: unreadable trading state: {exc}") from None
    state = data.get("state") if isinstance(data, dict) else None
    if state not in STATES:
        raise StateError(f"{path}: unknown trading state {state!r}")
    return TradingState(state=state, reason=str(data.get("reason") or ""),
                        since=float(data.get("since") or 0.0), by=str(data.get("by") or ""),
                        flatten=state == HALTED and data.get("flatten") is True)


def save_state(home: str | os.PathLike, state: str, reason: str = "", by: str = "",
               flatten: bool = False) -> TradingState:
    """Set the trading state atomically and return it (``flatten`` only with HALTED)."""
    if state not in STATES:
        raise StateError(f"unknown trading state {state!r}; one of {', '.join(STATES)}")
    ts = TradingState(state=state, reason=reason, since=round(time.time(), 3), by=by,
                      flatten=flatten and state == HALTED)
    path = state_path(home)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(ts.to_dict()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))
    return ts


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def status(home: str | os.PathLike) -> dict:
    """Trading state and the strategy's risk usage, for ``ofi status``.

    ``{"state", "reason", "since", "by", "risk": {...} | None, "heartbeat_age_s": float | None}``
    and, with ``risk``, ``"summary"``: one line of risk usage. ``risk`` comes from the strategy's
    heartbeat (``<home>/run/strategy.json``) when it exists: orders in the last minute and the
    cap, the day's PnL and the loss limit, per-symbol position and notional, denials by code.
    An unreadable state file is reported as ``state: "UNKNOWN"`` with the error as reason.
    """
    try:
        out = load_state(home).to_dict()
    except StateError as exc:
        out = {"state": "UNKNOWN", "reason": str(exc), "since": 0.0, "by": ""}
    out["risk"] = None
    out["heartbeat_age_s"] = None
    beat_path = os.path.join(os.path.abspath(os.fspath(home)), "run", "strategy.json")
    try:
        with open(beat_path, "rb") as f:
            beat = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return out
    if isinstance(beat, dict):
        out["risk"] = beat.get("risk")
        if isinstance(beat.get("ts"), (int, float)):
            out["heartbeat_age_s"] = round(max(0.0, time.time() - beat["ts"]), 3)
    if isinstance(out["risk"], dict):
        out["summary"] = risk_summary(out["risk"])
    return out


def risk_summary(risk: dict) -> str:
    """One line of risk usage, e.g. ``orders 3/30 per min, day PnL -1.20 (limit -200), ...``."""
    def num(key, default=0.0):
        v = risk.get(key)
        return v if isinstance(v, (int, float)) else default

    parts = [f"orders {int(num('orders_last_minute'))}/{int(num('max_orders_per_minute'))} per min",
             f"day PnL {num('daily_pnl_usdt'):.2f} USDT (limit -{num('daily_loss_limit_usdt'):g})"]
    for sym, u in sorted((risk.get("symbols") or {}).items()):
        if isinstance(u, dict) and u.get("position_qty"):
            parts.append(f"{sym} {u.get('position_qty')} = {u.get('position_usdt')}"
                         f"/{num('max_position_usdt'):g} USDT")
    parts.append(f"denied {int(num('denied'))}")
    return ", ".join(parts)
