"""The strategy core in process with an injected wall clock: stale signals, timer exits, and the
position as the broker's record plus what is in flight (refused exits, restarts)."""
from __future__ import annotations

import pytest

from bus import BadRecord
from conftest import typed_settings
from daemons.strategy import ids, risk
from daemons.strategy.core import StrategyCore
from daemons.trading import TradingState

SYM = "BTCUSDT"
T0 = 1_700_000_000_000
ACTIVE = TradingState()


def make_core(limits=None, **strategy) -> StrategyCore:
    s = typed_settings(strategy={"notional_usdt": 100.0, "cooldown_s": 0.0, **strategy},
                       risk={"max_orders_per_minute": 0, **(limits or {})})
    return StrategyCore.from_settings(s, symbols=[SYM])


class Harness:
    """A core and the records it wrote, numbered like the bus would."""

    def __init__(self, core: StrategyCore, intents: list | None = None):
        self.core = core
        self.intents = intents if intents is not None else []
        self.signal_seq = core.last_signal_seq
        self.position_seq = core.positions_seq

    def _write(self, step) -> list[dict]:
        out = []
        for p in step.payloads:
            rec = {"seq": len(self.intents) + 1, "ts": self.wall, **p}
            self.intents.append(rec)
            self.core.written(rec)
            out.append(rec)
        return out

    def signal(self, i: int, fusion: float, mid: float = 50_000.0, wall: int | None = None):
        """The signal of interval ``i`` (ends at T0 + (i+1) s), handled at ``wall`` (default:
        its end)."""
        z = 1.0 if fusion > 0 else -1.0 if fusion < 0 else 0.0
        self.signal_seq += 1
        rec = {"seq": self.signal_seq, "type": "signal", "symbol": SYM, "bucket_ms": T0 + i * 1000,
               "interval_ms": 1000, "mid": mid, "fusion": fusion, "ofi_z": z, "cvd_z": z}
        self.wall = T0 + (i + 1) * 1000 if wall is None else wall
        self.last_step = self.core.on_signal(rec, ACTIVE, self.wall)
        return self._write(self.last_step)

    def timer(self, wall: int):
        self.wall = wall
        return self._write(self.core.on_timer(ACTIVE, wall))

    def position(self, qty: float, intent_seq, in_flight=(), entry=50_000.0, mark=None,
                 cause="fill", wall: int | None = None):
        self.position_seq += 1
        rec = {"seq": self.position_seq, "ts": wall or T0, "type": "position", "symbol": SYM,
               "qty": qty, "entry_price": entry if qty else 0.0, "realized_pnl": 0.0,
               "unrealized_pnl": None, "mark_price": mark,
               "in_flight": [{"client_order_id": f"c{k}", "side": side, "qty": q,
                              "reduce_only": ro} for k, (side, q, ro) in enumerate(in_flight)],
               "cause": cause}
        if intent_seq != "absent":
            rec["intent_seq"] = intent_seq
        return self.core.on_position(rec, wall or T0)

    @property
    def qty(self) -> float:
        return self.core.views[SYM].qty


# -- freshness ---------------------------------------------------------------------------------

def test_core_stale_backlog_after_restart_no_intents_then_fresh_signal_acts():
    h = Harness(make_core())
    h.signal(0, 0.0)
    snap = h.core.snapshot()
    # down for an hour: the signals written meanwhile arrive in a burst, all stale
    h2 = Harness(make_core())
    h2.core.restore(snap, same_signals=True)
    h2.signal_seq = h.signal_seq
    late = T0 + 3_600_000
    notes = []
    for i, f in enumerate([2.0, 1.0, -0.5, 0.0, 2.0, 0.2], start=1):
        assert h2.signal(i, f, wall=late) == []
        notes += h2.last_step.notes
    assert h2.intents == [] and h2.core.counts["stale_signals"] == 6
    assert [n[0] for n in notes] == ["stale_signals"]          # once per run
    assert notes[0][1]["age_ms"] == late - (T0 + 2000)
    # observed: the last stale fusion is what the first fresh one is compared with
    assert h2.core.views[SYM].last_fusion == 0.2
    (entry,) = h2.signal(3_600, 2.0, wall=T0 + 3_601_500)
    assert (entry["side"], entry["reason"], entry["origin"]) == ("BUY", "entry", "signal")
    # a new run of stale signals is reported again
    h2.signal(3_601, 1.0, wall=T0 + 3_700_000)
    assert [n[0] for n in h2.last_step.notes] == ["stale_signals"]


def test_core_stale_signal_held_above_threshold_is_no_new_crossing():
    h = Harness(make_core())
    h.signal(0, 0.0)
    h.signal(1, 2.0, wall=T0 + 60_000)           # stale crossing: not traded, but seen
    assert h.intents == []
    assert h.signal(2, 2.1, wall=T0 + 3_500) == []   # fresh, still above: no crossing
    assert h.qty == 0


def test_core_signal_exactly_max_age_old_is_fresh_zero_turns_check_off():
    h = Harness(make_core(max_signal_age_ms=2000))
    h.signal(0, 0.0)
    assert len(h.signal(1, 2.0, wall=T0 + 2000 + 2000)) == 1    # age == limit: acted on
    h = Harness(make_core(max_signal_age_ms=0))
    h.signal(0, 0.0, wall=T0 + 10**9)
    assert len(h.signal(1, 2.0, wall=T0 + 10**9)) == 1


# -- the view: broker record + in flight + our later intents ----------------------------------

def test_core_view_is_record_plus_in_flight_plus_later_intents():
    h = Harness(make_core(stop_loss_bps=50.0))
    h.signal(0, 0.0)
    (entry,) = h.signal(1, 2.0)                            # BUY 0.002, intents seq 1
    assert h.qty == 0.002
    # written before the broker handled the entry: the entry still counts on top
    assert h.position(0.0, intent_seq=None) is None and h.qty == 0.002
    assert h.position(0.0, intent_seq=0) is None and h.qty == 0.002
    assert h.core.pending[SYM] == [(1, "BUY", 0.002, False)]
    # handled: partly filled, the rest in flight
    assert h.position(0.001, intent_seq=1, in_flight=[("BUY", 0.001, False)]) is None
    assert h.qty == 0.002 and h.core.pending[SYM] == [] and h.core.busy(SYM)
    (exit_,) = h.signal(2, 1.0, mid=49_700.0)              # stop: SELL 0.002, seq 2
    assert exit_["trigger"] == "stop" and h.qty == 0.0
    # the entry filled; the exit, written after this record, still counts
    assert h.position(0.002, intent_seq=1) is None and h.qty == 0.0
    assert h.core.pending[SYM] == [(2, "SELL", 0.002, True)]
    assert h.position(0.002, intent_seq=2, in_flight=[("SELL", 0.002, True)]) is None
    assert h.qty == 0.0 and h.core.pending[SYM] == []
    assert h.position(0.0, intent_seq=2) is None and not h.core.busy(SYM)
    # a position we never sent: the broker's word wins, at its entry price, entry time now
    assert h.position(-0.003, intent_seq=2, entry=49_650.0, wall=T0 + 9_000) == (0.0, -0.003)
    v = h.core.views[SYM]
    assert (v.qty, v.entry_mid, v.entry_ms) == (-0.003, 49_650.0, T0 + 9_000)
    assert h.core.counts["position_corrections"] == 1


def test_core_record_replayed_or_older_seq_is_ignored():
    h = Harness(make_core())
    h.signal(0, 0.0)
    h.signal(1, 2.0)
    h.position(0.002, intent_seq=1)
    rec = {"seq": 1, "type": "position", "symbol": SYM, "qty": 0.0, "intent_seq": 1,
           "in_flight": []}
    assert h.core.on_position(rec, T0) is None and h.qty == 0.002


def test_core_record_without_intent_seq_applies_when_nothing_is_outstanding():
    h = Harness(make_core())
    h.signal(0, 0.0)
    h.signal(1, 2.0)                                       # BUY 0.002 outstanding
    # an older broker's record that does not confirm the view: ignored while outstanding
    assert h.position(0.0, intent_seq="absent") is None and h.qty == 0.002
    assert h.core.counts["positions_unconfirmed"] == 1
    # one that confirms it: every intent of ours is taken as handled
    assert h.position(0.002, intent_seq="absent") is None and h.core.pending[SYM] == []
    # then the broker's word is the position
    assert h.position(0.0, intent_seq="absent") == (0.002, 0.0)


@pytest.mark.parametrize("bad", [{"qty": "x"}, {"intent_seq": 1.5}, {"in_flight": "none"},
                                 {"in_flight": [{"side": "HOLD", "qty": 1}]}])
def test_core_malformed_position_record_raises_bad_record(bad):
    core = make_core()
    rec = {"seq": 1, "type": "position", "symbol": SYM, "qty": 0.0, "intent_seq": None,
           "in_flight": [], **bad}
    with pytest.raises(BadRecord):
        core.on_position(rec, T0)


# -- timer exits -------------------------------------------------------------------------------

def test_core_timer_time_exit_fires_without_signals():
    h = Harness(make_core(max_hold_s=3.0, stop_loss_bps=0.0))
    h.signal(0, 0.0)
    h.signal(1, 2.0)                                       # entry at T0 + 2000 (its end)
    assert h.timer(T0 + 9_000) == []                       # not handled by the broker yet
    h.position(0.002, intent_seq=1)
    assert h.timer(T0 + 4_999) == []                       # held 2.999 s
    (ex,) = h.timer(T0 + 5_000)
    assert (ex["side"], ex["qty"], ex["reduce_only"], ex["trigger"], ex["origin"]) == \
        ("SELL", 0.002, True, "time", "timer")
    assert ex["signal_seq"] is None and ex["decision_ms"] == T0 + 5_000
    assert ex["client_order_id"] == ids.client_order_id("ofi", SYM, T0 + 5_000, "WT", "SELL")
    assert ids.PATTERN.match(ex["client_order_id"])
    assert h.qty == 0.0 and h.core.counts["timer_exits"] == 1
    assert h.timer(T0 + 6_000) == []                       # flat (the exit is in flight)


def test_core_timer_stop_uses_newer_broker_mark_and_skips_in_flight():
    h = Harness(make_core(stop_loss_bps=50.0, max_hold_s=0.0))
    h.signal(0, 0.0)
    h.signal(1, 2.0)
    h.position(0.002, intent_seq=1, mark=49_800.0)         # -40 bps: no stop yet
    assert h.timer(T0 + 3_000) == []
    # -60 bps, but an order of ours is still in flight at the broker: wait for its end
    h.position(0.002, intent_seq=1, mark=49_700.0, in_flight=[("BUY", 0.001, False)])
    assert h.qty == 0.003 and h.timer(T0 + 4_000) == []
    h.position(0.003, intent_seq=1, mark=49_700.0)
    (ex,) = h.timer(T0 + 5_000)
    assert (ex["trigger"], ex["qty"], ex["decision_mid"]) == ("stop", 0.003, 49_700.0)
    assert ex["client_order_id"].split("-")[-1].startswith("WS")


def test_core_timer_once_per_symbol_and_second_ids_never_signal_ids():
    h = Harness(make_core(stop_loss_bps=50.0))
    h.signal(0, 0.0)
    h.signal(1, 2.0)
    h.position(0.002, intent_seq=1, mark=49_000.0)
    h.core.limits = risk.Limits.from_settings(                   # the exit is denied
        typed_settings(risk={"max_orders_per_minute": 1}).risk)
    h.core.order_times.append(T0 + 4_500)
    (denied,) = h.timer(T0 + 5_000)
    assert denied["type"] == "risk_denied" and denied["code"] == "rate_limit"
    assert h.timer(T0 + 5_900) == []                       # same second: not evaluated again
    assert h.core.counts["denied"] == 1
    h.core.order_times.clear()
    (ex,) = h.timer(T0 + 6_000)
    assert ex["type"] == "intent"
    signal_ids = {ids.client_order_id("ofi", SYM, T0 + 6_000, c, s)
                  for c in "ESRT" for s in ("BUY", "SELL")}
    assert ex["client_order_id"] not in signal_ids


def test_core_timer_with_freshness_off_follows_the_signals_clock():
    h = Harness(make_core(max_signal_age_ms=0, max_hold_s=3.0, stop_loss_bps=0.0))
    wall = 1_800_000_000_000                               # years after the signals
    assert h.timer(wall) == []
    h.signal(0, 0.0, wall=wall)
    h.signal(1, 2.0, wall=wall + 10)                       # entry at T0 + 2000
    h.position(0.002, intent_seq=1)
    assert h.timer(wall + 2_000) == []                     # signals' clock: T0 + 3990
    (ex,) = h.timer(wall + 3_010)                          # T0 + 5000: held 3 s
    assert ex["decision_ms"] == T0 + 5_000


# -- a refused exit ----------------------------------------------------------------------------

def test_core_refused_exit_position_seen_again_stop_fires_by_timer_entries_see_it():
    h = Harness(make_core(limits={"max_position_usdt": 150.0}, stop_loss_bps=50.0, max_hold_s=0.0))
    h.signal(0, 0.0)
    (entry,) = h.signal(1, 2.0)                            # BUY 0.002 at 50 000 (seq 1)
    h.position(0.002, intent_seq=1)
    (stop,) = h.signal(2, 1.0, mid=49_700.0)               # SELL 0.002 (seq 2)
    assert stop["trigger"] == "stop" and h.qty == 0.0
    # the broker holds the exit (a ban: it sends nothing meanwhile) ...
    assert h.position(0.002, intent_seq=2, in_flight=[("SELL", 0.002, True)]) is None
    assert h.qty == 0.0
    # ... so a new crossing's entry is measured against the position if the exit fails
    h.signal(3, 0.0, mid=49_700.0)
    (denied,) = h.signal(4, 2.0, mid=49_700.0)             # 0.004 x 49 700 > 150
    assert denied["type"] == "risk_denied" and denied["code"] == "max_position"
    # the broker gave the exit up (max_send_attempts): still long, nothing in flight
    assert h.position(0.002, intent_seq=3, cause="order_done", wall=T0 + 6_000) == (0.0, 0.002)
    v = h.core.views[SYM]
    assert (v.qty, v.entry_mid, v.entry_ms) == (0.002, 50_000.0, T0 + 2_000)
    # the stop fires again, by the timer, with no signal
    (again,) = h.timer(T0 + 6_200)
    assert (again["trigger"], again["side"], again["qty"], again["origin"]) == \
        ("stop", "SELL", 0.002, "timer")
    assert again["client_order_id"] != stop["client_order_id"]
    # refused again, and a crossing comes: the strategy holds the real position, no new entry
    h.position(0.002, intent_seq=again["seq"], cause="order_done", mark=50_100.0)
    assert h.signal(6, 1.0, mid=50_100.0) == []
    assert h.signal(7, 2.0, mid=50_100.0) == []
    assert h.qty == 0.002 and h.core.pending[SYM] == []


def test_core_refused_time_exit_keeps_entry_time_fires_again():
    h = Harness(make_core(max_hold_s=3.0, stop_loss_bps=0.0))
    h.signal(0, 0.0)
    h.signal(1, 2.0)
    h.position(0.002, intent_seq=1)
    (ex,) = h.timer(T0 + 5_000)
    h.position(0.002, intent_seq=2, cause="order_done")
    (again,) = h.timer(T0 + 6_000)
    assert again["trigger"] == "time" and again["client_order_id"] != ex["client_order_id"]
    # once the broker reports flat, an unknown position later starts its own clock
    h.position(0.0, intent_seq=3)
    h.position(0.002, intent_seq=3, wall=T0 + 7_000)
    assert h.core.views[SYM].entry_ms == T0 + 7_000


# -- restart -----------------------------------------------------------------------------------

def test_core_restart_snapshot_and_intents_replay_rebuild_the_view():
    h = Harness(make_core(stop_loss_bps=50.0))
    h.signal(0, 0.0)
    h.signal(1, 2.0)
    h.position(0.002, intent_seq=1)
    snap = h.core.snapshot()
    h.signal(2, 1.0, mid=49_700.0)                         # exit seq 2, after the snapshot
    # restart: snapshot + our intents after it
    h2 = Harness(make_core(stop_loss_bps=50.0), intents=h.intents)
    h2.core.restore(snap, same_signals=True)
    for rec in h.intents:
        if rec["seq"] > h2.core.last_intent_seq:
            h2.core.replay_intent(rec, T0 + 4_000)
    assert h2.qty == h.qty == 0.0
    assert h2.core.pending == h.core.pending == {SYM: [(2, "SELL", 0.002, True)]}
    assert h2.core.broker == h.core.broker
    # the broker refuses the exit: both see the long position again
    h2.position_seq = h.position_seq
    for x in (h, h2):
        assert x.position(0.002, intent_seq=2, cause="order_done") == (0.0, 0.002)
        assert x.core.views[SYM].entry_ms == T0 + 2_000
    # the snapshot of the rebuilt core round-trips
    h3 = make_core(stop_loss_bps=50.0)
    h3.restore(h2.core.snapshot(), same_signals=True)
    assert h3.snapshot() == h2.core.snapshot()


# -- real money --------------------------------------------------------------------------------
def test_core_daily_loss_counts_the_brokers_fees_and_funding_and_sets_reducing():
    h = Harness(make_core(limits={"daily_loss_limit_usdt": 30.0, "max_drawdown_usdt": 0.0}))
    h.signal(0, 0.0)
    # the broker: flat, but 25 USDT of fees and 6 of funding paid today
    rec = {"seq": 1, "ts": T0, "type": "position", "symbol": SYM, "qty": 0.0,
           "entry_price": 0.0, "realized_pnl": 0.0, "fees": 25.0, "funding": -6.0,
           "unrealized_pnl": None, "mark_price": 50_000.0, "intent_seq": 0, "in_flight": []}
    h.core.on_position(rec, T0)
    assert h.core.daily_pnl() == pytest.approx(-31.0)
    h.signal(1, 0.0)
    assert h.last_step.state_change[0] == "REDUCING"
    assert h.last_step.state_change[1].startswith("daily loss limit: PnL -31.00")
    assert h.core.risk_summary(ACTIVE, T0)["pnl_source"] == "venue"


def test_core_drawdown_from_the_days_high_sets_reducing():
    h = Harness(make_core(limits={"daily_loss_limit_usdt": 0.0, "max_drawdown_usdt": 50.0}))
    base = {"type": "position", "symbol": SYM, "fees": 0.0, "funding": 0.0,
            "unrealized_pnl": None, "mark_price": None, "intent_seq": 0, "in_flight": []}
    h.core.on_position({**base, "seq": 1, "ts": T0, "qty": 0.01, "entry_price": 50_000.0,
                        "realized_pnl": 0.0}, T0)
    h.signal(0, 0.0, mid=54_000.0)          # +40 unrealized: the high
    assert h.last_step.state_change is None
    h.signal(1, 0.0, mid=49_500.0)          # -5: 45 below the high
    assert h.last_step.state_change is None
    h.signal(2, 0.0, mid=48_900.0)          # -11: 51 below the high
    state, reason = h.last_step.state_change
    assert state == "REDUCING" and reason.startswith("drawdown limit")
