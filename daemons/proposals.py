"""Orders proposed through the MCP server, and the operator's decisions on them: pure functions.

An assistant never places an order. ``submit_order`` and ``cancel_order`` write a *proposal*
(``proposals`` topic); an operator approves or rejects it (``ofi approve ID`` / ``ofi reject ID``,
a ``decisions`` record carrying the proposal's order fields); the strategy daemon, the one
writer of ``intents``, turns an approved submit into an intent after the same risk check as
its own intents, and an approved cancel into a ``cancel`` intent. The state of a proposal is a
fold of those three topics::

    pending --approve--> approved --strategy--> sent     (an intent / cancel intent was written)
       |                     \\------------------> denied   (the strategy's risk check said no)
       +--reject--> rejected
       +--(expires_ms passed while pending)--> expired

The client order id is the idempotency key: a second submit with the same id returns the first
proposal (with different order fields it is refused). No I/O and no clock here: the callers pass
the records and ``now_ms``. The contract between the gateway (``daemons/tools/gateway``), the
operator's ``ofi approve`` / ``ofi reject`` and the strategy stage, so it imports nothing of the
project.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SIDES = ("BUY", "SELL")
ORDER_TYPES = ("MARKET", "LIMIT")
ACTIONS = ("submit", "cancel")

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
SENT = "sent"
DENIED = "denied"
STATES = (PENDING, APPROVED, REJECTED, EXPIRED, SENT, DENIED)
#: the order fields a proposal and its decision carry (what the strategy needs to act)
ORDER_FIELDS = ("action", "client_order_id", "symbol", "side", "qty", "order_type", "price",
                "reduce_only")
#: states in which an order at the broker can still be canceled
CANCELABLE = ("PENDING", "UNKNOWN", "NEW", "PARTIALLY_FILLED")


class ProposalError(ValueError):
    """A refused call or decision; the message is one line fit for the caller."""


# -- input validation ----------------------------------------------------------------------------
def _number(name: str, value, required: bool = True) -> float | None:
    if value is None:
        if required:
            raise ProposalError(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProposalError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ProposalError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


def check_client_order_id(cid, reserved_prefix: str | None = None) -> str:
    """A client order id as Binance accepts it, not in the strategy's own id space."""
    if not isinstance(cid, str) or not CLIENT_ID_RE.match(cid):
        raise ProposalError(f"client_order_id must match ^[.A-Z:/a-z0-9_-]{{1,36}}$, not {cid!r}")
    if reserved_prefix and cid.startswith(f"{reserved_prefix}-"):
        raise ProposalError(f"client_order_id {cid!r} is in the strategy's id space "
                            f"({reserved_prefix}-...); choose another prefix")
    return cid


def validate_submit(args: dict, symbols, reserved_prefix: str | None = None) -> dict:
    """The order fields of a ``submit_order`` call, normalized; :class:`ProposalError` says
    what is wrong (the first problem only). ``client_order_id`` may be absent (the caller then
    makes one)."""
    symbol = args.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol.upper()):
        raise ProposalError(f"symbol must be a symbol such as BTCUSDT, not {symbol!r}")
    symbol = symbol.upper()
    if symbol not in symbols:
        raise ProposalError(f"symbol {symbol} is not traded here (symbols: {', '.join(symbols)})")
    side = args.get("side")
    side = side.upper() if isinstance(side, str) else side
    if side not in SIDES:
        raise ProposalError(f"side must be BUY or SELL, not {args.get('side')!r}")
    qty = _number("qty", args.get("qty"))
    otype = args.get("order_type", "MARKET")
    otype = otype.upper() if isinstance(otype, str) else otype
    if otype not in ORDER_TYPES:
        raise ProposalError(f"order_type must be MARKET or LIMIT, not {args.get('order_type')!r}")
    price = _number("price", args.get("price"), required=otype == "LIMIT")
    if otype == "MARKET" and price is not None:
        raise ProposalError("a MARKET order takes no price (give order_type LIMIT for a price)")
    reduce_only = args.get("reduce_only", False)
    if not isinstance(reduce_only, bool):
        raise ProposalError(f"reduce_only must be true or false, not {reduce_only!r}")
    cid = args.get("client_order_id")
    if cid is not None:
        cid = check_client_order_id(cid, reserved_prefix)
    return {"action": "submit", "client_order_id": cid, "symbol": symbol, "side": side,
            "qty": qty, "order_type": otype, "price": price, "reduce_only": reduce_only}


def validate_cancel(args: dict, open_orders: dict[str, dict]) -> dict:
    """The fields of a ``cancel_order`` call: the order must be one the broker has not finished
    (``open_orders``: client order id -> its last ``orders`` record)."""
    cid = check_client_order_id(args.get("client_order_id"))
    order = open_orders.get(cid)
    if order is None:
        raise ProposalError(f"no open order with client_order_id {cid!r} (get_open_orders lists them)")
    return {"action": "cancel", "client_order_id": cid, "symbol": order.get("symbol"),
            "side": order.get("side"), "qty": order.get("qty"),
            "order_type": order.get("order_type"), "price": order.get("price"),
            "reduce_only": bool(order.get("reduce_only"))}


def parse_decided_order(rec: dict) -> dict:
    """The order fields of a ``decisions`` record, checked again (the strategy's input);
    :class:`ProposalError` when they are malformed."""
    action = rec.get("action")
    if action not in ACTIONS:
        raise ProposalError(f"decision: action must be submit or cancel, not {action!r}")
    cid = check_client_order_id(rec.get("client_order_id"))
    if action == "cancel":
        return {"action": "cancel", "client_order_id": cid, "symbol": rec.get("symbol")}
    symbol = rec.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        raise ProposalError(f"decision: bad symbol {symbol!r}")
    out = validate_submit(rec, (symbol,))
    out["client_order_id"] = cid
    return out


def make_client_order_id(prefix: str, seq: int, now_ms: int) -> str:
    """An id for a submit that came without one: ``<prefix>-<base36 ms>-<seq>``."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    n, ms = "", int(now_ms)
    while True:
        ms, r = divmod(ms, 36)
        n = digits[r] + n
        if not ms:
            break
    return f"{prefix}-{n}-{int(seq)}"[:36]


# -- risk ----------------------------------------------------------------------------------------
def risk_view(position_rec: dict | None) -> float:
    """A symbol's position as the strategy counts it from the broker's last ``positions``
    record: its ``qty`` plus the signed remainders of the orders in flight."""
    if not position_rec:
        return 0.0
    qty = position_rec.get("qty") or 0.0
    for f in position_rec.get("in_flight") or []:
        if isinstance(f, dict) and isinstance(f.get("qty"), (int, float)):
            qty += f["qty"] if f.get("side") == "BUY" else -f["qty"]
    return float(qty)


def reference_price(order: dict, last_mid: float | None, mark: float | None) -> float | None:
    """The price risk values an order at: its limit price, else the last mid, else the mark."""
    for p in (order.get("price"), last_mid, mark):
        if isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p > 0:
            return float(p)
    return None


# -- the state of proposals ----------------------------------------------------------------------
@dataclass
class Ledger:
    """Proposals with their decisions and outcomes, folded from ``proposals``, ``decisions``
    and ``intents`` records (feed each topic in seq order; any interleaving of topics)."""

    proposals: dict[str, dict] = field(default_factory=dict)      # id -> proposal record
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (action, cid) -> id
    decisions: dict[str, dict] = field(default_factory=dict)      # id -> first decision record
    outcomes: dict[str, dict] = field(default_factory=dict)       # id -> first intents record
    last_seq: int = 0                                             # of ``proposals``

    def add_proposal(self, rec: dict) -> None:
        if rec.get("type") != "proposal" or not isinstance(rec.get("id"), str):
            return
        self.proposals.setdefault(rec["id"], rec)
        self.keys.setdefault((rec.get("action"), rec.get("client_order_id")), rec["id"])
        if isinstance(rec.get("seq"), int):
            self.last_seq = max(self.last_seq, rec["seq"])

    def add_decision(self, rec: dict) -> None:
        if rec.get("type") == "decision" and isinstance(rec.get("proposal_id"), str):
            self.decisions.setdefault(rec["proposal_id"], rec)

    def add_intent(self, rec: dict) -> None:
        pid = rec.get("proposal_id")
        if isinstance(pid, str) and rec.get("type") in ("intent", "cancel", "risk_denied"):
            self.outcomes.setdefault(pid, rec)

    def find(self, action: str, cid: str) -> dict | None:
        pid = self.keys.get((action, cid))
        return self.proposals.get(pid) if pid else None

    def state(self, pid: str, now_ms: int) -> str:
        """One of :data:`STATES` (KeyError for an unknown id)."""
        prop = self.proposals[pid]
        out = self.outcomes.get(pid)
        if out is not None:
            return DENIED if out.get("type") == "risk_denied" else SENT
        dec = self.decisions.get(pid)
        if dec is not None:
            return APPROVED if dec.get("decision") == "approved" else REJECTED
        expires = prop.get("expires_ms")
        if isinstance(expires, int) and expires and now_ms >= expires:
            return EXPIRED
        return PENDING

    def view(self, pid: str, now_ms: int) -> dict:
        """A proposal as tools and ``ofi proposals`` show it."""
        p = self.proposals[pid]
        dec = self.decisions.get(pid) or {}
        out = self.outcomes.get(pid) or {}
        return {
            "id": pid, "state": self.state(pid, now_ms),
            **{k: p.get(k) for k in ORDER_FIELDS},
            "created_ms": p.get("ts"), "expires_ms": p.get("expires_ms"),
            "mode": p.get("mode"), "reference_price": p.get("reference_price"),
            "decided_by": dec.get("by"), "decided_ms": dec.get("ts"),
            "decision_reason": dec.get("reason"),
            "outcome": ({"type": out.get("type"), "intent_seq": out.get("seq"),
                         "code": out.get("code"), "detail": out.get("detail")} if out else None),
        }

    def views(self, now_ms: int, state: str | None = None) -> list[dict]:
        rows = [self.view(pid, now_ms) for pid in self.proposals]
        return [r for r in rows if state is None or r["state"] == state]


def fold(proposals=(), decisions=(), intents=()) -> Ledger:
    """A :class:`Ledger` of the three topics' records."""
    led = Ledger()
    for r in proposals:
        led.add_proposal(r)
    for r in decisions:
        led.add_decision(r)
    for r in intents:
        led.add_intent(r)
    return led


def proposal_payload(order: dict, pid: str, now_ms: int, ttl_s: float, mode: str | None,
                     ref_price: float | None, via: str = "mcp") -> dict:
    """The ``proposals`` record of a new proposal."""
    return {"type": "proposal", "id": pid, **{k: order.get(k) for k in ORDER_FIELDS},
            "reference_price": ref_price, "mode": mode, "via": via,
            "expires_ms": int(now_ms + ttl_s * 1000) if ttl_s > 0 else None}


def same_order(a: dict, b: dict) -> bool:
    """Whether two submits ask for the same order (the idempotency check)."""
    return all(a.get(k) == b.get(k) for k in ORDER_FIELDS)


def decide(led: Ledger, pid: str, approve: bool, now_ms: int, by: str,
           reason: str = "") -> dict:
    """The ``decisions`` record approving or rejecting proposal ``pid``; only a pending one
    may be decided (:class:`ProposalError` otherwise)."""
    if pid not in led.proposals:
        raise ProposalError(f"no proposal {pid!r} (ofi proposals lists them)")
    st = led.state(pid, now_ms)
    if st != PENDING:
        raise ProposalError(f"proposal {pid} is {st}; only a pending proposal can be decided")
    p = led.proposals[pid]
    return {"type": "decision", "proposal_id": pid,
            "decision": "approved" if approve else "rejected", "by": by, "reason": reason,
            **{k: p.get(k) for k in ORDER_FIELDS}}
