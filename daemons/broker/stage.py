"""The broker daemon: ``intents`` in; ``orders``, ``fills`` and ``positions`` out.

    start   rebuild the journal from ``orders`` + ``fills``; connect (clock, filters, limits);
            resolve every PENDING/UNKNOWN order by its client order id; reconcile open orders,
            recent fills and positions with the venue (HALTED + reason if unexplained);
            start the user data stream
    handle  an intent: refuse a client order id already journaled; journal PENDING; check the
            kill switch, freshness and REDUCING; send; apply the answer
    tick    stream events; due sends, queries, cancels and trade fetches; REST polling while the
            stream is down (and slowly while it is up); the kill switch; LIMIT order timeouts

Never doubles an order: PENDING is on disk before the send, an ambiguous send makes the order
UNKNOWN, and an UNKNOWN order is only ever queried (GET /fapi/v1/order?origClientOrderId=) until
the venue proves it absent; only then may it be sent again, under the same id.
Never loses one: fills are keyed by trade id and published once; a report saying more is filled
than the fills published fetches the order's trades.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import replace

from bus import BadRecord

from .. import config as configmod
from ..runtime import Stage
from ..strategy import state as tstate
from . import orders as fsm
from .binance.errors import (Ambiguous, AuthError, GatewayError, NotFound, NotSent, Rejected)
from .binance.schemas import VenueOrder, parse_order_update
from .execlog import ExecLog
from .executors import ExecutorError, make_executor
from .journal import EPS, Journal
from .keys import KeysError
from .ratelimit import RateLimiter
from .reconcile import reconcile

CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
#: set by ``main`` when --confirm-live is given on the command line
CONFIRM_LIVE_FLAG = False
START_DEADLINE_S = 30.0


class BrokerStage(Stage):
    """Places intents at the venue and publishes orders, fills and positions."""

    name = "broker"
    inputs = ("intents",)
    outputs = ("orders", "fills", "positions")

    # -- start -----------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.ctx.config
        b = cfg["broker"]
        if b["user_stream_route"] not in ("private", "legacy"):
            raise configmod.ConfigError("config: key 'broker.user_stream_route' must be one of "
                                        f"private, legacy, not {b['user_stream_route']!r}")
        self.b = b
        self.log = self.ctx.log
        self.home = self.ctx.home
        self.mode = b["mode"]
        self.symbols = list(cfg["symbols"])
        self.exec_log = ExecLog(self.home, self.mode)
        self.limiter = RateLimiter(margin=b["weight_margin"])
        try:
            self.executor = make_executor(cfg, self.home, self.exec_log, self.limiter,
                                          confirm_live=CONFIRM_LIVE_FLAG)
        except (ExecutorError, KeysError) as exc:
            raise configmod.ConfigError(str(exc)) from None
        self.gateway = self.executor.gateway
        self.journal = Journal()
        self.marks: dict[str, float] = {}
        self.send_due: dict[str, float] = {}
        self.query_due: dict[str, float] = {}
        self.cancel_due: dict[str, float] = {}
        self.trades_due: dict[str, tuple[float, int]] = {}
        self.last_sent: dict[str, float] = {}
        self.cancel_wanted: set[str] = set()
        self.counts = {"intents": 0, "duplicates": 0, "ignored": 0, "sent": 0, "fills": 0,
                       "rejected": 0, "unknown": 0, "stale_events": 0, "invalid_events": 0}
        self.trading = tstate.TradingState()
        self._state_mtime = None
        self.stream = None
        self._stream_connects = 0
        self.poll_at = 0.0
        self._load_journal()
        self._with_retry(self.executor.prepare, "connect")
        self._read_trading_state(force=True)
        self._resolve_unresolved_at_start()
        self._reconcile_at_start()
        if self.mode != "mock":
            try:
                self.stream = self.gateway.start_stream(self.ctx.wake)
            except GatewayError as exc:
                self.log.warning("user_stream_unavailable", error=str(exc))
        self.log.info("broker_started", mode=self.mode, venue=getattr(self.gateway, "rest_url", "mock"),
                      orders=len(self.journal.orders), fills=len(self.journal.fill_keys),
                      active=len(self.journal.active()), trading=self.trading.state)

    def _load_journal(self) -> None:
        bus = self.ctx.bus
        for topic, fold in (("orders", self.journal.load_order_record),
                            ("fills", self.journal.load_fill)):
            reader = bus.reader(topic, start="beginning")
            try:
                while True:
                    items = reader.read(5000)
                    if not items:
                        break
                    for rec, _pos in items:
                        if not isinstance(rec, BadRecord):
                            fold(rec)
            finally:
                reader.close()

    def _with_retry(self, fn, what: str, deadline_s: float = START_DEADLINE_S):
        """Call ``fn`` until it works (start-up only); a clear error when the venue stays away."""
        deadline = time.time() + deadline_s
        while True:
            try:
                return fn()
            except AuthError as exc:
                raise configmod.ConfigError(f"venue refused the API key ({what}): {exc}") from None
            except GatewayError as exc:
                now = time.time()
                if isinstance(exc, NotSent) and exc.retry_at > now:
                    # a 429 Retry-After or a 418 ban is honoured, not counted as unreachable
                    deadline = max(deadline, exc.retry_at + 5.0)
                if now > deadline or self.ctx.stopping:
                    raise configmod.ConfigError(
                        f"venue {getattr(self.gateway, 'rest_url', '')} unavailable ({what}): "
                        f"{exc}") from None
                retry_at = getattr(exc, "retry_at", 0.0) or now + 0.3
                time.sleep(min(max(0.05, retry_at - now), max(0.05, deadline - now)))

    def _resolve_unresolved_at_start(self) -> None:
        """A PENDING or UNKNOWN order may be at the venue: look it up before anything is sent."""
        now = time.time()
        for o in self.journal.unresolved():
            # the crash may have cut a send in flight: give it the grace period from now
            self.last_sent[o.client_order_id] = now
            vo = self._with_retry(lambda o=o: self.executor.query(o.symbol, o.client_order_id),
                                  f"query {o.client_order_id}")
            self._after_query(o.client_order_id, vo, now)

    def _reconcile_at_start(self) -> None:
        opens, trades, positions = {}, {}, {}
        for s in self.symbols:
            opens[s] = self._with_retry(lambda s=s: self.executor.open_orders(s), "open orders")
            trades[s] = self._with_retry(lambda s=s: self.executor.fetch_fills(s), "user trades")
        for p in self._with_retry(lambda: self.executor.positions(self.symbols), "positions"):
            positions[p["symbol"]] = p["qty"]
        since = self.journal.first_ts - 60_000 if self.journal.first_ts else None
        r = reconcile(self.journal, self.symbols, opens, trades, positions, since_ms=since)
        for f in r.missing_fills:
            self._record_fill(f)
        for vo in r.reports:
            self._apply_report(vo)
        now = time.time()
        for cid in r.to_query:
            self.query_due[cid] = now
        if not r.ok:
            reason = "broker reconciliation: " + "; ".join(r.problems)[:900]
            self.log.error("reconciliation_mismatch", problems=r.problems)
            if self.b["halt_on_mismatch"]:
                self.trading = tstate.save_state(self.home, tstate.HALTED, reason, by="broker")
        else:
            self.log.info("reconciled", missing_fills=len(r.missing_fills),
                          reports=len(r.reports), queried=len(r.to_query))
        for s in self.symbols:
            self._emit_position(s)

    # -- intents ---------------------------------------------------------------------------------
    def handle(self, topic: str, record: dict) -> None:
        kind = record.get("type")
        if kind == "intent":
            self._on_intent(record)
        elif kind == "cancel":
            self._on_cancel_intent(record)
        else:
            self.counts["ignored"] += 1   # e.g. the strategy's risk_denied records

    def _order_from_intent(self, rec: dict) -> fsm.Order:
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
        cid = rec.get("client_order_id") or f"ofi-i{rec['seq']}-{rec['ts']}"
        if not isinstance(cid, str) or not CLIENT_ID_RE.match(cid):
            bad(f"client_order_id {cid!r} does not match ^[.A-Z:/a-z0-9_-]{{1,36}}$")
        return fsm.Order(client_order_id=cid, symbol=symbol, side=side, qty=float(qty),
                         price=float(price) if otype == "LIMIT" else None, order_type=otype,
                         reduce_only=bool(rec.get("reduce_only", False)),
                         intent_seq=rec.get("seq"), intent_ts=rec.get("ts"))

    def _on_intent(self, rec: dict) -> None:
        order = self._order_from_intent(rec)
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
        o = self._transition(order, fsm.INTENT)
        refusal = self._refusal(o)
        if refusal:
            self._reject(o, refusal)
            return
        self._send(o)

    def _on_cancel_intent(self, rec: dict) -> None:
        cid = rec.get("client_order_id")
        o = self.journal.orders.get(cid) if isinstance(cid, str) else None
        if o is None:
            raise BadRecord(f"cancel: unknown client_order_id {cid!r}")
        self._request_cancel(o, rec.get("reason") or "cancel intent")

    def _refusal(self, o: fsm.Order) -> str | None:
        """Why ``o`` may not be sent now (None: it may)."""
        if o.symbol not in self.symbols:
            return f"symbol {o.symbol} is not traded (symbols: {', '.join(self.symbols)})"
        self._read_trading_state()
        if self.trading.state == tstate.HALTED:
            return f"trading HALTED: {self.trading.reason or 'kill switch'}"
        if self.trading.state == tstate.REDUCING and not self._reduces(o):
            return "trading REDUCING: only orders that reduce the position are sent"
        if o.intent_ts and time.time() - o.intent_ts / 1000.0 > self.b["intent_ttl_s"]:
            return f"stale: intent older than {self.b['intent_ttl_s']:g}s"
        return None

    def _reduces(self, o: fsm.Order) -> bool:
        pos = self.journal.book.get(o.symbol).qty
        signed = o.qty if o.side == "BUY" else -o.qty
        return pos != 0 and (pos > 0) != (signed > 0) and o.qty <= abs(pos) + EPS

    # -- the state machine and the records -------------------------------------------------------
    def _transition(self, order: fsm.Order, event: str, **kw) -> fsm.Order:
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
        self.ctx.emit("orders", fsm.record_of(t))
        self.journal.put(t.order)
        if t.order.is_terminal:
            cid = t.order.client_order_id
            self.send_due.pop(cid, None)
            self.cancel_due.pop(cid, None)
            self.cancel_wanted.discard(cid)
            if t.order.status != fsm.FILLED or self.journal.fill_deficit(cid) <= EPS:
                self.query_due.pop(cid, None)
        return t.order

    def _reject(self, o: fsm.Order, reason: str) -> None:
        self.counts["rejected"] += 1
        self._transition(o, fsm.REJECTED_EV, reason=reason)

    # -- sending ---------------------------------------------------------------------------------
    def _send(self, o: fsm.Order) -> None:
        cid = o.client_order_id
        now = time.time()
        self.send_due.pop(cid, None)
        wait = self.limiter.wait_for(0, 1, now)
        if wait > 0:
            self.send_due[cid] = now + wait   # held back by our own limiter: nothing was sent
            return
        if o.attempts >= self.b["max_send_attempts"]:
            self._reject(o, f"not placed after {o.attempts} attempt(s)")
            return
        o = replace(o, attempts=o.attempts + 1)
        self.journal.put(o)
        self.last_sent[cid] = now
        self.counts["sent"] += 1
        try:
            vo = self.executor.submit(o, self.marks.get(o.symbol))
        except Rejected as exc:
            self._reject(o, _why(exc))
        except NotSent as exc:
            o = replace(o, attempts=o.attempts - 1)   # provably not processed: not an attempt
            self.journal.put(o)
            self._transition(o, fsm.SEND_FAILED, reason=_why(exc))
            self.send_due[cid] = max(exc.retry_at, now + 0.05)
        except (Ambiguous, NotFound, GatewayError) as exc:
            self.counts["unknown"] += 1
            self._transition(o, fsm.AMBIGUOUS, reason=_why(exc))
            self.query_due[cid] = time.time() + 0.2
        else:
            self._apply_report(vo)

    def _retry_send(self, cid: str) -> None:
        o = self.journal.orders.get(cid)
        if o is None or o.status != fsm.PENDING:
            return
        refusal = self._refusal(o)
        if refusal:
            self._reject(o, refusal)
            return
        self._send(o)

    # -- what the venue says ---------------------------------------------------------------------
    def _apply_report(self, vo: VenueOrder) -> None:
        cid = vo.client_order_id
        for f in vo.fills:
            self._record_fill(f)
        o = self.journal.orders.get(cid)
        if o is None:
            self.log.warning("report_for_unknown_order", client_order_id=cid, status=vo.status)
            return
        event = fsm.STATUS_EVENT.get(vo.status)
        if event is None:
            return
        if event in (fsm.PARTIAL_FILL, fsm.FILL) or vo.executed_qty > 0:
            # the report's own quantity; fills catch up through trade ids
            o = self._transition(o, event, filled_qty=vo.executed_qty, avg_price=vo.avg_price,
                                 order_id=vo.order_id, venue_ts=vo.update_time)
        else:
            o = self._transition(o, event, order_id=vo.order_id, venue_ts=vo.update_time,
                                 reason=None)
        if vo.order_id is not None and o.order_id is None:
            o = replace(o, order_id=vo.order_id)
            self.journal.put(o)
        if vo.executed_qty - self.journal.filled.get(cid, 0.0) > EPS:
            stream_up = self.stream is not None and self.stream.connected.is_set()
            due = time.time() + (0.5 if stream_up else 0.0)
            if cid not in self.trades_due:
                self.trades_due[cid] = (due, 0)
        if cid in self.cancel_wanted and o.is_open:
            self.cancel_due[cid] = time.time()

    def _record_fill(self, fill: dict) -> bool:
        """Publish a fill once (by trade id); update the order and the position."""
        symbol, tid = fill["symbol"], fill.get("trade_id")
        if tid is None or self.journal.has_fill(symbol, tid):
            return False
        cid = fill.get("client_order_id") or self.journal.client_id_of(symbol, fill.get("order_id"))
        if cid and cid not in self.journal.orders:
            cid_known = False
        else:
            cid_known = cid is not None
        fill = {**fill, "client_order_id": cid}
        self.ctx.emit("fills", fill)
        self.journal.load_fill(fill)
        self.counts["fills"] += 1
        self.marks[symbol] = float(fill["price"])
        self._emit_position(symbol)
        if not cid_known:
            self.log.warning("fill_of_unknown_order", symbol=symbol, trade_id=tid,
                             order_id=fill.get("order_id"))
            return True
        o = self.journal.orders[cid]
        if o.order_id is None and fill.get("order_id") is not None:
            o = replace(o, order_id=int(fill["order_id"]))
            self.journal.put(o)
        done = self.journal.filled.get(cid, 0.0)
        event = fsm.FILL if done >= o.qty - EPS else fsm.PARTIAL_FILL
        self._transition(o, event, filled_qty=done, order_id=fill.get("order_id"),
                         avg_price=self.journal.avg_fill_price(cid))
        return True

    def _emit_position(self, symbol: str) -> None:
        self.ctx.emit("positions", self.journal.book.get(symbol).payload(self.marks.get(symbol)))

    # -- lookups ---------------------------------------------------------------------------------
    def _query(self, cid: str, now: float) -> None:
        o = self.journal.orders.get(cid)
        if o is None:
            return
        try:
            vo = self.executor.query(o.symbol, cid)
        except GatewayError as exc:
            retry_at = getattr(exc, "retry_at", 0.0)
            self.query_due[cid] = max(retry_at, now + 0.5)
            return
        self._after_query(cid, vo, now)

    def _after_query(self, cid: str, vo: VenueOrder | None, now: float) -> None:
        o = self.journal.orders[cid]
        if vo is not None:
            self._apply_report(vo)
            o = self.journal.orders[cid]
            if o.status in fsm.UNRESOLVED:
                self.query_due[cid] = now + 0.5
            return
        if o.status == fsm.UNKNOWN:
            since = now - self.last_sent.get(cid, 0.0)
            if since < self.b["unknown_grace_s"]:
                # too soon to call it absent: the request may still be on its way
                self.query_due[cid] = now + self.b["unknown_grace_s"] - since + 0.05
                return
            o = self._transition(o, fsm.NOT_FOUND, reason="query: the venue never got it")
        if o.status == fsm.PENDING:
            self.send_due[cid] = now   # proved absent: may be sent again, same client id
        elif o.is_open:
            self.log.warning("open_order_not_found", client_order_id=cid)

    def _fetch_trades(self, cid: str, now: float) -> None:
        due, tries = self.trades_due.pop(cid, (now, 0))
        o = self.journal.orders.get(cid)
        if o is None or self.journal.fill_deficit(cid) <= EPS:
            return
        if o.order_id is None:
            self.query_due[cid] = now
            return
        try:
            fills = self.executor.fetch_fills(o.symbol, order_id=o.order_id)
        except GatewayError as exc:
            self.trades_due[cid] = (max(getattr(exc, "retry_at", 0.0), now + 0.5), tries)
            return
        for f in sorted(fills, key=lambda f: f["trade_id"]):
            self._record_fill({**f, "client_order_id": cid})
        if self.journal.fill_deficit(cid) > EPS and tries < 20:
            self.trades_due[cid] = (now + 0.5, tries + 1)

    # -- cancels and the kill switch -------------------------------------------------------------
    def _request_cancel(self, o: fsm.Order, reason: str) -> None:
        cid = o.client_order_id
        if o.is_terminal:
            return
        if o.status == fsm.PENDING and cid not in self.query_due:
            self._reject(o, reason)   # not sent (or proved absent): simply never send it
            return
        self.cancel_wanted.add(cid)
        if o.status in fsm.UNRESOLVED:
            self.query_due.setdefault(cid, time.time())   # resolve first, then cancel
            return
        self._cancel(cid, reason)

    def _cancel(self, cid: str, reason: str = "cancel") -> None:
        self.cancel_due.pop(cid, None)
        o = self.journal.orders.get(cid)
        if o is None or not o.is_open:
            return
        if not o.cancel_requested:
            o = self._transition(o, fsm.CANCEL_REQUESTED, reason=reason)
        now = time.time()
        try:
            vo = self.executor.cancel(o.symbol, cid)
        except NotFound as exc:
            self._transition(o, fsm.CANCEL_FAILED, reason=_why(exc))
            self.query_due[cid] = now
        except NotSent as exc:
            self.cancel_due[cid] = max(exc.retry_at, now + 0.2)
        except GatewayError:
            self.query_due[cid] = now + 0.2
            self.cancel_due[cid] = now + 1.0
        else:
            self._apply_report(vo)

    def _read_trading_state(self, force: bool = False) -> None:
        path = tstate.state_path(self.home)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if not force and mtime == self._state_mtime:
            return
        self._state_mtime = mtime
        try:
            new = tstate.load_state(self.home)
        except tstate.StateError as exc:
            # a corrupt kill switch must not read as ACTIVE
            new = tstate.TradingState(tstate.HALTED, str(exc), time.time(), "broker")
        if new.state != self.trading.state:
            self.log.warning("trading_state", state=new.state, reason=new.reason, by=new.by)
        self.trading = new

    def _enforce_kill_switch(self) -> None:
        if self.trading.state != tstate.HALTED:
            return
        for o in self.journal.active():
            cid = o.client_order_id
            if o.is_open and cid not in self.cancel_due and not o.cancel_requested:
                self._request_cancel(o, "kill switch: trading HALTED")
            elif o.status == fsm.PENDING and cid in self.send_due:
                self._reject(o, f"trading HALTED: {self.trading.reason or 'kill switch'}")
            elif o.status in fsm.UNRESOLVED:
                self.cancel_wanted.add(cid)

    # -- the loop --------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self._drain_stream()
        self._read_trading_state()
        self._enforce_kill_switch()
        for table, action in ((self.query_due, self._query), (self.cancel_due, self._cancel_at),
                              (self.send_due, self._send_at)):
            for cid, due in sorted(table.items(), key=lambda kv: kv[1]):
                if due <= now and table.get(cid) == due:
                    table.pop(cid, None)
                    action(cid, now)
        for cid, (due, _tries) in sorted(self.trades_due.items(), key=lambda kv: kv[1][0]):
            if due <= now:
                self._fetch_trades(cid, now)
        self._expire_limit_orders(now)
        if now >= self.poll_at:
            self._poll(now)
        self.gateway.keepalive(now)

    def _cancel_at(self, cid: str, now: float) -> None:
        self._cancel(cid, "cancel retry")

    def _send_at(self, cid: str, now: float) -> None:
        self._retry_send(cid)

    def _expire_limit_orders(self, now: float) -> None:
        ttl = self.b["order_timeout_s"]
        if ttl <= 0:
            return
        for o in self.journal.open_orders():
            if (o.order_type == "LIMIT" and not o.cancel_requested and o.intent_ts
                    and now - o.intent_ts / 1000.0 > ttl and o.client_order_id not in self.cancel_due):
                self._request_cancel(o, f"order timeout ({ttl:g}s)")

    def _poll(self, now: float) -> None:
        """REST view of our open orders (the user stream's fallback and safety net)."""
        stream_up = self.stream is not None and self.stream.connected.is_set()
        self.poll_at = now + self.b["poll_interval_s"] * (10 if stream_up else 1)
        if self.mode == "mock":
            return
        mine = self.journal.open_orders()
        for symbol in sorted({o.symbol for o in mine}):
            try:
                venue = {vo.client_order_id: vo for vo in self.executor.open_orders(symbol)}
            except GatewayError:
                self.poll_at = now + 0.5
                return
            for o in mine:
                if o.symbol != symbol:
                    continue
                vo = venue.get(o.client_order_id)
                if vo is None:
                    self.query_due.setdefault(o.client_order_id, now)   # closed while unseen
                elif vo.status != o.status or vo.executed_qty > o.filled_qty + EPS:
                    self._apply_report(vo)

    def _drain_stream(self) -> None:
        if self.stream is None:
            return
        for ev in self.stream.drain():
            kind = ev.get("e")
            if kind == "ORDER_TRADE_UPDATE":
                try:
                    vo, fill = parse_order_update(ev)
                except (KeyError, TypeError, ValueError):
                    continue
                if fill is not None:
                    self._record_fill(fill)
                if vo.client_order_id in self.journal.orders:
                    self._apply_report(vo)
            elif kind == "listenKeyExpired":
                try:
                    self.gateway.renew_listen_key()
                except GatewayError as exc:
                    self.log.warning("listen_key_renewal_failed", error=str(exc))
            elif kind in ("_connected", "_disconnected"):
                self.poll_at = 0.0   # catch up on what the stream may have missed
                self.log.info("user_stream", state=kind[1:])

    def idle_timeout(self) -> float | None:
        now = time.time()
        dues = [*self.query_due.values(), *self.cancel_due.values(), *self.send_due.values(),
                *(d for d, _ in self.trades_due.values()), self.poll_at]
        return max(0.0, min(dues) - now) if dues else None

    def health(self) -> dict:
        return {"mode": self.mode, "trading": self.trading.state,
                "orders_active": len(self.journal.active()),
                "unknown": sum(1 for o in self.journal.orders.values() if o.status == fsm.UNKNOWN),
                "stream": bool(self.stream is not None and self.stream.connected.is_set()),
                "exec_log_lines": self.exec_log.lines, "counts": dict(self.counts),
                "rate_limits": self.limiter.snapshot()}

    def stop(self) -> None:
        """Settle, then close: resolve orders in flight and record fills the venue already made.

        Nothing new is sent. What is still unsettled after ``broker.settle_on_stop_s`` is left to
        the start-up reconciliation of the next run.
        """
        deadline = time.time() + float(self.b.get("settle_on_stop_s", 5.0))
        try:
            if self.mode != "mock":
                now = time.time()
                for o in self.journal.active():
                    self.query_due.setdefault(o.client_order_id, now)
            while time.time() < deadline and self._unsettled():
                now = time.time()
                self._drain_stream()
                for cid, due in sorted(self.query_due.items(), key=lambda kv: kv[1]):
                    if due <= now and self.query_due.get(cid) == due:
                        self.query_due.pop(cid, None)
                        self._query(cid, now)
                for cid, (due, _tries) in list(self.trades_due.items()):
                    if due <= now:
                        self._fetch_trades(cid, now)
                time.sleep(0.05)
            left = self._unsettled()
            if left:
                self.log.warning("unsettled_at_stop", orders=left)
        except Exception as exc:   # never let settling block the exit
            self.log.warning("settle_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            try:
                self.executor.close()
            except Exception:
                pass

    def _unsettled(self) -> list[str]:
        """Client ids still to resolve (queries due) or with fills not yet recorded."""
        if self.mode == "mock":
            return []
        return sorted(set(self.query_due) | {cid for cid in self.journal.orders
                                             if self.journal.fill_deficit(cid) > EPS})


def _why(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    msg = getattr(exc, "msg", str(exc))
    return f"{code}: {msg}" if code is not None else str(msg)
