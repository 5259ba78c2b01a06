"""``ofi mcp``: the Broker Gateway as an MCP server (official ``mcp`` SDK, version 2).

Read tools (annotated read-only) show the bus and state of a home: ``get_status``,
``get_position``, ``get_open_orders``, ``fetch_fills``, ``get_signals``, ``get_pnl``,
``get_report``, ``get_proposals``. Write tools (annotated destructive): ``submit_order`` and
``cancel_order`` only ever create a *proposal* (and only with ``mcp.allow_orders: true``) that an
operator approves or rejects (``ofi approve`` / ``ofi reject``); ``halt`` sets the kill switch at
once, as ``ofi halt`` does. There is no resume tool, and nothing skips the approval.

Every call passes one gate (:meth:`GatewayServer.call_tool`): the rate limit, the arguments
against the tool's JSON schema (one clear line when they do not fit), the tool, and one
``audit`` record (tool, arguments with secret-looking fields masked, outcome, duration). API keys
are never read here: the config is loaded without the key variables and with its key fields
blanked, and no tool returns config.

(No ``from __future__ import annotations`` here: the SDK reads the tools' annotations, which
name local types, at registration.)
"""
import glob
import os
import sys
import time
import traceback
from typing import Annotated, Any, Literal, Optional, Union

import jsonschema
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from typing_extensions import TypedDict

from bus import BusError, now_ms

from ... import config as configmod
from ... import settings
from ...strategy import risk
from ...trading import HALTED, StateError, load_state, save_state
from ...trading import status as trading_status
from ... import proposals as P
from . import calls
from . import store

KEY_VARIABLES = ("OFI_API_KEY", "OFI_API_SECRET")
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                       open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                        open_world_hint=True)
INSTRUCTIONS = """\
Broker Gateway of an OFI trading pipeline (Binance USD-M futures). Read tools show status,
positions, orders, fills, signals, PnL and reports. submit_order and cancel_order never trade:
they create a proposal that a human operator approves (`ofi approve ID`) or rejects; only then
does it reach the broker, through the same risk checks as every order. halt stops trading at
once. Prices and quantities are in the symbol's units (BTCUSDT: qty in BTC, price in USDT)."""


def load_config(config_path: str | None, home: str | None) -> dict:
    """The config without API keys: the key variables are left out of the environment it is
    read from, and every key field is blanked (this process never needs them)."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    cfg = configmod.load(config_path, {"home": home}, environ=env)
    for section in ("venue", "exchange"):
        for key in ("api_key", "api_secret"):
            if key in cfg.get(section, {}):
                cfg[section][key] = None
    return cfg


# -- output schemas ------------------------------------------------------------------------------
class Program(TypedDict):
    name: str
    state: str
    pid: Optional[int]
    ready: bool
    heartbeat_age_s: Optional[float]
    lag: dict[str, int]
    processed: Optional[int]
    refused: Optional[str]
    waiting: Optional[dict[str, Any]]


class Venue(TypedDict):
    mode: Optional[str]
    rest_url: Optional[str]
    ws_url: Optional[str]


class Status(TypedDict):
    home: str
    supervisord: str
    programs: list[Program]
    restarts: dict[str, Any]
    trading: dict[str, Any]
    venue: Venue


class Position(TypedDict):
    symbol: str
    qty: float
    entry_price: Optional[float]
    mark_price: Optional[float]
    unrealized_pnl: Optional[float]
    realized_pnl: Optional[float]
    in_flight: list[dict[str, Any]]
    cause: Optional[str]
    seq: Optional[int]
    as_of_ms: Optional[int]


class Positions(TypedDict):
    positions: list[Position]


class Order(TypedDict):
    client_order_id: str
    order_id: Optional[Union[int, str]]
    symbol: str
    side: str
    qty: float
    price: Optional[float]
    order_type: Optional[str]
    reduce_only: bool
    status: str
    filled_qty: Optional[float]
    avg_price: Optional[float]
    updated_ms: int


class Orders(TypedDict):
    orders: list[Order]


class Fill(TypedDict):
    symbol: str
    client_order_id: Optional[str]
    order_id: Optional[Union[int, str]]
    trade_id: Optional[Union[int, str]]
    side: str
    qty: float
    price: float
    fee: Optional[float]
    fee_asset: Optional[str]
    realized_pnl: Optional[float]
    maker: Optional[bool]
    T: Optional[int]


class Fills(TypedDict):
    symbol: str
    from_ms: Optional[int]
    to_ms: Optional[int]
    count: int
    truncated: bool
    fills: list[Fill]


SIGNAL_FIELDS = ("ofi_l1", "ofi_l5", "buy_qty", "sell_qty", "cvd_delta", "cvd", "mid", "spread",
                 "ofi_z", "cvd_z", "fusion")


class Signal(TypedDict):
    symbol: str
    bucket_ms: int
    interval_ms: Optional[int]
    ofi_l1: Optional[float]
    ofi_l5: Optional[float]
    buy_qty: Optional[float]
    sell_qty: Optional[float]
    cvd_delta: Optional[float]
    cvd: Optional[float]
    mid: Optional[float]
    spread: Optional[float]
    ofi_z: Optional[float]
    cvd_z: Optional[float]
    fusion: Optional[float]
    seq: int


class Signals(TypedDict):
    signals: list[Signal]


class SymbolPnl(TypedDict):
    symbol: str
    fills: int
    buys: int
    sells: int
    volume: float
    turnover: float
    realized: float
    fees: float
    funding: float
    unrealized: float
    net: float


class Pnl(TypedDict):
    date: str
    realized: float
    fees: float
    funding: float
    unrealized_start: float
    unrealized_end: float
    net: float
    turnover: float
    fills: int
    symbols: list[SymbolPnl]
    other_fees: dict[str, float]


class Report(TypedDict):
    path: Optional[str]
    html: Optional[str]
    period: Optional[str]
    modified_ms: Optional[int]
    summary: dict[str, str]


class Proposal(TypedDict):
    id: str
    state: str
    action: str
    client_order_id: str
    symbol: Optional[str]
    side: Optional[str]
    qty: Optional[float]
    order_type: Optional[str]
    price: Optional[float]
    reduce_only: Optional[bool]
    created_ms: Optional[int]
    expires_ms: Optional[int]
    mode: Optional[str]
    reference_price: Optional[float]
    decided_by: Optional[str]
    decided_ms: Optional[int]
    decision_reason: Optional[str]
    outcome: Optional[dict[str, Any]]


class ProposalResult(TypedDict):
    proposal: Proposal
    existing: bool
    next_step: str


class Proposals(TypedDict):
    proposals: list[Proposal]


class Halted(TypedDict):
    state: str
    reason: str
    since: float
    by: str


# -- the tools' logic (the imperative shell around proposals.py) ---------------------------------
class Gateway:
    """The home's bus and state as the tools see them."""

    def __init__(self, cfg: dict, transport: str = "stdio"):
        self.cfg = cfg
        self.home = str(configmod.home_of(cfg))
        self.sec = cfg["mcp"]
        typed = settings.of(cfg)   # ranges and the id prefix are checked here
        self.symbols = tuple(typed.symbols)
        self.limits = risk.Limits.from_settings(typed.risk)
        self.mode = cfg["broker"]["mode"]
        self.bus = store.open_home_bus(cfg)
        self.view = store.View(self.bus, signals_kept=max(1, int(self.sec["max_rows"])))
        self.rate = calls.RateLimit(int(self.sec["calls_per_minute"]))
        self.max_rows = max(1, int(self.sec["max_rows"]))
        self.transport = transport

    def close(self) -> None:
        self.view.close()
        self.bus.close()

    # reads
    def status(self) -> dict:
        from ..supervise.status import status

        s = status(self.cfg)
        s["venue"] = {k: calls.strip_userinfo(v) for k, v in s["venue"].items()}
        return s

    def positions(self, symbol: str | None) -> dict:
        syms = self._symbols(symbol)
        self.view.refresh("positions")
        out = []
        for sym in syms:
            rec = self.view.positions.get(sym) or {}
            out.append({"symbol": sym, "qty": float(rec.get("qty") or 0.0),
                        "entry_price": rec.get("entry_price"), "mark_price": rec.get("mark_price"),
                        "unrealized_pnl": rec.get("unrealized_pnl"),
                        "realized_pnl": rec.get("realized_pnl"),
                        "in_flight": list(rec.get("in_flight") or []), "cause": rec.get("cause"),
                        "seq": rec.get("seq"), "as_of_ms": rec.get("ts")})
        return {"positions": out}

    def open_orders(self, symbol: str | None) -> dict:
        syms = self._symbols(symbol)
        self.view.refresh("orders")
        rows = sorted(self.view.open_orders().values(), key=lambda r: r["seq"])
        return {"orders": [{
            "client_order_id": r["client_order_id"], "order_id": r.get("order_id"),
            "symbol": r.get("symbol"), "side": r.get("side"), "qty": r.get("qty"),
            "price": r.get("price"), "order_type": r.get("order_type"),
            "reduce_only": bool(r.get("reduce_only")), "status": r.get("status"),
            "filled_qty": r.get("filled_qty"), "avg_price": r.get("avg_price"),
            "updated_ms": r["ts"]} for r in rows if r.get("symbol") in syms][-self.max_rows:]}

    def fills(self, symbol: str, from_ms: int | None, to_ms: int | None, limit: int) -> dict:
        (sym,) = self._symbols(symbol)
        if from_ms is not None and to_ms is not None and to_ms < from_ms:
            raise ToolError("to_ms is before from_ms")
        self.view.refresh("fills")
        limit = min(limit, self.max_rows)
        rows = []
        for f in self.view.fills:
            t = f.get("T") if isinstance(f.get("T"), int) else f["ts"]
            if f.get("symbol") == sym and (from_ms is None or t >= from_ms) \
                    and (to_ms is None or t <= to_ms):
                rows.append(f)
        keys = Fill.__annotations__
        return {"symbol": sym, "from_ms": from_ms, "to_ms": to_ms, "count": len(rows),
                "truncated": len(rows) > limit,
                "fills": [{k: f.get(k) for k in keys} for f in rows[:limit]]}

    def signals(self, symbol: str | None, n: int) -> dict:
        syms = self._symbols(symbol)
        self.view.refresh("signals")
        n = min(n, self.max_rows)
        rows = []
        for sym in syms:
            rows += list(self.view.signals.get(sym) or ())[-n:]
        rows.sort(key=lambda r: (r.get("bucket_ms") or 0, r["seq"]))
        return {"signals": [{"symbol": r["symbol"], "bucket_ms": r.get("bucket_ms"),
                             "interval_ms": r.get("interval_ms"), "seq": r["seq"],
                             **{k: r.get(k) for k in SIGNAL_FIELDS}} for r in rows[-n * len(syms):]]}

    def pnl(self, date: str) -> dict:
        from ...report import data, sections
        from ...report.period import PeriodError, parse_date

        try:
            period = parse_date(date, now_ms())
        except PeriodError as exc:
            raise ToolError(str(exc).replace("--date", "date")) from None
        ds = data.load(self.home, period, topics=("fills", "positions"), feeds=False)
        return {"date": period.label, **sections.pnl(ds)}

    def report(self) -> dict:
        paths = glob.glob(os.path.join(self.home, "reports", "*", "report.md"))
        if not paths:
            return {"path": None, "html": None, "period": None, "modified_ms": None,
                    "summary": {}}
        path = max(paths, key=os.path.getmtime)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        html = os.path.join(os.path.dirname(path), "report.html")
        return {"path": path, "html": html if os.path.exists(html) else None,
                "period": os.path.basename(os.path.dirname(path)),
                "modified_ms": int(os.path.getmtime(path) * 1000),
                "summary": calls.report_summary(text)}

    def proposals(self, state: str | None) -> dict:
        self.view.refresh("proposals", "decisions", "intents")
        rows = self.view.ledger.views(now_ms(), state)
        return {"proposals": rows[-self.max_rows:]}

    # writes
    def _orders_allowed(self) -> None:
        if not self.sec["allow_orders"]:
            raise ToolError("orders are off: this server's config has mcp.allow_orders: false "
                            "(read tools and halt still work)")

    def submit(self, args: dict) -> dict:
        self._orders_allowed()
        order = P.validate_submit(args, self.symbols, self.cfg["strategy"]["id_prefix"])
        with store.writer(self.bus, "proposals") as w:
            self.view.refresh()
            led = self.view.ledger
            now = now_ms()
            cid = order["client_order_id"]
            if cid is not None:
                old = led.find("submit", cid)
                if old is not None:
                    if not P.same_order(old, order):
                        raise ToolError(f"client_order_id {cid} already names proposal {old['id']} "
                                        "with other order fields; use a new client_order_id")
                    return self._result(old["id"], now, existing=True)
                if cid in self.view.orders:
                    raise ToolError(f"client_order_id {cid} is already an order at the broker")
            else:
                cid = order["client_order_id"] = P.make_client_order_id(
                    self.sec["client_id_prefix"], w.seq + 1, now)
            sym = order["symbol"]
            mark = (self.view.positions.get(sym) or {}).get("mark_price")
            ref = P.reference_price(order, self.view.last_mid(sym), mark)
            if ref is None:
                raise ToolError(f"no price known for {sym} yet (no signal or position record): "
                                "give a LIMIT price")
            verdict = self._risk(order, ref)
            if not verdict.approved:
                raise ToolError(f"refused by the risk check ({verdict.code}): {verdict.detail}")
            pid = f"P{w.seq + 1}"
            rec = w.append(P.proposal_payload(order, pid, now, float(self.sec["proposal_ttl_s"]),
                                              self.mode, ref))
            self.view.ledger.add_proposal(rec)
        return self._result(pid, now, existing=False)

    def _risk(self, order: dict, ref: float) -> risk.Verdict:
        try:
            state = load_state(self.home).state
        except StateError:
            state = HALTED
        beat = (trading_status(self.home) or {}).get("risk") or {}
        recent = beat.get("orders_last_minute")
        pnl = beat.get("daily_pnl_usdt")
        return risk.check(self.limits, state, self.view.position_qty(order["symbol"]),
                          risk.Order(order["symbol"], order["side"], order["qty"], ref,
                                     order["reduce_only"]),
                          int(recent) if isinstance(recent, (int, float)) else 0,
                          float(pnl) if isinstance(pnl, (int, float)) else 0.0)

    def cancel(self, args: dict) -> dict:
        self._orders_allowed()
        with store.writer(self.bus, "proposals") as w:
            self.view.refresh()
            now = now_ms()
            cid = P.check_client_order_id(args.get("client_order_id"))
            old = self.view.ledger.find("cancel", cid)
            if old is not None and self.view.ledger.state(old["id"], now) in (P.PENDING,
                                                                              P.APPROVED):
                return self._result(old["id"], now, existing=True)
            order = P.validate_cancel(args, self.view.open_orders())
            pid = f"P{w.seq + 1}"
            rec = w.append(P.proposal_payload(order, pid, now, float(self.sec["proposal_ttl_s"]),
                                              self.mode, None))
            self.view.ledger.add_proposal(rec)
        return self._result(pid, now, existing=False)

    def _result(self, pid: str, now: int, existing: bool) -> dict:
        v = self.view.ledger.view(pid, now)
        step = {P.PENDING: f"waiting for an operator: `ofi approve {pid}` or `ofi reject {pid}`",
                P.APPROVED: "approved; the strategy sends it through the risk checks",
                P.SENT: "sent to the broker (get_open_orders, fetch_fills)",
                P.DENIED: "approved, then denied by the risk check",
                P.REJECTED: "rejected by the operator",
                P.EXPIRED: "expired before an operator decided"}[v["state"]]
        return {"proposal": v, "existing": existing, "next_step": step}

    def halt(self, reason: str) -> dict:
        st = save_state(self.home, HALTED, f"mcp: {reason}", by="mcp")
        return st.to_dict()

    def _symbols(self, symbol: str | None) -> tuple[str, ...]:
        if symbol is None:
            return self.symbols
        sym = symbol.upper()
        if sym not in self.symbols:
            raise ToolError(f"symbol {symbol!r} is not traded here (symbols: "
                            f"{', '.join(self.symbols)})")
        return (sym,)

    # audit
    def audit(self, tool: str, args: dict, outcome: str, error: str | None, result,
              ms: float) -> None:
        payload = {"type": "audit", "tool": tool, "arguments": calls.redact(args), "outcome": outcome,
                   "error": error, "result": calls.redact(result), "duration_ms": round(ms, 1),
                   "pid": os.getpid(), "transport": self.transport}
        try:
            with store.writer(self.bus, "audit") as w:
                w.append(payload)
        except Exception as exc:   # the audit must not turn a result into a crash; say so
            print(f"ofi mcp: audit record not written: {exc}", file=sys.stderr)


def _audit_summary(tool: str, structured) -> Any:
    """What of a result goes into the audit record: the proposal or state of a write tool, the
    number of rows of a read tool."""
    if not isinstance(structured, dict):
        return None
    if tool in ("submit_order", "cancel_order"):
        p = structured.get("proposal") or {}
        return {"proposal_id": p.get("id"), "state": p.get("state"),
                "client_order_id": p.get("client_order_id"), "existing": structured.get("existing")}
    if tool == "halt":
        return structured
    return {k: len(v) for k, v in structured.items() if isinstance(v, list)} or None


class GatewayServer(MCPServer):
    """An MCPServer whose every tool call passes the gate (see the module docstring)."""

    def __init__(self, gw: Gateway, **kw):
        super().__init__(**kw)
        self.gw = gw

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):
        t0 = time.monotonic()
        args = dict(arguments or {})
        result = None
        if name != "halt" and not self.gw.rate.allow(t0):   # stopping is never held back
            error, outcome = (f"rate limited: more than {self.gw.rate.per_minute} calls in a "
                              "minute (mcp.calls_per_minute); wait and call again", "rate_limited")
        else:
            error, outcome = check_arguments(self._tool_manager.get_tool(name), name, args), "error"
        if error is None:
            try:
                result = await super().call_tool(name, args, context)
            except ToolError as exc:
                cause = exc.__cause__
                if isinstance(cause, (ToolError, P.ProposalError, BusError)):
                    error = str(cause)          # expected: the message is for the caller
                elif isinstance(exc, UnexpectedToolError):
                    print(f"ofi mcp: {name} failed:\n"
                          + "".join(traceback.format_exception(cause or exc)), file=sys.stderr)
                    error = "internal error (the server's stderr has the details)"
                else:
                    error = str(exc)
            else:
                if getattr(result, "is_error", False):
                    texts = [c.text for c in result.content if isinstance(c, TextContent)]
                    error = texts[0] if texts else "error"
        elapsed = (time.monotonic() - t0) * 1000
        if error is not None:
            error = calls.one_line(error.removeprefix(f"Error executing tool {name}: "))
            self.gw.audit(name, args, outcome, error, None, elapsed)
            return CallToolResult(content=[TextContent(type="text", text=f"{name}: {error}")],
                                  is_error=True)
        self.gw.audit(name, args, "ok", None,
                      _audit_summary(name, getattr(result, "structured_content", None)), elapsed)
        return result


def check_arguments(tool, name: str, args: dict) -> str | None:
    """One line saying what is wrong with ``args`` for ``tool`` (None: they fit its schema)."""
    if tool is None:
        return f"unknown tool {name!r}"
    schema = tool.parameters or {}
    props = schema.get("properties") or {}
    unknown = sorted(set(args) - set(props))
    if unknown:
        return (f"unknown argument {unknown[0]!r} (arguments: {', '.join(props) or 'none'})")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(args),
                    key=lambda e: list(e.path))
    if not errors:
        return None
    e = errors[0]
    where = ".".join(str(p) for p in e.path)
    if e.validator == "required":
        return e.message
    return f"{where}: {e.message}" if where else e.message


# -- the server ----------------------------------------------------------------------------------
def build(cfg: dict, transport: str = "stdio", **server_kw) -> GatewayServer:
    """The MCP server over the home of ``cfg``."""
    gw = Gateway(cfg, transport)
    srv = GatewayServer(gw, name="ofi-broker-gateway", instructions=INSTRUCTIONS,
                        log_level="WARNING", **server_kw)
    syms = ", ".join(gw.symbols)
    Sym = Annotated[Optional[str], Field(description=f"a traded symbol ({syms}); default: all")]

    @srv.tool(annotations=READ, title="Pipeline status")
    def get_status() -> Status:
        """Each program (supervisord state, pid, ready, heartbeat age, consumer lag, why it
        refused to start), restarts, the trading state (ACTIVE/REDUCING/HALTED, why) with the
        strategy's risk usage, and the venue (mode, URLs). The same as `ofi status --json`."""
        return gw.status()

    @srv.tool(annotations=READ, title="Positions")
    def get_position(symbol: Sym = None) -> Positions:
        """The broker's position per symbol (its last `positions` record): signed qty, entry
        and mark price, unrealized and realized PnL, the orders in flight."""
        return gw.positions(symbol)

    @srv.tool(annotations=READ, title="Open orders")
    def get_open_orders(symbol: Sym = None) -> Orders:
        """Orders the broker has not finished (not FILLED, CANCELED, REJECTED, EXPIRED or
        ABANDONED), from the `orders` topic, oldest first."""
        return gw.open_orders(symbol)

    @srv.tool(annotations=READ, title="Fills")
    def fetch_fills(
            symbol: Annotated[str, Field(description=f"a traded symbol ({syms})")],
            from_ms: Annotated[Optional[int], Field(ge=0, description="fills at or after this "
                                                    "venue time (epoch ms)")] = None,
            to_ms: Annotated[Optional[int], Field(ge=0, description="fills at or before this "
                                                  "venue time (epoch ms)")] = None,
            limit: Annotated[int, Field(ge=1, le=10000, description="most fills returned "
                                        "(oldest first)")] = 100) -> Fills:
        """The account's fills of a symbol in a time range (venue trade time T), with fee,
        fee asset, realized PnL and maker flag; `truncated` says there were more."""
        return gw.fills(symbol, from_ms, to_ms, limit)

    @srv.tool(annotations=READ, title="Recent signals")
    def get_signals(symbol: Sym = None,
                    n: Annotated[int, Field(ge=1, le=10000,
                                            description="intervals per symbol")] = 20) -> Signals:
        """The last n signal intervals per symbol: OFI L1/L5, taker buy/sell volume, CVD,
        mid, spread, z-scores and the fused signal."""
        return gw.signals(symbol, n)

    @srv.tool(annotations=READ, title="PnL of a day")
    def get_pnl(date: Annotated[str, Field(description="UTC day: today, yesterday or "
                                           "YYYY-MM-DD")] = "today") -> Pnl:
        """Realized PnL, fees, unrealized PnL at the start and end, net PnL, turnover and
        fills of a UTC day, in total and per symbol, as the report computes them."""
        return gw.pnl(date)

    @srv.tool(annotations=READ, title="Latest report")
    def get_report() -> Report:
        """The newest report under the home (report.md and report.html paths) with its
        summary table (PnL, fees, turnover, win rate, slippage, signals)."""
        return gw.report()

    @srv.tool(annotations=READ, title="Order proposals")
    def get_proposals(state: Annotated[Optional[Literal["pending", "approved", "rejected",
                                                        "expired", "sent", "denied"]],
                                       Field(description="only proposals in this state")] = None
                      ) -> Proposals:
        """Orders and cancels proposed through submit_order / cancel_order, with their state:
        pending (waiting for an operator), approved, rejected, expired, sent (reached the
        broker) or denied (approved, then refused by the risk check)."""
        return gw.proposals(state)

    @srv.tool(annotations=WRITE, title="Propose an order")
    def submit_order(
            symbol: Annotated[str, Field(description=f"a traded symbol ({syms})")],
            side: Literal["BUY", "SELL"],
            qty: Annotated[float, Field(gt=0, description="quantity in the base asset")],
            order_type: Literal["MARKET", "LIMIT"] = "MARKET",
            price: Annotated[Optional[float], Field(gt=0, description="limit price (LIMIT "
                                                    "only)")] = None,
            reduce_only: bool = False,
            client_order_id: Annotated[Optional[str], Field(
                pattern=r"^[.A-Z:/a-z0-9_-]{1,36}$",
                description="idempotency key: the same id again returns the same "
                            "proposal")] = None) -> ProposalResult:
        """Propose an order. It is NOT sent: it waits for a human operator to approve it
        (`ofi approve ID`) or reject it (`ofi reject ID`); an approved order then passes the
        strategy's risk checks. Checked now against the notional and position limits. Needs
        mcp.allow_orders: true."""
        return gw.submit({"symbol": symbol, "side": side, "qty": qty, "order_type": order_type,
                          "price": price, "reduce_only": reduce_only,
                          "client_order_id": client_order_id})

    @srv.tool(annotations=WRITE, title="Propose a cancel")
    def cancel_order(client_order_id: Annotated[str, Field(
            pattern=r"^[.A-Z:/a-z0-9_-]{1,36}$",
            description="the open order to cancel (get_open_orders)")]) -> ProposalResult:
        """Propose to cancel an open order. It is NOT canceled until a human operator approves
        (`ofi approve ID`). Needs mcp.allow_orders: true. To stop everything at once, use halt."""
        return gw.cancel({"client_order_id": client_order_id})

    @srv.tool(annotations=WRITE, title="Halt trading")
    def halt(reason: Annotated[str, Field(min_length=1, max_length=300,
                                          description="why trading stops")]) -> Halted:
        """Stop trading now (the kill switch, as `ofi halt`): nothing new is sent and the
        broker cancels open orders. Needs no approval; only an operator can resume
        (`ofi resume`)."""
        return gw.halt(reason)

    return srv


def serve(cfg: dict, http_port: int | None = None) -> None:
    """Run until the client goes away (stdio) or SIGINT/SIGTERM (HTTP on 127.0.0.1)."""
    srv = build(cfg, "http" if http_port is not None else "stdio")
    try:
        if http_port is None:
            srv.run("stdio")
        else:
            srv.run("streamable-http", host="127.0.0.1", port=int(http_port))
    finally:
        srv.gw.close()
