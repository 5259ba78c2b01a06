"""The strategy's decision path as one pure class: signal in, ``intents`` payloads out.

    core = StrategyCore.from_config(cfg)
    step = core.on_signal(signal_record, trading_state, wall_ms)
    for payload in step.payloads:          # {type: intent} / {type: risk_denied}
        rec = write("intents", payload)    # the caller's bus writer
        core.written(rec)                  # its seq and ts, as the daemon knows them
    if step.state_change: ...              # (state, reason): the daily loss limit was hit

For each signal :func:`rules.decide` proposes an order and :func:`risk.check` approves it (an
``intent`` payload; the view assumes it fills at the decision mid) or denies it (a
``risk_denied`` payload, only the first of a run of identical denials; every one is counted).
The strategy daemon (``stage.py``) and the backtest (``daemons.backtest``) run this same class;
they differ only in the clock they pass (wall time, or simulated time) and where the payloads
go. No I/O and no clock here.
"""
from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple

import orjson

from bus import BadRecord

from . import ids, risk, rules
from .state import ACTIVE, REDUCING, TradingState

DAILY_LOSS_REASON = "daily loss limit"


class Step(NamedTuple):
    """What one signal led to: ``intents`` payloads, and maybe a trading state to set."""

    payloads: list
    state_change: tuple | None = None      # (state, reason)


class StrategyCore:
    """Views, order times and counters of the strategy, and the decision path over them."""

    def __init__(self, params: rules.Params, limits: risk.Limits, prefix: str, symbols,
                 grace_ms: int = 5000):
        self.params = params
        self.limits = limits
        self.prefix = prefix
        self.grace_ms = int(grace_ms)
        self.symbols = tuple(symbols)
        self.views: dict[str, rules.View] = {s: rules.View() for s in self.symbols}
        self.last_signal_seq = 0          # signals up to here are reflected in the views
        self.last_intent_seq = 0          # intents records up to here are reflected
        self.last_intent_ts: dict[str, int] = {}
        self.last_signal_ms: dict[str, int] = {}
        self.order_times: deque[int] = deque()   # clock ms of approved intents (rate limit)
        self.counts = {"signals": 0, "intents": 0, "denied": 0, "skipped_replayed": 0,
                       "ignored_symbol": 0, "position_corrections": 0, "positions_in_flight": 0}
        self.denials: dict[str, int] = {}
        self._last_denial: dict[str, tuple] = {}

    @classmethod
    def from_config(cls, cfg: dict) -> "StrategyCore":
        """From the ``strategy``, ``risk`` and ``symbols`` settings; raises ValueError."""
        sec = cfg["strategy"]
        return cls(rules.Params.from_config(sec), risk.Limits.from_config(cfg["risk"]),
                   sec["id_prefix"], cfg["symbols"],
                   int(float(sec["position_sync_grace_s"]) * 1000))

    # -- signals -----------------------------------------------------------------------------
    def on_signal(self, rec: dict, trading: TradingState, wall_ms: int) -> Step:
        """One ``signals`` record (with its ``seq``): decide, check risk, update the view.

        ``trading`` is the current trading state, ``wall_ms`` the clock of the rate limit.
        Raises :class:`bus.BadRecord` for a signal without a symbol or an integer bucket.
        """
        if rec.get("type") != "signal":
            return Step([])
        seq = int(rec["seq"])
        if seq <= self.last_signal_seq:
            self.counts["skipped_replayed"] += 1   # already acted on before a restart
            return Step([])
        symbol, bucket = rec.get("symbol"), rec.get("bucket_ms")
        if not isinstance(symbol, str) or isinstance(bucket, bool) or not isinstance(bucket, int) \
                or bucket < 0:
            raise BadRecord("signal without a symbol or an integer bucket_ms",
                            orjson.dumps(rec).decode())
        self.counts["signals"] += 1
        self.last_signal_seq = seq
        view = self.views.get(symbol)
        if view is None:
            self.counts["ignored_symbol"] += 1
            return Step([])
        decision = rules.decide(self.params, view, rec)
        view = rules.observe(view, rec)
        self.last_signal_ms[symbol] = rules.signal_time(rec)
        payloads = []
        if decision is not None:
            view, payload = self._submit(decision, view, rec, trading, wall_ms)
            if payload is not None:
                payloads.append(payload)
        self.views[symbol] = view
        return Step(payloads, self._daily_loss_change(view.day, trading))

    def written(self, rec: dict) -> None:
        """An ``intents`` record the caller wrote (from our payload): its seq and ts."""
        self.last_intent_seq = int(rec["seq"])
        if rec.get("type") == "intent":
            self.last_intent_ts[rec["symbol"]] = int(rec["ts"])

    def forget_denials(self) -> None:
        """The trading state changed: the next denial of each symbol is news again."""
        self._last_denial.clear()

    def _submit(self, d: rules.Decision, view: rules.View, rec: dict, trading: TradingState,
                wall: int) -> tuple[rules.View, dict | None]:
        while self.order_times and self.order_times[0] <= wall - risk.WINDOW_MS:
            self.order_times.popleft()
        ref_price = d.price or d.mid or view.last_mid or view.entry_mid or 0.0
        order = risk.Order(d.symbol, d.side, d.qty, ref_price, d.reduce_only)
        verdict = risk.check(self.limits, trading.state, view.qty, order, len(self.order_times),
                             self.daily_pnl())
        coid = ids.client_order_id(self.prefix, d.symbol, int(rec["bucket_ms"]), d.code, d.side)
        base = {
            "symbol": d.symbol, "side": d.side, "qty": d.qty, "order_type": d.order_type,
            "price": d.price, "reduce_only": d.reduce_only, "client_order_id": coid,
            "reason": d.reason, "trigger": d.trigger, "signal_seq": int(rec["seq"]),
            "bucket_ms": int(rec["bucket_ms"]), "decision_ms": d.now_ms, "decision_mid": d.mid,
            "fusion": d.fusion, "ofi_z": rec.get("ofi_z"), "cvd_z": rec.get("cvd_z"),
        }
        if verdict.approved:
            self.last_intent_ts[d.symbol] = wall     # refined by written()
            self.order_times.append(wall)
            self.counts["intents"] += 1
            self._last_denial.pop(d.symbol, None)
            return rules.apply(view, d), {"type": "intent", **base}
        self.counts["denied"] += 1
        self.denials[verdict.code] = self.denials.get(verdict.code, 0) + 1
        # the same denial repeats every interval while e.g. HALTED with a position open:
        # count each, but report only the first of a run
        key = (verdict.code, d.trigger, d.side, d.qty, trading.state)
        if self._last_denial.get(d.symbol) == key:
            return view, None
        self._last_denial[d.symbol] = key
        return view, {"type": "risk_denied", **base, "code": verdict.code,
                      "detail": verdict.detail, "trading_state": trading.state}

    # -- positions ---------------------------------------------------------------------------
    def on_position(self, rec: dict) -> tuple[float, float] | None:
        """A ``positions`` record (with its ``ts``): correct the view unless ours is newer.

        Returns ``(was, now)`` when the view was corrected. A record written less than
        ``grace_ms`` after our last intent of the symbol may predate that intent's fill: ignored.
        """
        if rec.get("type") != "position":
            return None
        symbol = rec.get("symbol")
        view = self.views.get(symbol)
        if view is None:
            return None
        qty = rec.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, (int, float)):
            raise BadRecord("position without a numeric qty", orjson.dumps(rec).decode())
        if int(rec.get("ts", 0)) < self.last_intent_ts.get(symbol, 0) + self.grace_ms:
            self.counts["positions_in_flight"] += 1
            return None
        entry = rec.get("entry_price")
        new = rules.correct(view, float(qty),
                            float(entry) if isinstance(entry, (int, float)) else None,
                            self.last_signal_ms.get(symbol))
        if new == view:
            return None
        self.counts["position_corrections"] += 1
        self.views[symbol] = new
        self._last_denial.pop(symbol, None)
        return view.qty, new.qty

    # -- daily loss --------------------------------------------------------------------------
    def daily_pnl(self) -> float:
        """The day's paper PnL over all symbols (realized + unrealized, USDT)."""
        return sum(v.realized + v.unrealized() for v in self.views.values())

    def _daily_loss_change(self, day: int, st: TradingState) -> tuple[str, str] | None:
        """Daily loss limit hit: REDUCING; the next UTC day, back to ACTIVE if we set it."""
        limit = self.limits.daily_loss_limit_usdt
        if not limit:
            return None
        pnl = self.daily_pnl()
        if pnl <= -limit and st.state == ACTIVE:
            date = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
            return REDUCING, f"{DAILY_LOSS_REASON}: PnL {pnl:.2f} USDT on {date}"
        if pnl > -limit and st.state == REDUCING and st.by == "strategy" \
                and st.reason.startswith(DAILY_LOSS_REASON) and st.since \
                and day > int(st.since // 86400):
            return ACTIVE, "new trading day"
        return None

    # -- restart -----------------------------------------------------------------------------
    def replay_intent(self, rec: dict, wall_ms: int) -> None:
        """Fold in one of our own ``intents`` records (restart: they are the truth of what was
        sent); ``wall_ms`` bounds the rate-limit window."""
        self.last_intent_seq = max(self.last_intent_seq, int(rec["seq"]))
        sig = rec.get("signal_seq")
        if isinstance(sig, int):
            self.last_signal_seq = max(self.last_signal_seq, sig)
        if rec.get("type") != "intent":
            return
        sym = rec.get("symbol")
        if sym not in self.views:
            return
        mid = rec.get("decision_mid")
        d = rules.Decision(sym, rec["side"], float(rec["qty"]), bool(rec.get("reduce_only")),
                           rec.get("reason") or "", rec.get("trigger") or "cross",
                           rec.get("order_type") or "MARKET", rec.get("price"),
                           int(rec.get("decision_ms") or rec.get("bucket_ms") or 0),
                           float(mid) if isinstance(mid, (int, float)) else None,
                           rec.get("fusion"))
        view = rules.apply(self.views[sym], d)
        if isinstance(d.fusion, (int, float)):
            view = rules.View(**{**view.to_dict(), "last_fusion": float(d.fusion)})
        self.views[sym] = view
        self.last_intent_ts[sym] = int(rec["ts"])
        self.last_signal_ms[sym] = max(self.last_signal_ms.get(sym, 0), d.now_ms)
        if int(rec["ts"]) > wall_ms - risk.WINDOW_MS and int(rec["ts"]) not in self.order_times:
            self.order_times.append(int(rec["ts"]))

    def snapshot(self) -> dict:
        """The state a restart continues from (JSON-ready)."""
        return {
            "last_signal_seq": self.last_signal_seq, "last_intent_seq": self.last_intent_seq,
            "views": {s: v.to_dict() for s, v in self.views.items()},
            "last_intent_ts": self.last_intent_ts, "last_signal_ms": self.last_signal_ms,
            "order_times": list(self.order_times),
        }

    def restore(self, snap: dict, same_signals: bool) -> None:
        """Continue from :meth:`snapshot`; signal seqs count only if they name the same topic."""
        for sym, v in (snap.get("views") or {}).items():
            if sym in self.views:
                self.views[sym] = rules.View.from_dict(v)
        self.last_intent_seq = int(snap.get("last_intent_seq") or 0)
        if same_signals:
            self.last_signal_seq = int(snap.get("last_signal_seq") or 0)
        self.last_intent_ts = {k: int(v) for k, v in (snap.get("last_intent_ts") or {}).items()}
        self.last_signal_ms = {k: int(v) for k, v in (snap.get("last_signal_ms") or {}).items()}
        self.order_times.extend(int(t) for t in snap.get("order_times") or [])

    # -- health ------------------------------------------------------------------------------
    def risk_summary(self, trading: TradingState, wall_ms: int) -> dict:
        """The heartbeat's ``risk`` block."""
        symbols = {}
        for sym, v in self.views.items():
            ref = v.last_mid or v.entry_mid or 0.0
            symbols[sym] = {"position_qty": v.qty, "position_usdt": round(abs(v.qty) * ref, 2),
                            "entry_mid": v.entry_mid, "unrealized_usdt": round(v.unrealized(), 4),
                            "realized_usdt": round(v.realized, 4)}
        return {
            "state": trading.state, "reason": trading.reason, "symbols": symbols,
            "max_position_usdt": self.limits.max_position_usdt,
            "max_order_usdt": self.limits.max_order_usdt,
            "orders_last_minute": risk.orders_in_window(self.order_times, wall_ms),
            "max_orders_per_minute": self.limits.max_orders_per_minute,
            "daily_pnl_usdt": round(self.daily_pnl(), 4),
            "daily_loss_limit_usdt": self.limits.daily_loss_limit_usdt,
            "denied": self.counts["denied"], "denials": dict(self.denials),
        }
