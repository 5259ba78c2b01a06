"""The order state machine: a transition table and one small pure ``apply`` function.

Venue states (Binance USD-M): NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED.
Local states: PENDING (journaled, not yet acknowledged: maybe not sent, maybe in flight),
UNKNOWN (sent, outcome ambiguous: a timeout, a 503 or a disconnect after sending; resolved only
by the venue's word about the client order id, never by sending again) and ABANDONED (an UNKNOWN
order the venue never showed within the resolution window: presumed never placed, never sent
again; a later word from the venue still applies).

``TABLE`` maps (state, event) to the next state. Every row taken is written as one ``orders``
record. ``STALE`` lists (state, event) pairs that carry no news (a late duplicate acknowledgement,
a status report older than what we know): they are dropped without a record. Anything else is
refused with :class:`InvalidTransition` ("STATE -> EVENT"), leaving the order untouched.
``docs/order_state_machine.md`` draws this table; a test checks that every row is there.

This module imports nothing from the project on purpose: it is the leaf the others build on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

INIT = "INIT"            # pseudo-state before the first record
PENDING = "PENDING"
UNKNOWN = "UNKNOWN"
NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"
ABANDONED = "ABANDONED"

STATES = (PENDING, UNKNOWN, NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED, ABANDONED)
TERMINAL = frozenset({FILLED, CANCELED, REJECTED, EXPIRED, ABANDONED})
OPEN = frozenset({NEW, PARTIALLY_FILLED})
#: states in which the venue may hold the order without us knowing its status
UNRESOLVED = frozenset({PENDING, UNKNOWN})

# events
INTENT = "intent"                # an intent was accepted: journaled before anything is sent
SEND_FAILED = "send_failed"      # provably not processed (connect refused, 429/418, -1021): retry
AMBIGUOUS = "ambiguous"          # timeout / 503 / disconnect after sending: outcome unknown
GIVE_UP = "give_up"              # the resolution window ended with the order never seen
ACCEPTED = "accepted"            # venue says NEW
PARTIAL_FILL = "partial_fill"    # venue says PARTIALLY_FILLED (or a fill short of the quantity)
FILL = "fill"                    # venue says FILLED (cumulative quantity reached)
CANCEL_REQUESTED = "cancel_requested"
CANCEL_FAILED = "cancel_failed"  # -2011: not open any more (filled or gone): resolved by query
CANCELED_EV = "canceled"
EXPIRED_EV = "expired"
REJECTED_EV = "rejected"

EVENTS = (INTENT, SEND_FAILED, AMBIGUOUS, GIVE_UP, ACCEPTED, PARTIAL_FILL, FILL,
          CANCEL_REQUESTED, CANCEL_FAILED, CANCELED_EV, EXPIRED_EV, REJECTED_EV)

#: (state, event) -> (next state, why this row exists)
TABLE: dict[tuple[str, str], tuple[str, str]] = {
    (INIT, INTENT): (PENDING, "intent journaled before the first send"),
    (PENDING, SEND_FAILED): (PENDING, "not processed by the venue (refused, 429/418, -1021); sent again later"),
    (PENDING, AMBIGUOUS): (UNKNOWN, "timeout, 503 or disconnect after sending, or a restart with a send maybe in flight: never sent again"),
    (PENDING, ACCEPTED): (NEW, "acknowledged"),
    (PENDING, PARTIAL_FILL): (PARTIALLY_FILLED, "acknowledged partly filled (or a stream fill beat the ack)"),
    (PENDING, FILL): (FILLED, "acknowledged filled (MARKET with RESULT response)"),
    (PENDING, REJECTED_EV): (REJECTED, "refused by the venue, by a filter, by the kill switch or as stale"),
    (PENDING, CANCELED_EV): (CANCELED, "canceled before the ack arrived"),
    (PENDING, EXPIRED_EV): (EXPIRED, "IOC/FOK/MARKET remainder expired at once"),
    (UNKNOWN, ACCEPTED): (NEW, "query found it open"),
    (UNKNOWN, PARTIAL_FILL): (PARTIALLY_FILLED, "query (or the stream) found it partly filled"),
    (UNKNOWN, FILL): (FILLED, "query (or the stream) found it filled"),
    (UNKNOWN, CANCELED_EV): (CANCELED, "query found it canceled"),
    (UNKNOWN, EXPIRED_EV): (EXPIRED, "query found it expired"),
    (UNKNOWN, REJECTED_EV): (REJECTED, "query found it rejected"),
    (UNKNOWN, GIVE_UP): (ABANDONED, "never seen at the venue within the resolution window: presumed not placed"),
    (ABANDONED, ACCEPTED): (NEW, "real world: the venue executed it after all (late); an alert"),
    (ABANDONED, PARTIAL_FILL): (PARTIALLY_FILLED, "real world: executed late and partly filled; an alert"),
    (ABANDONED, FILL): (FILLED, "real world: executed late and filled; an alert"),
    (ABANDONED, CANCELED_EV): (CANCELED, "real world: executed late, then canceled"),
    (ABANDONED, EXPIRED_EV): (EXPIRED, "real world: executed late, then expired"),
    (ABANDONED, REJECTED_EV): (REJECTED, "real world: the venue's late word is a rejection"),
    (NEW, PARTIAL_FILL): (PARTIALLY_FILLED, "part filled"),
    (NEW, FILL): (FILLED, "filled"),
    (NEW, CANCEL_REQUESTED): (NEW, "cancel sent; fills may still arrive"),
    (NEW, CANCEL_FAILED): (NEW, "real world: the cancel lost a race with a fill; query resolves it"),
    (NEW, CANCELED_EV): (CANCELED, "canceled"),
    (NEW, EXPIRED_EV): (EXPIRED, "expired (GTD, reduce-only knock-out, liquidation, STP)"),
    (PARTIALLY_FILLED, PARTIAL_FILL): (PARTIALLY_FILLED, "more filled"),
    (PARTIALLY_FILLED, FILL): (FILLED, "rest filled"),
    (PARTIALLY_FILLED, CANCEL_REQUESTED): (PARTIALLY_FILLED, "cancel sent; fills may still arrive"),
    (PARTIALLY_FILLED, CANCEL_FAILED): (PARTIALLY_FILLED, "real world: the cancel lost a race with the last fill"),
    (PARTIALLY_FILLED, CANCELED_EV): (CANCELED, "rest canceled"),
    (PARTIALLY_FILLED, EXPIRED_EV): (EXPIRED, "rest expired"),
    (CANCELED, PARTIAL_FILL): (CANCELED, "real world: a fill made before the cancel, reported after it by a racing stream"),
    (CANCELED, FILL): (FILLED, "real world: the cancel report raced the final fill; the fill wins"),
    (EXPIRED, PARTIAL_FILL): (EXPIRED, "real world: a fill of an IOC/MARKET order reported after its EXPIRED"),
    (EXPIRED, FILL): (FILLED, "real world: the expiry report raced the final fill; the fill wins"),
    (FILLED, PARTIAL_FILL): (FILLED, "real world: stream fills arriving after the REST response said FILLED"),
}

#: (state, event) pairs that carry nothing new: dropped without a record
STALE: frozenset[tuple[str, str]] = frozenset(
    {(NEW, ACCEPTED), (PARTIALLY_FILLED, ACCEPTED), (FILLED, ACCEPTED), (FILLED, FILL),
     (CANCELED, ACCEPTED), (EXPIRED, ACCEPTED), (CANCELED, CANCELED_EV), (EXPIRED, EXPIRED_EV),
     (REJECTED, REJECTED_EV), (FILLED, CANCELED_EV), (FILLED, EXPIRED_EV),
     (FILLED, CANCEL_REQUESTED), (FILLED, CANCEL_FAILED), (CANCELED, CANCEL_REQUESTED),
     (CANCELED, CANCEL_FAILED), (EXPIRED, CANCEL_REQUESTED), (EXPIRED, CANCEL_FAILED),
     (CANCELED, EXPIRED_EV), (EXPIRED, CANCELED_EV),
     (REJECTED, CANCEL_REQUESTED), (REJECTED, CANCEL_FAILED), (UNKNOWN, AMBIGUOUS),
     (ABANDONED, CANCEL_REQUESTED), (ABANDONED, CANCEL_FAILED), (ABANDONED, GIVE_UP)})

#: venue order status -> the event it reports
STATUS_EVENT = {
    NEW: ACCEPTED, PARTIALLY_FILLED: PARTIAL_FILL, FILLED: FILL, CANCELED: CANCELED_EV,
    EXPIRED: EXPIRED_EV, "EXPIRED_IN_MATCH": EXPIRED_EV, REJECTED: REJECTED_EV,
}


class InvalidTransition(Exception):
    """A (state, event) pair the table does not allow; reads "STATE -> EVENT"."""

    def __init__(self, state: str, event: str):
        super().__init__(f"{state} -> {event}")
        self.state = state
        self.event = event


def next_state(state: str, event: str) -> str | None:
    """The state after ``event``; None for a stale event; raises :class:`InvalidTransition`."""
    row = TABLE.get((state, event))
    if row is not None:
        return row[0]
    if (state, event) in STALE:
        return None
    raise InvalidTransition(state, event)


@dataclass(frozen=True)
class Order:
    """What the broker knows about one order (immutable; ``apply`` returns a new one)."""

    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float | None = None
    order_type: str = "MARKET"
    reduce_only: bool = False
    status: str = INIT
    order_id: int | None = None
    filled_qty: float = 0.0
    avg_price: float | None = None
    intent_seq: int | None = None
    intent_ts: int | None = None
    attempts: int = 0           # how many times the order was sent
    cancel_requested: bool = False
    reason: str | None = None
    venue_ts: int | None = None
    extra: dict = field(default_factory=dict, compare=False)
    #: the intent's latency trace (exchange time, then each stage's time; docs/latency.md)
    trace: dict | None = field(default=None, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def remaining(self) -> float:
        return max(0.0, self.qty - self.filled_qty)


@dataclass(frozen=True)
class Transition:
    """One row taken: the record the broker writes to ``orders``."""

    order: Order
    prev_status: str
    event: str


# events after which the same state is still worth a record (they say something happened)
_ALWAYS_RECORD = frozenset({INTENT, SEND_FAILED, CANCEL_REQUESTED, CANCEL_FAILED, GIVE_UP})


def apply(order: Order, event: str, *, filled_qty: float | None = None,
          avg_price: float | None = None, order_id: int | None = None, reason: str | None = None,
          venue_ts: int | None = None) -> Transition | None:
    """Apply ``event`` to ``order``: a :class:`Transition`, or None when nothing changes.

    Checks first, builds second: a refused event raises and leaves no trace. The filled quantity
    never goes down (reports arrive out of order); a fill report that adds nothing to what is
    known is dropped like a stale event.
    """
    new_status = next_state(order.status, event)
    if new_status is None:
        return None
    fq = order.filled_qty if filled_qty is None else max(order.filled_qty, float(filled_qty))
    if event in (PARTIAL_FILL, FILL) and order.status == new_status and fq <= order.filled_qty:
        return None  # a repeated report of what we know
    changes: dict = {"status": new_status, "filled_qty": fq}
    if avg_price is not None and (filled_qty is None or fq == float(filled_qty)):
        changes["avg_price"] = float(avg_price)
    if order_id is not None:
        changes["order_id"] = int(order_id)
    if reason is not None or event in _ALWAYS_RECORD:
        changes["reason"] = reason
    if venue_ts is not None:
        changes["venue_ts"] = int(venue_ts)
    if event == CANCEL_REQUESTED:
        changes["cancel_requested"] = True
    new = replace(order, **changes)
    if new == order and event not in _ALWAYS_RECORD:
        return None
    return Transition(new, order.status, event)


def record_of(t: Transition) -> dict:
    """The ``orders`` topic payload of a transition (the agreed schema, plus resend facts)."""
    o = t.order
    return {
        "type": "order", "client_order_id": o.client_order_id, "order_id": o.order_id,
        "symbol": o.symbol, "side": o.side, "qty": o.qty, "price": o.price, "status": o.status,
        "prev_status": None if t.prev_status == INIT else t.prev_status, "event": t.event,
        "filled_qty": o.filled_qty, "avg_price": o.avg_price, "reason": o.reason,
        "intent_seq": o.intent_seq, "venue_ts": o.venue_ts,
        # beyond the agreed schema: what a restarted broker needs to send the order again
        "order_type": o.order_type, "reduce_only": o.reduce_only, "intent_ts": o.intent_ts,
        "attempts": o.attempts, "cancel_requested": o.cancel_requested,
        "trace": o.trace,
    }


def order_from_record(rec: dict) -> Order:
    """Rebuild an order from its last ``orders`` record (the durable journal)."""
    return Order(
        client_order_id=rec["client_order_id"], symbol=rec["symbol"], side=rec["side"],
        qty=float(rec["qty"]), price=rec.get("price"),
        order_type=rec.get("order_type") or ("MARKET" if rec.get("price") is None else "LIMIT"),
        reduce_only=bool(rec.get("reduce_only", False)), status=rec["status"],
        order_id=rec.get("order_id"), filled_qty=float(rec.get("filled_qty") or 0.0),
        avg_price=rec.get("avg_price"), intent_seq=rec.get("intent_seq"),
        intent_ts=rec.get("intent_ts"), attempts=int(rec.get("attempts") or 0),
        cancel_requested=bool(rec.get("cancel_requested")),
        reason=rec.get("reason"), venue_ts=rec.get("venue_ts"), trace=rec.get("trace"))
