"""Protective stops kept by the pure order manager against a scripted venue on a fake clock:
placed when a position opens, moved when its entry moves, canceled when it is flat, never left
doubled, kept when the broker stops; a stop the venue triggers is adopted (its fills are ours)
and alerted, whether the broker watched or was down; an algo order that is not ours halts."""
import pytest

from daemons.broker.binance.errors import Ambiguous
from daemons.broker.protection import STOP_PREFIX, Protection, wanted_stop
from daemons import trading as tstate
from order_venue import SYMBOL, Harness, ScriptedVenue

BPS = 100.0


def _harness(**kw) -> Harness:
    return Harness(ScriptedVenue(price=100.0), protective_stop_bps=BPS,
                   reconcile_interval_s=kw.pop("reconcile_interval_s", 0.0), **kw)


def _open_stops(h: Harness) -> list[tuple[str, float]]:
    return sorted((a.side, a.trigger_price) for a in h.venue.open_algos())


def _alerts(h: Harness, kind: str) -> list[dict]:
    return [r for t, r in h.records if t == "alerts" and r["kind"] == kind]


def test_wanted_stop_is_bps_beyond_the_entry_on_the_closing_side():
    assert wanted_stop(0.5, 100.0, 100.0) == ("SELL", pytest.approx(99.0))
    assert wanted_stop(-0.5, 100.0, 100.0) == ("BUY", pytest.approx(101.0))
    assert wanted_stop(0.0, 100.0, 100.0) is None
    assert wanted_stop(0.5, 100.0, 0.0) is None


def test_stop_placed_on_open_moved_on_a_new_entry_and_canceled_when_flat():
    h = _harness()
    h.advance(0.5)
    assert _open_stops(h) == []                        # flat: nothing at the venue
    h.intent("a1", "BUY", 0.010)
    h.advance(0.5)
    assert _open_stops(h) == [("SELL", pytest.approx(99.0))]
    # the position grows at a higher price: the entry moves, so does the stop (new one first)
    h.venue.price = 110.0
    h.intent("a2", "BUY", 0.010)
    h.advance(0.5)
    assert _open_stops(h) == [("SELL", pytest.approx(105.0 * 0.99))]
    placed = [r for t, r in h.records if t == "protection" and r["event"] == "placed"]
    canceled = [r for t, r in h.records if t == "protection" and r["event"] == "canceled"]
    assert len(placed) == 2 and len(canceled) == 1
    assert canceled[0]["client_algo_id"] == placed[0]["client_algo_id"]
    assert all(p["client_algo_id"].startswith(STOP_PREFIX) for p in placed)
    # the new stop was in place before the old one was canceled: never a moment without one
    kinds = [a.kind for a in h.actions if a.kind in ("place_stop", "cancel_stop")]
    assert kinds == ["place_stop", "place_stop", "cancel_stop"]
    # a small change of the entry (under MOVE_BPS) does not move it
    h.venue.price = 105.01
    h.intent("a3", "BUY", 0.001)
    h.advance(0.5)
    assert len([a for a in h.actions if a.kind == "place_stop"]) == 2
    # flat: the stop is canceled; a short gets a BUY stop above
    h.intent("a4", "SELL", 0.021)
    h.advance(0.5)
    assert _open_stops(h) == []
    h.intent("a5", "SELL", 0.010)
    h.advance(0.5)
    assert _open_stops(h) == [("BUY", pytest.approx(105.01 * 1.01))]
    assert h.core.trading.state == tstate.ACTIVE


def test_the_venue_triggers_the_stop_the_broker_adopts_the_close_and_alerts():
    h = _harness()
    h.intent("a1", "BUY", 0.010)
    h.advance(0.5)
    h.venue.move(98.9, h.now)                          # the market falls through 99.0
    h.advance(1.0)
    assert h.venue.position() == 0.0
    assert h.last_position()["qty"] == pytest.approx(0.0)
    assert h.fills_sum() == pytest.approx(0.0)         # the stop's fill is recorded as ours
    assert h.core.trading.state == tstate.ACTIVE       # not "a fill of no order of ours"
    (alert,) = _alerts(h, "stop_triggered")
    assert alert["subject"].startswith(STOP_PREFIX) and alert["symbol"] == SYMBOL
    stop_cid = alert["subject"]
    assert h.status(stop_cid) == "FILLED"
    assert [r["event"] for t, r in h.records if t == "protection"] == ["placed", "triggered"]
    assert _open_stops(h) == [] and len([a for a in h.actions if a.kind == "place_stop"]) == 1


def test_a_triggered_order_under_another_client_id_is_known_by_its_order_id():
    h = _harness()
    h.venue.triggered_cid = lambda a: "venue-made-id-1"   # a venue that names it itself
    h.intent("a1", "SELL", 0.010)
    h.advance(0.5)
    assert _open_stops(h) == [("BUY", pytest.approx(101.0))]
    h.venue.move(101.5, h.now)
    h.advance(1.0)
    assert h.last_position()["qty"] == pytest.approx(0.0)
    assert h.core.trading.state == tstate.ACTIVE
    assert len(_alerts(h, "stop_triggered")) == 1


def test_a_stop_triggered_while_the_broker_is_down_is_adopted_at_start():
    h = _harness()
    h.intent("a1", "BUY", 0.010)
    h.advance(0.5)
    h.stream_on = False                                 # the broker is down: nobody listens
    h.venue.move(98.0, h.now)
    h.advance(0.1)
    h.restart()
    h.advance(2.0)
    assert h.venue.position() == 0.0
    assert h.last_position()["qty"] == pytest.approx(0.0)
    assert h.fills_sum() == pytest.approx(0.0)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    assert _open_stops(h) == []


def test_an_ambiguous_placement_never_leaves_two_stops():
    h = _harness()
    real = h._run

    def first_place_times_out(a):
        if a.kind == "place_stop" and not getattr(h, "_timed_out", False):
            h._timed_out = True
            h.venue.place_algo(a.side, a.trigger_price, a.client_algo_id, h.now)  # placed...
            h._answer(a, lambda: (_ for _ in ()).throw(Ambiguous("read timeout")))  # ...unheard
            return
        real(a)
    h._run = first_place_times_out
    h.intent("a1", "BUY", 0.010)
    h.advance(2.0)
    assert _open_stops(h) == [("SELL", pytest.approx(99.0))]
    assert [a.kind for a in h.actions if "stop" in a.kind] == ["place_stop", "stops"]


def test_the_broker_stopping_leaves_the_stop_at_the_venue():
    h = _harness()
    h.intent("a1", "BUY", 0.010)
    h.advance(0.5)
    h.core.begin_stop(h.now)
    h.pump()
    h.advance(1.0)
    assert _open_stops(h) == [("SELL", pytest.approx(99.0))]


def test_a_market_already_beyond_the_stop_gets_one_from_the_mark():
    h = _harness()
    h.intent("a1", "BUY", 0.010)                        # entry 100
    h.advance(0.5)
    h.venue.algos.clear()                               # someone removed it ...
    h.venue.price = 98.0                                # ... and the market fell past 99
    h.core.marks[SYMBOL] = 98.0
    h.core.protection.symbols[SYMBOL].unsure = True     # the next check reads the venue
    h.advance(3.0)
    assert _open_stops(h) == [("SELL", pytest.approx(98.0 * 0.99))]


def test_an_algo_order_that_is_not_ours_halts_with_the_reason():
    h = _harness(reconcile_interval_s=5.0)
    h.advance(0.5)
    h.venue.place_algo("SELL", 50.0, "someone-else-1", h.now)
    h.advance(6.0)
    assert h.core.trading.state == tstate.HALTED
    assert "open algo order someone-else-1" in h.core.trading.reason
    assert len(_alerts(h, "reconciliation")) == 1 and len(_alerts(h, "halted")) == 1


def test_protection_off_places_nothing():
    h = Harness(ScriptedVenue(price=100.0))
    h.intent("a1", "BUY", 0.010)
    h.advance(1.0)
    assert h.venue.open_algos() == [] and not Protection((SYMBOL,), 0.0).on


def test_a_418_ban_is_one_banned_alert():
    from daemons.broker.binance.errors import Banned
    from daemons.broker.manager import Query
    h = _harness()
    ban = Banned("IP banned until 1700000000000", -1003, 418, retry_at=h.now + 60)
    h.core.on_result(Query(SYMBOL, "nope"), ban, h.now)
    h.pump()
    (alert,) = _alerts(h, "banned")
    assert alert["subject"] == "ip" and alert["retry_at"] == h.now + 60


def test_the_stops_order_reported_before_its_algo_update_under_a_venue_made_id_is_ours():
    h = _harness()
    h.venue.triggered_cid = lambda a: "x7Hq2venueMade"     # not our stop's id
    h.venue.algo_events_last = True                        # ... and its fills come first
    h.intent("a1", "BUY", 0.010)
    h.advance(0.5)
    h.venue.move(98.5, h.now)
    h.advance(1.0)
    assert h.core.trading.state == tstate.ACTIVE, h.core.trading.reason
    assert h.last_position()["qty"] == pytest.approx(0.0)
    assert h.status("x7Hq2venueMade") == "FILLED"       # adopted by its fields (STOP_MARKET, cp)
    assert len(_alerts(h, "stop_triggered")) == 1


def test_a_stop_stuck_in_triggering_leaves_no_naked_position():
    h = _harness()
    h.venue.stuck = True                                   # TRIGGERING, and no order ever
    h.intent("a1", "BUY", 0.010)
    h.advance(0.5)
    h.venue.move(98.0, h.now)
    h.core.marks[SYMBOL] = 98.0
    h.advance(5.0)
    assert _open_stops(h) == []                            # waiting for the stop's order
    h.advance(10.0)
    # still long: a new stop, from the mark (the market is beyond the first one), and an alert
    assert h.venue.position() == pytest.approx(0.01)
    assert _open_stops(h) == [("SELL", pytest.approx(98.0 * 0.99))]
    stuck = [a for a in _alerts(h, "stop_triggered") if a["subject"].endswith("-stuck")]
    assert len(stuck) == 1 and "still open" in stuck[0]["message"]
    assert [r["event"] for t, r in h.records if t == "protection"][-2:] == ["stuck", "placed"]
