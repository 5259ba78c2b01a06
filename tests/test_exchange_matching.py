"""Matching engine and accounts (pure): sweeps, time in force, resting fills, fees, PnL."""
from decimal import Decimal

from hypothesis import given, strategies as st

from daemons.tools.exchange import filters
from daemons.tools.exchange.accounts import Account
from daemons.tools.exchange.matching import (Order, fee, maker_allocation, plan_new, sweep,
                                       traded_through)

ASKS = [(1000, 5), (1001, 5), (1003, 10)]      # price units, qty units, best first
BTC = filters.spec_for("BTCUSDT")


def test_matching_market_order_walks_the_book_level_by_level():
    plan = plan_new("MARKET", "GTC", "BUY", 12, 0, ASKS)
    assert plan.fills == ((1000, 5), (1001, 5), (1003, 2)) and plan.then == "done"


def test_matching_market_order_larger_than_book_expires_the_rest():
    plan = plan_new("MARKET", "GTC", "BUY", 50, 0, ASKS)
    assert plan.filled == 20 and plan.then == "expire"


def test_matching_limit_gtc_takes_up_to_its_price_then_rests():
    plan = plan_new("LIMIT", "GTC", "BUY", 12, 1001, ASKS)
    assert plan.fills == ((1000, 5), (1001, 5)) and plan.then == "rest"


def test_matching_ioc_expires_and_fok_rejects_when_not_fully_fillable():
    assert plan_new("LIMIT", "IOC", "BUY", 12, 1001, ASKS).then == "expire"
    assert plan_new("LIMIT", "FOK", "BUY", 12, 1001, ASKS).then == "reject_fok"
    assert plan_new("LIMIT", "FOK", "BUY", 10, 1001, ASKS).filled == 10


def test_matching_post_only_rejected_when_it_would_take():
    assert plan_new("LIMIT", "GTX", "BUY", 1, 1000, ASKS).then == "reject_gtx"
    assert plan_new("LIMIT", "GTX", "BUY", 1, 999, ASKS) .then == "rest"


def test_matching_sell_sweeps_bids_down_to_limit():
    bids = [(999, 3), (998, 3), (990, 3)]
    assert sweep(bids, 9, "SELL", limit=998) == [(999, 3), (998, 3)]


def _order(side, price, qty=10, oid=1):
    return Order(oid, "c", "BTCUSDT", side, "LIMIT", "GTC", qty, price, False, 0, 0)


def test_matching_resting_order_fills_only_when_traded_through():
    buy = _order("BUY", 1000)
    assert not traded_through(buy, 1000)                    # at its price: queue unknown
    assert traded_through(buy, 999)                         # through it
    sell = _order("SELL", 1000)
    assert traded_through(sell, 1001) and not traded_through(sell, 999)


def test_matching_a_print_fills_resting_orders_by_at_most_its_quantity_in_priority():
    older, newer = _order("BUY", 1000, qty=10, oid=1), _order("BUY", 1000, qty=10, oid=2)
    better, beyond = _order("BUY", 1002, qty=4, oid=3), _order("BUY", 998, qty=10, oid=4)
    got = maker_allocation([newer, beyond, older, better], 999, 12)
    # the best price first, then the oldest; the order below the print is not reached
    assert [(o.order_id, q) for o, q in got] == [(3, 4), (1, 8)]
    # a print larger than the resting quantity fills each order at most to its remaining
    assert [(o.order_id, q) for o, q in maker_allocation([older], 999, 50)] == [(1, 10)]
    assert maker_allocation([older], 1000, 50) == []


def test_matching_fees_maker_two_taker_five_bps():
    assert fee(Decimal("10000"), maker=True) == Decimal("2")
    assert fee(Decimal("10000"), maker=False) == Decimal("5")


def test_accounts_open_add_reduce_flip_track_entry_and_realized():
    acct = Account(balance=Decimal("1000"))
    p = BTC.price_units
    acct.fill(BTC, "BUY", 1000, p("100.00"), Decimal(0), 1)       # +1.000 @ 100
    acct.fill(BTC, "BUY", 1000, p("110.00"), Decimal(0), 2)       # +1.000 @ 110
    pos = acct.positions["BTCUSDT"]
    assert pos.qty == 2000 and pos.entry == Decimal("105")
    r = acct.fill(BTC, "SELL", 3000, p("120.00"), Decimal("1"), 3)  # close 2 @ 120, open -1
    assert r == Decimal("30") and pos.qty == -1000 and pos.entry == Decimal("120")
    assert acct.balance == Decimal("1029")
    assert pos.unrealized(BTC, Decimal("110")) == Decimal("10")


@given(st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 5000),
                          st.integers(90000, 110000)), min_size=1, max_size=30))
def test_accounts_pnl_conserves_cash_like_a_ledger(trades):
    # wallet + unrealized at any mark equals start + sum of signed cash flows at that mark
    acct = Account(balance=Decimal("0"))
    cash = Decimal(0)
    qty = 0
    for side, q, px in trades:
        acct.fill(BTC, side, q, px, Decimal(0), 0)
        signed = q if side == "BUY" else -q
        cash -= BTC.qty_dec(signed) * BTC.price_dec(px)
        qty += signed
    mark = Decimal("1000.00")
    pos = acct.positions["BTCUSDT"]
    assert pos.qty == qty
    equity = acct.balance + pos.unrealized(BTC, mark)
    assert abs(equity - (cash + BTC.qty_dec(qty) * mark)) < Decimal("0.001")
