"""The strategy's decision path as one pure class: signals, positions and a clock in, ``intents``
payloads out.

    core = StrategyCore.from_settings(settings)
    step = core.on_signal(signal_record, trading_state, wall_ms)
    step = core.on_timer(trading_state, wall_ms)     # every ~250 ms: stop and time exits
    for payload in step.payloads:          # {type: intent} / {type: risk_denied}
        rec = write("intents", payload)    # the caller's bus writer
        core.written(rec)                  # its seq and ts, as the daemon knows them
    if step.state_change: ...              # (state, reason): the daily loss limit was hit
    core.on_position(positions_record, wall_ms)      # the broker's word

For each fresh signal :func:`rules.decide` proposes an order and :func:`risk.check` approves it
(an ``intent`` payload) or denies it (a ``risk_denied`` payload, only the first of a run of
identical denials; every one is counted). A signal whose interval ended more than
``max_signal_age_ms`` before ``wall_ms`` (a backlog, e.g. after a restart) is only observed:
its fusion and mid update the view, nothing is decided. :meth:`on_timer` decides the exits that
need no signal (stop, time) on the clock and the latest known price (signal mid or the broker's
mark), through the same risk check.

Position. The broker is the one truth: a symbol's position is the ``qty`` of the broker's last
``positions`` record, plus the unfilled remainders of its ``in_flight`` orders, plus our own
intents the broker had not handled when it wrote the record (``seq`` above its ``intent_seq``).
Orders not yet done count as filled at the decision mid (conservative for risk). A broker
position that differs from what the strategy believed replaces it (see :meth:`on_position`).

The strategy daemon (``stage.py``) and the backtest (``daemons.tools.backtest``) run this same class;
they differ only in the clock they pass (wall time, or simulated time) and where the payloads
go. No I/O and no clock here.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from bus import BadRecord

from .. import proposals
from . import ids, risk, rules
from ..trading import ACTIVE, REDUCING, TradingState

DAILY_LOSS_REASON = "daily loss limit"
DRAWDOWN_REASON = "drawdown limit"
EPS = 1e-9
SIGNS = {"BUY": 1.0, "SELL": -1.0}
PROPOSALS_KEPT = 1000     # operator proposals remembered in the snapshot (ids of those acted on)


class Step(NamedTuple):
    """What one input led to: ``intents`` payloads, maybe a trading state to set, and
    ``notes``: ``(event, fields)`` pairs worth one log line each."""

    payloads: list
    state_change: tuple | None = None      # (state, reason)
    notes: tuple = ()


@dataclass(frozen=True)
class BrokerPosition:
    """A symbol's last ``positions`` record, as far as the view needs it."""

    qty: float
    in_flight: tuple = ()                  # (client_order_id, signed remainder, reduce_only)
    intent_seq: int | None = None          # None: the record does not say (older broker)
    entry_price: float | None = None
    seq: int | None = None                 # its seq in ``positions``

    @property
    def flight_qty(self) -> float:
        return sum(q for _, q, _ in self.in_flight)

    def to_dict(self) -> dict:
        return {"qty": self.qty, "in_flight": [list(f) for f in self.in_flight],
                "intent_seq": self.intent_seq, "entry_price": self.entry_price, "seq": self.seq}

    @classmethod
    def from_dict(cls, d: dict) -> "BrokerPosition":
        return cls(float(d["qty"]), tuple((str(c), float(q), bool(r))
                                          for c, q, r in d.get("in_flight") or ()),
                   d.get("intent_seq"), d.get("entry_price"), d.get("seq"))


def parse_position(rec: dict) -> tuple[str, BrokerPosition, float | None]:
    """``(symbol, position, mark price)`` of a ``positions`` record; raises BadRecord."""
    def bad(why):
        return BadRecord(f"position record: {why}", orjson.dumps(rec).decode())

    symbol, qty = rec.get("symbol"), _num(rec.get("qty"))
    if not isinstance(symbol, str) or qty is None:
        raise bad("needs a symbol and a numeric qty")
    intent_seq = rec.get("intent_seq")
    if intent_seq is not None and (isinstance(intent_seq, bool) or not isinstance(intent_seq, int)):
        raise bad(f"intent_seq must be an integer or null, not {intent_seq!r}")
    flights = rec.get("in_flight") or []
    if not isinstance(flights, list):
        raise bad("in_flight must be a list")
    parsed = []
    for f in flights:
        q = _num(f.get("qty")) if isinstance(f, dict) else None
        if q is None or q < 0 or f.get("side") not in SIGNS:
            raise bad(f"in_flight entry needs side BUY/SELL and qty >= 0, not {f!r}")
        parsed.append((str(f.get("client_order_id") or ""), SIGNS[f["side"]] * q,
                       bool(f.get("reduce_only"))))
    entry, mark = _num(rec.get("entry_price")), _num(rec.get("mark_price"))
    seq = rec.get("seq") if isinstance(rec.get("seq"), int) else None
    return symbol, BrokerPosition(qty, tuple(parsed), intent_seq,
                                  entry if entry and entry > 0 else None, seq), \
        mark if mark and mark > 0 else None


def _num(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


class StrategyCore:
    """Views, order times and counters of the strategy, and the decision path over them."""

    def __init__(self, params: rules.Params, limits: risk.Limits, prefix: str, symbols,
                 max_signal_age_ms: int = 2000):
        self.params = params
        self.limits = limits
        self.prefix = prefix
        self.max_signal_age_ms = int(max_signal_age_ms)
        self.symbols = tuple(symbols)
        self.views: dict[str, rules.View] = {s: rules.View() for s in self.symbols}
        self.last_signal_seq = 0          # signals up to here are reflected in the views
        self.last_intent_seq = 0          # intents records up to here are reflected
        self.positions_seq = 0            # positions records up to here are reflected
        self.last_signal_ms: dict[str, int] = {}
        self.order_times: deque[int] = deque()   # clock ms of approved intents (rate limit)
        # the broker's last word per symbol, and our intents written after it: (seq, side, qty,
        # reduce_only); those at or below a new record's intent_seq are dropped
        self.broker: dict[str, BrokerPosition] = {}
        self.pending: dict[str, list[tuple]] = {}
        # the position an exit of ours closed: (sign, entry_mid, entry_ms); if the broker
        # reports it still open (the exit was refused), it keeps its entry time
        self.exited: dict[str, tuple] = {}
        self.last_price: dict[str, float] = {}   # newest of signal mid and broker mark
        self.ledger = risk.DayLedger()           # the day's real money, from ``positions``
        self.counts = {"signals": 0, "intents": 0, "denied": 0, "skipped_replayed": 0,
                       "ignored_symbol": 0, "stale_signals": 0, "timer_exits": 0,
                       "positions": 0, "position_corrections": 0, "positions_unconfirmed": 0,
                       "decisions": 0, "decisions_skipped": 0}
        self.denials: dict[str, int] = {}
        self._last_denial: dict[str, tuple] = {}
        self._stale_run: dict[str, int] = {}     # stale signals in a row, per symbol
        self._timer_second: dict[str, int] = {}  # wall second of the last timer decision
        self._lag: int | None = None             # wall - signal time (freshness off only)
        # operator proposals already acted on (insertion-ordered; the newest are kept)
        self.proposals_used: dict[str, None] = {}

    @classmethod
    def from_settings(cls, s, symbols=None) -> "StrategyCore":
        """From the typed settings' ``strategy`` and ``risk`` sections and ``symbols`` (or the
        ``symbols`` given); raises ValueError for a bad ``strategy.instruments`` entry."""
        return cls(rules.Params.from_settings(s.strategy), risk.Limits.from_settings(s.risk),
                   s.strategy.id_prefix, list(s.symbols if symbols is None else symbols),
                   s.strategy.max_signal_age_ms)

    # -- clock -------------------------------------------------------------------------------
    def clock(self, wall_ms: int) -> int | None:
        """Now on the signals' time axis (exchange ms), that of entry and exit times.

        With the freshness check on, signals are current, so the wall clock. With it off
        (recorded data replayed with its own timestamps) the signals' clock: the latest signal's
        time plus the wall time since it was handled; None before the first signal.
        """
        if self.max_signal_age_ms:
            return wall_ms
        return None if self._lag is None else wall_ms - self._lag

    # -- signals -----------------------------------------------------------------------------
    def on_signal(self, rec: dict, trading: TradingState, wall_ms: int) -> Step:
        """One ``signals`` record (with its ``seq``): decide, check risk, update the view.

        ``trading`` is the current trading state, ``wall_ms`` the clock of the rate limit and
        of the freshness check. Raises :class:`bus.BadRecord` for a signal without a symbol or
        an integer bucket.
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
        t = rules.signal_time(rec)
        self.last_signal_ms[symbol] = t
        mid = rules.signal_mid(rec)
        if mid is not None:
            self.last_price[symbol] = mid
        age = wall_ms - t
        if self.max_signal_age_ms and age > self.max_signal_age_ms:
            # too old to act on; observed, so that the first fresh one sees the right crossing
            self.views[symbol] = rules.observe(view, rec)
            self.counts["stale_signals"] += 1
            run = self._stale_run[symbol] = self._stale_run.get(symbol, 0) + 1
            notes = (("stale_signals", {"symbol": symbol, "signal_seq": seq, "age_ms": age,
                                        "max_signal_age_ms": self.max_signal_age_ms}),) \
                if run == 1 else ()
            return Step([], None, notes)
        self._stale_run.pop(symbol, None)
        if not self.max_signal_age_ms:
            self._lag = wall_ms - t
        decision = rules.decide(self.params, view, rec)
        view = rules.observe(view, rec)
        payloads = []
        if decision is not None:
            coid = ids.client_order_id(self.prefix, symbol, bucket, decision.code,
                                       decision.side)
            view, payload = self._submit(decision, view, trading, wall_ms, coid, rec)
            if payload is not None:
                payloads.append(payload)
        self.views[symbol] = view
        return Step(payloads, self._daily_loss_change(view.day, trading))

    # -- timer -------------------------------------------------------------------------------
    def on_timer(self, trading: TradingState, wall_ms: int) -> Step:
        """Stop and time exits of every position, on the clock and the latest known price.

        Not for a symbol with an order of ours not yet done (the position is still moving; the
        broker's record when it is done decides), and at most one decision per symbol and
        wall-clock second (its client order id is made of that second).
        """
        now = self.clock(wall_ms)
        if now is None:
            return Step([])
        second = wall_ms // 1000
        payloads = []
        for sym, view in self.views.items():
            if not view.qty or self.busy(sym) or self._timer_second.get(sym) == second:
                continue
            d = rules.decide_timer(self.params, view, sym, now,
                                   self.last_price.get(sym) or view.last_mid)
            if d is None:
                continue
            self._timer_second[sym] = second
            coid = ids.client_order_id(self.prefix, sym, second * 1000, d.code, d.side)
            view, payload = self._submit(d, view, trading, wall_ms, coid, None)
            self.views[sym] = view
            if payload is not None:
                if payload["type"] == "intent":
                    self.counts["timer_exits"] += 1
                payloads.append(payload)
        return Step(payloads)

    def busy(self, symbol: str) -> bool:
        """An order of ours on ``symbol`` is in flight at the broker or not yet handled by it."""
        b = self.broker.get(symbol)
        return bool(self.pending.get(symbol)) or bool(b and b.in_flight)

    def _exits_in_flight(self, symbol: str) -> float:
        """Signed remainder of the reduce-only orders in flight at the broker."""
        b = self.broker.get(symbol)
        return sum(q for _, q, ro in b.in_flight if ro) if b else 0.0

    def holding(self) -> bool:
        """Some symbol holds a position (the timer has work)."""
        return any(v.qty for v in self.views.values())

    # -- intents -----------------------------------------------------------------------------
    def written(self, rec: dict) -> None:
        """An ``intents`` record the caller wrote (from our payload): its seq and ts."""
        self.last_intent_seq = int(rec["seq"])
        self._proposal_used(rec)
        self._remember(rec)

    def _proposal_used(self, rec: dict) -> None:
        pid = rec.get("proposal_id")
        if isinstance(pid, str):
            self.proposals_used[pid] = None

    def forget_denials(self) -> None:
        """The trading state changed: the next denial of each symbol is news again."""
        self._last_denial.clear()

    def _submit(self, d: rules.Decision, view: rules.View, trading: TradingState, wall: int,
                coid: str, signal: dict | None) -> tuple[rules.View, dict | None]:
        """Risk-check ``d`` (caused by ``signal``, or by the timer when None): the view after it
        and its payload (None for a denial already reported)."""
        verdict = self._verdict(d, view, trading, wall)
        sig = signal or {}
        base = {
            "symbol": d.symbol, "side": d.side, "qty": d.qty, "order_type": d.order_type,
            "price": d.price, "reduce_only": d.reduce_only, "client_order_id": coid,
            "reason": d.reason, "trigger": d.trigger, "origin": "timer" if d.timer else "signal",
            "signal_seq": int(sig["seq"]) if signal else None,
            "bucket_ms": int(sig["bucket_ms"]) if signal else None,
            "decision_ms": d.now_ms, "decision_mid": d.mid, "fusion": d.fusion,
            "ofi_z": sig.get("ofi_z"), "cvd_z": sig.get("cvd_z"),
        }
        if verdict.approved:
            self.order_times.append(wall)
            self.counts["intents"] += 1
            self._last_denial.pop(d.symbol, None)
            return self._apply(view, d), {"type": "intent", **base}
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

    def _verdict(self, d: rules.Decision, view: rules.View, trading: TradingState,
                 wall: int) -> risk.Verdict:
        """:func:`risk.check` of ``d`` against the view, the trading state, the orders of the
        last minute and the day's PnL."""
        while self.order_times and self.order_times[0] <= wall - risk.WINDOW_MS:
            self.order_times.popleft()
        ref_price = d.price or d.mid or view.last_mid or view.entry_mid or 0.0
        order = risk.Order(d.symbol, d.side, d.qty, ref_price, d.reduce_only)
        position = view.qty
        if not d.reduce_only:
            # new exposure is measured as if our exits the broker holds in flight failed (a ban,
            # send retries, a resting LIMIT): counted as filled, they would let an entry take
            # the position past the limit
            position -= self._exits_in_flight(d.symbol)
        return risk.check(self.limits, trading.state, position, order, len(self.order_times),
                          self.daily_pnl(), self.drawdown())

    # -- operator decisions ------------------------------------------------------------------
    def on_decision(self, rec: dict, trading: TradingState, wall_ms: int,
                    max_age_ms: int = 0) -> Step:
        """An operator's decision on a proposal (``decisions`` topic, ``ofi approve``).

        An approved submit becomes an ``intent`` (the proposal's client order id, ``origin:
        "operator"``) after the same risk check as the strategy's own intents, against the same
        view; a denial is a ``risk_denied`` payload (always returned, never folded into a run).
        A decision older than ``max_age_ms`` when it arrives (the strategy was down) is denied
        as ``expired``. An approved cancel becomes a ``cancel`` payload for the broker. Each
        proposal is acted on once (its id is remembered, also from our own ``intents`` on a
        restart); rejections and repeats give nothing. Raises :class:`bus.BadRecord` for a
        malformed approved decision.
        """
        if rec.get("type") != "decision" or rec.get("decision") != "approved":
            return Step([])
        pid = rec.get("proposal_id")
        if not isinstance(pid, str) or pid in self.proposals_used:
            self.counts["decisions_skipped"] += 1
            return Step([])
        try:
            order = proposals.parse_decided_order(rec)
        except proposals.ProposalError as exc:
            raise BadRecord(str(exc), orjson.dumps(rec).decode()) from None
        self.proposals_used[pid] = None
        self.counts["decisions"] += 1
        if order["action"] == "cancel":
            return Step([{"type": "cancel", "client_order_id": order["client_order_id"],
                          "symbol": order.get("symbol"), "reason": f"operator cancel ({pid})",
                          "origin": "operator", "proposal_id": pid, "decision_ms": wall_ms}])
        sym = order["symbol"]
        view = self.views.get(sym)
        mid = self.last_price.get(sym) or (view.last_mid if view else None)
        d = rules.Decision(sym, order["side"], order["qty"], order["reduce_only"], "manual",
                           "manual", order["order_type"], order["price"],
                           self.clock(wall_ms) or wall_ms, mid, None)
        base = {
            "symbol": sym, "side": d.side, "qty": d.qty, "order_type": d.order_type,
            "price": d.price, "reduce_only": d.reduce_only,
            "client_order_id": order["client_order_id"], "reason": "manual",
            "trigger": "manual", "origin": "operator", "signal_seq": None, "bucket_ms": None,
            "decision_ms": wall_ms, "decision_mid": mid, "fusion": None, "ofi_z": None,
            "cvd_z": None, "proposal_id": pid,
        }
        age = wall_ms - int(rec.get("ts") or wall_ms)
        if view is None:
            verdict = risk.Verdict(False, "bad_order", f"symbol {sym} is not traded")
        elif max_age_ms and age > max_age_ms:
            verdict = risk.Verdict(False, "expired", f"approved {age / 1000:.1f}s before it "
                                                     f"arrived (limit {max_age_ms / 1000:g}s)")
        else:
            verdict = self._verdict(d, view, trading, wall_ms)
        if verdict.approved:
            self.order_times.append(wall_ms)
            self.counts["intents"] += 1
            self.views[sym] = self._apply(view, d)
            return Step([{"type": "intent", **base}])
        self.counts["denied"] += 1
        self.denials[verdict.code] = self.denials.get(verdict.code, 0) + 1
        return Step([{"type": "risk_denied", **base, "code": verdict.code,
                      "detail": verdict.detail, "trading_state": trading.state}])

    def _apply(self, view: rules.View, d: rules.Decision) -> rules.View:
        """The view after ``d`` was sent (assumed filled at its mid); remembers what an exit
        closed."""
        if view.qty and (d.reduce_only or abs(view.qty + d.signed_qty) < EPS):
            self.exited[d.symbol] = (math.copysign(1.0, view.qty), view.entry_mid,
                                     view.entry_ms)
        elif not view.qty:
            self.exited.pop(d.symbol, None)
        return rules.apply(view, d)

    def _remember(self, rec: dict) -> None:
        """Keep one of our intents until a broker record says it was handled."""
        sym = rec.get("symbol")
        if rec.get("type") != "intent" or sym not in self.views:
            return
        seq = int(rec["seq"])
        b = self.broker.get(sym)
        if b is not None and b.intent_seq is not None and seq <= b.intent_seq:
            return
        mine = self.pending.setdefault(sym, [])
        if any(p[0] == seq for p in mine):
            return
        mine.append((seq, rec["side"], float(rec["qty"]), bool(rec.get("reduce_only"))))

    # -- positions ---------------------------------------------------------------------------
    def on_position(self, rec: dict, wall_ms: int) -> tuple[float, float] | None:
        """A ``positions`` record from the broker: the view becomes its ``qty`` + its
        ``in_flight`` remainders + our intents above its ``intent_seq``.

        Returns ``(was, now)`` when the view's position changed. A position we did not know
        (flat or other side in our view) takes the record's entry price and the clock as entry
        time, except the one an exit of ours just closed (refused by the broker): that keeps its
        entry time, so its time exit comes again at once. A record without ``intent_seq`` (an
        older broker) is applied only when none of our intents is outstanding or it confirms
        our view (then they are all taken as handled); otherwise it is counted and ignored.
        Raises :class:`bus.BadRecord` for a malformed record.
        """
        if rec.get("type") != "position":
            return None
        seq = rec.get("seq")
        if isinstance(seq, int) and seq <= self.positions_seq:
            return None          # read again after a restart
        symbol, pos, mark = parse_position(rec)
        if isinstance(seq, int):
            self.positions_seq = seq
        view = self.views.get(symbol)
        if view is None:
            return None
        self.counts["positions"] += 1
        if mark is not None:
            self.last_price[symbol] = mark
        t = rec.get("ts") if isinstance(rec.get("ts"), int) else wall_ms
        self.ledger.update(symbol, rec, int(t // 86_400_000), self.last_price)
        mine = self.pending.get(symbol, [])
        if pos.intent_seq is None:
            if mine and abs(pos.qty + pos.flight_qty - view.qty) > EPS:
                self.counts["positions_unconfirmed"] += 1
                return None
            mine = []
        else:
            mine = [p for p in mine if p[0] > pos.intent_seq]
        self.pending[symbol] = mine
        self.broker[symbol] = pos
        if abs(pos.qty) < EPS:
            self.exited.pop(symbol, None)      # the broker saw the exit through
        target = round(pos.qty + pos.flight_qty + sum(SIGNS[s] * q for _, s, q, _ in mine), 12)
        if abs(target - view.qty) < EPS:
            return None
        now = self.clock(wall_ms)
        if now is None:
            now = max(self.last_signal_ms.values(), default=wall_ms)
        new = rules.correct(view, target, pos.entry_price, now)
        gone = self.exited.get(symbol)
        if target and gone and (not view.qty or (view.qty > 0) != (target > 0)) \
                and gone[0] == math.copysign(1.0, target):
            new = rules.View(**{**new.to_dict(), "entry_mid": pos.entry_price or gone[1],
                                "entry_ms": gone[2] if gone[2] is not None else now})
        self.counts["position_corrections"] += 1
        self.views[symbol] = new
        self._last_denial.pop(symbol, None)
        return view.qty, new.qty

    # -- daily loss --------------------------------------------------------------------------
    def daily_pnl(self) -> float:
        """The day's PnL over all symbols (USDT): real money from the broker's records
        (:class:`risk.DayLedger`); paper PnL at decision mids until a record with money came."""
        if self.ledger.seen:
            return self.ledger.pnl(self.last_price)
        return sum(v.realized + v.unrealized() for v in self.views.values())

    def drawdown(self) -> float:
        """How far the day's PnL is below its high of the day (USDT; real money only)."""
        return self.ledger.drawdown(self.last_price) if self.ledger.seen else 0.0

    def _daily_loss_change(self, day: int, st: TradingState) -> tuple[str, str] | None:
        """Daily loss or drawdown limit hit: REDUCING; the next UTC day, back to ACTIVE if we
        set it."""
        self.ledger.roll(day, self.last_price)
        loss, dd_limit = self.limits.daily_loss_limit_usdt, self.limits.max_drawdown_usdt
        if not loss and not dd_limit:
            return None
        pnl, dd = self.daily_pnl(), self.drawdown()
        if st.state == ACTIVE:
            if loss and pnl <= -loss:
                return REDUCING, f"{DAILY_LOSS_REASON}: PnL {pnl:.2f} USDT on {_date(day)}"
            if dd_limit and dd >= dd_limit:
                return REDUCING, (f"{DRAWDOWN_REASON}: PnL {pnl:.2f} USDT, {dd:.2f} below the "
                                  f"day's high, on {_date(day)}")
        if st.state == REDUCING and st.by == "strategy" \
                and st.reason.startswith((DAILY_LOSS_REASON, DRAWDOWN_REASON)) and st.since \
                and day > int(st.since // 86400) and not (loss and pnl <= -loss) \
                and not (dd_limit and dd >= dd_limit):
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
        self._proposal_used(rec)
        if rec.get("type") != "intent":
            return
        sym = rec.get("symbol")
        if sym not in self.views:
            return
        mid = rec.get("decision_mid")
        timer = rec.get("origin") == "timer"
        d = rules.Decision(sym, rec["side"], float(rec["qty"]), bool(rec.get("reduce_only")),
                           rec.get("reason") or "", rec.get("trigger") or "cross",
                           rec.get("order_type") or "MARKET", rec.get("price"),
                           int(rec.get("decision_ms") or rec.get("bucket_ms") or 0),
                           float(mid) if isinstance(mid, (int, float)) else None,
                           rec.get("fusion"), timer)
        view = self._apply(self.views[sym], d)
        if isinstance(d.fusion, (int, float)):
            view = rules.View(**{**view.to_dict(), "last_fusion": float(d.fusion)})
        self.views[sym] = view
        self._remember(rec)
        if not timer:
            self.last_signal_ms[sym] = max(self.last_signal_ms.get(sym, 0), d.now_ms)
        if int(rec["ts"]) > wall_ms - risk.WINDOW_MS and int(rec["ts"]) not in self.order_times:
            self.order_times.append(int(rec["ts"]))

    def snapshot(self) -> dict:
        """The state a restart continues from (JSON-ready)."""
        return {
            "last_signal_seq": self.last_signal_seq, "last_intent_seq": self.last_intent_seq,
            "positions_seq": self.positions_seq,
            "views": {s: v.to_dict() for s, v in self.views.items()},
            "broker": {s: b.to_dict() for s, b in self.broker.items()},
            "pending": {s: [list(p) for p in ps] for s, ps in self.pending.items() if ps},
            "exited": {s: list(e) for s, e in self.exited.items()},
            "last_price": dict(self.last_price),
            "last_signal_ms": self.last_signal_ms, "order_times": list(self.order_times),
            "proposals_used": list(self.proposals_used)[-PROPOSALS_KEPT:],
            "ledger": self.ledger.to_dict(),
        }

    def restore(self, snap: dict, same_signals: bool) -> None:
        """Continue from :meth:`snapshot`; signal seqs count only if they name the same topic."""
        for sym, v in (snap.get("views") or {}).items():
            if sym in self.views:
                self.views[sym] = rules.View.from_dict(v)
        self.last_intent_seq = int(snap.get("last_intent_seq") or 0)
        self.positions_seq = int(snap.get("positions_seq") or 0)
        if same_signals:
            self.last_signal_seq = int(snap.get("last_signal_seq") or 0)
        self.broker = {k: BrokerPosition.from_dict(v) for k, v in (snap.get("broker") or {}).items()
                       if k in self.views}
        self.pending = {k: [(int(s), str(side), float(q), bool(r)) for s, side, q, r in v]
                        for k, v in (snap.get("pending") or {}).items() if k in self.views}
        self.exited = {k: tuple(v) for k, v in (snap.get("exited") or {}).items()}
        self.last_price = {k: float(v) for k, v in (snap.get("last_price") or {}).items()}
        if snap.get("ledger"):
            self.ledger = risk.DayLedger.from_dict(snap["ledger"])
        self.last_signal_ms = {k: int(v) for k, v in (snap.get("last_signal_ms") or {}).items()}
        self.order_times.extend(int(t) for t in snap.get("order_times") or [])
        for pid in snap.get("proposals_used") or []:
            self.proposals_used[str(pid)] = None

    # -- health ------------------------------------------------------------------------------
    def risk_summary(self, trading: TradingState, wall_ms: int) -> dict:
        """The heartbeat's ``risk`` block."""
        symbols = {}
        for sym, v in self.views.items():
            ref = v.last_mid or v.entry_mid or 0.0
            b = self.broker.get(sym)
            symbols[sym] = {"position_qty": v.qty, "position_usdt": round(abs(v.qty) * ref, 2),
                            "entry_mid": v.entry_mid, "unrealized_usdt": round(v.unrealized(), 4),
                            "realized_usdt": round(v.realized, 4),
                            "broker_qty": b.qty if b else None,
                            "orders_in_flight": (len(b.in_flight) if b else 0)
                            + len(self.pending.get(sym, ()))}
        return {
            "state": trading.state, "reason": trading.reason, "symbols": symbols,
            "max_position_usdt": self.limits.max_position_usdt,
            "max_order_usdt": self.limits.max_order_usdt,
            "orders_last_minute": risk.orders_in_window(self.order_times, wall_ms),
            "max_orders_per_minute": self.limits.max_orders_per_minute,
            "daily_pnl_usdt": round(self.daily_pnl(), 4),
            "daily_loss_limit_usdt": self.limits.daily_loss_limit_usdt,
            "pnl_source": "venue" if self.ledger.seen else "paper",
            "drawdown_usdt": round(self.drawdown(), 4),
            "max_drawdown_usdt": self.limits.max_drawdown_usdt,
            "denied": self.counts["denied"], "denials": dict(self.denials),
        }


def _date(day: int) -> str:
    """``YYYY-MM-DD`` of a UTC day number."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
