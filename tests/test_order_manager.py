"""The order manager in process: fake clock, scripted venue, every ambiguous path."""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemons.broker import orders as fsm
from daemons.broker.manager import FetchOrders, Halt, OrderManager
from daemons import trading as tstate

from order_venue import SYMBOL, Harness, manager_settings


def test_ack_fills_once_and_publishes_the_position():
    h = Harness()
    h.intent("a1", "BUY")
    h.advance(1)
    assert h.status("a1") == fsm.FILLED
    assert len(h.fills()) == 1           # the stream and the REST answer report the same trade
    pos = h.last_position()
    assert pos["qty"] == pytest.approx(0.002) and pos["in_flight"] == []
    assert pos["intent_seq"] is not None


def test_1007_then_found_minutes_later_is_one_order():
    h = Harness(resolution_window_s=600.0)
    h.script["a1"] = ["late:150"]
    h.intent("a1", "BUY")
    h.advance(1)
    assert h.status("a1") == fsm.UNKNOWN
    assert h.core.in_flight(SYMBOL)[0]["client_order_id"] == "a1"
    h.advance(200)
    assert h.status("a1") == fsm.FILLED
    assert len(h.sends("a1")) == 1
    assert h.venue.venue_orders_per_cid() == {"a1": 1}
    assert h.core.journal.book.get(SYMBOL).qty == pytest.approx(h.venue.position())


def test_1007_then_never_found_is_abandoned_and_never_resent():
    h = Harness(resolution_window_s=30.0)
    h.script["a1"] = ["lost"]
    h.intent("a1", "BUY")
    h.advance(29)
    assert h.status("a1") == fsm.UNKNOWN
    h.advance(10)
    assert h.status("a1") == fsm.ABANDONED
    assert len(h.sends("a1")) == 1 and h.venue.orders == {}
    assert h.last_position()["in_flight"] == []
    assert h.core.counts["abandoned"] == 1


def test_timeout_then_found_filled():
    h = Harness()
    h.hang["a1"] = 5.0                     # the venue filled it; the answer timed out
    h.stream_on = False
    h.intent("a1", "SELL")
    h.advance(5.1)
    assert h.status("a1") in (fsm.UNKNOWN, fsm.FILLED)
    h.advance(3)
    assert h.status("a1") == fsm.FILLED
    assert h.fills_sum() == pytest.approx(-0.002)
    assert len(h.sends("a1")) == 1


def test_timeout_then_absent_past_the_window_then_late_execution_is_recorded():
    h = Harness(resolution_window_s=20.0)
    h.script["a1"] = ["late:60"]
    h.hang["a1"] = 5.0
    h.intent("a1", "BUY")
    h.advance(40)
    assert h.status("a1") == fsm.ABANDONED
    h.advance(30)                          # executed at ~60 s: the stream reports it
    assert h.status("a1") == fsm.FILLED
    assert h.core.counts["late_reports"] >= 1
    assert h.last_position()["qty"] == pytest.approx(0.002)
    assert len(h.sends("a1")) == 1


def test_late_execution_without_the_stream_is_found_by_the_position_check():
    h = Harness(resolution_window_s=20.0, stream=False, position_check_s=5.0)
    h.stream_on = False
    h.script["a1"] = ["late:40"]
    h.intent("a1", "BUY")
    h.advance(30)
    assert h.status("a1") == fsm.ABANDONED
    h.advance(40)
    assert h.status("a1") == fsm.FILLED         # allOrders showed it; its trades were fetched
    assert h.core.journal.book.get(SYMBOL).qty == pytest.approx(h.venue.position())
    assert h.core.trading.state == tstate.ACTIVE  # explained: no halt


def test_not_sent_is_retried_under_the_same_id_until_the_cap():
    h = Harness(max_send_attempts=3)
    h.script["a1"] = ["notsent", "notsent", "ok"]
    h.intent("a1")
    h.advance(2)
    assert h.status("a1") == fsm.FILLED
    assert len(h.sends("a1")) == 3 and h.venue.venue_orders_per_cid() == {"a1": 1}
    h.script["b1"] = ["reject"]
    h.intent("b1")
    h.advance(1)
    assert h.status("b1") == fsm.REJECTED and len(h.sends("b1")) == 1


def test_cancel_racing_a_fill_ends_filled():
    h = Harness()
    h.intent("L1", "BUY", order_type="LIMIT", price=99.0)
    h.advance(1)
    assert h.status("L1") == fsm.NEW
    oid = h.core.journal.orders["L1"].order_id
    h.venue.fill(oid, 0.002, h.now)         # fills at the venue while we cancel
    h.stream_on = False
    h.core.on_intent({"type": "cancel", "seq": 99, "client_order_id": "L1"}, h.now)
    h.pump()
    h.advance(2)
    assert h.status("L1") == fsm.FILLED
    assert h.fills_sum() == pytest.approx(0.002)


def test_halted_while_unresolved_cancels_once_found_open():
    h = Harness(resolution_window_s=300.0)
    h.script["L1"] = ["late:3"]
    h.intent("L1", "BUY", order_type="LIMIT", price=99.0)
    h.advance(1)
    assert h.status("L1") == fsm.UNKNOWN
    h.core.set_trading(tstate.TradingState(tstate.HALTED, "manual", h.now, "cli"), h.now)
    h.advance(10)
    assert h.status("L1") == fsm.CANCELED
    h.intent("x2", "BUY")
    assert h.status("x2") == fsm.REJECTED and not h.sends("x2")


def test_restart_with_pending_and_unknown_orders_never_resends():
    h = Harness(resolution_window_s=30.0)
    h.script["p1"] = ["late:8"]
    h.script["u1"] = ["lost"]
    h.intent("p1", "BUY")
    h.intent("u1", "SELL")
    h.advance(1)
    assert h.status("u1") == fsm.UNKNOWN
    # p1's answer is still on its way (or the crash cut the send): restart now
    h.core.journal.put(fsm.Order("p1", SYMBOL, "BUY", 0.002, status=fsm.PENDING))
    h.records = [(t, r) for t, r in h.records
                 if not (t == "orders" and r["client_order_id"] == "p1" and r["status"] != "PENDING")]
    h.restart()
    assert h.status("p1") == fsm.UNKNOWN and h.status("u1") == fsm.UNKNOWN
    h.advance(60)
    assert h.status("p1") == fsm.FILLED and h.status("u1") == fsm.ABANDONED
    assert h.venue.venue_orders_per_cid() == {"p1": 1}
    assert len(h.sends("p1")) == 1 and len(h.sends("u1")) == 1


def test_stale_intent_is_refused_by_its_decision_time():
    h = Harness(intent_ttl_s=5.0)
    h.intent("old", decision_age_s=3600)
    assert h.status("old") == fsm.REJECTED and "stale" in h.core.journal.orders["old"].reason
    h.intent("new", decision_age_s=0.2)
    h.advance(1)
    assert h.status("new") == fsm.FILLED


def test_stale_retry_is_refused_too():
    h = Harness(intent_ttl_s=5.0)
    h.script["a1"] = ["notsent"]
    h.intent("a1", decision_age_s=4.99)
    h.advance(2)
    assert h.status("a1") == fsm.REJECTED and len(h.sends("a1")) == 1


def _foreign_fill(h: Harness, side: str, qty: float) -> None:
    """A fill at the venue the broker never caused (another client on the account)."""
    h.venue.trades.append({"type": "fill", "symbol": SYMBOL, "order_id": 999, "trade_id": 999,
                           "side": side, "qty": qty, "price": 100.0})


@pytest.mark.parametrize("halt_on_mismatch", [True, False])
def test_overfill_halts_whatever_halt_on_mismatch(halt_on_mismatch):
    h = Harness(halt_on_mismatch=halt_on_mismatch)
    h.intent("a1")
    h.advance(1)
    oid = h.core.journal.orders["a1"].order_id
    h.core.on_stream_event({"e": "ORDER_TRADE_UPDATE", "T": 1, "o": {
        "s": SYMBOL, "c": "a1", "S": "BUY", "o": "MARKET", "q": "0.002", "X": "FILLED",
        "i": oid, "z": "0.003", "x": "TRADE", "l": "0.001", "L": "100", "t": 999}}, h.now)
    h.pump()
    assert h.core.trading.state == tstate.HALTED and "overfill" in h.core.trading.reason
    assert any(isinstance(a, Halt) for a in h.actions)
    assert 999 in {f["trade_id"] for f in h.fills()}   # the fill is still a fact


def test_two_venue_orders_for_one_id_halt():
    h = Harness()
    h.intent("a1")
    h.advance(1)
    h.venue.place(fsm.Order("a1", SYMBOL, "BUY", 0.002), h.now)     # someone resent it
    h.advance(1)
    assert h.core.trading.state == tstate.HALTED
    assert "two venue orders" in h.core.trading.reason


def test_parallel_sends_a_hanging_order_delays_no_other():
    h = Harness(max_parallel_orders=2)
    h.stream_on = False                     # only the hanging answer would tell
    h.hang["slow"] = 5.0
    h.intent("slow", "BUY")
    for i in range(6):
        h.intent(f"f{i}", "BUY" if i % 2 else "SELL")
    h.advance(0.5)
    assert all(h.status(f"f{i}") == fsm.FILLED for i in range(6))
    assert h.status("slow") == fsm.PENDING
    h.advance(6)
    assert h.status("slow") == fsm.FILLED


def test_parallel_cap_is_respected():
    h = Harness(max_parallel_orders=3, latency_s=1.0)
    for i in range(7):
        h.intent(f"o{i}")
    in_flight = sum(1 for k, _ in h.core._busy if k == "send")
    assert in_flight == 3 and len(h.sends()) == 3
    h.advance(1.01)
    assert len(h.sends()) == 6


def test_settle_on_stop_sends_nothing_new_and_lists_the_unsettled():
    h = Harness(max_parallel_orders=1, latency_s=1.0)
    h.script["u1"] = ["lost"]
    h.intent("u1")
    h.intent("w1")                             # waits for the one slot
    h.core.begin_stop(h.now)
    h.pump()
    assert h.status("w1") == fsm.REJECTED and "stopping" in h.core.journal.orders["w1"].reason
    h.advance(2)
    assert h.core.unsettled() == ["u1"]
    assert not h.sends("w1")


def test_mock_settings_have_nothing_to_settle():
    core = OrderManager(manager_settings(remote=False))
    core.start(0.0)
    assert core.unsettled() == [] and core.next_due() is None


# -- property: random venue behaviour, lost, repeated and reordered events, restarts -----------
_behaviours = st.one_of(st.just("ok"), st.just("reject"), st.just("notsent"), st.just("lost"),
                        st.floats(0.5, 90.0).map(lambda s: f"late:{s:.2f}"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), _behaviours,
                               st.floats(0.0, 8.0), st.booleans(), st.booleans()),
                     min_size=1, max_size=10),
       stream=st.booleans(), window=st.sampled_from([5.0, 30.0, 120.0]),
       seed=st.integers(0, 2**16), jitter=st.sampled_from([0.0, 0.05, 2.0]),
       dup=st.sampled_from([0.0, 0.3]))
def test_property_never_two_orders_per_intent_and_positions_agree(plan, stream, window, seed,
                                                                  jitter, dup):
    import random
    h = Harness(stream=stream, resolution_window_s=window, position_check_s=3.0,
                halt_on_mismatch=True, rng=random.Random(seed), jitter_s=jitter, dup_events=dup)
    h.stream_on = stream
    for i, (side, behaviour, gap, restart, drop) in enumerate(plan):
        cid = f"c{i}"
        h.script[cid] = [behaviour]
        h.drop_events = drop
        h.intent(cid, side, seq=i + 1)
        h.advance(gap)
        if restart:
            h.restart()
    h.drop_events = False
    h.advance(window + 200)
    # never two venue orders for one intent
    assert all(n == 1 for n in h.venue.venue_orders_per_cid().values())
    # the broker's position is the sum of its recorded fills, and (settled) the venue's
    assert h.core.journal.book.get(SYMBOL).qty == pytest.approx(h.fills_sum(), abs=1e-12)
    assert h.fills_sum() == pytest.approx(h.venue.position(), abs=1e-12)
    assert not h.core.journal.unresolved()
    assert h.last_position()["in_flight"] == []
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    # every venue trade was published exactly once
    assert sorted(f["trade_id"] for f in h.fills()) == sorted(t["trade_id"] for t in h.venue.trades)


def test_unexplained_venue_position_halts_after_a_look():
    h = Harness(position_check_s=2.0)
    h.intent("a1")
    h.advance(1)
    _foreign_fill(h, "BUY", 0.5)
    h.advance(8)
    assert h.core.trading.state == tstate.HALTED
    assert "differs" in h.core.trading.reason
    halt = next(i for i, a in enumerate(h.actions) if isinstance(a, Halt))
    assert any(isinstance(a, FetchOrders) for a in h.actions[:halt])   # it looked first


def test_restart_restores_the_intent_watermark():
    h = Harness()
    h.intent("a1", seq=7)
    h.advance(1)
    h.restart()
    assert h.last_position()["cause"] == "start" and h.last_position()["intent_seq"] == 7


def test_start_retry_gives_up_on_a_refused_connection_by_its_deadline():
    from types import SimpleNamespace

    from daemons.broker.binance.errors import NotSent
    from daemons.broker.stage import BrokerStage
    from daemons.config import ConfigError

    stage = BrokerStage.__new__(BrokerStage)
    stage.ctx = SimpleNamespace(stopping=False, pause=lambda s, **why: time.sleep(s) or True)
    stage.gateway = SimpleNamespace(rest_url="http://127.0.0.1:9")
    calls = []

    def refused():
        # a refused connection asks for a retry soon; it must not stretch the deadline
        calls.append(1)
        assert len(calls) < 20, "the start-up deadline was stretched by a refused connection"
        raise NotSent("cannot connect", retry_at=time.time() + 0.5)
    with pytest.raises(ConfigError, match="unavailable"):
        stage._with_retry(refused, "connect", deadline_s=0.5)



def test_restart_while_halted_looks_up_an_order_that_may_be_live_and_cancels_it():
    h = Harness(resolution_window_s=60.0)
    h.stream_on = False
    h.hang["L1"] = 30.0                       # placed at the venue; the answer never comes
    h.intent("L1", "BUY", order_type="LIMIT", price=99.0)
    h.advance(0.5)
    assert h.status("L1") == fsm.PENDING and h.venue.query("L1").status == "NEW"
    h.restart(trading=tstate.TradingState(tstate.HALTED, "manual", h.now, "cli"))
    h.advance(5)
    assert h.status("L1") == fsm.CANCELED
    assert h.venue.query("L1").status == "CANCELED"


def test_a_fill_between_the_reads_at_start_does_not_halt():
    h = Harness(resolution_window_s=60.0, position_check_s=2.0)
    h.script["u1"] = ["late:3"]
    h.intent("u1", "BUY")
    h.advance(1)
    assert h.status("u1") == fsm.UNKNOWN
    h.advance(2.5)                            # executed at the venue now; the broker dies
    core = h._new_core(h.records)
    h.core = core
    core.start(h.now)
    v = h.venue
    # open orders and trades were read before the execution, positionRisk after it
    core.reconcile_start({SYMBOL: []}, {SYMBOL: []}, {SYMBOL: v.position()}, h.now, {SYMBOL: []})
    h.pump()
    h.advance(10)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    assert h.status("u1") == fsm.FILLED
    assert h.core.journal.book.get(SYMBOL).qty == pytest.approx(v.position())


def test_a_failed_all_orders_look_does_not_disarm_the_position_check():
    h = Harness(position_check_s=2.0)
    h.intent("a1")
    h.advance(1)
    _foreign_fill(h, "BUY", 0.5)
    h.fail_next["all_orders"] = 1
    h.advance(20)
    assert h.core.trading.state == tstate.HALTED and "differs" in h.core.trading.reason


def test_cancel_of_a_pending_order_stops_its_resend():
    h = Harness(latency_s=0.5)
    h.script["m1"] = ["notsent", "ok"]
    h.intent("m1")
    h.core.on_intent({"type": "cancel", "seq": 50, "client_order_id": "m1"}, h.now)
    h.pump()
    h.advance(3)
    assert h.status("m1") == fsm.REJECTED and len(h.sends("m1")) == 1
    assert h.venue.orders == {}


def test_max_send_attempts_caps_venue_refusals_even_without_a_ttl():
    h = Harness(max_send_attempts=3, intent_ttl_s=0.0)
    h.script["b1"] = ["notsent"] * 50
    h.intent("b1")
    h.advance(30)
    assert h.status("b1") == fsm.REJECTED and len(h.sends("b1")) == 3


def test_stop_rejects_an_order_waiting_for_a_retry():
    h = Harness()
    h.script["r1"] = ["notsent", "ok"]
    h.intent("r1")
    h.advance(0.02)                           # refused; a retry is due later
    assert h.status("r1") == fsm.PENDING
    h.core.begin_stop(h.now)
    h.pump()
    assert h.status("r1") == fsm.REJECTED and h.core.unsettled() == []


def test_reducing_counts_the_exits_already_in_flight():
    h = Harness(latency_s=1.0)
    h.intent("e1", "BUY", qty=0.002)
    h.advance(2)
    h.core.set_trading(tstate.TradingState(tstate.REDUCING, "loss", h.now, "strategy"), h.now)
    h.intent("x1", "SELL", qty=0.002, reduce_only=True)      # reduces: sent
    h.intent("x2", "SELL", qty=0.002, reduce_only=True)      # would flip with x1: refused
    assert h.sends("x1") and h.status("x2") == fsm.REJECTED
    assert "REDUCING" in h.core.journal.orders["x2"].reason


def test_a_resting_order_does_not_blind_the_position_check():
    h = Harness(position_check_s=2.0)
    h.intent("L1", "BUY", order_type="LIMIT", price=90.0)
    h.advance(1)
    assert h.status("L1") == fsm.NEW
    _foreign_fill(h, "SELL", 0.3)
    h.advance(10)
    assert h.core.trading.state == tstate.HALTED and "differs" in h.core.trading.reason


def test_a_cancel_refused_for_good_is_not_retried_forever():
    from daemons.broker.binance.errors import AuthError
    h = Harness()
    h.intent("L1", "BUY", order_type="LIMIT", price=90.0)
    h.advance(1)
    h.venue.cancel_order = lambda cid, now: (_ for _ in ()).throw(AuthError("bad key", -2015))
    h.core.on_intent({"type": "cancel", "seq": 9, "client_order_id": "L1"}, h.now)
    h.pump()
    h.advance(30)
    cancels = [a for a in h.actions if type(a).__name__ == "Cancel"]
    assert len(cancels) == 1 and h.status("L1") == fsm.NEW


def test_deadman_switch_is_refreshed_every_third_of_its_time_and_sooner_after_a_failure():
    h = Harness(deadman_ms=30_000)
    h.advance(0.1)
    refreshes = [a for a in h.actions if a.kind == "countdown"]
    assert [(a.symbol, a.countdown_ms) for a in refreshes] == [(SYMBOL, 30_000)]
    assert h.venue.countdowns[SYMBOL] == pytest.approx(h.now + 30.0 - 0.1, abs=0.05)
    h.advance(30.0)
    # one refresh at start, then every 10 s: the venue's countdown never ran out
    assert sum(1 for a in h.actions if a.kind == "countdown") == 4
    assert h.venue.countdowns[SYMBOL] > h.now + 19.0
    # a refused refresh is retried within a second, not at the next regular refresh
    h.fail_next["countdown"] = 1
    h.advance(10.0)
    n = sum(1 for a in h.actions if a.kind == "countdown")
    h.advance(1.5)
    assert sum(1 for a in h.actions if a.kind == "countdown") == n + 1
    assert h.core.health()["deadman_refreshed"][SYMBOL] == pytest.approx(h.now, abs=1.5)


def test_deadman_switch_off_and_in_mock_mode_no_refresh():
    for kw in ({"deadman_ms": 0}, {"deadman_ms": 30_000, "remote": False}):
        h = Harness(**kw)
        h.advance(30.0)
        assert not [a for a in h.actions if a.kind == "countdown"]


def _flatten_state(h, reason="flatten drill"):
    return tstate.TradingState(tstate.HALTED, reason, h.now, "cli", flatten=True)


def test_flatten_cancels_then_closes_the_venue_position_with_reduce_only_market_orders():
    h = Harness()
    h.intent("b1", "BUY", qty=0.005)
    h.intent("r1", "BUY", qty=0.002, order_type="LIMIT", price=90.0)   # rests
    h.advance(1.0)
    assert h.venue.position() == pytest.approx(0.005)
    h.core.set_trading(_flatten_state(h), h.now)
    h.pump()
    h.advance(3.0)
    assert h.status("r1") == fsm.CANCELED
    flat = [a.order for a in h.sends() if a.order.client_order_id.startswith("ofi-flat-")]
    assert [(o.side, o.qty, o.order_type, o.reduce_only) for o in flat] == \
        [("SELL", 0.005, "MARKET", True)]
    assert h.venue.position() == pytest.approx(0.0)
    assert h.status(flat[0].client_order_id) == fsm.FILLED
    f = h.core.health()["flatten"]
    assert f["state"] == "done" and f["rounds"] == 1 and f["left"] == {}
    assert h.last_position()["qty"] == pytest.approx(0.0)
    # still HALTED: nothing else goes out
    h.intent("after", "BUY")
    h.advance(1.0)
    assert h.status("after") == fsm.REJECTED


def test_flatten_with_no_position_sends_nothing_and_a_short_is_bought_back():
    h = Harness()
    h.core.set_trading(_flatten_state(h), h.now)
    h.pump()
    h.advance(2.0)
    assert h.core.health()["flatten"]["state"] == "done" and not h.sends()
    h2 = Harness()
    h2.intent("s1", "SELL", qty=0.003)
    h2.advance(1.0)
    h2.core.set_trading(_flatten_state(h2), h2.now)
    h2.pump()
    h2.advance(2.0)
    flat = [a.order for a in h2.sends() if a.order.client_order_id.startswith("ofi-flat-")]
    assert [(o.side, o.qty) for o in flat] == [("BUY", 0.003)]
    assert h2.venue.position() == pytest.approx(0.0)


def test_flatten_waits_for_an_ambiguous_order_and_survives_a_restart():
    h = Harness(resolution_window_s=60.0)
    h.intent("b1", "BUY", qty=0.004)
    h.advance(1.0)
    h.script["b2"] = ["late:2"]            # -1007 now, executed 2 s later
    h.intent("b2", "BUY", qty=0.001)
    h.advance(0.5)
    assert h.status("b2") == fsm.UNKNOWN
    h.core.set_trading(_flatten_state(h), h.now)
    h.pump()
    h.advance(0.5)
    assert not [a for a in h.sends() if a.order.client_order_id.startswith("ofi-flat-")]
    # the broker restarts meanwhile; the kill-switch file still says flatten
    h.restart(trading=_flatten_state(h))
    h.advance(10.0)
    assert h.venue.position() == pytest.approx(0.0)
    assert h.core.health()["flatten"]["state"] == "done"
    flat = [a.order for a in h.sends() if a.order.client_order_id.startswith("ofi-flat-")]
    assert sum(o.qty for o in flat) == pytest.approx(0.005)


def _pay(h, tid, amount, symbol=SYMBOL):
    h.venue.funding.append({"type": "funding", "symbol": symbol, "amount": amount,
                            "asset": "USDT", "time_ms": int(h.now * 1000), "tran_id": tid})


def test_funding_payments_recorded_once_from_the_stream_word_and_after_a_restart():
    h = Harness()
    _pay(h, 1, -0.25)                       # before the broker ever started: read at start
    h.restart()
    h.advance(1.0)
    assert [r["tran_id"] for t, r in h.records if t == "funding"] == [1]
    # the stream says a funding payment happened: read (not waiting for the periodic check)
    h.advance(5.0)
    _pay(h, 2, 0.5)
    _pay(h, 3, -0.1, symbol="ETHUSDT")      # another symbol of the account: not ours
    h.core.on_stream_event({"e": "ACCOUNT_UPDATE", "a": {"m": "FUNDING_FEE", "B": []}}, h.now)
    h.advance(1.0)
    assert [r["tran_id"] for t, r in h.records if t == "funding"] == [1, 2]
    # paid while the broker was down; the rows already recorded are not recorded again
    h.advance(1.0)
    _pay(h, 4, -0.3)
    h.restart()
    h.advance(1.0)
    got = [(r["tran_id"], r["amount"]) for t, r in h.records if t == "funding"]
    assert got == [(1, -0.25), (2, 0.5), (4, -0.3)]
    # the positions records carry the funding and the fees so far (the strategy's real money),
    # the same after a restart (folded from the funding topic)
    assert h.last_position()["funding"] == pytest.approx(-0.25 + 0.5 - 0.3)
    assert h.last_position()["fees"] == pytest.approx(0.0)


def test_mark_prices_give_positions_records_at_the_mark_while_a_position_is_open():
    h = Harness()
    h.core.on_mark(SYMBOL, 101.0, h.now)                 # flat: no record
    assert not [r for t, r in h.records if t == "positions" and r["cause"] == "mark"]
    h.intent("m1", "BUY", 0.5)                           # filled at the venue's 100.0
    h.advance(0.5)
    h.core.on_mark(SYMBOL, 102.0, h.now)
    h.pump()
    rec = h.last_position()
    assert rec["cause"] == "mark" and rec["mark_price"] == 102.0
    assert rec["unrealized_pnl"] == pytest.approx(0.5 * (102.0 - 100.0))
    h.core.on_mark(SYMBOL, 103.0, h.now + 1.0)            # within MARK_RECORD_S: no record
    h.pump()
    assert h.last_position()["mark_price"] == 102.0
    h.core.on_mark(SYMBOL, 104.0, h.now + 6.0)
    h.pump()
    assert h.last_position()["unrealized_pnl"] == pytest.approx(2.0)


def _income(h, tid, kind, amount, symbol=SYMBOL):
    """A wallet change at the venue and its income row (funding also as a payment)."""
    h.venue.wallet += amount
    h.venue.income.append({"symbol": symbol, "incomeType": kind, "income": str(amount),
                           "asset": "USDT", "time": int(h.now * 1000), "tranId": tid})
    if kind == "FUNDING_FEE":
        _pay(h, tid, amount, symbol)


def test_wallet_check_explains_funding_and_transfers_and_halts_on_the_unexplained():
    h = Harness(reconcile_interval_s=5.0)
    h.intent("w1", "BUY", 0.01)
    h.advance(1.0)
    _income(h, 501, "FUNDING_FEE", -0.75)            # paid: the journal records it
    _income(h, 502, "TRANSFER", 250.0, symbol="")    # a deposit: explained by the venue's rows
    _income(h, 503, "REALIZED_PNL", 3.0, symbol="ETHUSDT")   # another symbol of the account
    h.core.on_stream_event({"e": "ACCOUNT_UPDATE", "a": {"m": "FUNDING_FEE", "B": []}}, h.now)
    h.advance(12.0)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    assert [r["tran_id"] for t, r in h.records if t == "funding"] == [501]
    # money leaves the wallet with no row to say why: halted, with the amount
    h.venue.wallet -= 5.0
    h.advance(12.0)
    assert h.core.trading.state == tstate.HALTED
    assert "-5.00000000 unexplained" in h.core.trading.reason
    kinds = [r["kind"] for t, r in h.records if t == "alerts"]
    assert kinds == ["reconciliation", "halted"]


def test_wallet_check_waits_for_a_funding_payment_the_journal_has_not_read_yet():
    h = Harness(reconcile_interval_s=5.0, stream=False)   # no stream word: the check must look
    h.advance(1.0)
    _income(h, 601, "FUNDING_FEE", -0.4)
    h.advance(20.0)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    assert [r["tran_id"] for t, r in h.records if t == "funding"] == [601]


def test_wallet_check_never_halts_on_equal_payments_every_second_read_late():
    h = Harness(reconcile_interval_s=1.0, stream=False)
    h.intent("w2", "BUY", 0.01)
    h.advance(1.0)
    for i in range(40):                          # the same amount every second, read late
        _income(h, 700 + i, "FUNDING_FEE", -0.65)
        h.advance(1.0)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    assert h.core.wallet.checks > 0
    # paid while the broker is down, then a restart: explained once recorded
    h.stream_on = False
    _income(h, 800, "FUNDING_FEE", -0.65)
    _income(h, 801, "FUNDING_FEE", -0.65)
    h.restart()
    h.advance(10.0)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason


def test_wallet_check_halts_on_venue_income_the_journal_never_gets():
    h = Harness(reconcile_interval_s=2.0)
    h.advance(1.0)
    h.venue.wallet -= 1.25                       # a funding payment /fapi/v1/income lists ...
    h.venue.income.append({"symbol": SYMBOL, "incomeType": "FUNDING_FEE", "income": "-1.25",
                           "asset": "USDT", "time": int(h.now * 1000), "tranId": 900})
    h.advance(30.0)                              # ... but the funding reads never return
    assert h.core.trading.state == tstate.ACTIVE   # pending: not yet a difference
    h.advance(40.0)
    assert h.core.trading.state == tstate.HALTED
    assert "venue income not in the journal" in h.core.trading.reason
    assert "tranId 900" in h.core.trading.reason


@pytest.mark.parametrize("interval_s", [0.0, 1.0, 0.25])
def test_periodic_venue_checks_keep_to_the_middle_of_the_signal_interval(interval_s):
    """Orders go out just after a signal interval ends: the periodic checks (positions, open
    orders, wallet, funding, the dead-man refresh) are moved to the middle of an interval, by
    at most half of one, so their REST calls never meet the orders; without an interval they
    run when due, here at the start's phase, right where the orders go."""
    start = 1_000_000.017                  # started 17 ms after an interval end
    h = Harness(now=start, reconcile_interval_s=30.0, deadman_ms=60_000, position_check_s=10.0,
                signal_interval_s=interval_s)
    fired: list[tuple[str, float]] = []
    run = h._run

    def timed(a):
        fired.append((a.kind, h.now))
        run(a)
    h._run = timed
    h.advance(125.0)
    periodic = [(k, t) for k, t in fired if t > start + 1.0]
    kinds = {k for k, _ in periodic}
    assert {"positions", "open_orders", "wallet", "countdown"} <= kinds, kinds
    for kind, t in periodic:
        if interval_s:
            assert abs(t % interval_s - interval_s / 2) < 1e-6, (kind, t % interval_s)
        else:
            assert abs(t % 1.0 - 0.017) < 1e-6, (kind, t % 1.0)
    # the period is kept on average: 12 position checks in 125 s, every 10 s
    assert sum(1 for k, _ in periodic if k == "positions") == 12
