"""The venue: accounts, orders and trades on top of a market feed (sim or replay).

Synchronous and single-threaded: the HTTP layer calls one method per request and the market
loop calls :meth:`Venue.on_market` after each batch of market events. Every method either
returns Binance's JSON shape or raises :class:`errors.ApiError` before changing anything.

User-stream events go to ``user_sink(api_key, event)``, public market events caused by the
venue's clients (their taker orders in the simulated market) to ``public_sink(events)``.

A ``newClientOrderId`` is unique among a key's open orders of a symbol only (Binance's rule): a
new order reusing the id of an open order is refused with -4116, one reusing the id of a filled,
canceled or expired order is a second order. An order that reaches the matching engine late
(the ``late`` fault) skips that check, so two open orders may then share an id; a query by
``origClientOrderId`` answers the older open one.
"""
from __future__ import annotations

import re
import secrets
import string
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from . import algo as algomod, errors, filters, wire
from .accounts import Account, MAX_LEVERAGE
from .algo import AlgoOrder
from .filters import SymbolSpec
from .matching import Order, apply_fill, fee, maker_queue, plan_new
from .state import StateStore

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
MAX_ALGO_ORDERS = 200            # open conditional orders of an account, all symbols (Binance)
TIFS = {"GTC", "IOC", "FOK", "GTX", "GTD"}
_ALNUM = string.ascii_letters + string.digits


def _bool(p: dict, name: str) -> bool:
    v = str(p.get(name, "false")).strip().lower()
    if v in ("true", "false"):
        return v == "true"
    raise errors.ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _int(p: dict, name: str, default=None):
    v = p.get(name)
    if v in (None, ""):
        return default
    try:
        return int(v)
    except ValueError:
        raise errors.illegal_chars(name, "^[0-9]{1,20}$") from None


def _required(p: dict, name: str) -> str:
    v = p.get(name)
    if v is None or str(v).strip() == "":
        raise errors.mandatory(name)
    return str(v).strip()


class Venue:
    """Orders, fills, positions and balances of every API key."""

    def __init__(self, specs: dict[str, SymbolSpec], feed, credentials: dict[str, str],
                 balance: Decimal = Decimal("10000"), store: StateStore | None = None,
                 funding_interval_s: float = 28800.0, funding_rate: Decimal = Decimal("0.0001")):
        self.specs = specs
        self.funding_interval_ms = max(1, int(round(funding_interval_s * 1000)))
        self.funding_rate = Decimal(funding_rate)
        self.income: dict[str, list[dict]] = {}
        self.next_tran_id = 9_000_000_001
        self.feed = feed
        self.credentials = dict(credentials)
        self.start_balance = Decimal(balance)
        self.store = store or StateStore(None)
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, tuple[str, Order]] = {}
        self.account_orders: dict[str, list[int]] = {}
        self.resting: dict[str, dict[int, Order]] = {s: {} for s in specs}
        self.open_cids: dict[tuple[str, str, str], int] = {}
        self.trades: dict[str, list[dict]] = {}
        self.algos: dict[int, tuple[str, AlgoOrder]] = {}
        self.account_algos: dict[str, list[int]] = {}
        # lookups by client id, so that a query or cancel costs the same on day 30 as at start
        self.last_cid: dict[tuple[str, str, str], int] = {}     # (key, symbol, cid) -> latest
        self.algo_cids: dict[tuple[str, str], list[int]] = {}   # (key, clientAlgoId) -> ids
        self.open_algos: dict[str, dict[int, AlgoOrder]] = {s: {} for s in specs}
        self.algo_of_order: dict[int, int] = {}      # order placed by a trigger -> its algo order
        self.last_price: dict[str, int] = {}         # last trade print per symbol (CONTRACT_PRICE)
        self.next_order_id = 4_000_000_001
        self.next_trade_id = 700_000_001
        self.next_algo_id = 3_000_001
        self.countdowns: dict[tuple[str, str], int] = {}   # (key, symbol) -> deadline ms
        self._income_dirty: list[tuple[str, dict]] = []
        self.user_sink = lambda api_key, event: None
        self.public_sink = lambda events: None
        self._load()
        for key in self.credentials:
            self.account(key)

    # --- state -------------------------------------------------------------------------------
    def _load(self) -> None:
        st = self.store.load()
        kv = st["kv"]
        counters = kv.get("counters") or {}
        self.next_order_id = counters.get("next_order_id", self.next_order_id)
        self.next_trade_id = counters.get("next_trade_id", self.next_trade_id)
        self.next_algo_id = counters.get("next_algo_id", self.next_algo_id)
        self.next_tran_id = counters.get("next_tran_id", self.next_tran_id)
        for k, v in kv.items():
            if k.startswith("account:"):
                self.accounts[k[len("account:"):]] = Account.from_state(v)
        for key, od in st["orders"]:
            o = Order.from_state(od)
            if o.symbol not in self.specs:
                continue
            self._index(key, o)
            if o.open:
                self.resting[o.symbol][o.order_id] = o
                self.open_cids.setdefault((key, o.symbol, o.client_order_id), o.order_id)
        for key, t in st["trades"]:
            self.trades.setdefault(key, []).append(t)
        for key, row in st.get("income", []):
            self.income.setdefault(key, []).append(row)
        for key, ad in st.get("algo_orders", []):
            a = AlgoOrder.from_state(ad)
            if a.symbol not in self.specs:
                continue
            self._index_algo(key, a)
            if a.open:
                self.open_algos[a.symbol][a.algo_id] = a
            if a.actual_order_id:
                self.algo_of_order[a.actual_order_id] = a.algo_id

    def _index(self, key: str, o: Order) -> None:
        self.orders[o.order_id] = (key, o)
        self.account_orders.setdefault(key, []).append(o.order_id)
        ck = (key, o.symbol, o.client_order_id)
        if self.last_cid.get(ck, 0) < o.order_id:
            self.last_cid[ck] = o.order_id

    def _index_algo(self, key: str, a: AlgoOrder) -> None:
        self.algos[a.algo_id] = (key, a)
        self.account_algos.setdefault(key, []).append(a.algo_id)
        self.algo_cids.setdefault((key, a.client_algo_id), []).append(a.algo_id)

    def _persist(self, key: str, orders=(), trades=(), algos=()) -> None:
        st = self.store
        income = self._flush_income(key)
        if st.db is None:
            return
        for o in orders:
            st.put_order(key, o.order_id, o.to_state())
        for t in trades:
            st.put_trade(key, t["id"], t)
        for a in algos:
            st.put_row("algo_orders", key, a.algo_id, a.to_state())
        for row in income:
            st.put_row("income", key, row["tranId"], row)
        st.put(f"account:{key}", self.accounts[key].to_state())
        st.put("counters", {"next_order_id": self.next_order_id, "next_trade_id": self.next_trade_id,
                            "next_algo_id": self.next_algo_id, "next_tran_id": self.next_tran_id})
        st.commit()

    def account(self, key: str) -> Account:
        acct = self.accounts.get(key)
        if acct is None:
            acct = self.accounts[key] = Account(balance=self.start_balance)
        return acct

    # --- helpers -----------------------------------------------------------------------------
    def spec(self, p: dict, required: bool = True) -> SymbolSpec | None:
        sym = p.get("symbol")
        if not sym:
            if required:
                raise errors.mandatory("symbol")
            return None
        spec = self.specs.get(str(sym).upper())
        if spec is None:
            raise errors.bad_symbol()
        return spec

    def mark_dec(self, symbol: str) -> Decimal:
        return self.specs[symbol].price_dec(self.feed.mark(symbol))

    def marks(self) -> dict[str, Decimal]:
        return {s: self.mark_dec(s) for s in self.specs}

    def open_orders_of(self, key: str, symbol: str | None = None) -> list[Order]:
        out = []
        for sym, book in self.resting.items():
            if symbol and sym != symbol:
                continue
            out.extend(o for o in book.values() if self.orders[o.order_id][0] == key)
        out.sort(key=lambda o: o.order_id)
        return out

    def _find(self, key: str, spec: SymbolSpec, p: dict) -> Order | None:
        oid = _int(p, "orderId")
        cid = p.get("origClientOrderId")
        if oid is None and not cid:
            raise errors.ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                  "but both were empty/null!")
        if oid is not None:
            hit = self.orders.get(oid)
            if hit and hit[0] == key and hit[1].symbol == spec.symbol:
                return hit[1]
            return None
        found = self.open_cids.get((key, spec.symbol, cid)) or self.last_cid.get(
            (key, spec.symbol, cid))
        return None if found is None else self.orders[found][1]

    # --- orders ------------------------------------------------------------------------------
    def new_order(self, key: str, p: dict, now: int, test: bool = False,
                  unique_id: bool = True, algo: AlgoOrder | None = None) -> dict:
        """POST /fapi/v1/order (and /order/test with ``test``). ``unique_id=False`` skips the
        check of ``newClientOrderId`` against the open orders (a late order landing: it was
        checked when it arrived). ``algo``: the algo order whose trigger places this order."""
        spec = self.spec(p)
        side = _required(p, "side").upper()
        if side not in ("BUY", "SELL"):
            raise errors.invalid_side()
        otype = _required(p, "type").upper()
        if otype in CONDITIONAL:
            raise errors.stop_order_switch_algo()
        if otype not in ("LIMIT", "MARKET"):
            raise errors.invalid_order_type()
        self._check_position_side(key, p)
        reduce_only = _bool(p, "reduceOnly")
        qty = spec.qty_units(_required(p, "quantity"), "quantity")
        if otype == "LIMIT":
            tif = _required(p, "timeInForce").upper()
            if tif not in TIFS:
                raise errors.invalid_tif()
            price = spec.price_units(_required(p, "price"), "price")
            filters.check_price(spec, price)
        else:
            tif, price = "GTC", 0
        filters.check_qty(spec, qty, market=otype == "MARKET")
        cid = p.get("newClientOrderId") or ""
        if cid and not CLIENT_ID_RE.match(cid):
            raise errors.client_order_id_invalid()
        resp_type = str(p.get("newOrderRespType", "ACK")).upper()
        mark = self.feed.mark(spec.symbol)
        if otype == "LIMIT":
            filters.check_percent_price(spec, side, price, mark)
        filters.check_notional(spec, price if otype == "LIMIT" else mark, qty, reduce_only)
        acct = self.account(key)
        if unique_id and cid and (key, spec.symbol, cid) in self.open_cids:
            raise errors.duplicate_client_order_id()
        if len(self.open_orders_of(key, spec.symbol)) >= spec.max_num_orders:
            raise errors.max_open_orders()
        pos_qty = acct.positions[spec.symbol].qty if spec.symbol in acct.positions else 0
        if reduce_only and (pos_qty == 0 or (pos_qty > 0) == (side == "BUY")):
            raise errors.reduce_only_rejected()
        book = self.feed.books[spec.symbol]
        opposite = "a" if side == "BUY" else "b"
        plan = plan_new(otype, "GTC" if tif == "GTD" else tif, side, qty, price,
                        book.iter_side(opposite))
        if plan.then == "reject_gtx":
            raise errors.gtx_rejected()
        if plan.then == "reject_fok":
            raise errors.fok_rejected()
        if not reduce_only:
            self._check_margin(key, acct, spec, side, qty, price, plan, mark)
        if test:
            return {}
        if not cid:
            cid = "".join(secrets.choice(_ALNUM) for _ in range(22))
        order = Order(order_id=self.next_order_id, client_order_id=cid, symbol=spec.symbol,
                      side=side, type=otype, tif=tif, qty=qty, price=price,
                      reduce_only=reduce_only, time=now, update_time=now)
        self.next_order_id += 1
        self._index(key, order)
        if algo is not None:
            order.orig_type, order.stop_price = algo.order_type, algo.trigger
            order.working_type, order.close_position = algo.working_type, algo.close_position
            algo.actual_order_id = order.order_id
            algo.status = "TRIGGERED"
            algo.update_time = now
            self.algo_of_order[order.order_id] = algo.algo_id
            self.user_sink(key, algomod.algo_update(spec, algo, now, order))
        ack = wire.order_json(spec, order, with_time=False)
        self.user_sink(key, wire.order_update(spec, order, "NEW", now))
        fills = list(plan.fills)
        if reduce_only:
            fills = _cap(fills, abs(pos_qty))
        new_trades = []
        if fills:
            public = self.feed.take(spec.symbol, side, fills, now)
            new_trades = self._execute(key, order, fills, maker=False, now=now)
            if public:
                self.public_sink(public)
        if order.executed < order.qty:
            if plan.then == "rest" and not (reduce_only and order.executed):
                self.resting[spec.symbol][order.order_id] = order
                self.open_cids.setdefault((key, spec.symbol, cid), order.order_id)
            else:
                order.status = "EXPIRED"
                order.update_time = now
                er = "9" if otype == "MARKET" else "4" if reduce_only else "2"
                self.user_sink(key, wire.order_update(spec, order, "EXPIRED", now, er=er))
        self._persist(key, [order], new_trades, self._algo_done(key, order, now))
        if fills and public:
            self.on_market(public, now)
        if resp_type == "RESULT":
            return wire.order_json(spec, order, with_time=False)
        return ack

    def _check_position_side(self, key: str, p: dict) -> None:
        """One-way positions only: ``positionSide`` BOTH (or none); LONG/SHORT -4061. Hedge
        positions are not simulated, so with the hedge-mode flag on (POST positionSide/dual)
        every new order is -4061: BOTH does not match that setting, LONG/SHORT would need it."""
        if str(p.get("positionSide") or "BOTH").upper() != "BOTH" or self.account(key).dual_side:
            raise errors.position_side_mismatch()

    def _check_margin(self, key, acct, spec, side, qty, price, plan, mark) -> None:
        opening = acct.opening_qty(spec.symbol, side, qty)
        if not opening:
            return
        if plan.fills:
            ref = max(p for p, _ in plan.fills)
        else:
            ref = price or mark
        notional = spec.notional(max(ref, price), opening)
        need = notional / acct.lev(spec.symbol) + fee(notional, maker=False)
        m = acct.margins(self.specs, self.marks(), self.open_orders_of(key))
        if need > m["available"]:
            raise errors.margin_insufficient()

    def _add_income(self, key: str, symbol: str, kind: str, amount: Decimal, now: int,
                    trade_id: str = "") -> dict:
        """An income record (REALIZED_PNL, COMMISSION, FUNDING_FEE), saved with the next
        :meth:`_persist` of the key."""
        row = wire.income_row(self.next_tran_id, symbol, kind, amount, now, trade_id)
        self.next_tran_id += 1
        self.income.setdefault(key, []).append(row)
        self._income_dirty.append((key, row))
        return row

    def _flush_income(self, key: str) -> list[dict]:
        rows = [r for k, r in self._income_dirty if k == key]
        if rows:
            self._income_dirty = [(k, r) for k, r in self._income_dirty if k != key]
        return rows

    def _execute(self, key: str, order: Order, fills, maker: bool, now: int) -> list[dict]:
        """Book executions on the order and the account; emit the user events."""
        spec = self.specs[order.symbol]
        acct = self.account(key)
        trades = []
        for price, qty in fills:
            notional = spec.notional(price, qty)
            commission = fee(notional, maker)
            realized = acct.fill(spec, order.side, qty, price, commission, now)
            apply_fill(order, qty, notional, now)
            tid = self.next_trade_id
            self.next_trade_id += 1
            t = {"symbol": spec.symbol, "id": tid, "orderId": order.order_id, "side": order.side,
                 "price": spec.fmt_price(price), "qty": spec.fmt_qty(qty),
                 "realizedPnl": wire.dec(realized), "marginAsset": "USDT",
                 "quoteQty": wire.dec(notional, spec.pp + spec.qp),
                 "commission": wire.dec(commission), "commissionAsset": "USDT", "time": now,
                 "positionSide": "BOTH", "buyer": order.side == "BUY", "maker": maker}
            self.trades.setdefault(key, []).append(t)
            trades.append(t)
            if realized:
                self._add_income(key, spec.symbol, "REALIZED_PNL", realized, now, str(tid))
            if commission:
                self._add_income(key, spec.symbol, "COMMISSION", -commission, now, str(tid))
            self.user_sink(key, wire.order_update(spec, order, "TRADE", now, qty, price, commission,
                                                  tid, maker, realized))
        if trades:
            pos = acct.position(spec.symbol)
            self.user_sink(key, wire.account_update(acct, [(spec, pos, self.mark_dec(spec.symbol))],
                                                    now))
        return trades

    def on_market(self, events, now: int) -> None:
        """Fill resting limit orders by the prints that traded through them (see matching):
        each print fills at most its own quantity per side, one fill per order and print.
        Then the algo orders of the symbols these events touched: CONTRACT_PRICE ones against
        each print in turn, MARK_PRICE ones against the mark after the batch."""
        prints: dict[str, list[int]] = {}
        touched = set()
        for kind, sym, payload in events:
            touched.add(sym)
            if kind != "trade" and kind != "aggTrade":
                continue
            spec = self.specs.get(sym)
            if spec is None:
                continue
            try:
                price = spec.price_units(payload["p"])
                qty = _print_qty(spec, payload["q"])
            except (errors.ApiError, InvalidOperation, KeyError, TypeError):
                continue                     # not a print this venue can read: it fills nothing
            if qty <= 0:
                continue
            self.last_price[sym] = price
            prints.setdefault(sym, []).append(price)
            book = self.resting.get(sym)
            if not book:
                continue
            for side in ("BUY", "SELL"):
                left = qty
                for order in maker_queue([o for o in book.values() if o.side == side], price):
                    if left <= 0:
                        break
                    left -= self._fill_resting(order, left, now)
        for sym in sorted(touched):
            if self.open_algos.get(sym):
                self.check_algos(sym, now, prints.get(sym, ()))

    def _fill_resting(self, order: Order, most: int, now: int) -> int:
        """Fill a resting order as maker, at its price, by at most ``most``; returns the quantity
        filled. A reduce-only order is capped by the position and expires (er 4) once nothing
        is left to reduce."""
        key = self.orders[order.order_id][0]
        qty = min(order.remaining, most)
        if order.reduce_only:
            qty = min(qty, self._reducible(key, order))
            if qty <= 0:
                self._expire_reduce_only(key, order, now)
                self._persist(key, [order], algos=self._algo_done(key, order, now))
                return 0
        trades = self._execute(key, order, [(order.price, qty)], maker=True, now=now)
        if not order.open:
            self._close_open(key, order)
        elif order.reduce_only and self._reducible(key, order) <= 0:
            self._expire_reduce_only(key, order, now)
        self._persist(key, [order], trades, self._algo_done(key, order, now))
        return qty

    def _reducible(self, key: str, order: Order) -> int:
        """How much of the position a reduce-only order could still close."""
        pos = self.account(key).position(order.symbol).qty
        if pos == 0 or (pos > 0) == (order.side == "BUY"):
            return 0
        return abs(pos)

    def _expire_reduce_only(self, key: str, order: Order, now: int) -> None:
        self._close_open(key, order)
        order.status = "EXPIRED"
        order.update_time = now
        self.user_sink(key, wire.order_update(self.specs[order.symbol], order, "EXPIRED", now,
                                              er="4"))

    def _close_open(self, key: str, order: Order) -> None:
        self.resting[order.symbol].pop(order.order_id, None)
        cid_key = (key, order.symbol, order.client_order_id)
        if self.open_cids.get(cid_key) == order.order_id:
            del self.open_cids[cid_key]
            # another open order with this id (a late one landed beside it) takes its place
            for o in sorted(self.resting[order.symbol].values(), key=lambda o: o.order_id):
                if o.client_order_id == order.client_order_id and self.orders[o.order_id][0] == key:
                    self.open_cids[cid_key] = o.order_id
                    break

    def cancel_order(self, key: str, p: dict, now: int) -> dict:
        """DELETE /fapi/v1/order."""
        spec = self.spec(p)
        order = self._find(key, spec, p)
        if order is None or not order.open:
            raise errors.cancel_rejected()
        self._cancel(key, order, now)
        self._persist(key, [order], algos=self._algo_done(key, order, now))
        return wire.order_json(spec, order, with_time=False)

    def _cancel(self, key: str, order: Order, now: int) -> None:
        self._close_open(key, order)
        order.status = "CANCELED"
        order.update_time = now
        self.user_sink(key, wire.order_update(self.specs[order.symbol], order, "CANCELED", now))

    def cancel_all(self, key: str, p: dict, now: int) -> dict:
        """DELETE /fapi/v1/allOpenOrders."""
        spec = self.spec(p)
        self.cancel_symbol_orders(key, spec.symbol, now)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def cancel_symbol_orders(self, key: str, symbol: str, now: int) -> int:
        """Cancel every open (matching-engine) order of a key on a symbol, with the events."""
        orders = self.open_orders_of(key, symbol)
        done = []
        for o in orders:
            self._cancel(key, o, now)
            done.extend(self._algo_done(key, o, now))
        self._persist(key, orders, algos=done)
        return len(orders)

    def query_order(self, key: str, p: dict) -> dict:
        """GET /fapi/v1/order."""
        spec = self.spec(p)
        order = self._find(key, spec, p)
        if order is None:
            raise errors.no_such_order()
        return wire.order_json(spec, order)

    def open_order(self, key: str, p: dict) -> dict:
        """GET /fapi/v1/openOrder: one open order."""
        spec = self.spec(p)
        order = self._find(key, spec, p)
        if order is None or not order.open:
            raise errors.ApiError(-2013, "Order does not exist.")
        return wire.order_json(spec, order)

    def open_orders(self, key: str, p: dict) -> list:
        """GET /fapi/v1/openOrders."""
        spec = self.spec(p, required=False)
        return [wire.order_json(self.specs[o.symbol], o)
                for o in self.open_orders_of(key, spec.symbol if spec else None)]

    def all_orders(self, key: str, p: dict) -> list:
        """GET /fapi/v1/allOrders: symbol*, orderId (>=), startTime, endTime, limit (500, max 1000)."""
        spec = self.spec(p)
        oid = _int(p, "orderId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = min(max(_int(p, "limit", 500), 1), 1000)
        out = []
        for order_id in self.account_orders.get(key, []):
            o = self.orders[order_id][1]
            if o.symbol != spec.symbol or (oid is not None and o.order_id < oid):
                continue
            if (start is not None and o.time < start) or (end is not None and o.time > end):
                continue
            out.append(o)
        out = out[:limit] if oid is not None else out[-limit:]
        return [wire.order_json(spec, o) for o in out]

    def user_trades(self, key: str, p: dict) -> list:
        """GET /fapi/v1/userTrades: symbol*, orderId, fromId, startTime, endTime, limit."""
        spec = self.spec(p)
        oid, from_id = _int(p, "orderId"), _int(p, "fromId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = min(max(_int(p, "limit", 500), 1), 1000)
        out = [t for t in self.trades.get(key, []) if t["symbol"] == spec.symbol
               and (oid is None or t["orderId"] == oid) and (from_id is None or t["id"] >= from_id)
               and (start is None or t["time"] >= start) and (end is None or t["time"] <= end)]
        return out[:limit] if from_id is not None else out[-limit:]

    # --- account -----------------------------------------------------------------------------
    def set_leverage(self, key: str, p: dict, now: int = 0) -> dict:
        """POST /fapi/v1/leverage."""
        spec = self.spec(p)
        raw = _required(p, "leverage")
        try:
            lev = int(raw)
        except ValueError:
            raise errors.invalid_leverage(raw) from None
        if not 1 <= lev <= MAX_LEVERAGE:
            raise errors.invalid_leverage(lev)
        acct = self.account(key)
        acct.leverage[spec.symbol] = lev
        self._persist(key)
        self.user_sink(key, {"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now,
                             "ac": {"s": spec.symbol, "l": lev}})
        return {"leverage": lev, "maxNotionalValue": wire._max_notional(lev), "symbol": spec.symbol}

    def _has_open(self, key: str, symbol: str | None = None) -> bool:
        return bool(self.open_orders_of(key, symbol) or self.open_algos_of(key, symbol))

    def _has_position(self, key: str, symbol: str | None = None) -> bool:
        return any(pos.qty for sym, pos in self.account(key).positions.items()
                   if symbol in (None, sym))

    def set_margin_type(self, key: str, p: dict, now: int) -> dict:
        """POST /fapi/v1/marginType: ISOLATED | CROSSED per symbol. Stored and reported
        (positionRisk marginType, account isolated, ACCOUNT_UPDATE mt); margin itself is still
        computed as cross (no isolated wallet)."""
        spec = self.spec(p)
        mt = _required(p, "marginType").upper()
        if mt == "CROSS":
            mt = "CROSSED"
        if mt not in ("ISOLATED", "CROSSED"):
            raise errors.invalid_param("marginType")
        acct = self.account(key)
        if ("ISOLATED" if acct.isolated(spec.symbol) else "CROSSED") == mt:
            raise errors.ApiError(-4046, "No need to change margin type.")
        if self._has_open(key, spec.symbol):
            raise errors.ApiError(-4047, "Margin type cannot be changed if there exists open orders.")
        if self._has_position(key, spec.symbol):
            raise errors.ApiError(-4048, "Margin type cannot be changed if there exists position.")
        if mt == "ISOLATED":
            acct.margin_type[spec.symbol] = mt
        else:
            acct.margin_type.pop(spec.symbol, None)
        acct.update_time = now
        self._persist(key)
        return {"code": 200, "msg": "success"}

    def position_mode(self, key: str) -> dict:
        """GET /fapi/v1/positionSide/dual."""
        return {"dualSidePosition": self.account(key).dual_side}

    def set_position_mode(self, key: str, p: dict, now: int) -> dict:
        """POST /fapi/v1/positionSide/dual: the hedge-mode flag of every symbol, stored (see
        :meth:`_check_position_side` for what it does to new orders)."""
        dual = _bool({"dualSidePosition": _required(p, "dualSidePosition")}, "dualSidePosition")
        acct = self.account(key)
        if acct.dual_side == dual:
            raise errors.ApiError(-4059, "No need to change position side.")
        if self._has_open(key):
            raise errors.ApiError(-4067, "Position side cannot be changed if there exists open orders.")
        if self._has_position(key):
            raise errors.ApiError(-4068, "Position side cannot be changed if there exists position.")
        acct.dual_side = dual
        acct.update_time = now
        self._persist(key)
        return {"code": 200, "msg": "success"}

    def leverage_bracket(self, key: str, p: dict):
        """GET /fapi/v1/leverageBracket (a list; one object when a symbol is given)."""
        spec = self.spec(p, required=False)
        if spec:
            return [wire.leverage_bracket(spec.symbol)]
        return [wire.leverage_bracket(s) for s in sorted(self.specs)]

    def _order_notionals(self, key: str, symbol: str) -> tuple[Decimal, Decimal, Decimal]:
        acct = self.account(key)
        spec = self.specs[symbol]
        im = bid = ask = Decimal(0)
        for o in self.open_orders_of(key, symbol):
            n = spec.notional(o.price, o.remaining)
            if o.side == "BUY":
                bid += n
            else:
                ask += n
            opening = acct.opening_qty(symbol, o.side, o.remaining)
            im += spec.notional(o.price, opening) / acct.lev(symbol)
        return im, bid, ask

    def position_risk(self, key: str, p: dict, version: int) -> list:
        """GET /fapi/v2/positionRisk (every symbol) and /fapi/v3/positionRisk (active ones)."""
        spec = self.spec(p, required=False)
        acct = self.account(key)
        out = []
        for sym in sorted(self.specs):
            if spec and sym != spec.symbol:
                continue
            pos = acct.positions.get(sym) or acct.position(sym)
            mark = self.mark_dec(sym)
            if version == 2:
                out.append(wire.position_v2(self.specs[sym], pos, acct, mark))
                continue
            im, bid, ask = self._order_notionals(key, sym)
            if pos.qty or bid or ask:
                out.append(wire.position_v3(self.specs[sym], pos, acct, mark, im, bid, ask))
        return out

    def account_info(self, key: str, version: int) -> dict:
        """GET /fapi/v2/account and /fapi/v3/account."""
        acct = self.account(key)
        m = acct.margins(self.specs, self.marks(), self.open_orders_of(key))
        d = wire.dec
        totals = {
            "totalInitialMargin": d(m["position_im"] + m["order_im"]),
            "totalMaintMargin": d(m["maint"]), "totalWalletBalance": d(m["wallet"]),
            "totalUnrealizedProfit": d(m["upnl"]), "totalMarginBalance": d(m["wallet"] + m["upnl"]),
            "totalPositionInitialMargin": d(m["position_im"]),
            "totalOpenOrderInitialMargin": d(m["order_im"]),
            "totalCrossWalletBalance": d(m["wallet"]), "totalCrossUnPnl": d(m["upnl"]),
            "availableBalance": d(m["available"]),
            "maxWithdrawAmount": d(max(Decimal(0), min(m["available"], m["wallet"]))),
        }
        asset = {
            "asset": "USDT", "walletBalance": d(m["wallet"]), "unrealizedProfit": d(m["upnl"]),
            "marginBalance": d(m["wallet"] + m["upnl"]), "maintMargin": d(m["maint"]),
            "initialMargin": d(m["position_im"] + m["order_im"]),
            "positionInitialMargin": d(m["position_im"]),
            "openOrderInitialMargin": d(m["order_im"]), "crossWalletBalance": d(m["wallet"]),
            "crossUnPnl": d(m["upnl"]), "availableBalance": d(m["available"]),
            "maxWithdrawAmount": totals["maxWithdrawAmount"], "marginAvailable": True,
            "updateTime": acct.update_time,
        }
        positions = []
        for sym in sorted(self.specs):
            spec = self.specs[sym]
            pos = acct.positions.get(sym) or acct.position(sym)
            im, bid, ask = self._order_notionals(key, sym)
            mark = self.mark_dec(sym)
            notional = spec.qty_dec(pos.qty) * mark
            pim = abs(notional) / acct.lev(sym)
            if version == 3 and not (pos.qty or bid or ask):
                continue
            row = {"symbol": sym, "positionSide": "BOTH", "positionAmt": spec.fmt_qty(pos.qty),
                   "unrealizedProfit": d(pos.unrealized(spec, mark)), "isolatedMargin": "0",
                   "notional": d(notional), "isolatedWallet": "0", "initialMargin": d(pim + im),
                   "maintMargin": d(abs(notional) * Decimal("0.004")), "updateTime": pos.update_time}
            if version == 2:
                row.update({"leverage": str(acct.lev(sym)), "isolated": acct.isolated(sym),
                            "entryPrice": d(pos.entry, spec.pp + 5) if pos.qty else "0.0",
                            "breakEvenPrice": "0.0", "maxNotional": wire._max_notional(acct.lev(sym)),
                            "positionInitialMargin": d(pim), "openOrderInitialMargin": d(im),
                            "bidNotional": d(bid), "askNotional": d(ask)})
            positions.append(row)
        out = dict(totals)
        if version == 2:
            out = {"feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
                   "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False,
                   "tradeGroupId": -1, **totals}
        out["assets"] = [asset]
        out["positions"] = positions
        return out

    def balance(self, key: str, version: int) -> list:
        """GET /fapi/v2/balance and /fapi/v3/balance."""
        acct = self.account(key)
        m = acct.margins(self.specs, self.marks(), self.open_orders_of(key))
        d = wire.dec
        return [{"accountAlias": "SgsR" + key[:4].encode().hex()[:6], "asset": "USDT",
                 "balance": d(m["wallet"]), "crossWalletBalance": d(m["wallet"]),
                 "crossUnPnl": d(m["upnl"]), "availableBalance": d(m["available"]),
                 "maxWithdrawAmount": d(max(Decimal(0), min(m["available"], m["wallet"]))),
                 "marginAvailable": True, "updateTime": acct.update_time}]


    # --- mark price and funding ---------------------------------------------------------------
    def next_funding_time(self, now: int) -> int:
        """The next funding time after ``now``: the multiples of the interval since the epoch
        (8 h: 00:00, 08:00 and 16:00 UTC, as on Binance)."""
        return (now // self.funding_interval_ms + 1) * self.funding_interval_ms

    def charge_funding(self, now: int) -> list[dict]:
        """Funding at ``now``: every open position pays (or receives) its value at the mark
        times the rate; longs pay a positive rate. Per payment: the wallet, a FUNDING_FEE income
        row and an ACCOUNT_UPDATE (m FUNDING_FEE; the balance only for a cross position, the
        position too for an isolated one). Returns the income rows."""
        out = []
        for key in sorted(self.accounts):
            acct = self.accounts[key]
            paid = False
            for sym in sorted(acct.positions):
                pos = acct.positions[sym]
                if not pos.qty or sym not in self.specs:
                    continue
                spec = self.specs[sym]
                mark = self.mark_dec(sym)
                amount = -(spec.qty_dec(pos.qty) * mark * self.funding_rate).quantize(Decimal("1e-8"))
                if not amount:
                    continue
                acct.balance += amount
                acct.update_time = now
                out.append(self._add_income(key, sym, "FUNDING_FEE", amount, now))
                paid = True
                shown = [(spec, pos, mark)] if acct.isolated(sym) else []
                self.user_sink(key, wire.account_update(acct, shown, now, "FUNDING_FEE", bc=amount))
            if paid:
                self._persist(key)
        return out

    def income_history(self, key: str, p: dict, now: int) -> list:
        """GET /fapi/v1/income: symbol, incomeType, startTime, endTime (inclusive; neither: the
        last 7 days), page (from 1), limit (100, max 1000); oldest first."""
        spec = self.spec(p, required=False)
        kind = str(p.get("incomeType") or "").upper()
        start, end = _int(p, "startTime"), _int(p, "endTime")
        if start is None and end is None:
            start = now - 7 * 86_400_000
        limit = min(max(_int(p, "limit", 100), 1), 1000)
        page = max(_int(p, "page", 1), 1)
        rows = [r for r in self.income.get(key, [])
                if (spec is None or r["symbol"] == spec.symbol) and (not kind or r["incomeType"] == kind)
                and (start is None or r["time"] >= start) and (end is None or r["time"] <= end)]
        return rows[(page - 1) * limit:page * limit]

    # --- dead-man switch ---------------------------------------------------------------------
    def countdown_cancel_all(self, key: str, p: dict, now: int) -> dict:
        """POST /fapi/v1/countdownCancelAll: symbol, countdownTime (ms; 0 stops the timer). Each
        call replaces the running countdown of the key's symbol."""
        spec = self.spec(p)
        _required(p, "countdownTime")
        ms = _int(p, "countdownTime")
        if ms < 0:
            raise errors.illegal_chars("countdownTime", "^[0-9]{1,20}$")
        if ms == 0:
            self.countdowns.pop((key, spec.symbol), None)
        else:
            self.countdowns[(key, spec.symbol)] = now + ms
        return {"symbol": spec.symbol, "countdownTime": str(ms)}

    def expire_countdowns(self, now: int) -> list[tuple[str, str, int]]:
        """Cancel every open order of the (key, symbol) whose countdown ran out (algo orders are
        kept, as on Binance: see docs/exchange.md); returns (key, symbol, orders canceled)."""
        out = []
        for (key, sym), deadline in list(self.countdowns.items()):
            if deadline <= now:
                del self.countdowns[(key, sym)]
                out.append((key, sym, self.cancel_symbol_orders(key, sym, now)))
        return out

    # --- algo orders -------------------------------------------------------------------------
    def contract_price(self, symbol: str) -> int:
        """The last trade price (CONTRACT_PRICE), the mark before the first print."""
        return self.last_price.get(symbol) or self.feed.mark(symbol)

    def working_price(self, symbol: str, working_type: str) -> int:
        return self.feed.mark(symbol) if working_type == "MARK_PRICE" else self.contract_price(symbol)

    def new_algo_order(self, key: str, p: dict, now: int) -> dict:
        """POST /fapi/v1/algoOrder (algoType CONDITIONAL)."""
        algo_type = _required(p, "algoType").upper()
        if algo_type != "CONDITIONAL":
            raise errors.invalid_param("algoType")
        spec = self.spec(p)
        side = _required(p, "side").upper()
        if side not in ("BUY", "SELL"):
            raise errors.invalid_side()
        otype = _required(p, "type").upper()
        if otype not in algomod.ALGO_TYPES:
            raise errors.invalid_order_type()    # TRAILING_STOP_MARKET: not simulated here
        self._check_position_side(key, p)
        close = _bool(p, "closePosition")
        reduce_only = _bool(p, "reduceOnly")
        price_protect = _bool(p, "priceProtect")
        working = str(p.get("workingType") or "CONTRACT_PRICE").upper()
        if working not in algomod.WORKING_TYPES:
            raise errors.invalid_param("workingType")
        trigger = spec.price_units(_required(p, "triggerPrice"), "triggerPrice")
        filters.check_price(spec, trigger)
        limit = otype in ("STOP", "TAKE_PROFIT")
        if close:
            if limit:
                raise errors.not_required("closePosition")
            if p.get("quantity") not in (None, ""):
                raise errors.quantity_with_close_position()
            if reduce_only:
                raise errors.not_required("reduceOnly")
            qty = 0
        else:
            qty = spec.qty_units(_required(p, "quantity"), "quantity")
            filters.check_qty(spec, qty, market=not limit)
        if limit:
            tif = str(p.get("timeInForce") or "GTC").upper()
            if tif not in TIFS:
                raise errors.invalid_tif()
            price = spec.price_units(_required(p, "price"), "price")
            filters.check_price(spec, price)
        else:
            tif, price = "GTC", 0
            if p.get("price") not in (None, ""):
                raise errors.not_required("price")
        if qty:
            filters.check_notional(spec, price or trigger, qty, reduce_only)
        cid = p.get("clientAlgoId") or ""
        if cid and not CLIENT_ID_RE.match(cid):
            raise errors.client_order_id_invalid()
        if cid and any(a.client_algo_id == cid for a in self.open_algos_of(key, spec.symbol)):
            raise errors.duplicate_client_order_id()
        if len(self.open_algos_of(key)) >= MAX_ALGO_ORDERS:
            raise errors.max_stop_orders()
        a = AlgoOrder(algo_id=self.next_algo_id, client_algo_id=cid or _random_id(),
                      symbol=spec.symbol, side=side, order_type=otype, tif=tif, qty=qty,
                      price=price, trigger=trigger, working_type=working, close_position=close,
                      reduce_only=reduce_only or close, price_protect=price_protect,
                      create_time=now, update_time=now)
        if a.triggered_by(self.working_price(spec.symbol, working)):
            raise errors.would_immediately_trigger()
        self.account(key)
        self.next_algo_id += 1
        self._index_algo(key, a)
        self.open_algos[spec.symbol][a.algo_id] = a
        self.user_sink(key, algomod.algo_update(spec, a, now))
        self._persist(key, algos=[a])
        return algomod.algo_json(spec, a, query=False)

    def open_algos_of(self, key: str, symbol: str | None = None) -> list[AlgoOrder]:
        out = [a for sym, book in self.open_algos.items() if symbol in (None, sym)
               for a in book.values() if self.algos[a.algo_id][0] == key]
        out.sort(key=lambda a: a.algo_id)
        return out

    def _find_algo(self, key: str, p: dict) -> AlgoOrder | None:
        aid = _int(p, "algoId")
        cid = p.get("clientAlgoId")
        if aid is None and not cid:
            raise errors.ApiError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, "
                                  "but both were empty/null!")
        if aid is not None:
            hit = self.algos.get(aid)
            return hit[1] if hit and hit[0] == key else None
        found = None
        for algo_id in self.algo_cids.get((key, cid), ()):
            a = self.algos[algo_id][1]
            if found is None or a.open or not found.open:
                found = a                # the open one, else the latest
        return found

    def _actual(self, a: AlgoOrder) -> Order | None:
        hit = self.orders.get(a.actual_order_id) if a.actual_order_id else None
        return hit[1] if hit else None

    def query_algo(self, key: str, p: dict) -> dict:
        """GET /fapi/v1/algoOrder."""
        a = self._find_algo(key, p)
        if a is None:
            raise errors.no_such_order()
        return algomod.algo_json(self.specs[a.symbol], a, self._actual(a))

    def open_algo_orders(self, key: str, p: dict) -> list:
        """GET /fapi/v1/openAlgoOrders: symbol, algoId, algoType (all optional)."""
        spec = self.spec(p, required=False)
        aid = _int(p, "algoId")
        return [algomod.algo_json(self.specs[a.symbol], a)
                for a in self.open_algos_of(key, spec.symbol if spec else None)
                if aid is None or a.algo_id == aid]

    def all_algo_orders(self, key: str, p: dict) -> list:
        """GET /fapi/v1/allAlgoOrders: symbol*, algoId (>=), startTime, endTime, limit."""
        spec = self.spec(p)
        aid = _int(p, "algoId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = min(max(_int(p, "limit", 500), 1), 1000)
        out = [a for a in (self.algos[i][1] for i in self.account_algos.get(key, []))
               if a.symbol == spec.symbol and (aid is None or a.algo_id >= aid)
               and (start is None or a.create_time >= start) and (end is None or a.create_time <= end)]
        out = out[:limit] if aid is not None else out[-limit:]
        return [algomod.algo_json(spec, a, self._actual(a)) for a in out]

    def cancel_algo(self, key: str, p: dict, now: int) -> dict:
        """DELETE /fapi/v1/algoOrder: only an algo order not triggered yet can be canceled."""
        a = self._find_algo(key, p)
        if a is None or not a.open:
            raise errors.cancel_rejected()
        self._cancel_algo(key, a, now)
        self._persist(key, algos=[a])
        return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200",
                "msg": "success"}

    def _cancel_algo(self, key: str, a: AlgoOrder, now: int) -> None:
        self.open_algos[a.symbol].pop(a.algo_id, None)
        a.status = "CANCELED"
        a.update_time = now
        self.user_sink(key, algomod.algo_update(self.specs[a.symbol], a, now))

    def cancel_all_algos(self, key: str, p: dict, now: int) -> dict:
        """DELETE /fapi/v1/algoOpenOrders (symbol)."""
        spec = self.spec(p)
        algos = self.open_algos_of(key, spec.symbol)
        for a in algos:
            self._cancel_algo(key, a, now)
        self._persist(key, algos=algos)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def check_algos(self, symbol: str, now: int, prints=()) -> None:
        """Trigger the open algo orders of ``symbol`` whose condition is met: CONTRACT_PRICE
        ones by ``prints`` (trade prices, in order) or else the last trade price, MARK_PRICE
        ones by the mark. Oldest first; each places its order at once."""
        book = self.open_algos.get(symbol)
        if not book:
            return
        mark = self.feed.mark(symbol)
        contract = list(prints) or [self.contract_price(symbol)]
        for a in sorted(book.values(), key=lambda a: a.algo_id):
            if not a.open:
                continue
            prices = [mark] if a.working_type == "MARK_PRICE" else contract
            if any(a.triggered_by(px) for px in prices):
                self._trigger(a, now)

    def _trigger(self, a: AlgoOrder, now: int) -> None:
        """The trigger: TRIGGERING, then the order in the matching engine (TRIGGERED, and
        FINISHED once that order is done), or REJECTED when the engine refuses it."""
        key = self.algos[a.algo_id][0]
        spec = self.specs[a.symbol]
        self.open_algos[a.symbol].pop(a.algo_id, None)
        a.status = "TRIGGERING"
        a.trigger_time = a.update_time = now
        self.user_sink(key, algomod.algo_update(spec, a, now))
        qty = a.qty
        if a.close_position:
            pos = self.account(key).position(a.symbol).qty
            qty = abs(pos) if pos and (pos > 0) == (a.side == "SELL") else 0
        if qty <= 0:
            self._reject_algo(key, a, now, "Reduce Only reject")
            return
        params = {"symbol": a.symbol, "side": a.side, "quantity": spec.fmt_qty(qty),
                  "reduceOnly": "true" if a.reduce_only else "false",
                  "newClientOrderId": a.client_algo_id, "newOrderRespType": "RESULT"}
        if a.order_type in algomod.MARKET_KINDS:
            params["type"] = "MARKET"
        else:
            params.update(type="LIMIT", price=spec.fmt_price(a.price), timeInForce=a.tif)
        try:
            self.new_order(key, params, now, unique_id=False, algo=a)
        except errors.ApiError as exc:
            self._reject_algo(key, a, now, exc.msg)

    def _reject_algo(self, key: str, a: AlgoOrder, now: int, reason: str) -> None:
        a.status = "REJECTED"
        a.reason = reason
        a.update_time = now
        self.user_sink(key, algomod.algo_update(self.specs[a.symbol], a, now))
        self._persist(key, algos=[a])

    def _algo_done(self, key: str, order: Order, now: int) -> list[AlgoOrder]:
        """FINISHED for the algo order that placed ``order``, once that order is done."""
        aid = self.algo_of_order.get(order.order_id)
        if aid is None or order.open:
            return []
        a = self.algos[aid][1]
        if a.status != "TRIGGERED":
            return []
        a.status = "FINISHED"
        a.update_time = now
        self.user_sink(key, algomod.algo_update(self.specs[a.symbol], a, now, order))
        return [a]


def _random_id() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(22))


def _print_qty(spec: SymbolSpec, text: str) -> int:
    """A print's quantity in the symbol's qty units (rounded down if finer than them)."""
    try:
        return spec.qty_units(text)
    except errors.ApiError:
        return int(Decimal(text).scaleb(spec.qp).to_integral_value(rounding=ROUND_FLOOR))


def _cap(fills, limit: int):
    """Truncate fills to ``limit`` total quantity (reduce-only)."""
    out, left = [], limit
    for price, qty in fills:
        if left <= 0:
            break
        take = min(qty, left)
        out.append((price, take))
        left -= take
    return out
