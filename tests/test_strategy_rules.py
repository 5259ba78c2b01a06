"""The default OFI/CVD strategy rules and client order ids, on synthetic signal sequences."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import typed_settings
from daemons.strategy import ids, rules

BASE = 1_700_000_000_000


def params(**kw) -> rules.Params:
    # the sizes below are worked out for 100 USDT
    return rules.Params.from_settings(
        typed_settings(strategy={"notional_usdt": 100.0, **kw}).strategy)


def sig(i, fusion, mid=50_000.0, ofi_z=None, cvd_z=None, symbol="BTCUSDT", seq=None):
    z = None if fusion is None else (1.0 if fusion > 0 else -1.0 if fusion < 0 else 0.0)
    return {"seq": seq or i + 1, "type": "signal", "symbol": symbol, "bucket_ms": BASE + i * 1000,
            "interval_ms": 1000, "mid": mid, "fusion": fusion,
            "ofi_z": z if ofi_z is None else ofi_z, "cvd_z": z if cvd_z is None else cvd_z}


def run(p, signals, view=None):
    """Feed signals through decide/observe/apply like the daemon; returns (decisions, view)."""
    view = view or rules.View()
    out = []
    for s in signals:
        d = rules.decide(p, view, s)
        view = rules.observe(view, s)
        if d is not None:
            out.append(d)
            view = rules.apply(view, d)
    return out, view


def test_rules_fusion_crosses_up_with_agreement_enters_long():
    ds, view = run(params(), [sig(0, 0.2), sig(1, 1.6)])
    assert [(d.side, d.reason, d.trigger, d.reduce_only) for d in ds] == \
        [("BUY", "entry", "cross", False)]
    assert ds[0].qty == 0.002      # 100 USDT / 50000 = 0.002 exactly
    assert view.qty == 0.002 and view.entry_mid == 50_000.0 and view.entry_ms == BASE + 2000


def test_rules_fusion_crosses_down_enters_short():
    ds, view = run(params(), [sig(0, -0.2), sig(1, -1.5)])
    assert [(d.side, d.reason) for d in ds] == [("SELL", "entry")]
    assert view.qty == -0.002


@pytest.mark.parametrize("ofi_z,cvd_z", [(-1.0, 1.0), (1.0, -1.0), (0.0, 1.0), (None, 1.0)])
def test_rules_ofi_cvd_disagree_no_entry(ofi_z, cvd_z):
    s = sig(1, 2.0)
    s["ofi_z"], s["cvd_z"] = ofi_z, cvd_z
    ds, _ = run(params(), [sig(0, 0.0), s])
    assert ds == []


def test_rules_fusion_stays_above_threshold_enters_once():
    # a level held above the threshold is not a new crossing
    ds, _ = run(params(exit_threshold=0.0, max_hold_s=0.0, stop_loss_bps=0.0),
                [sig(0, 0.0)] + [sig(i, 2.0) for i in range(1, 10)])
    assert len(ds) == 1


def test_rules_null_fusion_or_mid_no_entry():
    ds, _ = run(params(), [sig(0, 0.0), sig(1, None), sig(2, 2.0, mid=None)])
    assert ds == []


def test_rules_reversal_through_exit_threshold_exits_reduce_only():
    p = params(exit_threshold=0.3)
    ds, view = run(p, [sig(0, 0.0), sig(1, 2.0), sig(2, 1.0), sig(3, 0.31), sig(4, 0.3)])
    assert [(d.reason, d.trigger, d.side, d.reduce_only) for d in ds] == \
        [("entry", "cross", "BUY", False), ("exit", "reversal", "SELL", True)]
    assert ds[1].qty == ds[0].qty and view.qty == 0 and view.last_exit_ms == BASE + 5000


def test_rules_short_reverses_up_through_minus_exit_threshold():
    p = params(exit_threshold=0.3)
    ds, view = run(p, [sig(0, 0.0), sig(1, -2.0), sig(2, -0.31), sig(3, -0.3)])
    assert [(d.trigger, d.side) for d in ds] == [("cross", "SELL"), ("reversal", "BUY")]
    assert view.qty == 0


def test_rules_held_past_max_hold_exits_on_time():
    p = params(max_hold_s=3.0, stop_loss_bps=0.0)
    seq = [sig(0, 0.0), sig(1, 2.0)] + [sig(i, 1.0) for i in range(2, 8)]
    ds, _ = run(p, seq)
    assert [d.trigger for d in ds] == ["cross", "time"]
    assert ds[1].now_ms - ds[0].now_ms == 3000


def test_rules_loss_beyond_stop_exits_on_stop():
    p = params(stop_loss_bps=50.0, max_hold_s=0.0)
    seq = [sig(0, 0.0), sig(1, 2.0, mid=50_000.0), sig(2, 1.0, mid=49_800.0),  # -40 bps
           sig(3, 1.0, mid=49_750.0)]                                         # -50 bps
    ds, view = run(p, seq)
    assert [d.trigger for d in ds] == ["cross", "stop"]
    assert ds[1].now_ms == BASE + 4000 and view.realized == pytest.approx(-0.5)


def test_rules_short_loss_when_price_rises_stops():
    p = params(stop_loss_bps=10.0, max_hold_s=0.0)
    ds, _ = run(p, [sig(0, 0.0), sig(1, -2.0, mid=50_000.0), sig(2, -1.0, mid=50_050.0)])
    assert [d.trigger for d in ds] == ["cross", "stop"]


def test_rules_stop_takes_precedence_over_reversal():
    p = params(stop_loss_bps=10.0)
    ds, _ = run(p, [sig(0, 0.0), sig(1, 2.0, mid=50_000.0), sig(2, -1.0, mid=49_000.0)])
    assert ds[1].trigger == "stop" and ds[1].code == "S"


def test_rules_entry_within_cooldown_is_skipped_then_allowed():
    p = params(cooldown_s=5.0, exit_threshold=0.0)
    seq = [sig(0, 0.0), sig(1, 2.0), sig(2, -0.1),     # entry, then exit at BASE+3000
           sig(3, 0.0), sig(4, 2.0),                    # crossing 3 s after the exit: cooldown
           sig(5, 0.0), sig(6, 0.0), sig(7, 2.0)]       # crossing 6 s after: allowed
    ds, _ = run(p, seq)
    assert [(d.trigger, d.now_ms - BASE) for d in ds] == \
        [("cross", 2000), ("reversal", 3000), ("cross", 8000)]


def test_rules_size_rounds_down_to_symbol_step():
    p = params(notional_usdt=100.0)
    d = rules.decide(p, rules.View(last_fusion=0.0), sig(0, 2.0, mid=30_000.0))
    assert d.qty == 0.003          # 0.00333.. -> 0.003
    d = rules.decide(p, rules.View(last_fusion=0.0), sig(0, 2.0, mid=2_345.67, symbol="ETHUSDT"))
    assert d.qty == 0.042          # 0.04263.. -> 0.042


def test_rules_configured_instrument_step_is_used():
    p = params(instruments=[{"symbol": "SOLUSDT", "step": 1.0, "tick": 0.01}], notional_usdt=500.0)
    d = rules.decide(p, rules.View(last_fusion=0.0), sig(0, 2.0, mid=143.0, symbol="SOLUSDT"))
    assert d.qty == 3.0


def test_rules_notional_below_one_step_no_entry():
    p = params(notional_usdt=10.0)
    assert rules.decide(p, rules.View(last_fusion=0.0), sig(0, 2.0, mid=50_000.0)) is None


def test_rules_limit_entry_priced_on_tick_passive_side():
    p = params(order_type="LIMIT")
    buy = rules.decide(p, rules.View(last_fusion=0.0), sig(0, 2.0, mid=50_000.05))
    sell = rules.decide(p, rules.View(last_fusion=0.0), sig(0, -2.0, mid=50_000.05))
    assert (buy.order_type, buy.price) == ("LIMIT", 50_000.0)
    assert sell.price == 50_000.1


def test_rules_bad_params_refused():
    with pytest.raises(ValueError, match="'strategy.exit_threshold' must lie strictly inside"):
        params(exit_threshold=2.0)
    with pytest.raises(ValueError, match="'strategy.order_type' must be one of MARKET, LIMIT"):
        params(order_type="STOP")
    with pytest.raises(ValueError, match="'strategy.notional_usdt' must be above 0"):
        params(notional_usdt=0.0)
    with pytest.raises(rules.ParamsError, match=r"strategy.instruments\[0\] needs symbol"):
        params(instruments=[{"symbol": "X", "step": 0}])


def test_rules_day_rollover_resets_realized():
    v = rules.View(day=19_675, realized=-5.0)
    s = sig(0, 0.0)
    s["bucket_ms"] = (19_676 * 86_400_000)
    assert rules.observe(v, s).realized == 0.0 and rules.observe(v, s).day == 19_676


def test_rules_correct_to_flat_starts_cooldown():
    v = rules.View(qty=0.002, entry_mid=50_000.0, entry_ms=BASE)
    c = rules.correct(v, 0.0, None, BASE + 9000)
    assert c.qty == 0 and c.entry_mid is None and c.last_exit_ms == BASE + 9000


# -- client order ids --------------------------------------------------------------------------

def test_ids_same_input_same_id_and_valid():
    a = ids.client_order_id("ofi", "BTCUSDT", BASE, "E", "BUY")
    assert a == ids.client_order_id("ofi", "BTCUSDT", BASE, "E", "BUY")
    assert ids.PATTERN.match(a) and a.startswith("ofi-BTCUSDT-")
    assert a != ids.client_order_id("ofi", "BTCUSDT", BASE + 1000, "E", "BUY")
    assert a != ids.client_order_id("ofi", "BTCUSDT", BASE, "R", "SELL")
    assert a != ids.client_order_id("ofi", "ETHUSDT", BASE, "E", "BUY")


def test_ids_other_process_same_id():
    code = ("from daemons.strategy import ids; "
            f"print(ids.client_order_id('ofi', 'BTCUSDT', {BASE}, 'E', 'BUY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip()
    assert out == ids.client_order_id("ofi", "BTCUSDT", BASE, "E", "BUY")


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(min_size=1, max_size=12), symbol=st.text(max_size=40),
       bucket=st.integers(min_value=0, max_value=2**53), code=st.sampled_from("ESRT"),
       side=st.sampled_from(["BUY", "SELL"]))
def test_ids_any_input_matches_binance_pattern(prefix, symbol, bucket, code, side):
    coid = ids.client_order_id(prefix, symbol, bucket, code, side)
    assert ids.PATTERN.match(coid), coid
    assert coid == ids.client_order_id(prefix, symbol, bucket, code, side)


def test_ids_long_symbol_truncated_hash_keeps_them_apart():
    a = ids.client_order_id("ofi", "1000SHIBUSDTXYZLONG", BASE, "E", "BUY")
    b = ids.client_order_id("ofi", "1000SHIBUSDTXYZLONGER", BASE, "E", "BUY")
    assert len(a) <= 36 and len(b) <= 36 and a != b
