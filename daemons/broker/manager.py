"""The order manager: the broker's order logic as a pure core.

Inputs (each call takes ``now``, epoch seconds; nothing here reads a clock or a socket)::

    on_intent(rec) / on_cancel_intent(rec)     records of the ``intents`` topic
    on_result(action, outcome)                 what the venue answered to an action (or the error)
    on_stream_event(ev) / on_stream_state(up)  the user data stream
    set_trading(state)                         the kill switch as read from its file
    tick(now)                                  timers: retries, queries, polls, the window's end

Outputs, collected by :meth:`OrderManager.take`: ``records`` (``(topic, payload)`` in the order
they must be written: an ``orders`` record is always written before the action it allows) and
``actions`` (:class:`Send`, :class:`Query`, :class:`Cancel`, :class:`FetchTrades`,
:class:`FetchOpenOrders`, :class:`FetchOrders`, :class:`FetchPositions`, :class:`Countdown`,
:class:`Halt`) for the shell to carry out, concurrently if it likes: every answer comes back
through ``on_result``.

Flatten (``ofi halt --flatten``: the kill switch with ``flatten``): HALTED's cancels first; once
no order of ours is live, the venue's positions are read and each is closed by a reduce-only
MARKET order (client ids ``ofi-flat-...``, the only orders sent while HALTED), then read again, up
to :data:`FLATTEN_ROUNDS` times; ``health()["flatten"]`` says how it went.

Funding: the payments the venue made or charged (``/fapi/v1/income`` FUNDING_FEE) become
``funding`` records, each once (by the venue's ``tranId``): read at start from the last one
recorded, when the user stream says a funding payment happened, and every
:data:`FUNDING_CHECK_S`.

Protective stops (:mod:`.protection`): while a position is open the venue holds a
``STOP_MARKET`` closePosition algo order ``risk.protective_stop_bps`` beyond its entry; placed
when the position opens, moved when its entry moves, canceled when it is flat, read back at start
and every ``reconcile_interval_s``. When one fires, the order it places is adopted (an ``orders``
record under the stop's client algo id) so its fills are ours, and an alert is raised.

Alerts: records of the pseudo-topic ``alerts`` (``kind``, ``message``, ``subject``, fields) that
the shell raises through its alerter: HALTED, a stop triggered, a 418 ban, a late execution.

The dead-man switch: while it runs, the manager refreshes the venue's countdownCancelAll of every
symbol every third of ``deadman_ms``, so the venue cancels our open orders if the broker dies or
loses the venue for longer than that.

One timer queue (a heap of ``(due, kind, key)``) holds everything that waits.

The ambiguity policy (``docs/order_state_machine.md``): an order whose send may have reached the
venue (UNKNOWN) is never sent again under any id. It is looked up by client order id with a
backing-off query, and the user stream and the periodic venue checks may settle it too. When
``resolution_window_s`` passes with the venue never showing it, it becomes ABANDONED (presumed
never placed; an alert); a later report of it is still applied: its fills are recorded, the
position corrected and an alert logged. Only :class:`NotSent` (provably not processed) is retried.
Overfills and two venue orders for one client order id halt trading.
"""
from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass, replace

from bus import BadRecord

from .. import trading as tstate
from . import orders as fsm
from .binance.errors import Ambiguous, Banned, GatewayError, NotFound, NotSent, Rejected
from .binance.schemas import (VenueOrder, VenueStop, is_funding_update, parse_algo_update,
                              parse_order_update)
from .journal import EPS, Journal
from .protection import CancelStop, FetchStops, PlaceStop, Protection, is_stop_id
from .wallet import RECHECK_S, WalletCheck
from .reconcile import QTY_TOLERANCE, reconcile

CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
FLATTEN_PREFIX = "ofi-flat-"   # the orders that close positions while HALTED
FLATTEN_ROUNDS = 3             # reads of the venue's positions, each closing what is left
FUNDING_CHECK_S = 600.0        # funding payments are read at least this often (and on the stream's word)
MARK_RECORD_S = 5.0            # a position open: a ``positions`` record at the new mark this often


@dataclass(frozen=True)
class Settings:
    """The broker settings the core uses (``broker`` section of the config; their defaults
    are in ``etc/defaults.yaml`` alone), then the core's own tuning constants."""

    symbols: tuple[str, ...]
    max_send_attempts: int
    max_parallel_orders: int
    intent_ttl_s: float
    resolution_window_s: float
    order_timeout_s: float
    poll_interval_s: float
    position_check_s: float
    deadman_ms: int              # the venue's countdownCancelAll, refreshed (0: off)
    halt_on_mismatch: bool
    remote: bool                 # False for mock: no polling, no venue checks
    protective_stop_bps: float   # risk.protective_stop_bps (0: no stops at the venue)
    reconcile_interval_s: float  # read open orders and stops back this often (0: at start)
    # the signal interval (signal.interval_ms / 1000): the periodic venue checks are moved to
    # the middle of one, away from its end when the orders go out (0: run them when due)
    signal_interval_s: float = 0.0
    # constants of the core, not settings
    max_parallel_lookups: int = 2
    query_min_s: float = 0.25
    query_max_s: float = 5.0
    late_watch_s: float = 3600.0  # ABANDONED orders are looked for in allOrders this long

    @classmethod
    def from_settings(cls, s) -> "Settings":
        """From the typed settings (:class:`daemons.settings.Settings`)."""
        b = s.broker
        return cls(symbols=tuple(s.symbols), max_send_attempts=b.max_send_attempts,
                   max_parallel_orders=max(1, b.max_parallel_orders),
                   intent_ttl_s=b.intent_ttl_s, resolution_window_s=b.resolution_window_s,
                   order_timeout_s=b.order_timeout_s, poll_interval_s=b.poll_interval_s,
                   position_check_s=b.position_check_s, deadman_ms=b.deadman_ms,
                   halt_on_mismatch=b.halt_on_mismatch, remote=b.mode != "mock",
                   protective_stop_bps=s.risk.protective_stop_bps,
                   reconcile_interval_s=b.reconcile_interval_s,
                   signal_interval_s=s.signal.interval_ms / 1000)


# -- actions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    order: fsm.Order
    mark: float | None = None
    kind = "send"

    @property
    def key(self):
        return self.order.client_order_id


@dataclass(frozen=True)
class Query:
    symbol: str
    client_order_id: str
    kind = "query"

    @property
    def key(self):
        return self.client_order_id


@dataclass(frozen=True)
class Cancel:
    symbol: str
    client_order_id: str
    kind = "cancel"

    @property
    def key(self):
        return self.client_order_id


@dataclass(frozen=True)
class FetchTrades:
    """The fills of one order (``userTrades`` by ``order_id``)."""

    symbol: str
    order_id: int
    client_order_id: str
    kind = "trades"

    @property
    def key(self):
        return self.client_order_id


@dataclass(frozen=True)
class FetchOpenOrders:
    symbol: str
    kind = "open_orders"

    @property
    def key(self):
        return self.symbol


@dataclass(frozen=True)
class FetchOrders:
    """Every recent order of a symbol (``allOrders``): duplicates and late orders show there."""

    symbol: str
    kind = "all_orders"

    @property
    def key(self):
        return self.symbol


@dataclass(frozen=True)
class FetchPositions:
    symbols: tuple[str, ...]
    purpose: str = "check"    # the periodic position check, or "flatten"
    kind = "positions"

    @property
    def key(self):
        return "all" if self.purpose == "check" else self.purpose


@dataclass(frozen=True)
class Countdown:
    """Refresh the venue's dead-man switch of ``symbol`` (countdownCancelAll)."""

    symbol: str
    countdown_ms: int
    kind = "countdown"

    @property
    def key(self):
        return self.symbol


@dataclass(frozen=True)
class FetchFunding:
    """The account's funding payments from ``since_ms`` on (``/fapi/v1/income``)."""

    since_ms: int | None
    kind = "funding"
    key = "all"


@dataclass(frozen=True)
class FetchWallet:
    """The USDT wallet balance and the income rows from ``since_ms`` (the wallet check)."""

    since_ms: int
    kind = "wallet"
    key = "all"


@dataclass(frozen=True)
class Halt:
    reason: str
    kind = "halt"
    key = "halt"


LOOKUPS = ("query", "cancel", "trades", "open_orders", "all_orders", "positions", "countdown",
           "funding", "place_stop", "cancel_stop", "stops", "wallet")


class OrderManager:
    """Orders exactly once, one position truth; see the module docstring."""

    def __init__(self, settings: Settings, journal: Journal | None = None, log=None):
        self.s = settings
        self.journal = journal or Journal()
        self.log = log or _NoLog()
        self.trading = tstate.TradingState()
        self.marks: dict[str, float] = {}
        self.intent_seq: int | None = None
        self.stream_up = False
        self.stopping = False
        self.counts = {"intents": 0, "duplicates": 0, "ignored": 0, "sent": 0, "fills": 0,
                       "rejected": 0, "unknown": 0, "abandoned": 0, "late_reports": 0,
                       "stale_events": 0, "invalid_events": 0, "halts": 0, "funding": 0}
        self._records: list[tuple[str, dict]] = []
        self._actions: list = []
        self._heap: list[tuple[float, str, str]] = []
        self._due: dict[tuple[str, str], float] = {}
        self._busy: set[tuple[str, str]] = set()     # actions handed out, answer not back yet
        self._sends_waiting: list[str] = []          # client ids held back by the parallel cap
        self._unknown_since: dict[str, float] = {}
        self._query_gap: dict[str, float] = {}
        self._trade_tries: dict[str, int] = {}
        self._cancel_wanted: set[str] = set()
        self._halt_cancels: set[str] = set()          # cancel wishes of the kill switch only
        self._mismatch: dict[str, tuple[float, str]] = {}   # symbol -> (venue qty, looking|looked)
        self._last_fill_at: dict[str, float] = {}
        self._halted_by_me: str | None = None
        self._decided: dict[str, int | None] = {}    # client id -> decision (signal) time, ms
        self._abandoned_at: dict[str, float] = {}     # watched for a late execution
        self.deadman_at: dict[str, float] = {}        # last countdown refresh the venue took
        self.flatten: dict | None = None              # the flatten asked for, and how it went
        self._funding_ids: set[int] = set()           # tranIds recorded in ``funding``
        self._funding_since: int | None = None        # the last recorded payment's time (ms)
        self._deadman_failing: set[str] = set()
        self._mark_emitted: dict[str, float] = {}     # symbol -> last ``mark`` positions record
        self.wallet = WalletCheck(settings.symbols)
        self.protection = Protection(settings.symbols,
                                     settings.protective_stop_bps if settings.remote else 0.0)
        # orders not terminal, or terminal with fills still to record (insertion-ordered set):
        # what every per-fill question asks about, without a walk over the whole journal
        self._live: dict[str, None] = {}

    # -- output ----------------------------------------------------------------------------------
    def take(self) -> tuple[list[tuple[str, dict]], list]:
        """Records to write (in order, before the actions) and actions to carry out."""
        recs, acts = self._records, self._actions
        self._records, self._actions = [], []
        return recs, acts

    def _act(self, action) -> None:
        self._busy.add((action.kind, action.key))
        self._actions.append(action)

    def _busy_count(self, kinds) -> int:
        return sum(1 for k, _ in self._busy if k in kinds)

    # -- timers ----------------------------------------------------------------------------------
    def _at(self, kind: str, key: str, due: float) -> None:
        """(Re)schedule one timer; an earlier due time of the same timer wins."""
        cur = self._due.get((kind, key))
        if cur is not None and cur <= due:
            return
        self._due[(kind, key)] = due
        heapq.heappush(self._heap, (due, kind, key))

    def _every(self, kind: str, period: float, now: float) -> None:
        """Schedule a periodic venue check ``period`` from now, moved to the middle of the
        signal interval that holds that time (by at most half an interval, and only when that
        is at most a quarter of the period): orders go out just after an interval ends, and a
        check's REST calls then would compete with them for the CPU and the venue."""
        due = now + period
        q = self.s.signal_interval_s
        if 0 < q <= period / 2:
            due = (math.floor(due / q) + 0.5) * q
        self._at(kind, "all", due)

    def _cancel_timer(self, kind: str, key: str) -> None:
        self._due.pop((kind, key), None)

    def next_due(self) -> float | None:
        while self._heap and self._due.get((self._heap[0][1], self._heap[0][2])) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def tick(self, now: float) -> None:
        """Fire the timers due by ``now``."""
        self._enforce_kill_switch(now)
        while self._heap and self._heap[0][0] <= now:
            due, kind, key = heapq.heappop(self._heap)
            if self._due.get((kind, key)) != due:
                continue
            del self._due[(kind, key)]
            getattr(self, f"_fire_{kind}")(key, now)
        self._start_waiting_sends(now)
        self._protect(now)

    # -- start -----------------------------------------------------------------------------------
    def load(self, topic: str, rec: dict) -> None:
        """Fold one record of the journal (``orders`` or ``fills``) before :meth:`start`."""
        if topic == "funding":
            self._note_funding(rec)
            return
        if topic == "orders":
            self.journal.load_order_record(rec)
            if isinstance(rec.get("intent_seq"), int):   # intents up to here were handled
                self.intent_seq = max(self.intent_seq or 0, rec["intent_seq"])
        else:
            self.journal.load_fill(rec)

    def start(self, now: float) -> None:
        """After loading: every PENDING/UNKNOWN order may be at the venue; schedule the rest."""
        for cid in self.journal.orders:
            self._track(cid)
        for o in self.journal.unresolved():
            if o.status == fsm.PENDING:
                # the crash may have cut a send in flight: ambiguous, never sent again
                o = self._transition(o, fsm.AMBIGUOUS, now, reason="restart: a send may have "
                                     "been in flight")
            self._became_unknown(o.client_order_id, now, first_query=now)
        for o in self.journal.orders.values():
            if o.status == fsm.ABANDONED:
                self._abandoned_at[o.client_order_id] = now
        if self.s.remote:
            self._every("poll", self.s.poll_interval_s, now)
            if self.s.position_check_s > 0:
                self._every("venue", self.s.position_check_s, now)
            if self.s.deadman_ms > 0:
                self._at("deadman", "all", now)
            self._at("funding", "all", now)
            if self.s.reconcile_interval_s > 0:
                self._every("reconcile", self.s.reconcile_interval_s, now)
        for o in self.journal.open_orders():
            self._schedule_expiry(o)

    def reconcile_start(self, opens: dict, trades: dict, positions: dict, now: float,
                        all_orders: dict | None = None,
                        stops: dict[str, list[VenueStop]] | None = None,
                        wallet: tuple[float, list, int] | None = None) -> list[str]:
        """Start-up reconciliation with what the venue reports; returns the problems.
        ``wallet``: the USDT wallet balance now and the recent income rows (which it already
        holds): the reference of the runtime wallet check."""
        dups = []
        for symbol, rows in (all_orders or {}).items():
            for vo in rows:   # orders our stops placed while we were away: ours
                if self._from_stop(vo):
                    self._adopt(vo.symbol, vo.client_order_id, vo.side, vo.qty, vo.order_id, now)
            dups += self._duplicates(symbol, rows)
            for vo in rows:   # order ids of sends never answered: their fills are ours
                o = self.journal.orders.get(vo.client_order_id)
                if o is not None and o.order_id is None and vo.order_id is not None:
                    self.journal.put(replace(o, order_id=int(vo.order_id)))
        since = self.journal.first_ts - 60_000 if self.journal.first_ts else None
        r = reconcile(self.journal, self.s.symbols, opens, trades, positions, since_ms=since)
        for rows in (all_orders or {}).values():
            for vo in rows:
                o = self.journal.orders.get(vo.client_order_id)
                if o is not None and o.status in (fsm.UNKNOWN, fsm.ABANDONED):
                    r.reports.append(vo)
        for f in r.missing_fills:
            self._record_fill(f, now)
        for vo in r.reports:
            self._apply_report(vo, now)
        for cid in r.to_query:
            self._query_soon(cid, now)
        problems = dups + [p for p in r.problems if p not in r.position_problems]
        for symbol, rows in (stops or {}).items():
            self.protection.venue_list(symbol, rows, now)
            problems += self._foreign_stops(symbol)
        for symbol, problem in r.position_problems.items():
            if self.in_flight(symbol):
                # the venue was read while orders moved (one read after the other): the
                # runtime check judges it once they are done
                self.log.warning("position_differs_at_start", symbol=symbol, problem=problem)
                self._at("venue", "all", now + 1.0)
            else:
                problems.append(problem)
        if problems:
            self._reconciliation_problem("start", "; ".join(problems), now)
        for s in self.s.symbols:
            self._emit_position(s, "start")
        if wallet is not None:
            balance, rows, _updated = wallet
            self.wallet.start(balance, rows, self.journal_money(), self._journal_has, now)
        return problems

    # -- intents ---------------------------------------------------------------------------------
    def on_intent(self, rec: dict, now: float) -> None:
        """An ``intents`` record; raises :class:`BadRecord` for a malformed one."""
        kind = rec.get("type")
        if isinstance(rec.get("seq"), int):
            self.intent_seq = max(self.intent_seq or 0, rec["seq"])
        if kind == "cancel":
            self._on_cancel_intent(rec, now)
            return
        if kind != "intent":
            self.counts["ignored"] += 1   # e.g. the strategy's risk_denied records
            return
        order = order_from_intent(rec)
        self.counts["intents"] += 1
        mark = rec.get("decision_mid") or rec.get("price")
        if isinstance(mark, (int, float)) and mark > 0:
            self.marks[order.symbol] = float(mark)
        if order.client_order_id in self.journal.orders:
            # read again after a crash, or re-sent by the strategy: the id says it is known
            self.counts["duplicates"] += 1
            self.log.info("duplicate_intent", client_order_id=order.client_order_id,
                          status=self.journal.orders[order.client_order_id].status)
            return
        o = self._transition(order, fsm.INTENT, now)
        self._decided[o.client_order_id] = _decision_ms(rec)
        refusal = self._refusal(o, now, self._decided[o.client_order_id])
        if refusal:
            self._reject(o, refusal, now)
            return
        self._queue_send(o.client_order_id, now)

    def _on_cancel_intent(self, rec: dict, now: float) -> None:
        cid = rec.get("client_order_id")
        o = self.journal.orders.get(cid) if isinstance(cid, str) else None
        if o is None:
            raise BadRecord(f"cancel: unknown client_order_id {cid!r}")
        self._request_cancel(o, rec.get("reason") or "cancel intent", now)

    def _refusal(self, o: fsm.Order, now: float, decision_ms: int | None = None) -> str | None:
        """Why ``o`` may not be sent now (None: it may)."""
        if o.symbol not in self.s.symbols:
            return f"symbol {o.symbol} is not traded (symbols: {', '.join(self.s.symbols)})"
        if self.stopping:
            return "broker stopping"
        if self.trading.state == tstate.HALTED and not is_flatten(o.client_order_id):
            return f"trading HALTED: {self.trading.reason or 'kill switch'}"
        if self.trading.state == tstate.REDUCING and not self._reduces(o):
            return "trading REDUCING: only orders that reduce the position are sent"
        ttl = self.s.intent_ttl_s
        born = decision_ms or o.intent_ts
        if ttl > 0 and born and now - born / 1000.0 > ttl:
            return f"stale: decided {now - born / 1000.0:.1f}s ago (limit {ttl:g}s)"
        return None

    def _reduces(self, o: fsm.Order) -> bool:
        """Does ``o`` shrink the position without flipping it, counting the orders in flight?"""
        pos = self.journal.book.get(o.symbol).qty
        for f in self.in_flight(o.symbol):
            if f["client_order_id"] != o.client_order_id:
                pos += f["qty"] if f["side"] == "BUY" else -f["qty"]
        signed = o.qty if o.side == "BUY" else -o.qty
        return abs(pos) > EPS and (pos > 0) != (signed > 0) and o.qty <= abs(pos) + EPS

    # -- the state machine and the records -------------------------------------------------------
    def _transition(self, order: fsm.Order, event: str, now: float, **kw) -> fsm.Order:
        try:
            t = fsm.apply(order, event, **kw)
        except fsm.InvalidTransition as exc:
            self.counts["invalid_events"] += 1
            self.log.warning("invalid_transition", client_order_id=order.client_order_id,
                             transition=str(exc))
            return order
        if t is None:
            self.counts["stale_events"] += 1
            return order
        self._records.append(("orders", fsm.record_of(t)))
        self.journal.put(t.order)
        o = t.order
        cid = o.client_order_id
        self._track(cid)
        if o.is_terminal:
            self._decided.pop(cid, None)
            for kind in ("send", "cancel", "expire"):
                self._cancel_timer(kind, cid)
            self._cancel_wanted.discard(cid)
            if self.journal.fill_deficit(cid) <= EPS:
                self._cancel_timer("query", cid)
            self._unknown_since.pop(cid, None)
            self._query_gap.pop(cid, None)
            if event not in (fsm.FILL, fsm.PARTIAL_FILL):
                self._emit_position(o.symbol, "order_done")
        if o.status in fsm.OPEN and t.prev_status not in fsm.OPEN:
            self._schedule_expiry(o)
        return o

    def _reject(self, o: fsm.Order, reason: str, now: float) -> None:
        self.counts["rejected"] += 1
        self._transition(o, fsm.REJECTED_EV, now, reason=reason)

    def _emit_position(self, symbol: str, cause: str, **extra) -> None:
        p = self.journal.book.get(symbol)

        self.protection.position(symbol, p.qty, p.entry_price)
        payload = p.payload(self.marks.get(symbol))
        payload.update(intent_seq=self.intent_seq, in_flight=self.in_flight(symbol),
                       cause=cause, **extra)
        self._records.append(("positions", payload))

    def _track(self, cid: str) -> None:
        """Keep ``cid`` in the live set while it is not terminal or has fills to record."""
        o = self.journal.orders.get(cid)
        if o is not None and (not o.is_terminal or self.journal.fill_deficit(cid) > EPS):
            self._live[cid] = None
        else:
            self._live.pop(cid, None)

    def live_orders(self, symbol: str | None = None) -> list[fsm.Order]:
        """Orders not terminal, or terminal with fills still to record (of ``symbol``)."""
        orders = (self.journal.orders[cid] for cid in self._live)
        return [o for o in orders if symbol is None or o.symbol == symbol]

    def in_flight(self, symbol: str) -> list[dict]:
        """The orders of ``symbol`` not yet terminal, with their unfilled remainder."""
        out = []
        for o in self.live_orders(symbol):
            # a terminal order still counts for fills the venue reported but not yet recorded
            left = (o.filled_qty if o.is_terminal else o.qty) - self.journal.filled.get(
                o.client_order_id, 0.0)
            if left > EPS:
                out.append({"client_order_id": o.client_order_id, "side": o.side,
                            "qty": round(left, 12), "reduce_only": o.reduce_only})
        return out

    # -- sending ---------------------------------------------------------------------------------
    def _queue_send(self, cid: str, now: float) -> None:
        if cid not in self._sends_waiting:
            self._sends_waiting.append(cid)
        self._start_waiting_sends(now)

    def _start_waiting_sends(self, now: float) -> None:
        while self._sends_waiting and self._busy_count(("send",)) < self.s.max_parallel_orders:
            cid = self._sends_waiting.pop(0)
            o = self.journal.orders.get(cid)
            if o is None or o.status != fsm.PENDING or ("send", cid) in self._busy:
                continue
            refusal = self._refusal(o, now, self._decided.get(cid))
            if refusal:
                self._reject(o, refusal, now)
                continue
            if o.attempts >= self.s.max_send_attempts:
                self._reject(o, f"not placed after {o.attempts} attempt(s)", now)
                continue
            o = replace(o, attempts=o.attempts + 1)
            self.journal.put(o)
            self.counts["sent"] += 1
            self._act(Send(o, self.marks.get(o.symbol)))

    def _fire_send(self, cid: str, now: float) -> None:
        self._queue_send(cid, now)

    def _after_send(self, a: Send, outcome, now: float) -> None:
        cid = a.order.client_order_id
        o = self.journal.orders.get(cid)
        if o is None:
            return
        if isinstance(outcome, VenueOrder):
            self._apply_report(outcome, now)
        elif o.status != fsm.PENDING:
            return   # the stream or a query settled it first: an error answer adds nothing
        elif isinstance(outcome, Rejected):
            self._reject(o, _why(outcome), now)
        elif isinstance(outcome, NotSent):
            if getattr(outcome, "local", False):
                # held back by our own limiter: nothing left the process, not an attempt
                o = replace(o, attempts=max(0, o.attempts - 1))
                self.journal.put(o)
            o = self._transition(o, fsm.SEND_FAILED, now, reason=_why(outcome))
            if o.status != fsm.PENDING:
                return
            if cid in self._cancel_wanted:
                self._reject(o, "canceled before it reached the venue", now)
            elif self.stopping or (self.trading.state == tstate.HALTED and not is_flatten(cid)):
                self._reject(o, "broker stopping" if self.stopping else
                             f"trading HALTED: {self.trading.reason or 'kill switch'}", now)
            else:
                self._at("send", cid, max(outcome.retry_at, now + 0.05))
        else:   # Ambiguous, NotFound, any other error: it may have reached the matching engine
            self.counts["unknown"] += 1
            o = self._transition(o, fsm.AMBIGUOUS, now, reason=_why(outcome))
            if o.status == fsm.UNKNOWN:
                self._became_unknown(cid, now)

    def _became_unknown(self, cid: str, now: float, first_query: float | None = None) -> None:
        self._unknown_since.setdefault(cid, now)
        self._query_gap[cid] = self.s.query_min_s
        self._at("query", cid, now + self.s.query_min_s if first_query is None else first_query)

    # -- what the venue says ---------------------------------------------------------------------
    def _apply_report(self, vo: VenueOrder, now: float) -> None:
        cid = vo.client_order_id
        for f in vo.fills:
            self._record_fill(f, now)
        o = self.journal.orders.get(cid)
        if o is None:
            self.log.warning("report_for_unknown_order", client_order_id=cid, status=vo.status)
            return
        if vo.order_id is not None and o.order_id is not None and int(vo.order_id) != o.order_id:
            self._halt(f"two venue orders for client order id {cid} "
                       f"(ids {o.order_id} and {vo.order_id})", now, always=True)
            return
        if vo.executed_qty > o.qty + EPS:
            self._halt(f"overfill: order {cid} reported filled {vo.executed_qty:g} of {o.qty:g}",
                       now, always=True)
        event = fsm.STATUS_EVENT.get(vo.status)
        if event is None:
            return
        late = o.status == fsm.ABANDONED
        if event in (fsm.PARTIAL_FILL, fsm.FILL) or vo.executed_qty > 0:
            o = self._transition(o, event, now, filled_qty=min(vo.executed_qty, o.qty),
                                 avg_price=vo.avg_price, order_id=vo.order_id,
                                 venue_ts=vo.update_time)
        else:
            o = self._transition(o, event, now, order_id=vo.order_id, venue_ts=vo.update_time,
                                 reason=None)
        if late and o.status != fsm.ABANDONED:
            self._late_report(o)
            self._emit_position(o.symbol, "venue")
        if vo.order_id is not None and o.order_id is None:
            o = replace(o, order_id=int(vo.order_id))
            self.journal.put(o)
        if vo.executed_qty - self.journal.filled.get(cid, 0.0) > EPS and o.order_id is not None:
            self._at("trades", cid, now + (0.5 if self.stream_up else 0.0))
        if o.status in fsm.UNRESOLVED:
            self._schedule_query(cid, now)
        if cid in self._cancel_wanted and o.is_open:
            self._at("cancel", cid, now)

    def _record_fill(self, fill: dict, now: float) -> bool:
        """Publish a fill once (by trade id); update the order and the position."""
        symbol, tid = fill["symbol"], fill.get("trade_id")
        if tid is None or self.journal.has_fill(symbol, tid):
            return False
        cid = fill.get("client_order_id") or self.journal.client_id_of(symbol, fill.get("order_id"))
        known = cid is not None and cid in self.journal.orders
        if known:
            o = self.journal.orders[cid]
            if (o.order_id is not None and fill.get("order_id") is not None
                    and int(fill["order_id"]) != o.order_id):
                self._halt(f"two venue orders for client order id {cid} (ids {o.order_id} and "
                           f"{fill['order_id']})", now, always=True)
            elif o.order_id is None and fill.get("order_id") is not None:
                self.journal.put(replace(o, order_id=int(fill["order_id"])))
        fill = {**fill, "client_order_id": cid}
        if known and o.trace is not None:
            fill["trace"] = o.trace
        self._records.append(("fills", fill))
        self.journal.load_fill(fill)
        if known:
            self._track(cid)
        self.counts["fills"] += 1
        self._last_fill_at[symbol] = now
        self.marks[symbol] = float(fill["price"])
        if not known:
            self._emit_position(symbol, "fill")
            self._halt(f"{symbol}: fill {tid} of order {fill.get('order_id')} belongs to no "
                       f"order of this broker", now)
            return True
        o = self.journal.orders[cid]
        done = self.journal.filled.get(cid, 0.0)
        if done > o.qty + EPS:
            self._halt(f"overfill: order {cid} has fills of {done:g}, its quantity is {o.qty:g}",
                       now, always=True)
        event = fsm.FILL if done >= o.qty - EPS else fsm.PARTIAL_FILL
        late = o.status == fsm.ABANDONED
        o = self._transition(o, event, now, filled_qty=min(done, o.qty),
                             order_id=fill.get("order_id"),
                             avg_price=self.journal.avg_fill_price(cid))
        if late:
            self._late_report(o)
        self._emit_position(symbol, "fill")
        return True

    def _late_report(self, o: fsm.Order) -> None:
        """An ABANDONED order turned out to be at the venue: count it and alert."""
        self.counts["late_reports"] += 1
        self.log.error("late_venue_report", client_order_id=o.client_order_id, status=o.status,
                       executed_qty=o.filled_qty,
                       alert="an order presumed never placed was executed by the venue")
        self._alert("late_execution", f"order {o.client_order_id} presumed never placed was "
                    f"executed by the venue ({o.status}, {o.filled_qty:g})", o.client_order_id,
                    symbol=o.symbol)

    # -- lookups ---------------------------------------------------------------------------------
    def _query_soon(self, cid: str, now: float) -> None:
        self._at("query", cid, now)

    def _schedule_query(self, cid: str, now: float) -> None:
        gap = self._query_gap.get(cid, self.s.query_min_s)
        self._query_gap[cid] = min(self.s.query_max_s, gap * 2)
        self._at("query", cid, now + gap)

    def _fire_query(self, cid: str, now: float) -> None:
        o = self.journal.orders.get(cid)
        if o is None or ("query", cid) in self._busy:
            return
        if self._busy_count(LOOKUPS) >= self.s.max_parallel_lookups:
            self._at("query", cid, now + 0.05)
            return
        self._act(Query(o.symbol, cid))

    def _after_query(self, a: Query, outcome, now: float) -> None:
        cid = a.client_order_id
        o = self.journal.orders.get(cid)
        if o is None:
            return
        if isinstance(outcome, GatewayError):
            self._at("query", cid, max(getattr(outcome, "retry_at", 0.0), now + 0.5))
            return
        if outcome is not None:
            self._apply_report(outcome, now)
            o = self.journal.orders[cid]
            if o.status in fsm.UNRESOLVED:
                self._schedule_query(cid, now)
            return
        # the venue does not know the client order id (-2013)
        if o.status == fsm.UNKNOWN:
            since = self._unknown_since.setdefault(cid, now)
            if now - since >= self.s.resolution_window_s:
                self.counts["abandoned"] += 1
                self.log.error("order_abandoned", client_order_id=cid,
                               window_s=self.s.resolution_window_s,
                               alert="ambiguous send never seen at the venue; not sent again")
                self._abandoned_at[cid] = now
                self._transition(o, fsm.GIVE_UP, now,
                                 reason=f"not found at the venue within "
                                        f"{self.s.resolution_window_s:g}s of an ambiguous send")
            else:
                self._schedule_query(cid, now)
        elif o.is_open:
            self.log.warning("open_order_not_found", client_order_id=cid)

    def _fire_trades(self, cid: str, now: float) -> None:
        o = self.journal.orders.get(cid)
        if o is None or self.journal.fill_deficit(cid) <= EPS or ("trades", cid) in self._busy:
            return
        if o.order_id is None:
            self._query_soon(cid, now)
            return
        self._act(FetchTrades(o.symbol, o.order_id, cid))

    def _after_trades(self, a: FetchTrades, outcome, now: float) -> None:
        cid = a.client_order_id
        if isinstance(outcome, GatewayError):
            self._at("trades", cid, max(getattr(outcome, "retry_at", 0.0), now + 0.5))
            return
        for f in sorted(outcome, key=lambda f: f["trade_id"]):
            self._record_fill({**f, "client_order_id": cid}, now)
        if self.journal.fill_deficit(cid) > EPS:
            tries = self._trade_tries[cid] = self._trade_tries.get(cid, 0) + 1
            if tries < 20:
                self._at("trades", cid, now + 0.5)
        else:
            self._trade_tries.pop(cid, None)

    # -- cancels and the kill switch -------------------------------------------------------------
    def _request_cancel(self, o: fsm.Order, reason: str, now: float) -> None:
        cid = o.client_order_id
        if o.is_terminal:
            return
        if o.status == fsm.PENDING and ("send", cid) not in self._busy:
            self._reject(o, reason, now)   # not sent (or provably not processed): never send it
            return
        self._cancel_wanted.add(cid)
        if o.status in fsm.UNRESOLVED:
            return   # resolved first (query / send answer), then canceled
        if not o.cancel_requested:
            self._transition(o, fsm.CANCEL_REQUESTED, now, reason=reason)
        self._at("cancel", cid, now)

    def _fire_cancel(self, cid: str, now: float) -> None:
        o = self.journal.orders.get(cid)
        if o is None or not o.is_open or ("cancel", cid) in self._busy:
            return
        if not o.cancel_requested:
            self._transition(o, fsm.CANCEL_REQUESTED, now, reason="cancel")
        self._act(Cancel(o.symbol, cid))

    def _after_cancel(self, a: Cancel, outcome, now: float) -> None:
        cid = a.client_order_id
        o = self.journal.orders.get(cid)
        if o is None:
            return
        if isinstance(outcome, VenueOrder):
            self._apply_report(outcome, now)
        elif isinstance(outcome, NotFound):
            self._transition(o, fsm.CANCEL_FAILED, now, reason=_why(outcome))
            self._query_soon(cid, now)
        elif isinstance(outcome, NotSent):
            self._at("cancel", cid, max(outcome.retry_at, now + 0.2))
        elif isinstance(outcome, Rejected):
            # refused for good (keys, permissions): say so once; the query keeps the state true
            self.log.error("cancel_refused", client_order_id=cid, error=_why(outcome))
            self._cancel_wanted.discard(cid)
            self._query_soon(cid, now)
        else:
            self._at("query", cid, now + 0.2)
            self._at("cancel", cid, now + 1.0)

    def set_trading(self, st: tstate.TradingState, now: float) -> None:
        """The kill switch file changed (or was read for the first time)."""
        if st.state != self.trading.state:
            self.log.warning("trading_state", state=st.state, reason=st.reason, by=st.by)
            if st.state == tstate.HALTED and st.by != "broker":   # the broker's own: in _halt
                self._alert("halted", f"trading HALTED by {st.by or '?'}: {st.reason or '-'}",
                            st.reason[:80], reason=st.reason, by=st.by, flatten=st.flatten)
            if st.state != tstate.HALTED:
                self._cancel_wanted -= self._halt_cancels   # resumed: keep what was found open
                self._halt_cancels.clear()
        self.trading = st
        if st.flatten and (self.flatten is None or self.flatten["since"] != st.since):
            self.log.warning("flatten", reason=st.reason, by=st.by)
            self.flatten = {"since": st.since, "state": "running", "rounds": 0, "sent": {},
                            "left": {}}
            self._at("flatten", "all", now)
        elif not st.flatten and self.flatten is not None and self.flatten["state"] == "running":
            self.flatten["state"] = "stopped"   # resumed (or HALTED without flatten) meanwhile
        self._enforce_kill_switch(now)

    def _enforce_kill_switch(self, now: float) -> None:
        if self.trading.state != tstate.HALTED:
            return
        for o in self.live_orders():
            cid = o.client_order_id
            if o.is_terminal or is_flatten(cid) or is_stop_id(cid):
                continue
            if o.is_open and not o.cancel_requested:
                self._request_cancel(o, "kill switch: trading HALTED", now)
            elif o.status == fsm.PENDING and ("send", cid) not in self._busy:
                self._reject(o, f"trading HALTED: {self.trading.reason or 'kill switch'}", now)
            elif o.status in fsm.UNRESOLVED and cid not in self._cancel_wanted:
                self._cancel_wanted.add(cid)
                self._halt_cancels.add(cid)

    def _halt(self, reason: str, now: float, always: bool = False) -> None:
        """HALTED with ``reason``; a difference with the venue only with ``halt_on_mismatch``,
        an overfill or a doubled order (``always``) in any case."""
        self.counts["halts"] += 1
        self.log.error("halt", reason=reason[:900])
        if not (always or self.s.halt_on_mismatch):
            return
        if self.trading.state == tstate.HALTED and self._halted_by_me == reason:
            return
        self._halted_by_me = reason
        self.trading = tstate.TradingState(tstate.HALTED, reason[:900], now, "broker")
        self._alert("halted", f"trading HALTED by the broker: {reason[:300]}", reason[:80],
                    reason=reason[:900])
        self._actions.append(Halt(reason[:900]))
        self._enforce_kill_switch(now)

    # -- order timeouts --------------------------------------------------------------------------
    def _schedule_expiry(self, o: fsm.Order) -> None:
        ttl = self.s.order_timeout_s
        if ttl > 0 and o.order_type == "LIMIT" and o.intent_ts:
            self._at("expire", o.client_order_id, o.intent_ts / 1000.0 + ttl)

    def _fire_expire(self, cid: str, now: float) -> None:
        o = self.journal.orders.get(cid)
        if o is not None and o.is_open and not o.cancel_requested:
            self._request_cancel(o, f"order timeout ({self.s.order_timeout_s:g}s)", now)

    # -- periodic venue checks -------------------------------------------------------------------
    def _fire_poll(self, _key: str, now: float) -> None:
        """REST view of our open orders (the user stream's fallback and safety net)."""
        self._every("poll", self.s.poll_interval_s * (10 if self.stream_up else 1), now)
        for symbol in sorted({o.symbol for o in self.live_orders() if o.is_open}):
            if ("open_orders", symbol) not in self._busy:
                self._act(FetchOpenOrders(symbol))

    def _after_open_orders(self, a: FetchOpenOrders, outcome, now: float) -> None:
        if isinstance(outcome, GatewayError):
            self._at("poll", "all", now + 0.5)
            return
        venue = {vo.client_order_id: vo for vo in outcome}
        for o in self.live_orders(a.symbol):
            if not o.is_open:
                continue
            vo = venue.get(o.client_order_id)
            if vo is None:
                self._query_soon(o.client_order_id, now)   # closed while unseen
            elif vo.status != o.status or vo.executed_qty > o.filled_qty + EPS:
                self._apply_report(vo, now)
        foreign = []
        for cid, vo in venue.items():
            o = self.journal.orders.get(cid)
            if self._from_stop(vo):
                self._adopt(vo.symbol, cid, vo.side, vo.qty, vo.order_id, now)
                self._apply_report(vo, now)
            elif o is None:
                foreign.append(f"{a.symbol}: open order {cid} (id {vo.order_id}) at the venue "
                               f"is not in the journal")
            elif o.status in (fsm.UNKNOWN, fsm.ABANDONED):
                self._apply_report(vo, now)
        if foreign:
            self._reconciliation_problem(a.symbol, "; ".join(foreign), now)

    def _fire_venue(self, _key: str, now: float) -> None:
        self._every("venue", self.s.position_check_s, now)
        if ("positions", "all") not in self._busy:
            self._act(FetchPositions(tuple(self.s.symbols)))
        # an abandoned order executed late nets out of the position check: look for it
        watched = set()
        for cid, at in list(self._abandoned_at.items()):
            o = self.journal.orders.get(cid)
            if o is None or o.status != fsm.ABANDONED or now - at > self.s.late_watch_s:
                del self._abandoned_at[cid]
            else:
                watched.add(o.symbol)
        for symbol in sorted(watched):
            if ("all_orders", symbol) not in self._busy:
                self._act(FetchOrders(symbol))

    # -- flatten ---------------------------------------------------------------------------------
    def _fire_flatten(self, _key: str, now: float) -> None:
        """Once no order of ours is live (the kill switch cancels them), read the positions."""
        f = self.flatten
        if f is None or f["state"] != "running" or self.stopping:
            return
        if any(not o.is_terminal or self.journal.fill_deficit(o.client_order_id) > EPS
               for o in self.live_orders()):
            self._at("flatten", "all", now + 0.2)
            return
        if ("positions", "flatten") not in self._busy:
            self._act(FetchPositions(tuple(self.s.symbols), purpose="flatten"))

    def _after_flatten(self, outcome, now: float) -> None:
        f = self.flatten
        if f is None or f["state"] != "running":
            return
        if isinstance(outcome, GatewayError):
            self._at("flatten", "all", now + 1.0)
            return
        left = {}
        for p in outcome:
            qty = float(p.get("qty") or 0.0)
            if p.get("symbol") in self.s.symbols and abs(qty) > QTY_TOLERANCE:
                left[p["symbol"]] = qty
        f["left"] = left
        if not left:
            f["state"] = "done"
            self.log.warning("flatten_done", sent=f["sent"], rounds=f["rounds"])
            return
        if f["rounds"] >= FLATTEN_ROUNDS:
            f["state"] = "failed"
            self.log.error("flatten_failed", left=left, sent=f["sent"],
                           alert="positions still open after flattening")
            return
        f["rounds"] += 1
        for symbol, qty in sorted(left.items()):
            cid = f"{FLATTEN_PREFIX}{int(now * 1000) % 10**10}-{f['rounds']}-{symbol[:12]}"
            order = fsm.Order(client_order_id=cid, symbol=symbol, side="SELL" if qty > 0 else "BUY",
                              qty=abs(qty), order_type="MARKET", reduce_only=True,
                              intent_ts=int(now * 1000))
            self._transition(order, fsm.INTENT, now)
            f["sent"][cid] = {"symbol": symbol, "side": order.side, "qty": order.qty}
            self._queue_send(cid, now)
        self._at("flatten", "all", now + 0.2)   # read again once they are done

    # -- funding ---------------------------------------------------------------------------------
    def _note_funding(self, rec: dict) -> None:
        tid, t = rec.get("tran_id"), rec.get("time_ms")
        if isinstance(tid, int):
            if tid in self._funding_ids:
                return
            self._funding_ids.add(tid)
        amount, symbol = rec.get("amount"), rec.get("symbol")
        if isinstance(symbol, str) and isinstance(amount, (int, float)):
            self.journal.book.get(symbol).funding += float(amount)
        if isinstance(t, int) and (self._funding_since is None or t > self._funding_since):
            self._funding_since = t

    def _fire_funding(self, _key: str, now: float) -> None:
        self._every("funding", FUNDING_CHECK_S, now)
        if ("funding", "all") not in self._busy:
            since = self._funding_since
            if since is None and self.journal.first_ts:
                since = self.journal.first_ts - 60_000   # the broker's own history
            self._act(FetchFunding(since))

    def _after_funding(self, a: FetchFunding, outcome, now: float) -> None:
        if isinstance(outcome, GatewayError):
            self._at("funding", "all", now + 5.0)
            return
        for rec in outcome:
            if rec["tran_id"] in self._funding_ids or rec["symbol"] not in self.s.symbols:
                continue
            self._note_funding(rec)
            self._records.append(("funding", rec))
            self.counts["funding"] += 1
            self._emit_position(rec["symbol"], "funding")

    def _fire_deadman(self, _key: str, now: float) -> None:
        """Refresh every symbol's countdown (a third of it, so two refreshes may fail)."""
        self._every("deadman", self.s.deadman_ms / 3000.0, now)
        for symbol in self.s.symbols:
            if ("countdown", symbol) not in self._busy:
                self._act(Countdown(symbol, self.s.deadman_ms))

    def _after_countdown(self, a: Countdown, outcome, now: float) -> None:
        if isinstance(outcome, GatewayError):
            if a.symbol not in self._deadman_failing:
                self.log.warning("deadman_refresh_failed", symbol=a.symbol, error=str(outcome),
                                 alert="the venue may cancel our open orders")
            self._deadman_failing.add(a.symbol)
            self._at("deadman", "all", now + 1.0)   # sooner than the next regular refresh
            return
        if a.symbol in self._deadman_failing:
            self._deadman_failing.discard(a.symbol)
            self.log.info("deadman_refresh_ok", symbol=a.symbol)
        self.deadman_at[a.symbol] = now

    def _after_positions(self, a: FetchPositions, outcome, now: float) -> None:
        if a.purpose == "flatten":
            self._after_flatten(outcome, now)
            return
        if isinstance(outcome, GatewayError):
            return
        venue = {p["symbol"]: p for p in outcome}
        for symbol in self.s.symbols:
            p = venue.get(symbol) or {"qty": 0.0}
            vq = float(p.get("qty") or 0.0)
            if p.get("mark_price"):
                self.marks[symbol] = float(p["mark_price"])
            mine = self.journal.book.get(symbol).qty
            # orders unresolved, or with fills still to fetch: the venue may be ahead (a resting
            # order is known; if it filled unseen, the allOrders look below explains it)
            busy = now - self._last_fill_at.get(symbol, 0.0) < 1.0 or any(
                o.status in fsm.UNRESOLVED or self.journal.fill_deficit(o.client_order_id) > EPS
                for o in self.live_orders(symbol))
            suspect = self._mismatch.get(symbol)
            if abs(vq - mine) <= QTY_TOLERANCE or busy:
                self._mismatch.pop(symbol, None)
            elif suspect is not None and suspect[0] == vq and suspect[1] == "looked":
                # the same venue position after allOrders and their fills were looked at
                self._halt(f"{symbol}: venue position {vq:g} differs from the broker's "
                           f"{mine:g} (unexplained)", now)
            elif suspect is None or suspect[0] != vq:
                # maybe fills or a late order we have not seen: look before judging
                self.log.warning("position_differs", symbol=symbol, venue=vq, journal=mine)
                self._mismatch[symbol] = (vq, "looking")
                if ("all_orders", symbol) not in self._busy:
                    self._act(FetchOrders(symbol))
            self._emit_position(symbol, "venue", venue_qty=vq)

    def _after_all_orders(self, a: FetchOrders, outcome, now: float) -> None:
        if isinstance(outcome, GatewayError):
            if self._mismatch.get(a.symbol, (None, ""))[1] == "looking":
                del self._mismatch[a.symbol]   # look again at the next check
            return
        problems = self._duplicates(a.symbol, outcome)
        if problems:
            self._halt("; ".join(problems), now, always=True)
        suspect = self._mismatch.get(a.symbol)
        if suspect is not None and suspect[1] == "looking":
            # judge again once the fills this reveals had time to be fetched
            self._mismatch[a.symbol] = (suspect[0], "looked")
            self._at("venue", "all", now + 1.0)
        for vo in outcome:
            if self._from_stop(vo):
                self._adopt(vo.symbol, vo.client_order_id, vo.side, vo.qty, vo.order_id, now)
            o = self.journal.orders.get(vo.client_order_id)
            if o is not None and (o.status in (fsm.UNKNOWN, fsm.ABANDONED)
                                  or vo.executed_qty > self.journal.filled.get(o.client_order_id, 0) + EPS):
                self._apply_report(vo, now)

    def _duplicates(self, symbol: str, rows) -> list[str]:
        ids: dict[str, set] = {}
        for vo in rows:
            if vo.client_order_id in self.journal.orders and vo.order_id is not None:
                ids.setdefault(vo.client_order_id, set()).add(int(vo.order_id))
        return [f"{symbol}: two venue orders for client order id {cid} (ids "
                f"{', '.join(str(i) for i in sorted(v))})" for cid, v in ids.items() if len(v) > 1]

    # -- marks -----------------------------------------------------------------------------------
    def on_mark(self, symbol: str, price: float, now: float) -> None:
        """The venue's mark price (the ``markPrice`` stream): unrealized PnL is counted at it;
        a ``positions`` record (cause ``mark``) at most every :data:`MARK_RECORD_S` while a
        position is open, so the report and the strategy's loss limits see it move."""
        if symbol not in self.s.symbols or not price > 0:
            return
        self.marks[symbol] = price
        if abs(self.journal.book.get(symbol).qty) > EPS and \
                now - self._mark_emitted.get(symbol, 0.0) >= MARK_RECORD_S:
            self._mark_emitted[symbol] = now
            self._emit_position(symbol, "mark")

    # -- protective stops ------------------------------------------------------------------------
    def _protect(self, now: float) -> None:
        """Hand out what the protection core wants done (nothing new while stopping)."""
        p = self.protection
        if not p.on or self.stopping:
            return
        for symbol in self.s.symbols:
            for action in p.plan(symbol, now):
                self._act(action)
        self._protection_records()
        due = p.retry_due()
        if due is not None and due > now:
            self._at("protect", "all", due)

    def _fire_protect(self, _key: str, now: float) -> None:
        self._protect(now)

    def _after_place_stop(self, a: PlaceStop, outcome, now: float) -> None:
        why = self.protection.after(a, outcome, now, self.marks.get(a.symbol))
        if why:
            self.log.error("protective_stop_refused", symbol=a.symbol, side=a.side,
                           trigger_price=a.trigger_price, error=why)
        self._protection_records()

    def _after_cancel_stop(self, a: CancelStop, outcome, now: float) -> None:
        self.protection.after(a, outcome, now)
        self._protection_records()

    def _after_stops(self, a: FetchStops, outcome, now: float) -> None:
        self.protection.after(a, outcome, now)
        self._protection_records()
        if not isinstance(outcome, GatewayError):
            problems = self._foreign_stops(a.symbol)
            if problems:
                self._reconciliation_problem(a.symbol, "; ".join(problems), now)

    def _foreign_stops(self, symbol: str) -> list[str]:
        return [f"{symbol}: open algo order {v.client_algo_id} (id {v.algo_id}, {v.order_type} "
                f"{v.side} at {v.trigger_price:g}) at the venue is not ours"
                for v in self.protection.foreign.get(symbol, ())]

    def _stops_fired(self, now: float) -> None:
        """Adopt the orders of triggered stops (their fills are ours) and alert."""
        for v in self.protection.take_triggered():
            p = self.journal.book.get(v.symbol)
            if v.client_algo_id not in self.journal.orders:
                self._adopt(v.symbol, v.client_algo_id, v.side, abs(p.qty), v.order_id, now)
            self._alert("stop_triggered", f"{v.symbol}: protective stop {v.client_algo_id} "
                        f"triggered at {v.trigger_price:g}, closing the position of {p.qty:g}",
                        v.client_algo_id, symbol=v.symbol, trigger_price=v.trigger_price,
                        position_qty=p.qty, order_id=v.order_id)
        self._protection_records()

    def _protection_records(self) -> None:
        for rec in self.protection.take_records():
            self._records.append(("protection", rec))
            if rec["event"] == "stuck":
                self._alert("stop_triggered", f"{rec['symbol']}: protective stop "
                            f"{rec['client_algo_id']} fired but the position of "
                            f"{rec['position_qty']:g} is still open; placing a new stop",
                            f"{rec['client_algo_id']}-stuck", symbol=rec["symbol"])

    def _adopt(self, symbol: str, cid: str, side: str, qty: float, order_id, now: float) -> None:
        """An order the venue placed for one of our stops: journaled as ours (reduce-only
        MARKET), so its reports and fills are applied like any other order's."""
        if cid in self.journal.orders or symbol not in self.s.symbols:
            return
        o = fsm.Order(client_order_id=cid, symbol=symbol, side=side,
                      qty=qty if qty > EPS else abs(self.journal.book.get(symbol).qty) or EPS,
                      order_type="MARKET", reduce_only=True, intent_ts=int(now * 1000))
        o = self._transition(o, fsm.INTENT, now)
        if order_id is not None:
            self.journal.put(replace(o, order_id=int(order_id)))
        self.log.warning("stop_order_adopted", symbol=symbol, client_order_id=cid,
                         order_id=order_id, qty=o.qty)

    def _from_stop(self, vo: VenueOrder) -> bool:
        """Is this venue order, unknown to the journal, one a protective stop of ours placed?
        By its client order id (our stops' prefix: the venue names the order after the stop) or
        by its fields (placed as a closePosition STOP_MARKET) when the venue names it itself."""
        if vo.client_order_id in self.journal.orders or vo.symbol not in self.s.symbols:
            return False
        return is_stop_id(vo.client_order_id) or (
            self.protection.on and vo.close_position and vo.orig_type == "STOP_MARKET")

    def _own_id(self, symbol: str, cid: str, order_id) -> str:
        """Our client id of a venue order: its own, or the stop's whose trigger placed it."""
        if cid in self.journal.orders or order_id is None:
            return cid
        return self.journal.client_id_of(symbol, order_id) or cid

    # -- runtime reconciliation ------------------------------------------------------------------
    def _fire_reconcile(self, _key: str, now: float) -> None:
        """Read back every symbol's open orders and open algo orders (the stops), and the
        wallet balance."""
        self._every("reconcile", self.s.reconcile_interval_s, now)
        self._fire_wallet("all", now)
        for symbol in self.s.symbols:
            if ("open_orders", symbol) not in self._busy:
                self._act(FetchOpenOrders(symbol))
            if self.protection.on:
                self.protection.symbols[symbol].unsure = True   # fetched at the next plan
            elif ("stops", symbol) not in self._busy:
                self._act(FetchStops(symbol))

    def journal_money(self) -> float:
        """What the journal says the wallet gained: realized - fees + funding, every symbol."""
        return sum(p.realized_pnl - p.fees + p.funding
                   for p in self.journal.book.positions.values())

    def _fire_wallet(self, _key: str, now: float) -> None:
        if self.wallet.started and ("wallet", "all") not in self._busy:
            self._act(FetchWallet(self.wallet.read_from_ms()))

    def _after_wallet(self, a: FetchWallet, outcome, now: float) -> None:
        """The wallet check (:mod:`.wallet`): a problem halts trading with the reason."""
        if isinstance(outcome, GatewayError) or not self.wallet.started:
            return
        balance, rows, updated_ms = outcome
        v = self.wallet.judge(balance, rows, updated_ms, self.journal_money(),
                              self._journal_has, now)
        if v.pending_funding and self.s.remote:
            self._fire_funding("check", now)    # a payment the journal has not read yet
        if v.problem:
            self._reconciliation_problem("wallet", v.problem, now)
        elif v.recheck:
            self.log.warning("wallet_differs", balance=balance, unexplained=round(v.unexplained, 8))
            self._every("wallet", RECHECK_S, now)

    def _journal_has(self, row: dict) -> bool:
        """Does the journal hold this income row of one of our symbols (a funding payment by
        its tranId, a fill's realized PnL or commission by its trade id)?"""
        if row.get("incomeType") == "FUNDING_FEE":
            return row.get("tranId") in self._funding_ids
        try:
            return self.journal.has_fill(row["symbol"], int(row.get("tradeId")))
        except (KeyError, TypeError, ValueError):
            return False

    def _reconciliation_problem(self, subject: str, problem: str, now: float) -> None:
        self._alert("reconciliation", f"reconciliation: {problem}", subject, problem=problem)
        self._halt(f"broker reconciliation: {problem}", now)

    def _alert(self, kind: str, message: str, subject: str = "", **fields) -> None:
        """An alert for the shell's alerter (which sends the same kind and subject at most
        once per ``alerts.repeat_s``)."""
        self._records.append(("alerts", {"kind": kind, "message": message, "subject": subject,
                                         **fields}))

    # -- answers and the stream ------------------------------------------------------------------
    def on_result(self, action, outcome, now: float) -> None:
        """The answer to an action: a report / list / None, or the :class:`GatewayError`."""
        self._busy.discard((action.kind, action.key))
        if isinstance(outcome, Exception) and not isinstance(outcome, GatewayError):
            outcome = Ambiguous(f"{type(outcome).__name__}: {outcome}")
        if isinstance(outcome, Banned):
            self._alert("banned", f"the venue banned this IP (418) until "
                        f"{outcome.retry_at:.0f}: {outcome}", "ip", retry_at=outcome.retry_at)
        getattr(self, f"_after_{action.kind}")(action, outcome, now)
        self._start_waiting_sends(now)
        self._protect(now)

    def on_stream_event(self, ev: dict, now: float) -> None:
        if is_funding_update(ev) and self.s.remote:
            self._at("funding", "all", now + 0.5)   # /fapi/v1/income says which symbol paid
            return
        kind = ev.get("e")
        if kind == "ALGO_UPDATE":
            try:
                v = parse_algo_update(ev)
            except (KeyError, TypeError, ValueError):
                return
            self.protection.on_update(v, now)
            self._stops_fired(now)
            self._protect(now)
            return
        if kind != "ORDER_TRADE_UPDATE":
            return
        try:
            vo, fill = parse_order_update(ev)
        except (KeyError, TypeError, ValueError):
            return
        cid = self._own_id(vo.symbol, vo.client_order_id, vo.order_id)
        if cid != vo.client_order_id:
            vo = replace(vo, client_order_id=cid)
            fill = fill and {**fill, "client_order_id": cid}
        elif self._from_stop(vo):
            self._adopt(vo.symbol, cid, vo.side, vo.qty, vo.order_id, now)
        if fill is not None:
            self._record_fill(fill, now)
        if vo.client_order_id in self.journal.orders:
            self._apply_report(vo, now)
        self._protect(now)

    def on_stream_state(self, up: bool, now: float) -> None:
        self.stream_up = up
        if self.s.remote:
            self._at("poll", "all", now)   # catch up on what the stream may have missed

    # -- stopping --------------------------------------------------------------------------------
    def begin_stop(self, now: float) -> None:
        """Nothing new is sent; every active order is looked up once more."""
        self.stopping = True
        self._sends_waiting.clear()
        for o in self.journal.unresolved():
            if o.status == fsm.PENDING and ("send", o.client_order_id) not in self._busy:
                self._reject(o, "broker stopping", now)   # waiting or due for a retry: never sent
        if self.s.remote:
            for o in self.live_orders():
                if not o.is_terminal:
                    self._query_soon(o.client_order_id, now)

    def unsettled(self) -> list[str]:
        """Client ids still to resolve (looked up or sent) or with fills not yet recorded."""
        if not self.s.remote:
            return []
        busy = {key for kind, key in self._busy if kind in ("send", "query", "trades")}
        return sorted(busy | {o.client_order_id for o in self.live_orders()
                              if o.status in fsm.UNRESOLVED
                              or self.journal.fill_deficit(o.client_order_id) > EPS})

    def settle_step(self, now: float) -> None:
        """While stopping: only lookups fire (queries and trades)."""
        while self._heap and self._heap[0][0] <= now:
            due, kind, key = heapq.heappop(self._heap)
            if self._due.get((kind, key)) != due:
                continue
            del self._due[(kind, key)]
            if kind in ("query", "trades"):
                getattr(self, f"_fire_{kind}")(key, now)

    def health(self) -> dict:
        live = self.live_orders()
        return {"orders_active": sum(1 for o in live if not o.is_terminal),
                "unknown": sum(1 for o in live if o.status == fsm.UNKNOWN),
                "in_flight_requests": len(self._busy), "sends_waiting": len(self._sends_waiting),
                "counts": {**self.counts, "wallet_checks": self.wallet.checks},
                "deadman_refreshed": {s: round(t, 3) for s, t in self.deadman_at.items()},
                "flatten": self.flatten,
                "protection": self.protection.health() if self.protection.on else None}


def is_flatten(client_order_id: str) -> bool:
    """Is this one of the orders that close positions while HALTED (``ofi flatten``)?"""
    return client_order_id.startswith(FLATTEN_PREFIX)


def order_from_intent(rec: dict) -> fsm.Order:
    """The order an ``intent`` record asks for; :class:`BadRecord` when it is malformed."""
    def bad(why):
        raise BadRecord(f"intent: {why}")
    symbol = rec.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        bad("missing symbol")
    side = rec.get("side")
    if side not in ("BUY", "SELL"):
        bad(f"side must be BUY or SELL, not {side!r}")
    qty = rec.get("qty")
    if type(qty) not in (int, float) or not math.isfinite(qty) or qty <= 0:
        bad(f"qty must be a positive number, not {qty!r}")
    otype = rec.get("order_type") or "MARKET"
    if otype not in ("MARKET", "LIMIT"):
        bad(f"order_type must be MARKET or LIMIT, not {otype!r}")
    price = rec.get("price")
    if otype == "LIMIT" and (type(price) not in (int, float) or not math.isfinite(price)
                             or price <= 0):
        bad(f"a LIMIT intent needs a positive price, not {price!r}")
    cid = rec.get("client_order_id") or f"ofi-i{rec.get('seq')}-{rec.get('ts')}"
    if not isinstance(cid, str) or not CLIENT_ID_RE.match(cid):
        bad(f"client_order_id {cid!r} does not match ^[.A-Z:/a-z0-9_-]{{1,36}}$")
    return fsm.Order(client_order_id=cid, symbol=symbol, side=side, qty=float(qty),
                     price=float(price) if otype == "LIMIT" else None, order_type=otype,
                     reduce_only=bool(rec.get("reduce_only", False)),
                     intent_seq=rec.get("seq"), intent_ts=rec.get("ts"),
                     trace=_trace_of(rec))


def _trace_of(rec: dict) -> dict | None:
    """An intent's latency trace with the intent's own time (``strategy``) in it."""
    trace = rec.get("trace")
    if not isinstance(trace, dict):
        return None
    return {**trace, "intent": rec.get("ts")}


def _decision_ms(rec: dict) -> int | None:
    """When the decision behind an intent was made: its signal's time (exchange ms)."""
    for key in ("decision_ms", "bucket_ms"):
        v = rec.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _why(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    msg = getattr(exc, "msg", str(exc))
    return f"{code}: {msg}" if code is not None else str(msg)


class _NoLog:
    def __getattr__(self, _name):
        return lambda *a, **k: None
