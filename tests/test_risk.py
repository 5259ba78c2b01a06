"""Pre-trade risk: property-based checks of the limits and the trading states."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.strategy import risk
from daemons.trading import ACTIVE, HALTED, REDUCING

LIMITS = risk.Limits(max_position_usdt=1000.0, max_order_usdt=500.0, max_orders_per_minute=5,
                     daily_loss_limit_usdt=200.0, max_drawdown_usdt=0.0)

qtys = st.floats(min_value=0.0005, max_value=0.05, allow_nan=False)
prices = st.floats(min_value=1_000.0, max_value=100_000.0, allow_nan=False)
positions = st.floats(min_value=-0.05, max_value=0.05, allow_nan=False)
states = st.sampled_from([ACTIVE, REDUCING, HALTED])
orders = st.builds(risk.Order, symbol=st.just("BTCUSDT"), side=st.sampled_from(["BUY", "SELL"]),
                   qty=qtys, price=prices, reduce_only=st.booleans())
limits = st.builds(risk.Limits, max_position_usdt=st.floats(1.0, 5000.0),
                   max_order_usdt=st.floats(1.0, 5000.0),
                   max_orders_per_minute=st.integers(1, 50),
                   daily_loss_limit_usdt=st.floats(1.0, 500.0),
                   max_drawdown_usdt=st.just(0.0))


@settings(max_examples=500, deadline=None)
@given(lim=limits, state=states, pos=positions, order=orders, recent=st.integers(0, 60),
       pnl=st.floats(-1000.0, 1000.0))
def test_risk_approved_order_never_grows_position_beyond_limit(lim, state, pos, order, recent, pnl):
    v = risk.check(lim, state, pos, order, recent, pnl)
    if not v.approved:
        return
    new = pos + order.signed_qty
    if abs(new) > abs(pos):
        assert abs(new) * order.price <= lim.max_position_usdt * (1 + 1e-12)
        assert order.notional <= lim.max_order_usdt * (1 + 1e-12)
        assert pnl > -lim.daily_loss_limit_usdt
    assert recent < lim.max_orders_per_minute


@settings(max_examples=200, deadline=None)
@given(lim=limits, steps=st.lists(st.tuples(orders, states), max_size=60))
def test_risk_sequence_of_approved_orders_stays_within_position_limit(lim, steps):
    # Starting flat, whatever is asked, the position built from approved orders stays inside
    # the limit at the price of every order that grew it.
    pos = 0.0
    for order, state in steps:
        v = risk.check(lim, state, pos, order, 0, 0.0)
        if v.approved:
            new = pos + order.signed_qty
            if abs(new) > abs(pos):
                assert abs(new) * order.price <= lim.max_position_usdt * (1 + 1e-12)
            pos = new


@settings(max_examples=300, deadline=None)
@given(lim=limits, pos=positions, order=orders, recent=st.integers(0, 60),
       pnl=st.floats(-1000.0, 1000.0))
def test_risk_halted_approves_nothing(lim, pos, order, recent, pnl):
    v = risk.check(lim, HALTED, pos, order, recent, pnl)
    assert not v.approved and v.code == "halted"


@settings(max_examples=500, deadline=None)
@given(lim=limits, pos=positions, order=orders, pnl=st.floats(-1000.0, 1000.0))
def test_risk_reducing_approves_only_reduce_only_without_flip(lim, pos, order, pnl):
    v = risk.check(lim, REDUCING, pos, order, 0, pnl)
    if v.approved:
        new = pos + order.signed_qty
        assert order.reduce_only
        assert abs(new) <= abs(pos)
        assert new == 0 or (new > 0) == (pos > 0)


@settings(max_examples=300, deadline=None)
@given(state=states, pos=positions, order=orders)
def test_risk_reduce_only_never_grows_or_flips(state, pos, order):
    order = risk.Order(order.symbol, order.side, order.qty, order.price, True)
    v = risk.check(LIMITS, state, pos, order, 0, 0.0)
    if v.approved:
        new = pos + order.signed_qty
        assert abs(new) <= abs(pos) and (new == 0 or (new > 0) == (pos > 0))


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.integers(0, 30_000), min_size=1, max_size=80),
       cap=st.integers(1, 10))
def test_risk_rate_limit_never_exceeded_in_any_minute(gaps, cap):
    lim = risk.Limits(0.0, 0.0, cap, 0.0, 0.0)
    sent: list[int] = []
    now = 0
    for g in gaps:
        now += g
        v = risk.check(lim, ACTIVE, 0.0, risk.Order("X", "BUY", 1.0, 1.0),
                       risk.orders_in_window(sent, now), 0.0)
        if v.approved:
            sent.append(now)
    for t in sent:
        assert risk.orders_in_window(sent, t) <= cap


def test_risk_reducing_denies_entry_passes_exit():
    entry = risk.Order("BTCUSDT", "BUY", 0.002, 50_000.0)
    exit_ = risk.Order("BTCUSDT", "SELL", 0.002, 50_000.0, reduce_only=True)
    assert risk.check(LIMITS, REDUCING, 0.0, entry, 0, 0.0).code == "reducing"
    assert risk.check(LIMITS, REDUCING, 0.002, exit_, 0, 0.0).approved


def test_risk_reduce_only_larger_than_position_denied():
    o = risk.Order("BTCUSDT", "SELL", 0.003, 50_000.0, reduce_only=True)
    assert risk.check(LIMITS, ACTIVE, 0.002, o, 0, 0.0).code == "not_reducing"
    assert risk.check(LIMITS, ACTIVE, 0.0, o, 0, 0.0).code == "not_reducing"


@pytest.mark.parametrize("order,pos,recent,pnl,code", [
    (risk.Order("B", "BUY", 0.011, 50_000.0), 0.0, 0, 0.0, "max_order_notional"),
    (risk.Order("B", "BUY", 0.009, 50_000.0), 0.012, 0, 0.0, "max_position"),
    (risk.Order("B", "BUY", 0.001, 50_000.0), 0.0, 5, 0.0, "rate_limit"),
    (risk.Order("B", "BUY", 0.001, 50_000.0), 0.0, 0, -200.0, "daily_loss"),
    (risk.Order("B", "BUY", 0.0, 50_000.0), 0.0, 0, 0.0, "bad_order"),
    (risk.Order("B", "HOLD", 0.001, 50_000.0), 0.0, 0, 0.0, "bad_order"),
])
def test_risk_each_limit_names_its_denial(order, pos, recent, pnl, code):
    v = risk.check(LIMITS, ACTIVE, pos, order, recent, pnl)
    assert not v.approved and v.code == code and v.detail


def test_risk_exit_passes_size_and_loss_limits():
    # a position grown past the limit by price moves must still be closable
    o = risk.Order("B", "SELL", 0.05, 50_000.0, reduce_only=True)
    assert risk.check(LIMITS, ACTIVE, 0.05, o, 0, -10_000.0).approved


def test_risk_zero_limit_turns_check_off():
    lim = risk.Limits(0.0, 0.0, 0, 0.0, 0.0)
    assert risk.check(lim, ACTIVE, 0.0, risk.Order("B", "BUY", 100.0, 50_000.0), 999, -1e9).approved


# -- the day's PnL in real money -------------------------------------------------------------
DAY = 19_700


def _rec(qty=0.0, entry=0.0, realized=0.0, fees=0.0, funding=0.0):
    return {"type": "position", "symbol": "BTCUSDT", "qty": qty, "entry_price": entry,
            "realized_pnl": realized, "fees": fees, "funding": funding}


def test_day_ledger_counts_fees_funding_and_unrealized_at_the_latest_price():
    led = risk.DayLedger()
    assert not led.seen
    # 400 round trips flat at the end: their 39 USDT of fees are a loss, not 0.0
    assert led.update("BTCUSDT", _rec(fees=39.0), DAY, {})
    assert led.pnl({}) == pytest.approx(-39.0)
    led.update("BTCUSDT", _rec(qty=0.01, entry=50_000.0, realized=5.0, fees=40.0, funding=-1.5),
               DAY, {})
    # unrealized at the latest price: 0.01 x (49_000 - 50_000) = -10
    assert led.pnl({"BTCUSDT": 49_000.0}) == pytest.approx(5.0 - 40.0 - 1.5 - 10.0)
    assert not led.update("BTCUSDT", {"qty": 0.0, "realized_pnl": 1.0}, DAY, {})  # no money


def test_day_ledger_starts_each_utc_day_from_the_equity_of_then_and_tracks_the_drawdown():
    led = risk.DayLedger()
    led.update("BTCUSDT", _rec(realized=-150.0, fees=10.0), DAY, {})
    assert led.pnl({}) == pytest.approx(-160.0)
    led.update("BTCUSDT", _rec(realized=-150.0, fees=12.0), DAY + 1, {})   # next day
    assert led.pnl({}) == pytest.approx(-2.0)
    led.update("BTCUSDT", _rec(realized=148.0, fees=12.0), DAY + 1, {})   # +298 today
    assert led.pnl({}) == pytest.approx(296.0) and led.drawdown({}) == pytest.approx(0.0)
    led.update("BTCUSDT", _rec(realized=-250.0, fees=14.0), DAY + 1, {})
    assert led.pnl({}) == pytest.approx(-104.0)          # -264 now, -160 when the day began
    assert led.drawdown({}) == pytest.approx(400.0)      # from the high of +296
    again = risk.DayLedger.from_dict(led.to_dict())
    assert again.pnl({}) == pytest.approx(-104.0) and again.drawdown({}) == pytest.approx(400.0)


def test_drawdown_limit_denies_new_exposure_only():
    lim = risk.Limits(0.0, 0.0, 0, 0.0, 300.0)
    buy = risk.Order("BTCUSDT", "BUY", 0.01, 50_000.0)
    assert risk.check(lim, ACTIVE, 0.0, buy, 0, 100.0, drawdown=299.0).approved
    v = risk.check(lim, ACTIVE, 0.0, buy, 0, 100.0, drawdown=300.0)
    assert not v.approved and v.code == "drawdown"
    exit_ = risk.Order("BTCUSDT", "SELL", 0.01, 50_000.0, reduce_only=True)
    assert risk.check(lim, ACTIVE, 0.01, exit_, 0, 100.0, drawdown=1000.0).approved
