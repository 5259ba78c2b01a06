"""A scripted in-process venue and a fake clock around the pure order manager.

:class:`ScriptedVenue` keeps orders by order id the way Binance does (a client order id is
refused only while an order with it is open), fills MARKET orders at once at ``price`` and
LIMIT orders when told. Each send can be scripted: answered at once, rejected, refused before
processing (NotSent), or answered ambiguously and then executed ``late_s`` later or never.
:class:`Harness` runs the manager's actions against it on a fake clock, delivering answers after
their latency, and optionally the user stream's events.
"""
from __future__ import annotations

import heapq
import itertools

from daemons.broker import orders as fsm
from daemons.broker.binance.errors import Ambiguous, NotFound, NotSent, Rejected
from daemons.broker.binance.schemas import VenueOrder, VenueStop
from daemons.broker.manager import (Cancel, Countdown, FetchFunding, FetchOpenOrders,
                                    FetchOrders, FetchPositions, FetchTrades, FetchWallet, Halt,
                                    OrderManager, Query, Send, Settings)
from daemons.broker.protection import CancelStop, FetchStops, PlaceStop
from daemons import trading as tstate

SYMBOL = "BTCUSDT"


def _fail(exc: Exception):
    def raise_it():
        raise exc
    return raise_it


class ScriptedVenue:
    def __init__(self, price: float = 100.0):
        self.price = price
        self.orders: dict[int, dict] = {}
        self.trades: list[dict] = []
        self.ids = itertools.count(1)
        self.tids = itertools.count(1)
        self.listeners = []          # callables(event) for ORDER_TRADE_UPDATE
        self.countdowns: dict[str, float] = {}   # symbol -> when the dead-man switch fires
        self.funding: list[dict] = []            # ``funding`` payloads, as /fapi/v1/income
        self.algos: dict[str, dict] = {}         # client algo id -> STOP_MARKET closePosition
        self.algo_ids = itertools.count(9001)
        self.triggered_cid = None                # a function(algo) -> the triggered order's cid
        self.algo_events_last = False            # the order's events before the ALGO_UPDATEs
        self.stuck = False                       # a trigger stays TRIGGERING, no order placed
        self.wallet = 1000.0                     # USDT wallet balance (fills here: no fee, no PnL)
        self.income: list[dict] = []             # /fapi/v1/income rows that are not fills

    # -- the matching engine -----------------------------------------------------------------
    def place(self, o: fsm.Order, now: float) -> VenueOrder:
        for row in self.orders.values():
            if row["cid"] == o.client_order_id and row["status"] in ("NEW", "PARTIALLY_FILLED"):
                raise Rejected("Duplicate clientOrderId", -4015, 400)
        oid = next(self.ids)
        row = {"id": oid, "cid": o.client_order_id, "symbol": o.symbol, "side": o.side,
               "qty": o.qty, "type": o.order_type, "price": o.price, "status": "NEW",
               "filled": 0.0, "t": int(now * 1000)}
        self.orders[oid] = row
        self._event(row, None)
        if o.order_type == "MARKET":
            self.fill(oid, o.qty, now)
        return self.report(oid)

    def fill(self, oid: int, qty: float, now: float) -> dict:
        row = self.orders[oid]
        qty = min(qty, row["qty"] - row["filled"])
        row["filled"] += qty
        row["status"] = "FILLED" if row["filled"] >= row["qty"] - 1e-12 else "PARTIALLY_FILLED"
        t = {"type": "fill", "symbol": row["symbol"], "client_order_id": None, "order_id": oid,
             "trade_id": next(self.tids), "side": row["side"], "qty": qty, "price": self.price,
             "fee": 0.0, "fee_asset": "USDT", "realized_pnl": 0.0, "maker": False,
             "T": int(now * 1000)}
        self.trades.append(t)
        self._event(row, t)
        return t

    def cancel_order(self, cid: str, now: float) -> VenueOrder:
        row = self._open_by_cid(cid)
        if row is None:
            raise NotFound("Unknown order sent.", -2011, 400)
        row["status"] = "CANCELED"
        self._event(row, None)
        return self.report(row["id"])

    def _open_by_cid(self, cid):
        for row in self.orders.values():
            if row["cid"] == cid and row["status"] in ("NEW", "PARTIALLY_FILLED"):
                return row
        return None

    def _event(self, row: dict, trade: dict | None) -> None:
        o = {"s": row["symbol"], "c": row["cid"], "S": row["side"], "o": row["type"],
             "q": str(row["qty"]), "p": str(row["price"] or 0), "X": row["status"],
             "i": row["id"], "z": str(row["filled"]), "ap": str(self.price), "T": row["t"],
             "x": "TRADE" if trade else row["status"], "ot": row.get("ot", row["type"]),
             "cp": row.get("cp", False)}
        if trade:
            o.update(l=str(trade["qty"]), L=str(trade["price"]), t=trade["trade_id"], n="0",
                     N="USDT", rp="0", m=False)
        ev = {"e": "ORDER_TRADE_UPDATE", "T": row["t"], "o": o}
        for cb in self.listeners:
            cb(ev)

    # -- algo orders (protective stops) -------------------------------------------------------
    def place_algo(self, side: str, trigger: float, cid: str, now: float,
                   symbol: str = SYMBOL) -> VenueStop:
        if any(a["cid"] == cid and a["status"] == "NEW" for a in self.algos.values()):
            raise Rejected("Duplicate clientAlgoId", -4015, 400)
        if self._hit(side, trigger):
            raise Rejected("Order would immediately trigger.", -2021, 400)
        a = {"cid": cid, "id": next(self.algo_ids), "symbol": symbol, "side": side,
             "trigger": trigger, "status": "NEW", "order_id": None}
        self.algos[cid] = a
        self._algo_event(a, now)
        return self.stop_report(a)

    def cancel_algo(self, cid: str, now: float) -> None:
        a = self.algos.get(cid)
        if a is None or a["status"] != "NEW":
            raise NotFound("Unknown order sent.", -2011, 400)
        a["status"] = "CANCELED"
        self._algo_event(a, now)

    def open_algos(self) -> list[VenueStop]:
        return [self.stop_report(a) for a in self.algos.values() if a["status"] == "NEW"]

    def stop_report(self, a: dict) -> VenueStop:
        return VenueStop(a["cid"], a["id"], a["symbol"], a["side"], a["status"], "STOP_MARKET",
                         a["trigger"], True, a["order_id"])

    def _hit(self, side: str, trigger: float) -> bool:
        return self.price <= trigger if side == "SELL" else self.price >= trigger

    def move(self, price: float, now: float) -> None:
        """The mark moves to ``price``: stops it crosses trigger and close the position."""
        self.price = price
        for a in list(self.algos.values()):
            if a["status"] == "NEW" and self._hit(a["side"], a["trigger"]):
                a["status"] = "TRIGGERING"
                self._algo_event(a, now)
                if self.stuck:
                    continue
                pos = self.position(a["symbol"])
                qty = abs(pos) if pos and (pos > 0) == (a["side"] == "SELL") else 0.0
                if qty <= 0:
                    a["status"] = "REJECTED"
                    self._algo_event(a, now)
                    continue
                cid = self.triggered_cid(a) if self.triggered_cid else a["cid"]
                oid = next(self.ids)
                row = {"id": oid, "cid": cid, "symbol": a["symbol"], "side": a["side"],
                       "qty": qty, "type": "MARKET", "price": None, "status": "NEW",
                       "filled": 0.0, "t": int(now * 1000), "ot": "STOP_MARKET", "cp": True}
                self.orders[oid] = row
                a["status"], a["order_id"] = "TRIGGERED", oid
                if not self.algo_events_last:
                    self._algo_event(a, now)
                self._event(row, None)
                self.fill(oid, qty, now)
                if self.algo_events_last:
                    self._algo_event(a, now)
                a["status"] = "FINISHED"
                self._algo_event(a, now)

    def _algo_event(self, a: dict, now: float) -> None:
        o = {"caid": a["cid"], "aid": a["id"], "at": "CONDITIONAL", "o": "STOP_MARKET",
             "s": a["symbol"], "S": a["side"], "X": a["status"], "tp": str(a["trigger"]),
             "cp": True, "ai": str(a["order_id"]) if a["order_id"] else ""}
        ev = {"e": "ALGO_UPDATE", "T": int(now * 1000), "o": o}
        for cb in self.listeners:
            cb(ev)

    # -- lookups -----------------------------------------------------------------------------
    def report(self, oid: int) -> VenueOrder:
        r = self.orders[oid]
        return VenueOrder(r["cid"], oid, r["symbol"], r["side"], r["status"], r["qty"],
                          r["price"], r["filled"], self.price if r["filled"] else None,
                          r["type"], False, r["t"])

    def query(self, cid: str) -> VenueOrder | None:
        ids = [oid for oid, r in self.orders.items() if r["cid"] == cid]
        return self.report(ids[-1]) if ids else None

    def position(self, symbol: str = SYMBOL) -> float:
        return round(sum(t["qty"] if t["side"] == "BUY" else -t["qty"] for t in self.trades
                         if t["symbol"] == symbol), 12)

    def venue_orders_per_cid(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.orders.values():
            out[r["cid"]] = out.get(r["cid"], 0) + 1
        return out


def manager_settings(**over) -> Settings:
    """The order manager's settings for a test: what a unit test expects unless it says
    otherwise (no dead-man switch, no protective stops, reconciliation at start only)."""
    base = dict(symbols=(SYMBOL,), max_send_attempts=3, max_parallel_orders=8,
                intent_ttl_s=5.0, resolution_window_s=60.0, order_timeout_s=0.0,
                poll_interval_s=2.0, position_check_s=10.0, deadman_ms=0,
                halt_on_mismatch=True, remote=True, protective_stop_bps=0.0,
                reconcile_interval_s=0.0)
    return Settings(**{**base, **over})


class Harness:
    """The manager, the venue and a fake clock; answers arrive after ``latency_s``."""

    def __init__(self, venue: ScriptedVenue | None = None, stream: bool = True,
                 latency_s: float = 0.01, now: float = 1_000_000.0, rng=None,
                 jitter_s: float = 0.0, dup_events: float = 0.0, **settings):
        self.venue = venue or ScriptedVenue()
        self.rng = rng                # with jitter_s: stream events and answers reorder
        self.jitter_s = jitter_s
        self.dup_events = dup_events  # chance that a stream event is delivered twice
        self.now = now
        self.latency_s = latency_s
        self.settings = manager_settings(**settings)
        self.records: list[tuple[str, dict]] = []
        self.actions: list = []
        self.script: dict[str, list] = {}      # cid -> behaviours for its successive sends
        self.hang: dict[str, float] = {}       # cid -> seconds its first send hangs
        self.fail_next: dict[str, int] = {}    # action kind -> answers to fail with a 429
        self._q: list = []
        self._n = itertools.count()
        self.stream_on = stream
        self.drop_events = False
        self.venue.listeners.append(self._on_venue_event)
        self.core = None
        self.restart()

    def _new_core(self, records=None) -> OrderManager:
        core = OrderManager(self.settings)
        for topic, rec in records or []:
            if topic in ("orders", "fills", "funding"):
                core.load(topic, rec)
        return core

    # -- time and delivery -------------------------------------------------------------------
    def at(self, due: float, fn) -> None:
        heapq.heappush(self._q, (due, next(self._n), fn))

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while True:
            nxt = min([self._q[0][0]] if self._q else [end], default=end)
            core_due = self.core.next_due()
            if core_due is not None:
                nxt = min(nxt, core_due)
            nxt = min(max(nxt, self.now), end)
            self.now = nxt
            while self._q and self._q[0][0] <= self.now:
                _, _, fn = heapq.heappop(self._q)
                fn()
            self.core.tick(self.now)
            self.pump()
            if self.now >= end and not (self._q and self._q[0][0] <= end):
                break

    def pump(self) -> None:
        recs, acts = self.core.take()
        for topic, rec in recs:
            rec = dict(rec)
            self.records.append((topic, rec))
        for a in acts:
            self.actions.append(a)
            self._run(a)

    def _answer(self, action, outcome_fn, delay: float | None = None) -> None:
        core = self.core

        def deliver():
            if core is not self.core:
                return          # the broker that asked was restarted: the answer is lost
            try:
                outcome = outcome_fn()
            except Exception as exc:
                outcome = exc
            self.core.on_result(action, outcome, self.now)
            self.pump()
        self.at(self.now + (self.latency_s if delay is None else delay) + self._jitter(), deliver)

    def _jitter(self) -> float:
        return self.rng.random() * self.jitter_s if self.rng is not None and self.jitter_s else 0.0

    def _on_venue_event(self, ev: dict) -> None:
        if not self.stream_on or self.drop_events:
            return
        core = self.core

        def deliver():
            if core is self.core:
                self.core.on_stream_event(ev, self.now)
                self.pump()
        self.at(self.now + self.latency_s + self._jitter(), deliver)
        if self.rng is not None and self.rng.random() < self.dup_events:
            self.at(self.now + self.latency_s + self._jitter(), deliver)

    def _run(self, a) -> None:
        v = self.venue
        if self.fail_next.get(a.kind):
            self.fail_next[a.kind] -= 1
            self._answer(a, _fail(NotSent("Too many requests", -1003, 429)))
            return
        if isinstance(a, Halt):
            self.core.set_trading(tstate.TradingState(tstate.HALTED, a.reason, self.now, "broker"),
                                  self.now)
            return
        if isinstance(a, Send):
            cid = a.order.client_order_id
            behaviour = (self.script.get(cid) or ["ok"]).pop(0) if self.script.get(cid) else "ok"
            hang = self.hang.pop(cid, None)
            if behaviour == "ok":
                if hang:
                    # processed now, answered only after the hang, as a timeout
                    v.place(a.order, self.now)
                    self._answer(a, _fail(Ambiguous("read timeout")), hang)
                else:
                    self._answer(a, lambda: v.place(a.order, self.now))
            elif behaviour == "reject":
                self._answer(a, _fail(Rejected("bad", -2019, 400)))
            elif behaviour == "notsent":
                self._answer(a, _fail(NotSent("429", -1003, 429)))
            elif behaviour.startswith("late:"):      # late:<seconds>: -1007 now, executed later
                late = float(behaviour.split(":")[1])
                self.at(self.now + late, lambda: v.place(a.order, self.now))
                self._answer(a, _fail(
                    Ambiguous("Send status unknown; execution status unknown.", -1007, 503)),
                    hang)
            elif behaviour == "lost":                # -1007 and never executed
                self._answer(a, _fail(
                    Ambiguous("Send status unknown; execution status unknown.", -1007, 503)),
                    hang)
            else:
                raise AssertionError(behaviour)
        elif isinstance(a, Query):
            self._answer(a, lambda: v.query(a.client_order_id))
        elif isinstance(a, Cancel):
            self._answer(a, lambda: v.cancel_order(a.client_order_id, self.now))
        elif isinstance(a, FetchTrades):
            self._answer(a, lambda: [dict(t) for t in v.trades if t["order_id"] == a.order_id])
        elif isinstance(a, FetchOpenOrders):
            self._answer(a, lambda: [v.report(oid) for oid, r in v.orders.items()
                                     if r["status"] in ("NEW", "PARTIALLY_FILLED")])
        elif isinstance(a, FetchOrders):
            self._answer(a, lambda: [v.report(oid) for oid in v.orders])
        elif isinstance(a, FetchPositions):
            self._answer(a, lambda: [{"type": "position", "symbol": SYMBOL,
                                      "qty": v.position(), "mark_price": v.price}])
        elif isinstance(a, FetchFunding):
            self._answer(a, lambda: [dict(f) for f in v.funding
                                     if a.since_ms is None or f["time_ms"] >= a.since_ms])
        elif isinstance(a, Countdown):
            def refresh():
                v.countdowns[a.symbol] = self.now + a.countdown_ms / 1000.0
                return {"symbol": a.symbol, "countdownTime": str(a.countdown_ms)}
            self._answer(a, refresh)
        elif isinstance(a, FetchWallet):
            self._answer(a, lambda: (v.wallet, [dict(r) for r in v.income
                                                if r["time"] >= a.since_ms], 0))
        elif isinstance(a, PlaceStop):
            self._answer(a, lambda: v.place_algo(a.side, a.trigger_price, a.client_algo_id,
                                                 self.now, a.symbol))
        elif isinstance(a, CancelStop):
            self._answer(a, lambda: v.cancel_algo(a.client_algo_id, self.now))
        elif isinstance(a, FetchStops):
            self._answer(a, lambda: v.open_algos())
        else:
            raise AssertionError(a)

    # -- inputs ------------------------------------------------------------------------------
    def intent(self, cid: str, side: str = "BUY", qty: float = 0.002, seq: int | None = None,
               decision_age_s: float = 0.1, **kw) -> None:
        seq = seq if seq is not None else len(self.records) + 1
        rec = {"type": "intent", "seq": seq, "ts": int(self.now * 1000), "symbol": SYMBOL,
               "side": side, "qty": qty, "order_type": kw.pop("order_type", "MARKET"),
               "client_order_id": cid, "decision_ms": int((self.now - decision_age_s) * 1000),
               "decision_mid": self.venue.price, **kw}
        self.core.on_intent(rec, self.now)
        self.pump()

    def restart(self, trading: tstate.TradingState | None = None) -> None:
        """A new broker from the records written so far (answers in flight are lost), started
        as the daemon does: journal, start, then the kill switch, then reconciliation."""
        self.core = self._new_core(self.records)
        self.core.start(self.now)
        if trading is not None:
            self.core.set_trading(trading, self.now)
        v = self.venue
        opens = {SYMBOL: [v.report(oid) for oid, r in v.orders.items()
                          if r["status"] in ("NEW", "PARTIALLY_FILLED")]}
        trades = {SYMBOL: [dict(t) for t in v.trades]}
        self.core.reconcile_start(opens, trades, {SYMBOL: v.position()}, self.now,
                                  {SYMBOL: [v.report(oid) for oid in v.orders]},
                                  {SYMBOL: v.open_algos()}, (v.wallet, list(v.income), 0))
        self.core.on_stream_state(self.stream_on, self.now)
        self.pump()

    # -- views -------------------------------------------------------------------------------
    def status(self, cid: str) -> str:
        return self.core.journal.orders[cid].status

    def sends(self, cid: str | None = None) -> list:
        return [a for a in self.actions if isinstance(a, Send)
                and (cid is None or a.order.client_order_id == cid)]

    def fills(self) -> list[dict]:
        return [r for t, r in self.records if t == "fills"]

    def last_position(self) -> dict:
        return [r for t, r in self.records if t == "positions"][-1]

    def fills_sum(self) -> float:
        return round(sum(f["qty"] if f["side"] == "BUY" else -f["qty"] for f in self.fills()), 12)
