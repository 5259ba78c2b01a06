"""Symbol filters and decimal units: tick, step, min notional, percent price (pure)."""
import pytest
from hypothesis import given, strategies as st

from daemons.tools.exchange import errors, filters

BTC = filters.spec_for("BTCUSDT")


@given(st.integers(min_value=-10 ** 12, max_value=10 ** 12), st.integers(0, 8))
def test_filters_units_format_parse_roundtrip(units, prec):
    assert filters.parse_units(filters.fmt_units(units, prec), prec) == units


def test_filters_parse_units_rejects_garbage_and_excess_precision():
    with pytest.raises(errors.ApiError) as exc:
        filters.parse_units("1e-5", 3, "quantity")
    assert exc.value.code == -1100
    with pytest.raises(errors.ApiError) as exc:
        filters.parse_units("0.0015", 3)
    assert exc.value.code == -1111
    assert filters.parse_units("0.00100", 3) == 1      # trailing zeros are fine


@pytest.mark.parametrize("price,code", [("65000.05", -4014), ("100.00", -4013),
                                         ("9999999.00", -4002)])
def test_filters_price_filter_violations_have_binance_codes(price, code):
    with pytest.raises(errors.ApiError) as exc:
        filters.check_price(BTC, BTC.price_units(price[:price.index(".") + 3]))
    assert exc.value.code == code


def test_filters_lot_size_and_market_lot_size():
    filters.check_qty(BTC, BTC.qty_units("0.001"), market=False)
    with pytest.raises(errors.ApiError) as exc:
        filters.check_qty(BTC, BTC.qty_units("200"), market=True)   # MARKET_LOT_SIZE maxQty 120
    assert exc.value.code == -4005
    filters.check_qty(BTC, BTC.qty_units("200"), market=False)
    eth_like = filters.spec_for("SOLUSDT")
    with pytest.raises(errors.ApiError) as exc:
        filters.check_qty(eth_like, 0, market=False)
    assert exc.value.code == -4003


def test_filters_min_notional_unless_reduce_only():
    price, qty = BTC.price_units("65000.00"), BTC.qty_units("0.001")   # 65 USDT < 100
    with pytest.raises(errors.ApiError) as exc:
        filters.check_notional(BTC, price, qty, reduce_only=False)
    assert exc.value.code == -4164 and "100" in exc.value.msg
    filters.check_notional(BTC, price, qty, reduce_only=True)


def test_filters_percent_price_caps_buys_and_floors_sells():
    mark = BTC.price_units("65000.00")
    with pytest.raises(errors.ApiError) as exc:
        filters.check_percent_price(BTC, "BUY", BTC.price_units("70000.00"), mark)
    assert exc.value.code == -4016
    with pytest.raises(errors.ApiError) as exc:
        filters.check_percent_price(BTC, "SELL", BTC.price_units("60000.00"), mark)
    assert exc.value.code == -4024
    filters.check_percent_price(BTC, "BUY", BTC.price_units("60000.00"), mark)


def test_filters_exchange_info_has_what_clients_need():
    info = filters.exchange_info([BTC], [], 1)
    sym = info["symbols"][0]
    kinds = {f["filterType"]: f for f in sym["filters"]}
    assert kinds["PRICE_FILTER"]["tickSize"] == "0.10"
    assert kinds["LOT_SIZE"]["stepSize"] == "0.001"
    assert kinds["MIN_NOTIONAL"]["notional"] == "100"
    assert "LIMIT" in sym["orderTypes"] and "GTX" in sym["timeInForce"]
