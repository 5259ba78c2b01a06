"""The backtest driver: market records -> signals -> strategy -> simulated venue -> records.

    engine = Engine(SignalCore(...), StrategyCore(...), BacktestExecutor(...), out)
    for rec in Replay(paths, symbols={symbol}):   # trades, book, depth, ... in exchange time
        engine.feed(rec)
    summary = engine.finish()

The same cores as the live daemons (:class:`~daemons.signal.core.SignalCore`,
:class:`~daemons.strategy.core.StrategyCore`); only the clock differs. The simulated clock is
the exchange time of the record being fed (it never goes back). For each record, in order:

1. acknowledgements due: an order reaches the venue ``latency_ms`` after it was sent; its NEW
   ``orders`` record is written at that time, before any of its fills;
2. ``book`` -> ``executor.on_book``, ``trades`` -> ``executor.on_trade``: the fills it caused,
   each a ``fills`` record, an ``orders`` record (PARTIALLY_FILLED / FILLED) and, per symbol,
   a ``positions`` record that is fed back to the strategy like the broker's in live (with the
   broker's ``intent_seq``, ``in_flight`` and ``cause``; also after an order refused unfilled);
3. ``SignalCore.process``: each closed interval is a ``signals`` record, handed to
   ``StrategyCore.on_signal``; its intents are ``intents`` records and are sent at once
   (an ``orders`` PENDING record, then the executor).

Every record is written through ``out.write(topic, payload, ts)`` with the envelope ``ts`` =
the simulated time, so a report of the market period covers it. No I/O of its own and no wall
clock: the same input gives the same records.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Protocol

from ...broker import orders as fsm
from ...broker.binance.errors import Rejected
from ...broker.executors import BacktestExecutor
from ...marketdata.merge import event_time
from ...signal.core import SignalCore
from ...strategy.core import StrategyCore
from ...trading import TradingState

TOPICS = ("signals", "intents", "orders", "fills", "positions")


class Output(Protocol):
    """Where the records go: returns the record written (payload + ``seq`` and ``ts``)."""

    def write(self, topic: str, payload: dict, ts: int) -> dict: ...


class MemoryOutput:
    """Records kept in lists, numbered like a fresh bus (tests, benchmarks)."""

    def __init__(self):
        self.records: dict[str, list[dict]] = {t: [] for t in TOPICS}

    def write(self, topic: str, payload: dict, ts: int) -> dict:
        rows = self.records.setdefault(topic, [])
        rec = {"seq": len(rows) + 1, "ts": int(ts), **payload}
        rows.append(rec)
        return rec


@dataclass(frozen=True)
class Settings:
    """The ``backtest`` config section (and whether denials go to ``intents``, as live)."""

    latency_ms: int
    taker_fee_bps: float
    maker_fee_bps: float
    denials_to_bus: bool

    @classmethod
    def from_settings(cls, s) -> "Settings":
        """From the typed settings (:class:`daemons.settings.Settings`)."""
        b = s.backtest
        return cls(b.latency_ms, b.taker_fee_bps, b.maker_fee_bps, s.strategy.denials_to_bus)

    def executor(self) -> BacktestExecutor:
        return BacktestExecutor(taker_fee_bps=self.taker_fee_bps,
                                maker_fee_bps=self.maker_fee_bps, latency_ms=self.latency_ms)


@dataclass
class Summary:
    """What a run did, and its PnL in the quote asset (USDT)."""

    first_ms: int | None = None       # exchange time of the first and last market record
    last_ms: int | None = None
    events: int = 0                   # market records fed
    counts: dict = field(default_factory=lambda: {t: 0 for t in TOPICS})
    intents: int = 0
    denied: int = 0
    orders: int = 0                   # orders sent (client order ids)
    fills: int = 0
    realized_pnl: float = 0.0
    fees: float = 0.0
    unrealized_pnl: float = 0.0
    position: dict = field(default_factory=dict)    # symbol -> signed qty at the end
    open_orders: int = 0

    @property
    def net_pnl(self) -> float:
        return self.realized_pnl - self.fees + self.unrealized_pnl

    def to_dict(self) -> dict:
        return {"first_ms": self.first_ms, "last_ms": self.last_ms, "events": self.events,
                "records": dict(self.counts), "intents": self.intents, "denied": self.denied,
                "orders": self.orders, "fills": self.fills, "open_orders": self.open_orders,
                "position": dict(self.position), "realized_pnl": round(self.realized_pnl, 8),
                "fees": round(self.fees, 8), "unrealized_pnl": round(self.unrealized_pnl, 8),
                "net_pnl": round(self.net_pnl, 8)}


class Engine:
    """Feeds market records through signal, strategy and executor (module docstring)."""

    def __init__(self, signals: SignalCore, strategy: StrategyCore, executor: BacktestExecutor,
                 out: Output, denials_to_bus: bool = True):
        self.signals = signals
        self.strategy = strategy
        self.executor = executor
        self.out = out
        self.denials_to_bus = denials_to_bus
        self.clock = 0
        self.trading = TradingState()
        self.orders: dict[str, fsm.Order] = {}
        self._live: dict[str, None] = {}   # ids of the orders not terminal, in orders' order
        self._acks: deque[tuple[int, str]] = deque()   # (due ms, client order id), due order
        self.intent_seq: int | None = None   # the last intents record handled, as the broker's
        self.summary = Summary()

    # -- input -------------------------------------------------------------------------------
    def feed(self, rec: dict) -> None:
        """One market record (``trades`` / ``book`` / ``depth`` / snapshot / gap schema)."""
        self.market(rec, event_time(rec))
        for sig in self.signals.process(rec):
            self._signal(sig)

    def market(self, rec: dict, t) -> None:
        """The clock and the executor's part of :meth:`feed` (``t``: the record's time)."""
        if t is not None:
            t = int(t)
            if t > self.clock:
                self.clock = t
            s = self.summary
            if s.first_ms is None:
                s.first_ms = t
            s.last_ms = self.clock
        self.summary.events += 1
        if self._acks and self._acks[0][0] <= self.clock:
            self._acknowledge(self.clock)
        typ = rec.get("type")
        if typ == "book":
            fills = self.executor.on_book(rec)
        elif typ == "trade":
            fills = self.executor.on_trade(rec)
        else:
            fills = None
        if fills:
            self._fills(fills)

    def signal(self, sig: dict) -> None:
        """A signal closed by the last market record (or by the end of the input)."""
        self._signal(sig)

    @property
    def idle(self) -> bool:
        """No order waits for its acknowledgement or a fill: a market record could change
        nothing but the clock and the executor's latest book and time."""
        return not self._acks and not any(
            so.status in ("NEW", "PARTIALLY_FILLED") for so in self.executor._open.values())

    def skip(self, events: int, clock: int, first_ms: int, book: dict | None,
             now_ms: int) -> None:
        """Account ``events`` more market records without feeding them, as :meth:`market`
        would have while :attr:`idle`: ``clock`` the largest time so far, ``book`` the last
        ``book`` record among them (None: none), ``now_ms`` the executor's time after them."""
        s = self.summary
        s.events += events
        if s.first_ms is None:
            s.first_ms = first_ms
        if clock > self.clock:
            self.clock = clock
        s.last_ms = self.clock
        ex = self.executor
        if book is not None:
            ex.on_book(book)   # no open order: it only keeps the book (marks, positions)
        if now_ms > ex.now_ms:
            ex.now_ms = now_ms

    def finish(self) -> Summary:
        """End of input: close the open intervals, acknowledge what was sent; the summary."""
        for sig in self.signals.flush():
            self._signal(sig)
        if self._acks:
            self._acknowledge(None)
        s = self.summary
        for sym in sorted({o.symbol for o in self.orders.values()}):
            pos = self._position(sym, "venue")
            self._write("positions", pos, max(self.clock, s.last_ms or 0))
            s.position[sym] = pos["qty"]
            s.unrealized_pnl += pos["unrealized_pnl"] or 0.0
        for p in self.executor.book.positions.values():
            s.realized_pnl += p.realized_pnl
            s.fees += p.fees
        s.intents = self.strategy.counts["intents"]
        s.denied = self.strategy.counts["denied"]
        s.orders = len(self.orders)
        s.open_orders = sum(1 for o in self.orders.values() if not o.is_terminal)
        return s

    # -- steps -------------------------------------------------------------------------------
    def _write(self, topic: str, payload: dict, ts: int) -> dict:
        self.summary.counts[topic] += 1
        return self.out.write(topic, payload, ts)

    def _signal(self, payload: dict) -> None:
        rec = self._write("signals", payload, self.clock)
        step = self.strategy.on_signal(rec, self.trading, self.clock)
        for p in step.payloads:
            if p["type"] == "intent":
                intent = self._write("intents", p, self.clock)
                self.strategy.written(intent)
                self.intent_seq = intent["seq"]
                self._send(intent)
            elif self.denials_to_bus:
                rec = self._write("intents", p, self.clock)
                self.strategy.written(rec)
                self.intent_seq = rec["seq"]
        if step.state_change is not None:
            state, reason = step.state_change
            self.trading = TradingState(state, reason, self.clock / 1000, "strategy")
            self.strategy.forget_denials()

    def _send(self, intent: dict) -> None:
        """An intent becomes an order: journaled PENDING, then handed to the venue."""
        order = fsm.Order(intent["client_order_id"], intent["symbol"], intent["side"],
                          float(intent["qty"]), intent.get("price"),
                          intent.get("order_type") or "MARKET", bool(intent.get("reduce_only")),
                          intent_seq=intent["seq"], intent_ts=intent["ts"])
        self._transition(order, fsm.INTENT, self.clock)
        order = self.orders[order.client_order_id]
        try:
            self.executor.submit(order, now_ms=self.clock)
        except Rejected as exc:
            self._transition(order, fsm.REJECTED_EV, self.clock, reason=str(exc))
            self._feed_position(order.symbol, "order_done")
            return
        self.orders[order.client_order_id] = replace(order, attempts=1)
        self._acks.append((self.clock + self.executor.latency_ms, order.client_order_id))

    def _acknowledge(self, until: int | None) -> None:
        """NEW records of the orders that reached the venue by ``until`` (None: all)."""
        while self._acks and (until is None or self._acks[0][0] <= until):
            due, cid = self._acks.popleft()
            vo = self.executor.report(cid)
            self._transition(self.orders[cid], fsm.ACCEPTED, due, order_id=vo.order_id,
                             venue_ts=due)

    def _fills(self, fills: list[dict]) -> None:
        symbols = []
        for f in fills:
            self._write("fills", f, self.clock)
            self.summary.fills += 1
            cid = f["client_order_id"]
            vo = self.executor.report(cid)
            event = fsm.FILL if vo.status == fsm.FILLED else fsm.PARTIAL_FILL
            self._transition(self.orders[cid], event, self.clock, filled_qty=vo.executed_qty,
                             avg_price=vo.avg_price, venue_ts=int(f["T"]))
            if f["symbol"] not in symbols:
                symbols.append(f["symbol"])
        for sym in symbols:
            self._feed_position(sym, "fill")

    def _position(self, symbol: str, cause: str) -> dict:
        """The executor's position with what the broker adds: ``intent_seq``, ``in_flight``
        (orders not terminal, their unfilled remainder) and ``cause``."""
        orders = self.orders
        flight = [{"client_order_id": o.client_order_id, "side": o.side,
                   "qty": round(max(0.0, o.qty - o.filled_qty), 12), "reduce_only": o.reduce_only}
                  for o in (orders[cid] for cid in self._live) if o.symbol == symbol]
        return {**self.executor.get_position(symbol), "intent_seq": self.intent_seq,
                "in_flight": flight, "cause": cause}

    def _feed_position(self, symbol: str, cause: str) -> None:
        # like the broker's positions in live: the strategy's view follows them
        self.strategy.on_position(self._write("positions", self._position(symbol, cause),
                                              self.clock), self.clock)

    def _transition(self, order: fsm.Order, event: str, ts: int, **kw) -> None:
        t = fsm.apply(order, event, **kw)
        if t is None:
            return
        cid = order.client_order_id
        self.orders[cid] = t.order
        if t.order.is_terminal:
            self._live.pop(cid, None)
        elif cid not in self._live:
            self._live[cid] = None
        self._write("orders", fsm.record_of(t), ts)


def run(records, engine: Engine, on_progress=None, every: int = 4096) -> Summary:
    """Feed ``records`` (an iterable of market records) and finish; ``on_progress(events)`` is
    called every ``every`` records (a progress bar)."""
    feed = engine.feed
    n = 0
    for rec in records:
        feed(rec)
        n += 1
        if on_progress is not None and n % every == 0:
            on_progress(n)
    return engine.finish()


def feed_rows(rows, signals, engine: Engine, on_progress=None, every: int = 1 << 16,
              done: int = 0) -> None:
    """:func:`run` over catalog rows (:class:`daemons.marketdata.rows.Rows`, one symbol, merge
    order) whose signals are already made with ``engine.signals``: the same records as feeding
    the rows' records one by one. For consecutive pieces of the rows, each with the signals it
    closes (:class:`daemons.signal.columnar.SignalStream`); the caller then feeds the last
    signal and calls :meth:`Engine.finish`. ``done``: rows of the earlier pieces (for
    ``on_progress``).

    While the engine is :attr:`~Engine.idle` a market record changes nothing but the clock and
    the executor's book and time, so the rows up to the next one that closes an interval are
    accounted at once (:meth:`Engine.skip`); the others are fed as records.
    """
    import numpy as np

    from ...marketdata.rows import BOOK, TRADE

    n = len(rows)
    if not n:
        for sig in signals.records:
            engine.signal(sig)
        return
    sym = rows.symbol
    kind, t = rows.kind, rows.t
    tr, bk = rows.trades, rows.book
    # books[i], trades[i]: rows of the kind up to row i (so a book row's index is books[i] - 1)
    books = np.cumsum(kind == BOOK, dtype=np.int32)
    trades = np.cumsum(kind == TRADE, dtype=np.int32)
    clock = np.maximum.accumulate(t)
    # the executor's time: a book's E (else T), a trade's T, running maxima per kind
    book_now = np.maximum.accumulate(np.where(bk["E"] != 0, bk["E"], bk["T"]))
    trade_now = np.maximum.accumulate(tr["t"])
    E, T, bid, bid_qty, ask, ask_qty = (bk[c] for c in ("E", "T", "bid", "bid_qty", "ask",
                                                         "ask_qty"))
    tE, tT, price, qty = tr["E"], tr["t"], tr["price"], tr["qty"]

    def book(r: int) -> dict:
        return {"type": "book", "symbol": sym, "E": E.item(r) or None, "T": T.item(r) or None,
                "bid": bid.item(r), "bid_qty": bid_qty.item(r), "ask": ask.item(r),
                "ask_qty": ask_qty.item(r)}

    def trade(r: int) -> dict:
        T = tT.item(r)
        return {"type": "trade", "symbol": sym, "E": tE.item(r) or T, "T": T,
                "price": price.item(r), "qty": qty.item(r)}

    def feed(i: int) -> None:
        k = kind.item(i)
        rec = book(books.item(i) - 1) if k == BOOK else \
            trade(trades.item(i) - 1) if k == TRADE else {"type": "depth"}
        engine.market(rec, t.item(i))

    sigs, at = signals.records, signals.closed_at.tolist()
    nsig = len(sigs)
    first = t.item(0)
    i = j = 0
    mark = every
    while i < n:
        if engine.idle:
            stop = at[j] if j < nsig and at[j] < n else n
            if stop > i:
                nb, nt = books.item(stop - 1), trades.item(stop - 1)
                now = max(book_now.item(nb - 1) if nb else 0,
                          trade_now.item(nt - 1) if nt else 0)
                engine.skip(stop - i, clock.item(stop - 1), first,
                            book(nb - 1) if nb else None, now)
                i = stop
                if i == n:
                    break
        feed(i)
        while j < nsig and at[j] == i:
            engine.signal(sigs[j])
            j += 1
        i += 1
        if on_progress is not None and i >= mark:
            on_progress(done + i)
            mark = i + every
    while j < nsig:   # the intervals the end of the input closes
        engine.signal(sigs[j])
        j += 1
    if on_progress is not None:
        on_progress(done + n)
