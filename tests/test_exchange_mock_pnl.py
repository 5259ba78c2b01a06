"""The mock broker venue realizes PnL as ``ofi exchange`` does (average entry price, a flip
opening the rest at the fill price): the same fills give the same realizedPnl on both."""
from decimal import Decimal

from daemons.broker.mock import MockGateway
from daemons.broker.orders import Order
from daemons.tools.exchange import filters
from daemons.tools.exchange.accounts import Account

FILLS = [("BUY", "0.010", "60000"), ("BUY", "0.030", "60400"), ("SELL", "0.020", "60500"),
         ("SELL", "0.040", "60100"), ("BUY", "0.010", "59900"), ("BUY", "0.010", "60250.5")]


def test_mock_realized_pnl_matches_the_exchange_accounting(tmp_path):
    gw = MockGateway(str(tmp_path))
    gw.connect()
    spec = filters.spec_for("BTCUSDT")
    acct = Account(balance=Decimal("10000"))
    for i, (side, qty, px) in enumerate(FILLS):
        vo = gw.place(Order(client_order_id=f"pnl-{i}", symbol="BTCUSDT", side=side,
                            qty=float(qty), price=float(px), order_type="LIMIT"))
        venue = acct.fill(spec, side, spec.qty_units(qty), spec.price_units(px), Decimal(0), i)
        raw = gw.trades_by_symbol["BTCUSDT"][-1]["realizedPnl"]
        assert Decimal(raw) == venue, (i, raw, venue)
        assert vo.fills[0] is not None
    realized = [Decimal(t["realizedPnl"]) for t in gw.trades_by_symbol["BTCUSDT"]]
    # 0.02 closed at 60500 from an entry of 60300, 0.02 at 60100, then the short (flipped at
    # 60100) covered at 59900 and 60250.5
    assert realized == [Decimal("0E-8"), Decimal("0E-8"), Decimal("4.00000000"),
                        Decimal("-4.00000000"), Decimal("2.00000000"), Decimal("-1.50500000")]
    # the numbers survive a restart (they are in the mock's file)
    again = MockGateway(str(tmp_path))
    again.connect()
    assert [t["realizedPnl"] for t in again.trades_by_symbol["BTCUSDT"]] == \
        [t["realizedPnl"] for t in gw.trades_by_symbol["BTCUSDT"]]
