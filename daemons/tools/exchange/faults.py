"""Seeded fault injection: the ``--faults`` spec and the decisions it leads to.

Spec: comma-separated ``key=value`` pairs (see :data:`HELP`). Each fault family draws from its
own random stream seeded by ``seed``, a fixed number of draws per request (or per websocket
message), so the same request sequence meets the same faults on every run.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, fields

HELP = """\
Fault spec (--faults): comma-separated key=value pairs, e.g.
  "latency_ms=20,http5xx=0.01,unknown503=0.05,timeout=0.02,r429=0.01,ws_drop=0.001,listenkey_expire_s=60,seed=3"
  latency_ms=MS          added delay before every REST response (default 0)
  latency_jitter_ms=MS   plus a uniform random 0..MS (default 0)
  http5xx=P              answer HTTP 500/502/503 before processing (nothing happens)
  r429=P                 answer 429 (-1003, Retry-After) before processing (nothing happens)
  r429_retry_s=S         the Retry-After of those 429s (default 0: until the next minute, as the
                         venue's one-minute weight window would say)
  unknown503=P           orders (POST/DELETE /fapi/v1/order): process, then answer 503 with -1007
                         "Timeout waiting for response from backend server. Send status unknown;
                         execution status unknown." (the order IS placed / canceled)
  timeout=P              orders: process, then stall timeout_s and close without a response
  timeout_s=S            how long a timed-out request stalls before the close (default 10)
  late=P                 new orders (POST /fapi/v1/order): checked now (a bad one gets its error),
                         NOT placed now but answered per late_mode; the order reaches the
                         matching engine late_min_ms..late_max_ms later and is placed as if sent
                         then (same clientOrderId, new orderId, times and user-stream events of
                         that moment; it fills or rests like any order). Until then a query
                         answers -2013 and openOrders lacks it. A resend of its clientOrderId
                         meanwhile is a new order: both execute. Refused on landing (margin,
                         reduce-only, FOK, post-only): dropped without an event
  late_mode=M            503 (answer HTTP 503, -1007, as unknown503; default), timeout (stall
                         timeout_s, close without a response) or mixed (either, half and half)
  late_min_ms=MS         shortest delay before a late order lands (default 4000)
  late_max_ms=MS         longest delay, drawn uniformly in between (default 12000)
  ws_drop=P              per websocket message: drop the connection instead of sending it
  listenkey_expire_s=S   listen keys expire S seconds after creation/keepalive (default 3600)
  seed=N                 seed of all fault draws (default: the exchange seed)
The exchange counts the faults it injected (heartbeat and "stopped" log line): http5xx:<status>,
r429, unknown503, timeout, ws_drop, late503, late_timeout, and late_landed / late_rejected for
the late orders' outcomes.
Rate limits (lower them to trigger 429/418 quickly):
  weight_limit=N         request weight per minute per IP (default 2400)
  order_limit=N          orders per minute per account (default 1200)
  order_limit_10s=N      orders per 10 s per account (default 300)
  ban_after=N            429 answers in one minute before the IP is banned with 418 (default 3)
  ban_s=S                length of a 418 ban in seconds (default 120)
"""


@dataclass
class FaultSpec:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    http5xx: float = 0.0
    r429: float = 0.0
    r429_retry_s: float = 0.0
    unknown503: float = 0.0
    timeout: float = 0.0
    timeout_s: float = 10.0
    late: float = 0.0
    late_mode: str = "503"
    late_min_ms: float = 4000.0
    late_max_ms: float = 12000.0
    ws_drop: float = 0.0
    listenkey_expire_s: float = 3600.0
    seed: int | None = None
    weight_limit: int = 2400
    order_limit: int = 1200
    order_limit_10s: int = 300
    ban_after: int = 3
    ban_s: float = 120.0


_PROBABILITIES = ("http5xx", "r429", "unknown503", "timeout", "ws_drop", "late")
LATE_MODES = ("503", "timeout", "mixed")


def parse(text: str | None) -> FaultSpec:
    """Parse a fault spec; raises ValueError with one line naming the bad item."""
    spec = FaultSpec()
    types = {f.name: f.type for f in fields(FaultSpec)}
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"fault spec item '{item}' is not key=value")
        if key not in types:
            raise ValueError(f"unknown fault '{key}' (known: {', '.join(types)})")
        if key == "late_mode":
            value = value.strip().lower()
            if value not in LATE_MODES:
                raise ValueError(f"fault 'late_mode' is one of {', '.join(LATE_MODES)}, "
                                 f"not '{value}'")
            spec.late_mode = value
            continue
        try:
            if key == "seed" or types[key] in ("int", int):
                val = int(value)
            else:
                val = float(value)
        except ValueError:
            raise ValueError(f"fault '{key}' needs a number, not '{value}'") from None
        if key in _PROBABILITIES and not 0.0 <= val <= 1.0:
            raise ValueError(f"fault '{key}' is a probability in [0, 1], not {value}")
        if val < 0:
            raise ValueError(f"fault '{key}' must not be negative")
        setattr(spec, key, val)
    if spec.http5xx + spec.r429 > 1 or spec.unknown503 + spec.timeout > 1:
        raise ValueError("fault probabilities of one family add up to more than 1")
    if spec.late_min_ms > spec.late_max_ms:
        raise ValueError("fault 'late_min_ms' is greater than 'late_max_ms'")
    return spec


class FaultPlan:
    """Seeded decisions: one random stream per fault family."""

    def __init__(self, spec: FaultSpec, default_seed: int = 0):
        self.spec = spec
        seed = default_seed if spec.seed is None else spec.seed
        self._rest = random.Random(f"{seed}:rest")
        self._order = random.Random(f"{seed}:order")
        self._ws = random.Random(f"{seed}:ws")
        self._latency = random.Random(f"{seed}:latency")
        self._late = random.Random(f"{seed}:late")
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> str:
        self.counts[what] = self.counts.get(what, 0) + 1
        return what

    def rest(self) -> str | None:
        """Before a REST request: None, "http5xx:<status>" or "r429" (two draws, always)."""
        u, v = self._rest.random(), self._rest.random()
        if u < self.spec.http5xx:
            return self._count(f"http5xx:{(500, 502, 503)[int(v * 3)]}")
        if u < self.spec.http5xx + self.spec.r429:
            return self._count("r429")
        return None

    def order(self) -> str | None:
        """After an order was processed: None, "unknown503" or "timeout" (one draw, always)."""
        u = self._order.random()
        if u < self.spec.unknown503:
            return self._count("unknown503")
        if u < self.spec.unknown503 + self.spec.timeout:
            return self._count("timeout")
        return None

    def skip_order(self) -> None:
        """Use up :meth:`order`'s draw without a decision (a late order is not processed now),
        so adding ``late`` leaves the other order faults of a request sequence as they were."""
        self._order.random()

    def late(self) -> tuple[str, float] | None:
        """Before a new order is processed: None, or ("late503" | "late_timeout", delay in
        seconds) (three draws, always)."""
        u, v, w = self._late.random(), self._late.random(), self._late.random()
        if u >= self.spec.late:
            return None
        mode = self.spec.late_mode
        if mode == "mixed":
            mode = "503" if v < 0.5 else "timeout"
        lo, hi = self.spec.late_min_ms, self.spec.late_max_ms
        return ("late503" if mode == "503" else "late_timeout"), (lo + w * (hi - lo)) / 1000.0

    def count(self, what: str) -> None:
        """Count an outcome that is not a draw (e.g. ``late_landed``)."""
        self._count(what)

    def ws_drop(self) -> bool:
        """Per websocket message: drop the connection? (one draw, only when ws_drop > 0)."""
        if self.spec.ws_drop <= 0:
            return False
        if self._ws.random() < self.spec.ws_drop:
            self._count("ws_drop")
            return True
        return False

    def latency_s(self) -> float:
        """Added delay of one REST response, in seconds."""
        ms = self.spec.latency_ms
        if self.spec.latency_jitter_ms > 0:
            ms += self._latency.random() * self.spec.latency_jitter_ms
        return ms / 1000.0
