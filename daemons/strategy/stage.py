"""The strategy daemon: ``signals`` (and ``positions``) in, risk-checked ``intents`` out.

For each signal: :func:`rules.decide` proposes an order, :func:`risk.check` approves it (an
``intent`` record) or denies it (a structured log line, a counter in the heartbeat and, with
``strategy.denials_to_bus``, a ``risk_denied`` record in ``intents`` that the broker ignores).

Restart safety. The strategy's view (position per symbol, ...) is saved in
``<home>/state/strategy.json`` with the last signal seq and the last ``intents`` seq it reflects.
On start it replays the ``intents`` written after that snapshot (its own output, the truth of
what was sent), so the view includes every intent even after a SIGKILL, and the highest
``signal_seq`` seen there marks the signals already acted on: re-delivered signals up to it are
skipped, never re-emitted. Client order ids are derived from the signal, so even a re-emission
would carry the same id for the broker to refuse.

Seed flags (the old ``mcp.strategy_server.app``) are accepted: ``--signals-dir`` (home, bus dir
or topic dir holding signals), ``--signals-source auto|jsonl|sqlite``, ``--output`` (the home
where intents go, an alias of ``--home``), ``--sink``, ``--mode`` (also ``EXECUTOR_MODE``),
``--symbols``, ``--config``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque

import orjson

from bus import BadRecord, jsonl, now_ms

from .. import config as configmod
from .. import runtime
from ..runtime import Stage, write_json_atomic
from . import ids, risk, rules, source
from .state import ACTIVE, HALTED, REDUCING, StateError, TradingState, load_state, save_state

SNAPSHOT = "strategy.json"
SIGNALS_POSITION = "strategy-signals.json"
SNAPSHOT_EVERY_S = 0.5
DAILY_LOSS_REASON = "daily loss limit"


class StrategyStage(Stage):
    """Turns signals into risk-checked order intents (default OFI/CVD strategy)."""

    name = "strategy"
    inputs = ("signals", "positions")
    outputs = ("intents",)

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.config
        sec = cfg["strategy"]
        self.params = rules.Params.from_config(sec)
        self.limits = risk.Limits.from_config(cfg["risk"])
        self.prefix = sec["id_prefix"]
        self.grace_ms = int(float(sec["position_sync_grace_s"]) * 1000)
        self.denials_to_bus = bool(sec["denials_to_bus"])
        self.symbols = tuple(cfg["symbols"])
        self.views: dict[str, rules.View] = {s: rules.View() for s in self.symbols}
        self.last_signal_seq = 0          # signals up to here are reflected in the view
        self.last_intent_seq = 0          # intents records up to here are reflected
        self.last_intent_ts: dict[str, int] = {}
        self.last_signal_ms: dict[str, int] = {}
        self.order_times: deque[int] = deque()   # wall ms of approved intents (rate limit)
        self.counts = {"signals": 0, "intents": 0, "denied": 0, "skipped_replayed": 0,
                       "ignored_symbol": 0, "position_corrections": 0, "positions_in_flight": 0}
        self.denials: dict[str, int] = {}
        self._last_denial: dict[str, tuple] = {}
        self._trading = TradingState()
        self._trading_key: object = "unread"
        self._dirty = False
        self._saved_at = 0.0
        self.snapshot_path = os.path.join(ctx.state_dir, SNAPSHOT)
        self.signals_dir = sec.get("signals_dir")
        self.signals_source = sec.get("signals_source") or "auto"
        self.external: source.SignalSource | None = None
        self._external_more = False

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._load_snapshot()
        replayed = self._replay_intents()
        if "signals" not in self.inputs:
            topic_dir = source.resolve_topic_dir(self.signals_dir or self.ctx.home)
            self.external = source.SignalSource(
                topic_dir, self.signals_source,
                os.path.join(self.ctx.state_dir, SIGNALS_POSITION))
            if self.ctx.bus.waker is None:
                self.ctx.bus.wait(0)
            self.ctx.bus.waker.watch(topic_dir)
        st = self.trading_state()
        self.ctx.log.info("strategy_start", last_signal_seq=self.last_signal_seq,
                          last_intent_seq=self.last_intent_seq, intents_replayed=replayed,
                          trading_state=st.state, signals=self.external.dir if self.external
                          else "bus", positions={s: v.qty for s, v in self.views.items() if v.qty})
        self._save_snapshot()

    def stop(self) -> None:
        if self.external is not None:
            self.external.close()
        self._save_snapshot()

    def handle(self, topic: str, record: dict) -> None:
        if topic == "signals":
            self.on_signal(record)
        elif topic == "positions":
            self.on_position(record)

    def tick(self, now: float) -> None:
        if self.external is not None:
            batch = self.external.poll(int(configmod.get(self.ctx.config, "daemon.batch", 2000)))
            for item, pos in batch:
                if isinstance(item, BadRecord):
                    self.ctx.bus.deadletter(item.reason, item.raw, source="signals",
                                            position=pos, stage=self.name)
                else:
                    try:
                        self.on_signal(item)
                    except BadRecord as bad:
                        self.ctx.bus.deadletter(bad.reason, bad.raw or orjson.dumps(item).decode(),
                                                source="signals", position=pos, stage=self.name)
                self.external.mark(pos)
                if self.ctx.stopping:
                    break
            self.external.commit()
            self._external_more = bool(batch)
        self.trading_state()   # notices (and logs) a change made by `ofi halt` / the broker
        if self._dirty and now - self._saved_at >= SNAPSHOT_EVERY_S:
            self._save_snapshot()

    def idle_timeout(self) -> float | None:
        return 0.0 if self._external_more else None

    # -- inputs ------------------------------------------------------------------------------
    def on_signal(self, rec: dict) -> None:
        """One ``signals`` record: decide, check risk, emit."""
        if rec.get("type") != "signal":
            return
        seq = int(rec["seq"])
        if seq <= self.last_signal_seq:
            self.counts["skipped_replayed"] += 1   # already acted on before a restart
            return
        symbol, bucket = rec.get("symbol"), rec.get("bucket_ms")
        if not isinstance(symbol, str) or isinstance(bucket, bool) or not isinstance(bucket, int) \
                or bucket < 0:
            raise BadRecord("signal without a symbol or an integer bucket_ms",
                            orjson.dumps(rec).decode())
        self.counts["signals"] += 1
        self.last_signal_seq = seq
        self._dirty = True
        view = self.views.get(symbol)
        if view is None:
            self.counts["ignored_symbol"] += 1
            return
        decision = rules.decide(self.params, view, rec)
        view = rules.observe(view, rec)
        self.last_signal_ms[symbol] = rules.signal_time(rec)
        if decision is not None:
            view = self._submit(decision, view, rec)
        self.views[symbol] = view
        self._watch_daily_loss(view.day)

    def on_position(self, rec: dict) -> None:
        """One ``positions`` record from the broker: correct the view unless ours is newer."""
        if rec.get("type") != "position":
            return
        symbol = rec.get("symbol")
        view = self.views.get(symbol)
        if view is None:
            return
        qty = rec.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, (int, float)):
            raise BadRecord("position without a numeric qty", orjson.dumps(rec).decode())
        if int(rec.get("ts", 0)) < self.last_intent_ts.get(symbol, 0) + self.grace_ms:
            self.counts["positions_in_flight"] += 1   # may predate our last intent's fill
            return
        entry = rec.get("entry_price")
        new = rules.correct(view, float(qty),
                            float(entry) if isinstance(entry, (int, float)) else None,
                            self.last_signal_ms.get(symbol))
        if new != view:
            self.counts["position_corrections"] += 1
            self.ctx.log.warning("position_corrected", symbol=symbol, was=view.qty, now=new.qty,
                                 position_seq=rec.get("seq"))
            self.views[symbol] = new
            self._last_denial.pop(symbol, None)
            self._dirty = True

    # -- decisions ---------------------------------------------------------------------------
    def _submit(self, d: rules.Decision, view: rules.View, rec: dict) -> rules.View:
        state = self.trading_state()
        wall = now_ms()
        while self.order_times and self.order_times[0] <= wall - risk.WINDOW_MS:
            self.order_times.popleft()
        ref_price = d.price or d.mid or view.last_mid or view.entry_mid or 0.0
        order = risk.Order(d.symbol, d.side, d.qty, ref_price, d.reduce_only)
        verdict = risk.check(self.limits, state.state, view.qty, order, len(self.order_times),
                             self.daily_pnl())
        coid = ids.client_order_id(self.prefix, d.symbol, int(rec["bucket_ms"]), d.code, d.side)
        base = {
            "symbol": d.symbol, "side": d.side, "qty": d.qty, "order_type": d.order_type,
            "price": d.price, "reduce_only": d.reduce_only, "client_order_id": coid,
            "reason": d.reason, "trigger": d.trigger, "signal_seq": int(rec["seq"]),
            "bucket_ms": int(rec["bucket_ms"]), "decision_ms": d.now_ms, "decision_mid": d.mid,
            "fusion": d.fusion, "ofi_z": rec.get("ofi_z"), "cvd_z": rec.get("cvd_z"),
        }
        if verdict.approved:
            out = self.ctx.emit("intents", {"type": "intent", **base})
            self.last_intent_seq = out["seq"]
            self.last_intent_ts[d.symbol] = out["ts"]
            self.order_times.append(wall)
            self.counts["intents"] += 1
            self._last_denial.pop(d.symbol, None)
            self.ctx.log.info("intent", symbol=d.symbol, side=d.side, qty=d.qty,
                              reason=d.reason, trigger=d.trigger, client_order_id=coid,
                              signal_seq=base["signal_seq"], intent_seq=out["seq"])
            return rules.apply(view, d)
        self.counts["denied"] += 1
        self.denials[verdict.code] = self.denials.get(verdict.code, 0) + 1
        # the same denial repeats every interval while e.g. HALTED with a position open:
        # count each, but log and record only the first of a run
        key = (verdict.code, d.trigger, d.side, d.qty, state.state)
        if self._last_denial.get(d.symbol) != key:
            self._last_denial[d.symbol] = key
            self.ctx.log.warning("risk_denied", code=verdict.code, detail=verdict.detail,
                                 symbol=d.symbol, side=d.side, qty=d.qty, reason=d.reason,
                                 trigger=d.trigger, client_order_id=coid,
                                 signal_seq=base["signal_seq"], trading_state=state.state)
            if self.denials_to_bus:
                out = self.ctx.emit("intents", {"type": "risk_denied", **base, "code": verdict.code,
                                                "detail": verdict.detail,
                                                "trading_state": state.state})
                self.last_intent_seq = out["seq"]
        return view

    def daily_pnl(self) -> float:
        """The day's paper PnL over all symbols (realized + unrealized, USDT)."""
        return sum(v.realized + v.unrealized() for v in self.views.values())

    def _watch_daily_loss(self, day: int) -> None:
        """Daily loss limit hit: REDUCING; the next UTC day, back to ACTIVE if we set it."""
        limit = self.limits.daily_loss_limit_usdt
        if not limit:
            return
        st = self.trading_state()
        pnl = self.daily_pnl()
        if pnl <= -limit and st.state == ACTIVE:
            date = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
            self._set_state(REDUCING, f"{DAILY_LOSS_REASON}: PnL {pnl:.2f} USDT on {date}")
        elif pnl > -limit and st.state == REDUCING and st.by == "strategy" \
                and st.reason.startswith(DAILY_LOSS_REASON) and st.since \
                and day > int(st.since // 86400):
            self._set_state(ACTIVE, "new trading day")

    def _set_state(self, state: str, reason: str) -> None:
        save_state(self.ctx.home, state, reason, by="strategy")
        self.trading_state()

    def trading_state(self) -> TradingState:
        """The trading state file, re-read only when it changed; unreadable means HALTED."""
        path = os.path.join(self.ctx.state_dir, "trading.json")
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        if key == self._trading_key:
            return self._trading
        try:
            new = load_state(self.ctx.home)
        except StateError as exc:
            new = TradingState(HALTED, f"unreadable state file: {exc}", time.time(), "strategy")
        if (new.state, new.reason, new.since) != (self._trading.state, self._trading.reason,
                                                  self._trading.since):
            self.ctx.log.warning("trading_state", state=new.state, reason=new.reason, by=new.by)
            self._last_denial.clear()
        self._trading, self._trading_key = new, key
        return new

    # -- persistence -------------------------------------------------------------------------
    def _load_snapshot(self) -> None:
        try:
            with open(self.snapshot_path, "rb") as f:
                snap = orjson.loads(f.read())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            # the intents replay below rebuilds the positions from scratch
            self.ctx.log.warning("snapshot_unreadable", path=self.snapshot_path, error=str(exc))
            return
        for sym, v in (snap.get("views") or {}).items():
            if sym in self.views:
                self.views[sym] = rules.View.from_dict(v)
        self.last_intent_seq = int(snap.get("last_intent_seq") or 0)
        if snap.get("signals") == self._signals_id():
            self.last_signal_seq = int(snap.get("last_signal_seq") or 0)
        self.last_intent_ts = {k: int(v) for k, v in (snap.get("last_intent_ts") or {}).items()}
        self.last_signal_ms = {k: int(v) for k, v in (snap.get("last_signal_ms") or {}).items()}
        self.order_times.extend(int(t) for t in snap.get("order_times") or [])

    def _save_snapshot(self) -> None:
        write_json_atomic(self.snapshot_path, {
            "version": 1, "signals": self._signals_id(),
            "last_signal_seq": self.last_signal_seq, "last_intent_seq": self.last_intent_seq,
            "views": {s: v.to_dict() for s, v in self.views.items()},
            "last_intent_ts": self.last_intent_ts, "last_signal_ms": self.last_signal_ms,
            "order_times": list(self.order_times),
        })
        self._dirty = False
        self._saved_at = time.time()

    def _signals_id(self) -> str:
        """Which signals topic the seqs refer to."""
        return source.resolve_topic_dir(self.signals_dir or self.ctx.home)

    def _replay_intents(self) -> int:
        """Apply our own ``intents`` written after the snapshot; returns how many."""
        bus = self.ctx.bus
        start = self.last_intent_seq
        d = bus.topic_dir("intents")
        position = {"seq": start}
        if bus.sink_of("intents") == "jsonl":
            segs = jsonl.list_segments(d)
            below = [s for s in segs if s <= start + 1]
            position["segment"] = below[-1] if below else (segs[0] if segs else 1)
            position["offset"] = 0   # the reader skips records up to ``seq``
        reader = bus.reader("intents", position)
        n = 0
        try:
            while True:
                batch = reader.read(5000)
                if not batch:
                    break
                for rec, _pos in batch:
                    if isinstance(rec, BadRecord):
                        continue
                    n += 1
                    self._apply_intent_record(rec)
        finally:
            reader.close()
        return n

    def _apply_intent_record(self, rec: dict) -> None:
        self.last_intent_seq = max(self.last_intent_seq, int(rec["seq"]))
        sig = rec.get("signal_seq")
        if isinstance(sig, int):
            self.last_signal_seq = max(self.last_signal_seq, sig)
        if rec.get("type") != "intent":
            return
        sym = rec.get("symbol")
        if sym not in self.views:
            return
        mid = rec.get("decision_mid")
        d = rules.Decision(sym, rec["side"], float(rec["qty"]), bool(rec.get("reduce_only")),
                           rec.get("reason") or "", rec.get("trigger") or "cross",
                           rec.get("order_type") or "MARKET", rec.get("price"),
                           int(rec.get("decision_ms") or rec.get("bucket_ms") or 0),
                           float(mid) if isinstance(mid, (int, float)) else None,
                           rec.get("fusion"))
        view = rules.apply(self.views[sym], d)
        if isinstance(d.fusion, (int, float)):
            view = rules.View(**{**view.to_dict(), "last_fusion": float(d.fusion)})
        self.views[sym] = view
        self.last_intent_ts[sym] = int(rec["ts"])
        self.last_signal_ms[sym] = max(self.last_signal_ms.get(sym, 0), d.now_ms)
        if int(rec["ts"]) > now_ms() - risk.WINDOW_MS and int(rec["ts"]) not in self.order_times:
            self.order_times.append(int(rec["ts"]))

    # -- health ------------------------------------------------------------------------------
    def health(self) -> dict:
        st = self._trading
        wall = now_ms()
        symbols = {}
        for sym, v in self.views.items():
            ref = v.last_mid or v.entry_mid or 0.0
            symbols[sym] = {"position_qty": v.qty, "position_usdt": round(abs(v.qty) * ref, 2),
                            "entry_mid": v.entry_mid, "unrealized_usdt": round(v.unrealized(), 4),
                            "realized_usdt": round(v.realized, 4)}
        out = {
            "trading_state": st.state, "trading_reason": st.reason,
            "risk": {
                "state": st.state, "reason": st.reason, "symbols": symbols,
                "max_position_usdt": self.limits.max_position_usdt,
                "max_order_usdt": self.limits.max_order_usdt,
                "orders_last_minute": risk.orders_in_window(self.order_times, wall),
                "max_orders_per_minute": self.limits.max_orders_per_minute,
                "daily_pnl_usdt": round(self.daily_pnl(), 4),
                "daily_loss_limit_usdt": self.limits.daily_loss_limit_usdt,
                "denied": self.counts["denied"], "denials": dict(self.denials),
            },
            "strategy": {**self.counts, "last_signal_seq": self.last_signal_seq,
                         "last_intent_seq": self.last_intent_seq},
        }
        if self.external is not None:
            out["signals_source"] = {"dir": self.external.dir, "sink": self.external.sink,
                                     "seq": self.external.seq, "lag": self.external.lag()}
        return out


class ExternalSignalsStage(StrategyStage):
    """The strategy reading signals from ``--signals-dir`` / a pinned ``--signals-source``."""

    inputs = ("positions",)


def stage_for(cfg: dict) -> type[StrategyStage]:
    """The bus consumer reads signals unless they live elsewhere or their sink is pinned."""
    sec = cfg["strategy"]
    if sec.get("signals_source", "auto") != "auto":
        return ExternalSignalsStage
    if sec.get("signals_dir"):
        here = os.path.join(str(configmod.home_of(cfg)), "bus", "signals")
        if source.resolve_topic_dir(sec["signals_dir"]) != here:
            return ExternalSignalsStage
    return StrategyStage


def check_config(cfg: dict) -> None:
    """Refuse bad strategy/risk settings with one line (ConfigError)."""
    sec = cfg["strategy"]
    try:
        rules.Params.from_config(sec)
        risk.Limits.from_config(cfg["risk"])
    except ValueError as exc:
        raise configmod.ConfigError(f"config: {exc}") from None
    if not ids.valid_prefix(str(sec["id_prefix"])):
        raise configmod.ConfigError("config: key 'strategy.id_prefix' must be 1-8 characters "
                                    "of [.A-Z:/a-z0-9_]")
    if sec["signals_source"] not in source.SOURCES:
        raise configmod.ConfigError("config: key 'strategy.signals_source' must be one of "
                                    f"{', '.join(source.SOURCES)}, not {sec['signals_source']!r}")
    if stage_for(cfg) is ExternalSignalsStage:
        topic_dir = source.resolve_topic_dir(sec["signals_dir"] or configmod.home_of(cfg))
        try:
            source.detect(topic_dir, sec["signals_source"])
        except source.SourceError as exc:
            raise configmod.ConfigError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ofi daemon strategy",
        description="Turn signals into risk-checked order intents (default OFI/CVD strategy).")
    p.add_argument("--config", help="YAML file overriding etc/defaults.yaml")
    p.add_argument("--home", help="runtime directory (default $OFI_HOME, else ./var)")
    p.add_argument("--output", metavar="DIR",
                   help="home whose bus receives the intents (same as --home)")
    p.add_argument("--sink", choices=("jsonl", "sqlite"), help="sink of the intents written")
    p.add_argument("--symbols", help="comma-separated symbols to trade")
    p.add_argument("--mode", choices=("mock", "sim", "testnet", "live"),
                   help="execution mode (also EXECUTOR_MODE); the broker acts on it")
    p.add_argument("--signals-dir", metavar="DIR",
                   help="home, bus dir or signals topic dir to read signals from (default: --home)")
    p.add_argument("--signals-source", choices=source.SOURCES,
                   help="sink the signals are read from (auto: detect)")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> dict:
    home = args.home
    if args.output:
        if home and os.path.abspath(home) != os.path.abspath(args.output):
            raise configmod.ConfigError(f"--output {args.output} and --home {home} differ; "
                                        "give one (intents go to the home's bus)")
        home = args.output
    cfg = configmod.load(args.config, {
        "home": home, "sink": args.sink, "broker.mode": args.mode,
        "symbols": [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
        if args.symbols else None,
        "strategy.signals_dir": os.path.abspath(args.signals_dir) if args.signals_dir else None,
        "strategy.signals_source": args.signals_source,
    })
    check_config(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``ofi daemon strategy`` / ``python -m daemons.strategy``."""
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except configmod.ConfigError as exc:
        print(f"ofi daemon strategy: {exc}", file=sys.stderr)
        return 2
    return runtime.run(stage_for(cfg), cfg)
