"""The typed configuration: one frozen dataclass per section of ``etc/defaults.yaml``.

:func:`daemons.config.load` merges the YAML defaults, ``--config FILE``, the environment and the
flags into a plain mapping and checks keys and types; :func:`of` turns it into a
:class:`Settings` once, and that is what the stages read (``ctx.settings.signal.save_every_s``).
The fields carry no defaults: every default lives in ``etc/defaults.yaml`` alone, and
``tests/test_settings.py`` fails when a YAML key and a field disagree. Allowed values are the
``Literal`` annotations and numeric bounds the ``bounds`` metadata; ``config.load`` checks both.

This module imports nothing of the project, so any module may import it.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional


def _bounds(lo, hi=None):
    """An inclusive range, ``hi`` None for none."""
    return field(metadata={"bounds": (lo, hi)})


def _above(lo):
    """Strictly greater than ``lo``."""
    return field(metadata={"above": lo})


#: a client order id prefix: what Binance allows in ``newClientOrderId``, at most 8 characters
#: so the ids built on it stay within its 36
ID_PREFIX = r"[.A-Z:/a-z0-9_]{1,8}"


def _matches(pattern: str):
    return field(metadata={"pattern": pattern})


@dataclass(frozen=True)
class Bus:
    segment_bytes: int
    segment_seconds: float
    retention_bytes: int
    retention_hours: float
    fsync: Literal["none", "record", "batch", "interval"]
    fsync_every: int
    fsync_interval_ms: int
    poll_interval_s: float


@dataclass(frozen=True)
class Log:
    level: Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Daemon:
    heartbeat_s: float
    batch: int = _bounds(1)


@dataclass(frozen=True)
class Venue:
    rest_url: Optional[str]
    ws_url: Optional[str]
    api_key: Optional[str]
    api_secret: Optional[str]
    recv_window_ms: int

    def __repr__(self) -> str:   # never print the key pair
        return f"Venue(rest_url={self.rest_url!r}, ws_url={self.ws_url!r}, api_key=****)"


@dataclass(frozen=True)
class Exchange:
    host: str
    port: int
    feed: Literal["sim", "replay"]
    inputs: list
    seed: int
    faults: str
    api_key: str
    api_secret: str
    state_dir: Optional[str]
    balance_usdt: float
    replay_speed: float
    replay_wait: bool
    funding_interval_s: float
    funding_rate: float


@dataclass(frozen=True)
class Harvest:
    source: Literal["live", "replay"]
    inputs: list
    speed: float
    depth_levels: int = _bounds(1)
    streams: list
    route: Literal["routed", "market", "public", "legacy"]
    reconnect_min_s: float
    reconnect_max_s: float
    reconnect_before_s: float
    stall_timeout_s: float
    open_timeout_s: float
    snapshot_limit: int
    rest_timeout_s: float
    snapshot_min_interval_s: float


@dataclass(frozen=True)
class Signal:
    interval_ms: int = _bounds(1)
    z_window: int = _bounds(1)
    min_periods: int = _bounds(1)
    w_ofi: float
    w_cvd: float
    levels: int = _bounds(1)
    merge_grace_ms: float
    allowed_lateness_ms: float = _bounds(0)
    stall_ms: int
    save_every_s: float


@dataclass(frozen=True)
class Strategy:
    entry_threshold: float = _above(0)
    exit_threshold: float              # strictly inside (-entry_threshold, entry_threshold)
    notional_usdt: float = _above(0)
    max_hold_s: float = _bounds(0)     # 0 turns it off (also the stop loss and cooldown)
    stop_loss_bps: float = _bounds(0)
    cooldown_s: float = _bounds(0)
    order_type: Literal["MARKET", "LIMIT"]
    exit_order_type: Literal["MARKET", "LIMIT"]
    instruments: list
    id_prefix: str = _matches(ID_PREFIX)
    max_signal_age_ms: int = _bounds(0)   # 0 turns the check off
    denials_to_bus: bool
    signals_dir: Optional[str]
    signals_source: Literal["auto", "jsonl", "sqlite"]

    def __post_init__(self):
        if not abs(self.exit_threshold) < self.entry_threshold:
            raise SettingsError("config: key 'strategy.exit_threshold' must lie strictly inside "
                                "(-entry_threshold, entry_threshold)")


@dataclass(frozen=True)
class Risk:   # 0 turns a check off
    max_position_usdt: float = _bounds(0)
    max_order_usdt: float = _bounds(0)
    max_orders_per_minute: int = _bounds(0)
    daily_loss_limit_usdt: float = _bounds(0)
    max_drawdown_usdt: float = _bounds(0)
    protective_stop_bps: float = _bounds(0)


@dataclass(frozen=True)
class Broker:
    mode: Literal["mock", "sim", "testnet", "live"]
    confirm_live: bool
    max_parallel_orders: int
    poll_interval_s: float
    weight_margin: float
    http_timeout_s: float
    order_transport: Literal["ws", "rest"]
    resolution_window_s: float
    max_send_attempts: int
    intent_ttl_s: float
    position_check_s: float
    order_timeout_s: float
    leverage: int = _bounds(0, 125)   # 0: leave the account's
    margin_type: Literal["", "CROSSED", "ISOLATED"]
    deadman_ms: int
    user_stream: bool
    user_stream_route: Literal["private", "legacy"]
    keys_profile: str
    reconcile_interval_s: float
    halt_on_mismatch: bool
    settle_on_stop_s: float


@dataclass(frozen=True)
class Backtest:
    latency_ms: int = _bounds(0)
    taker_fee_bps: float = _bounds(0)
    maker_fee_bps: float = _bounds(0)


@dataclass(frozen=True)
class Report:
    interval_s: float


@dataclass(frozen=True)
class Alerts:
    webhook_url: str
    timeout_s: float = _bounds(0.1)
    repeat_s: float = _bounds(0)

    def __repr__(self) -> str:   # the URL is a secret
        return f"Alerts(webhook_url={'****' if self.webhook_url else ''!r}, ...)"


@dataclass(frozen=True)
class Mcp:
    allow_orders: bool
    calls_per_minute: int = _bounds(0)       # 0: off (also the TTL and the decision age)
    proposal_ttl_s: float = _bounds(0)
    decision_max_age_s: float = _bounds(0)
    client_id_prefix: str = _matches(ID_PREFIX)
    max_rows: int = _bounds(1)


@dataclass(frozen=True)
class Supervise:
    start_timeout_s: float
    heartbeat_timeout_s: float
    stall_s: float
    grace_s: float
    venue_cpu: bool


@dataclass(frozen=True)
class Settings:
    """The whole configuration, typed; built by :func:`of`."""

    home: str
    sink: Literal["jsonl", "sqlite"]
    symbols: list
    bus: Bus
    log: Log
    daemon: Daemon
    venue: Venue
    exchange: Exchange
    harvest: Harvest
    signal: Signal
    strategy: Strategy
    risk: Risk
    broker: Broker
    backtest: Backtest
    report: Report
    alerts: Alerts
    mcp: Mcp
    supervise: Supervise


class ConfigError(Exception):
    """A configuration problem; the message is one line naming the file and key. Here, in a
    module that imports nothing of the project, so the leaf modules raise it too."""


class SettingsError(ConfigError, ValueError):
    """A value outside its allowed values or bounds (one line naming the dotted key)."""


_HINTS: dict = {}


def _hints(cls) -> dict:
    """``typing.get_type_hints(cls)``, computed once per class (it evaluates the annotations'
    strings: the costly part of building the settings)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _walk(cls, prefix: str = ""):
    """``(dotted key, field, type)`` of every leaf field of ``cls``."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from _walk(t, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, t


def choices() -> dict:
    """The allowed values of every enumerated key: ``{dotted key: (value, ...)}``."""
    return {k: typing.get_args(t) for k, _, t in _walk(Settings)
            if typing.get_origin(t) is Literal}


def bounds() -> dict:
    """The inclusive bounds of bounded numeric keys: ``{dotted key: (lo, hi or None)}``."""
    return {k: f.metadata["bounds"] for k, f, _ in _walk(Settings) if "bounds" in f.metadata}


def _build(cls, data: dict, prefix: str = ""):
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        if f.name not in data:
            raise SettingsError(f"config: key '{dotted}' is missing")
        value, t = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(t):
            value = _build(t, value, f"{dotted}.")
        elif t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif (typing.get_origin(t) is Literal and value is not None
              and value not in typing.get_args(t)):
            allowed = ", ".join(str(a) for a in typing.get_args(t))
            raise SettingsError(f"config: key '{dotted}' must be one of {allowed}, "
                                f"not {value!r}")
        if "bounds" in f.metadata and value is not None:
            lo, hi = f.metadata["bounds"]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                span = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
                raise SettingsError(f"config: key '{dotted}' must be {span}, not {value!r}")
        if "above" in f.metadata and value is not None and not value > f.metadata["above"]:
            raise SettingsError(f"config: key '{dotted}' must be above {f.metadata['above']}, "
                                f"not {value!r}")
        if "pattern" in f.metadata and not (isinstance(value, str) and
                                            re.fullmatch(f.metadata["pattern"], value)):
            raise SettingsError(f"config: key '{dotted}' must match {f.metadata['pattern']}, "
                                f"not {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def of(cfg: dict) -> Settings:
    """The typed settings of a loaded configuration mapping (raises :class:`SettingsError`)."""
    return _build(Settings, cfg)
