"""The strategy daemon: ``signals`` and ``positions`` in, risk-checked ``intents`` out.

For each signal the pure :class:`~.core.StrategyCore` (also run by ``ofi backtest``) decides:
:func:`rules.decide` proposes an order, :func:`risk.check` approves it (an ``intent`` record) or
denies it (a structured log line, a counter in the heartbeat and, with
``strategy.denials_to_bus``, a ``risk_denied`` record in ``intents`` that the broker ignores).
Signals older than ``strategy.max_signal_age_ms`` (wall clock) are observed, not acted on (one
``stale_signals`` log line and one ``stale_feed`` alert per run of them, the alert at most once
per ``alerts.repeat_s`` and symbol). While a position is held, ``tick`` runs the core's timer
about every 250 ms: stop and time exits fire even when no signal comes. The position is the
broker's (its ``positions`` records) plus the orders it has not finished (see ``core.py``).
An operator's approval of an order proposed through ``ofi mcp`` (``decisions`` topic) becomes an
intent after the same risk check, or a ``cancel`` intent (``StrategyCore.on_decision``).

Restart safety. The stage is stateful on the runtime (``daemons/runtime.py``): the strategy's
view (position per symbol, the broker's last record, our intents it had not handled, ...) is
saved in ``<home>/state/strategy.json`` with the last signal, ``intents`` and ``positions`` seqs
it reflects and, in the same atomic write, the position of every input. On start the inputs
are rewound to those positions and it replays the ``intents`` written after that snapshot
(its own output, the truth of what was sent), then the ``positions`` records
written after it, so the view is again the broker's position plus what is in flight, even after
a SIGKILL; the highest ``signal_seq`` seen in the intents marks the signals already acted on:
re-delivered signals up to it are skipped, never re-emitted. Client order ids are derived from
the signal, so even a re-emission would carry the same id for the broker to refuse.

Seed flags (the old ``mcp.strategy_server.app``) are accepted: ``--signals-dir`` (home, bus dir
or topic dir holding signals), ``--signals-source auto|jsonl|sqlite``, ``--output`` (the home
where intents go, an alias of ``--home``), ``--sink``, ``--mode`` (also ``EXECUTOR_MODE``),
``--symbols``, ``--config``.
"""
from __future__ import annotations

import os
import sys


from bus import BadRecord

from .. import config as configmod
from .. import runtime, settings
from ..runtime import Stage
from . import rules, source
from .core import StrategyCore
from ..trading import HALTED, StateError, TradingState, load_state, save_state

SNAPSHOT_EVERY_S = 0.5
TIMER_EVERY_S = 0.25       # how often the timer exits are evaluated while a position is held


class StrategyStage(Stage):
    """Turns signals into risk-checked order intents (default OFI/CVD strategy).

    The decisions are :class:`~.core.StrategyCore`'s (the backtest runs the same class); this
    shell adds the wall clock, the trading state file, the bus, logs and restart safety.
    """

    name = "strategy"
    inputs = ("signals", "positions", "decisions")
    outputs = ("intents",)
    stateful = True
    save_every_s = SNAPSHOT_EVERY_S

    def __init__(self, ctx):
        super().__init__(ctx)
        sec = ctx.settings.strategy
        self.core = StrategyCore.from_settings(ctx.settings)   # the core shared with the backtest
        self.denials_to_bus = sec.denials_to_bus
        # an approval that waited longer than this for the strategy (it was down) is refused
        self.decision_max_age_ms = int(ctx.settings.mcp.decision_max_age_s * 1000)
        self._trading = TradingState()
        self._trading_key: object = "unread"
        self.signals_dir = sec.signals_dir
        self.signals_source = sec.signals_source
        self.external: source.SignalSource | None = None
        self._timer_at = 0.0

    # -- life cycle --------------------------------------------------------------------------
    def restore(self, state: dict) -> None:
        self.core.restore(state, same_signals=state.get("signals") == self._signals_id())

    def snapshot(self) -> dict:
        return {"version": 2, "signals": self._signals_id(), **self.core.snapshot()}

    def sources(self) -> dict:
        if "signals" in self.inputs:
            return {}
        topic_dir = self._signals_id()
        self.external = source.SignalSource(topic_dir, self.signals_source, self.ctx.bus,
                                            self.name)
        if self.ctx.bus.waker is None:
            self.ctx.bus.wait(0)
        self.ctx.bus.waker.watch(topic_dir)
        return {"signals": self.external}

    def start(self) -> None:
        replayed = self._replay_intents()
        positions = self._replay_positions()
        st = self.trading_state()
        core = self.core
        self.ctx.log.info("strategy_start", last_signal_seq=core.last_signal_seq,
                          last_intent_seq=core.last_intent_seq, intents_replayed=replayed,
                          positions_replayed=positions, positions_seq=core.positions_seq,
                          trading_state=st.state, signals=self.external.dir if self.external
                          else "bus", positions={s: v.qty for s, v in core.views.items() if v.qty})
        self.ctx.changed()   # the replays are saved with the positions at the first save

    def handle(self, topic: str, record: dict) -> None:
        if topic == "signals":
            self.on_signal(record)
        elif topic == "positions":
            self.on_position(record)
        elif topic == "decisions":
            self.on_decision(record)

    def tick(self, now: float) -> None:
        self.trading_state()   # notices (and logs) a change made by `ofi halt` / the broker
        if now - self._timer_at >= TIMER_EVERY_S:
            self._timer_at = now
            step = self.core.on_timer(self.trading_state(), self.ctx.now_ms())
            for payload in step.payloads:
                self._emit(payload)
            if step.payloads:
                self.ctx.changed()

    def idle_timeout(self) -> float | None:
        if self.core.holding():   # the timer must run while no record comes
            return max(0.0, self._timer_at + TIMER_EVERY_S - self.ctx.clock())
        return None

    # -- inputs ------------------------------------------------------------------------------
    def on_signal(self, rec: dict) -> None:
        """One ``signals`` record: decide, check risk (the core), emit and log."""
        if rec.get("type") != "signal":
            return
        now = self.ctx.now_ms()
        step = self.core.on_signal(rec, self.trading_state(), now)
        if step.payloads:   # the latency trace goes on: the signal's, then our decision time
            trace = {**(rec.get("trace") or {}), "signal": rec.get("ts"), "strategy": now}
            for payload in step.payloads:
                payload["trace"] = trace
        for event, fields in step.notes:
            self.ctx.log.warning(event, **fields)
            if event == "stale_signals":   # the first of a run: the feed lags
                self.ctx.alert(
                    "stale_feed", f"{fields['symbol']}: signals {fields['age_ms']} ms old (more "
                    f"than {fields['max_signal_age_ms']} ms); not acted on",
                    subject=fields["symbol"], signal_seq=fields["signal_seq"],
                    age_ms=fields["age_ms"], max_signal_age_ms=fields["max_signal_age_ms"])
        for payload in step.payloads:
            self._emit(payload)
        if step.state_change is not None:
            self._set_state(*step.state_change)

    def on_position(self, rec: dict) -> None:
        """One ``positions`` record from the broker: the view follows it (see the core)."""
        corrected = self.core.on_position(rec, self.ctx.now_ms())
        if corrected is not None:
            self.ctx.log.warning("position_corrected", symbol=rec.get("symbol"),
                                 was=corrected[0], now=corrected[1], position_seq=rec.get("seq"),
                                 cause=rec.get("cause"), intent_seq=rec.get("intent_seq"))

    def on_decision(self, rec: dict) -> None:
        """One ``decisions`` record (``ofi approve`` / ``ofi reject`` of an MCP proposal): an
        approved order goes through the core's risk check like every intent (see the core)."""
        step = self.core.on_decision(rec, self.trading_state(), self.ctx.now_ms(),
                                     self.decision_max_age_ms)
        for payload in step.payloads:
            self.ctx.log.info("operator_decision", proposal_id=rec.get("proposal_id"),
                              action=rec.get("action"), client_order_id=rec.get("client_order_id"),
                              by=rec.get("by"), result=payload["type"])
            self._emit(payload)

    def _emit(self, p: dict) -> None:
        """Write an intent or a cancel (always) or a risk denial (logged; to the bus if
        configured, and always when it answers an operator's proposal)."""
        if p["type"] == "cancel":
            self.core.written(self.ctx.emit("intents", p))
            return
        if p["type"] == "intent":
            out = self.ctx.emit("intents", p)
            self.core.written(out)
            self.ctx.log.info("intent", symbol=p["symbol"], side=p["side"], qty=p["qty"],
                              reason=p["reason"], trigger=p["trigger"], origin=p["origin"],
                              client_order_id=p["client_order_id"],
                              signal_seq=p["signal_seq"], intent_seq=out["seq"])
            return
        self.ctx.log.warning("risk_denied", code=p["code"], detail=p["detail"],
                             symbol=p["symbol"], side=p["side"], qty=p["qty"], reason=p["reason"],
                             trigger=p["trigger"], client_order_id=p["client_order_id"],
                             signal_seq=p["signal_seq"], trading_state=p["trading_state"])
        if self.denials_to_bus or p.get("proposal_id"):
            self.core.written(self.ctx.emit("intents", p))

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
            new = TradingState(HALTED, f"unreadable state file: {exc}", self.ctx.clock(),
                               "strategy")
        if (new.state, new.reason, new.since) != (self._trading.state, self._trading.reason,
                                                  self._trading.since):
            self.ctx.log.warning("trading_state", state=new.state, reason=new.reason, by=new.by)
            self.core.forget_denials()
        self._trading, self._trading_key = new, key
        return new

    # -- persistence -------------------------------------------------------------------------
    def _signals_id(self) -> str:
        """Which signals topic the seqs refer to."""
        return source.resolve_topic_dir(self.signals_dir or self.ctx.home)

    def _replay_intents(self) -> int:
        """Apply our own ``intents`` written after the snapshot; returns how many."""
        n = 0
        wall = self.ctx.now_ms()
        for rec in self._records_after("intents", self.core.last_intent_seq):
            n += 1
            self.core.replay_intent(rec, wall)
        return n

    def _replay_positions(self) -> int:
        """Apply the broker's ``positions`` records written after the snapshot (the consumer may
        have committed them before the snapshot was saved); returns how many."""
        n = 0
        wall = self.ctx.now_ms()
        for rec in self._records_after("positions", self.core.positions_seq):
            n += 1
            try:
                self.core.on_position(rec, wall)
            except BadRecord:
                pass   # the consumer dead-letters it when it reads it
        return n

    def _records_after(self, topic: str, seq: int):
        """The readable records of ``topic`` with a seq above ``seq``."""
        bus = self.ctx.bus
        if not os.path.isdir(bus.topic_dir(topic)):
            return
        reader = bus.reader(topic, {"seq": seq})   # the reader finds the segment and skips
        try:
            while True:
                batch = reader.read(5000)
                if not batch:
                    break
                for rec, _pos in batch:
                    if not isinstance(rec, BadRecord) and int(rec.get("seq", 0)) > seq:
                        yield rec
        finally:
            reader.close()

    # -- health ------------------------------------------------------------------------------
    def health(self) -> dict:
        st = self._trading
        core = self.core
        out = {
            "trading_state": st.state, "trading_reason": st.reason,
            "risk": core.risk_summary(st, self.ctx.now_ms()),
            "strategy": {**core.counts, "last_signal_seq": core.last_signal_seq,
                         "last_intent_seq": core.last_intent_seq},
        }
        if self.external is not None:
            out["signals_source"] = {"dir": self.external.dir, "sink": self.external.sink,
                                     "seq": self.external.seq, "lag": self.external.lag()}
        return out


class ExternalSignalsStage(StrategyStage):
    """The strategy reading signals from ``--signals-dir`` / a pinned ``--signals-source``."""

    inputs = ("positions", "decisions")


def stage_for(cfg: dict) -> type[StrategyStage]:
    """The bus consumer reads signals unless they live elsewhere or their sink is pinned."""
    sec = cfg["strategy"]
    if sec["signals_source"] != "auto":
        return ExternalSignalsStage
    if sec["signals_dir"]:
        here = os.path.join(str(configmod.home_of(cfg)), "bus", "signals")
        if source.resolve_topic_dir(sec["signals_dir"]) != here:
            return ExternalSignalsStage
    return StrategyStage


def check_config(cfg: dict) -> None:
    """Refuse bad strategy/risk settings with one line (ConfigError)."""
    sec = cfg["strategy"]   # ranges and the id prefix are checked at load (daemons/settings.py)
    try:
        rules.Params.from_settings(settings.of(cfg).strategy)
    except ValueError as exc:
        raise configmod.ConfigError(f"config: {exc}") from None
    if stage_for(cfg) is ExternalSignalsStage:
        topic_dir = source.resolve_topic_dir(sec["signals_dir"] or configmod.home_of(cfg))
        try:
            source.detect(topic_dir, sec["signals_source"])
        except source.SourceError as exc:
            raise configmod.ConfigError(str(exc)) from None


def load_config(config_path=None, home=None, output=None, sink=None, symbols=None, mode=None,
                signals_dir=None, signals_source=None) -> dict:
    """The config of ``ofi daemon strategy``'s flags (``symbols``: a list), checked."""
    if output:
        if home and os.path.abspath(home) != os.path.abspath(output):
            raise configmod.ConfigError(f"--output {output} and --home {home} differ; "
                                        "give one (intents go to the home's bus)")
        home = output
    cfg = configmod.load(config_path, {
        "home": home, "sink": sink, "broker.mode": mode, "symbols": symbols or None,
        "strategy.signals_dir": os.path.abspath(signals_dir) if signals_dir else None,
        "strategy.signals_source": signals_source,
    })
    check_config(cfg)
    return cfg


def main(**flags) -> int:
    """``ofi daemon strategy`` / ``python -m daemons.strategy`` (flags: :func:`load_config`)."""
    try:
        cfg = load_config(**flags)
    except configmod.ConfigError as exc:
        print(f"ofi daemon strategy: {exc}", file=sys.stderr)
        return 2
    return runtime.run(stage_for(cfg), cfg)
