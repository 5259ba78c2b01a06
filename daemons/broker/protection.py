"""Protective stops: while a position is open, the venue holds a stop that closes it.

For every open position the broker keeps one ``STOP_MARKET`` algo order with ``closePosition``
at the venue (Binance's Algo Order API), on the mark price, ``risk.protective_stop_bps`` beyond
the entry price: below a long (SELL), above a short (BUY). The venue's Algo Service holds it, so
it closes the position even when the strategy or the broker is down, partitioned or killed.
Stops are never canceled when the broker stops; only a flat position cancels them.

Pure, clock injected. :class:`Protection` is told the positions (:meth:`position`), what the
venue says of our stops (answers to its actions, ``ALGO_UPDATE`` events, ``openAlgoOrders``
lists) and returns actions (:class:`PlaceStop`, :class:`CancelStop`, :class:`FetchStops`) and
``protection`` records. Its rules:

- wanted: flat -> no stop; long -> SELL at ``ref * (1 - bps/1e4)``; short -> BUY at
  ``ref * (1 + bps/1e4)``, ``ref`` the entry price, or the mark when the market is already
  beyond the entry (a stop at the entry's distance would trigger at once: the venue refuses it);
- a stop of ours whose side is the wanted one and whose trigger is within ``MOVE_BPS`` of the
  wanted trigger is kept; otherwise a new one is placed first and the old ones are canceled once
  it is in place (never a moment without a stop while a position is open);
- one action per symbol at a time; an ambiguous answer (timeout, 5xx) makes the symbol unsure
  until ``openAlgoOrders`` says what the venue holds. A stop placed twice is harmless: both close
  the same position; the extra one is canceled once seen;
- an open algo order on a traded symbol that is not ours (another client algo id) is a
  difference nobody explains: the caller halts trading with the reason.

Client algo ids are ``ofi-stop-<symbol>-<ms>``; the order a triggered stop places carries the
client algo id as its client order id (or is known by its order id from ``ALGO_UPDATE``), so the
broker adopts its fills as its own (see ``OrderManager``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .binance.errors import Ambiguous, GatewayError, NotFound, Rejected
from .binance.schemas import VenueStop

STOP_PREFIX = "ofi-stop-"
MOVE_BPS = 1.0          # a stop is moved when the wanted trigger is more than this far away
RETRY_S = 2.0           # a refused placement is tried again after this long (with a fresh mark)
#: a fired stop whose position is still the same after this long is taken as stuck (the venue
#: left it TRIGGERING, or its order was refused): the position gets a new stop
CLOSING_WAIT_S = 10.0
QTY_EPS = 1e-12
#: algo statuses in which the stop still waits at the venue
WAITING = ("NEW",)
#: algo statuses after which the stop is gone: fired (its order closes the position) or ended
FIRED = ("TRIGGERING", "TRIGGERED", "FINISHED")


def is_stop_id(client_id: str | None) -> bool:
    """Is this the client (algo) id of one of our protective stops?"""
    return bool(client_id) and client_id.startswith(STOP_PREFIX)


@dataclass(frozen=True)
class PlaceStop:
    symbol: str
    side: str
    trigger_price: float
    client_algo_id: str
    kind = "place_stop"

    @property
    def key(self):
        return self.symbol


@dataclass(frozen=True)
class CancelStop:
    symbol: str
    client_algo_id: str
    kind = "cancel_stop"

    @property
    def key(self):
        return self.symbol


@dataclass(frozen=True)
class FetchStops:
    """The open algo orders of a symbol (``openAlgoOrders``)."""

    symbol: str
    kind = "stops"

    @property
    def key(self):
        return self.symbol


def wanted_stop(qty: float, ref: float, bps: float) -> tuple[str, float] | None:
    """(side, trigger price) of the stop a position of ``qty`` needs, ``bps`` beyond ``ref``
    (its entry price); None when flat or off."""
    if bps <= 0 or abs(qty) <= QTY_EPS or ref <= 0:
        return None
    d = bps / 1e4
    return ("SELL", ref * (1.0 - d)) if qty > 0 else ("BUY", ref * (1.0 + d))


@dataclass
class _Symbol:
    qty: float = 0.0
    entry: float = 0.0
    stops: dict[str, VenueStop] = field(default_factory=dict)   # ours, waiting at the venue
    busy: bool = False            # an action is out
    unsure: bool = True           # what the venue holds is not known (start, ambiguity)
    retry_at: float = 0.0         # a refused placement: not before this
    last_refusal: str = ""
    asked: dict[str, float] = field(default_factory=dict)   # client algo id -> trigger asked
    #: after a refusal (the market already beyond the stop): (qty, entry, trigger from the mark)
    fallback: tuple[float, float, float] | None = None
    #: a stop fired and its order is closing this position (qty, entry): no new stop for it
    closing: tuple[float, float] | None = None
    fired: VenueStop | None = None     # that stop
    fired_at: float = 0.0


class Protection:
    """Protective stops of every traded symbol; see the module docstring."""

    def __init__(self, symbols, bps: float):
        self.bps = float(bps)
        self.symbols = {s: _Symbol() for s in symbols}
        self._last_ms = 0
        self.triggered: list[VenueStop] = []      # fired stops not yet handed to the caller
        self.foreign: dict[str, list[VenueStop]] = {}   # symbol -> algo orders not ours
        self.records: list[dict] = []
        self.counts = {"placed": 0, "canceled": 0, "triggered": 0, "refused": 0}

    @property
    def on(self) -> bool:
        return self.bps > 0

    # -- what the broker tells it ----------------------------------------------------------------
    def position(self, symbol: str, qty: float, entry: float) -> None:
        st = self.symbols.get(symbol)
        if st is not None:
            st.qty, st.entry = qty, entry
            if st.closing is not None and st.closing != (qty, entry):
                st.closing = None

    def venue_list(self, symbol: str, rows: list[VenueStop], now: float) -> None:
        """What ``openAlgoOrders`` says the venue holds now (the truth for this symbol)."""
        st = self.symbols.get(symbol)
        if st is None:
            return
        ours = {v.client_algo_id: v for v in rows if is_stop_id(v.client_algo_id)}
        self.foreign[symbol] = [v for v in rows if not is_stop_id(v.client_algo_id)]
        for cid, v in st.stops.items():
            if cid not in ours:   # gone without our word: it fired, or someone canceled it
                self._record(now, symbol, "gone", v)
        st.stops = ours
        st.unsure = False

    def on_update(self, v: VenueStop, now: float) -> None:
        """An ``ALGO_UPDATE`` of one of our stops."""
        st = self.symbols.get(v.symbol)
        if st is None or not is_stop_id(v.client_algo_id):
            return
        if v.status in WAITING:
            st.stops[v.client_algo_id] = v
            return
        had = st.stops.pop(v.client_algo_id, None)
        if v.status in ("TRIGGERING", "TRIGGERED"):
            if st.closing is None:
                st.fired, st.fired_at = v, now
            st.closing = (st.qty, st.entry)
        elif v.status in ("REJECTED", "EXPIRED"):
            st.closing = None
        if v.status in ("TRIGGERING", "TRIGGERED") and (had is not None or v.order_id):
            if not any(t.client_algo_id == v.client_algo_id for t in self.triggered) and \
                    v.status == "TRIGGERED":
                self.triggered.append(v)
                self.counts["triggered"] += 1
                self._record(now, v.symbol, "triggered", v)
        elif v.status in ("REJECTED", "EXPIRED") or (v.status == "CANCELED" and had is not None):
            self._record(now, v.symbol, v.status.lower(), v)

    def take_triggered(self) -> list[VenueStop]:
        out, self.triggered = self.triggered, []
        return out

    def take_records(self) -> list[dict]:
        out, self.records = self.records, []
        return out

    # -- deciding --------------------------------------------------------------------------------
    def plan(self, symbol: str, now: float) -> list:
        """The next action for ``symbol`` (at most one), or none."""
        st = self.symbols.get(symbol)
        if st is None or st.busy:
            return []
        if st.unsure:
            st.busy = True
            return [FetchStops(symbol)]
        want = self.wanted(symbol)
        keep = None
        if want is not None:
            side, trigger = want
            for cid, v in sorted(st.stops.items()):
                asked = st.asked.get(cid, v.trigger_price)   # the venue's is on the tick grid
                if v.side == side and abs(asked - trigger) <= trigger * MOVE_BPS / 1e4:
                    keep = cid
                    break
            if keep is None:
                if st.closing == (st.qty, st.entry):
                    if now - st.fired_at < CLOSING_WAIT_S:
                        return []     # its order is closing the position
                    # the position outlived its fired stop: protect it again
                    st.closing = None
                    self._record(now, symbol, "stuck", st.fired)
                if now < st.retry_at:
                    return []
                st.busy = True
                cid = self._new_id(symbol, now)
                st.asked[cid] = trigger
                return [PlaceStop(symbol, side, trigger, cid)]
        for cid in sorted(st.stops):
            if cid != keep:
                st.busy = True
                return [CancelStop(symbol, cid)]
        return []

    def wanted(self, symbol: str) -> tuple[str, float] | None:
        """The stop ``symbol``'s position needs now: ``bps`` beyond the entry; after the venue
        refused that one (the mark already beyond it), ``bps`` beyond the mark of then, kept
        while the position stays as it was."""
        st = self.symbols[symbol]
        want = wanted_stop(st.qty, st.entry, self.bps)
        fb = st.fallback
        if want is not None and fb is not None and (fb[0], fb[1]) == (st.qty, st.entry):
            return want[0], fb[2]
        return want

    def retry_due(self) -> float | None:
        """When a refused placement may be tried again, or a fired stop is judged stuck (for
        the caller's timer)."""
        dues = [st.retry_at for st in self.symbols.values() if st.retry_at]
        dues += [st.fired_at + CLOSING_WAIT_S for st in self.symbols.values() if st.closing]
        return min(dues) if dues else None

    def _new_id(self, symbol: str, now: float) -> str:
        ms = max(int(now * 1000), self._last_ms + 1)
        self._last_ms = ms
        return f"{STOP_PREFIX}{symbol[:12]}-{ms}"

    # -- answers ---------------------------------------------------------------------------------
    def after(self, action, outcome, now: float, mark: float | None = None) -> str | None:
        """The venue's answer to one of our actions; a one-line refusal to log, if any.
        ``mark``: the latest mark price (a placement refused because the market is already
        beyond the stop is tried again ``bps`` beyond it)."""
        st = self.symbols[action.symbol]
        st.busy = False
        if isinstance(action, FetchStops):
            if isinstance(outcome, GatewayError):
                return None    # still unsure: fetched again at the next plan
            self.venue_list(action.symbol, outcome, now)
            return None
        if isinstance(action, PlaceStop):
            if isinstance(outcome, Ambiguous):
                st.unsure = True
                return None
            if isinstance(outcome, Rejected):
                # e.g. -2021 would immediately trigger: the mark is already beyond the stop, so
                # the next try is ``bps`` beyond the mark of then
                want = wanted_stop(st.qty, mark or 0.0, self.bps)
                if want is not None and outcome.code == -2021:
                    st.fallback = (st.qty, st.entry, want[1])
                    st.retry_at = now + RETRY_S / 4
                else:
                    st.retry_at = now + RETRY_S
                self.counts["refused"] += 1
                why = f"{outcome.code}: {outcome.msg}" if outcome.code else str(outcome)
                if why != st.last_refusal:
                    st.last_refusal = why
                    return why
                return None
            if isinstance(outcome, GatewayError):   # not sent (429, refused connection)
                st.retry_at = now + RETRY_S / 4
                return None
            st.retry_at, st.last_refusal = 0.0, ""
            v = outcome if isinstance(outcome, VenueStop) and outcome.client_algo_id else VenueStop(
                action.client_algo_id, None, action.symbol, action.side, "NEW", "STOP_MARKET",
                action.trigger_price, True)
            if v.status in WAITING:
                st.stops[v.client_algo_id] = v
            self.counts["placed"] += 1
            self._record(now, action.symbol, "placed", v)
            return None
        if isinstance(action, CancelStop):
            if isinstance(outcome, NotFound):
                st.unsure = True     # fired, or gone: the list says which
                return None
            if isinstance(outcome, GatewayError):
                st.unsure = isinstance(outcome, Ambiguous)
                return None
            v = st.stops.pop(action.client_algo_id, None)
            self.counts["canceled"] += 1
            if v is not None:
                self._record(now, action.symbol, "canceled", v)
            return None
        return None

    def _record(self, now: float, symbol: str, event: str, v: VenueStop) -> None:
        st = self.symbols[symbol]
        self.records.append({
            "type": "protection", "symbol": symbol, "event": event,
            "client_algo_id": v.client_algo_id, "algo_id": v.algo_id, "side": v.side,
            "trigger_price": v.trigger_price, "order_id": v.order_id,
            "position_qty": round(st.qty, 12), "entry_price": st.entry,
            "ts": int(now * 1000)})

    def health(self) -> dict:
        return {s: {"stops": {cid: v.trigger_price for cid, v in st.stops.items()},
                    "position": st.qty, "unsure": st.unsure}
                for s, st in self.symbols.items()} | {"counts": dict(self.counts)}
