"""The order state machine: table rows, real-world races, properties, and the doc."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.broker import orders as fsm
from daemons.broker.orders import Order

ROOT = Path(__file__).resolve().parent.parent


def _order(status=fsm.INIT, **kw) -> Order:
    return Order(client_order_id="c1", symbol="BTCUSDT", side="BUY", qty=1.0, status=status, **kw)


@pytest.mark.parametrize("row", sorted(fsm.TABLE))
def test_transition_every_table_row_reaches_its_state(row):
    # Arrange
    state, event = row
    filled = {fsm.PARTIAL_FILL: 0.5, fsm.FILL: 1.0}.get(event)
    # Act
    t = fsm.apply(_order(state), event, filled_qty=filled)
    # Assert
    if state == fsm.FILLED and event == fsm.PARTIAL_FILL:
        assert t is None or t.order.status == fsm.FILLED
    else:
        assert t is not None and t.order.status == fsm.TABLE[row][0]
        assert t.prev_status == state and t.event == event


def test_transition_canceled_to_filled_on_late_final_fill():
    t = fsm.apply(_order(fsm.CANCELED, filled_qty=0.4), fsm.FILL, filled_qty=1.0)
    assert t.order.status == fsm.FILLED and t.order.filled_qty == 1.0


def test_transition_canceled_late_partial_fill_stays_canceled_with_more_filled():
    t = fsm.apply(_order(fsm.CANCELED, filled_qty=0.2), fsm.PARTIAL_FILL, filled_qty=0.5)
    assert t.order.status == fsm.CANCELED and t.order.filled_qty == 0.5


def test_transition_new_fill_after_cancel_request_is_accepted():
    o = fsm.apply(_order(fsm.NEW), fsm.CANCEL_REQUESTED).order
    t = fsm.apply(o, fsm.FILL, filled_qty=1.0)
    assert t.order.status == fsm.FILLED and t.order.cancel_requested


def test_transition_unknown_only_leaves_by_venue_evidence():
    with pytest.raises(fsm.InvalidTransition, match="UNKNOWN -> intent"):
        fsm.apply(_order(fsm.UNKNOWN), fsm.INTENT)
    with pytest.raises(fsm.InvalidTransition, match="UNKNOWN -> send_failed"):
        fsm.apply(_order(fsm.UNKNOWN), fsm.SEND_FAILED)
    # never back to PENDING (which could be sent again): only the window's end, ABANDONED
    assert all(row[0] != fsm.PENDING for (st, _ev), row in fsm.TABLE.items() if st == fsm.UNKNOWN)
    assert fsm.apply(_order(fsm.UNKNOWN), fsm.GIVE_UP).order.status == fsm.ABANDONED


def test_transition_abandoned_takes_the_venues_late_word():
    o = _order(fsm.ABANDONED)
    assert fsm.apply(o, fsm.ACCEPTED).order.status == fsm.NEW
    assert fsm.apply(o, fsm.FILL, filled_qty=1.0).order.status == fsm.FILLED
    assert fsm.apply(o, fsm.CANCEL_REQUESTED) is None
    with pytest.raises(fsm.InvalidTransition):
        fsm.apply(o, fsm.SEND_FAILED)


def test_transition_filled_refuses_a_later_cancel_without_record():
    assert fsm.apply(_order(fsm.FILLED, filled_qty=1.0), fsm.CANCELED_EV) is None


def test_transition_repeated_fill_report_is_dropped():
    o = _order(fsm.PARTIALLY_FILLED, filled_qty=0.5)
    assert fsm.apply(o, fsm.PARTIAL_FILL, filled_qty=0.5) is None
    assert fsm.apply(o, fsm.PARTIAL_FILL, filled_qty=0.3) is None


def test_record_round_trip_rebuilds_the_order():
    o = fsm.apply(_order(), fsm.INTENT).order
    t = fsm.apply(o, fsm.ACCEPTED, order_id=42)
    rebuilt = fsm.order_from_record(fsm.record_of(t))
    assert rebuilt == t.order


EVENTS = st.sampled_from(fsm.EVENTS)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(EVENTS, st.floats(0.0, 1.0)), max_size=30))
def test_fsm_random_event_sequences_keep_invariants(steps):
    order = fsm.apply(_order(), fsm.INTENT).order
    for event, q in steps:
        before = order
        try:
            t = fsm.apply(order, event, filled_qty=q if event in (fsm.PARTIAL_FILL, fsm.FILL) else None)
        except fsm.InvalidTransition as exc:
            # refused: a pair outside table and stale set, order untouched
            assert (before.status, event) not in fsm.TABLE
            assert (before.status, event) not in fsm.STALE
            assert str(exc) == f"{before.status} -> {event}"
            continue
        if t is None:
            continue
        order = t.order
        # every record is a table row
        assert (before.status, event) in fsm.TABLE
        assert order.status == fsm.TABLE[(before.status, event)][0]
        # filled quantity never decreases
        assert order.filled_qty >= before.filled_qty
        # FILLED and REJECTED are absorbing
        if before.status in (fsm.FILLED, fsm.REJECTED):
            assert order.status == before.status
        # terminal states leave only through a late fill; ABANDONED (presumed never placed)
        # takes any late word of the venue
        if before.status == fsm.ABANDONED:
            assert order.status not in fsm.UNRESOLVED
            continue
        if before.status in fsm.TERMINAL and order.status != before.status:
            assert event == fsm.FILL and order.status == fsm.FILLED
        # an order never goes back to NEW or UNKNOWN from a terminal state
        if before.status in fsm.TERMINAL:
            assert order.status in fsm.TERMINAL


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(fsm.STATES), min_size=1), st.sampled_from(fsm.EVENTS))
def test_fsm_next_state_is_total_over_table_stale_or_refused(states, event):
    for s in states:
        key = (s, event)
        if key in fsm.TABLE:
            assert fsm.next_state(s, event) == fsm.TABLE[key][0]
        elif key in fsm.STALE:
            assert fsm.next_state(s, event) is None
        else:
            with pytest.raises(fsm.InvalidTransition):
                fsm.next_state(s, event)


def test_table_and_stale_do_not_overlap():
    assert not set(fsm.TABLE) & fsm.STALE


def test_doc_lists_every_table_row():
    doc = (ROOT / "docs" / "order_state_machine.md").read_text()
    missing = [f"{s} {e} {n}" for (s, e), (n, _why) in fsm.TABLE.items()
               if f"| {s} | `{e}` | {n} |" not in doc]
    assert not missing, f"rows missing from docs/order_state_machine.md: {missing}"
    assert "```mermaid" in doc
    for (s, e), (n, _why) in fsm.TABLE.items():
        assert f"{'[*]' if s == fsm.INIT else s} --> {n}: {e}" in doc
