"""The backtest engine on hand-made market records: order life cycles, partial and maker fills,
positions, orders left open at the end, the rate limit on the market's clock."""
from __future__ import annotations

import pytest

from conftest import typed_settings
from daemons.tools.backtest.engine import Engine, MemoryOutput, Settings
from daemons.strategy import risk, rules
from daemons.strategy.core import StrategyCore

T0 = 1_700_000_000_000
SYM = "BTCUSDT"


class ScriptedSignals:
    """Stands in for SignalCore: the signal given for a record's time, when it arrives."""

    levels = 5

    def __init__(self, by_time: dict[int, dict], at_end: list[dict] | None = None):
        self.by_time = dict(by_time)
        self.at_end = at_end or []

    def process(self, rec):
        sig = self.by_time.pop(rec.get("E") or rec.get("T"), None)
        return [sig] if sig else []

    def flush(self):
        return self.at_end


def signal(bucket_ms, fusion, mid=50_000.0):
    z = 1.0 if fusion > 0 else -1.0 if fusion < 0 else 0.0
    return {"type": "signal", "symbol": SYM, "bucket_ms": bucket_ms, "interval_ms": 1000,
            "mid": mid, "spread": 0.2, "fusion": fusion, "ofi_z": z, "cvd_z": z}


def book(t, bid=49_999.9, ask=50_000.1, bid_qty=5.0, ask_qty=5.0):
    return {"type": "book", "symbol": SYM, "u": t, "E": t, "T": t, "bid": bid, "ask": ask,
            "bid_qty": bid_qty, "ask_qty": ask_qty, "recv_ts": t}


def trade(t, price, qty=1.0, side="sell"):
    return {"type": "trade", "symbol": SYM, "E": t, "T": t, "t": t, "price": price, "qty": qty,
            "side": side, "X": "MARKET", "recv_ts": t}


def engine(signals, latency_ms=50, max_orders=0, **params):
    s = typed_settings(strategy={"notional_usdt": 150.0,  # 0.003 BTC
                                 "instruments": [{"symbol": SYM, "step": 0.001, "tick": 0.1}],
                                 **params}, risk={"max_orders_per_minute": max_orders})
    core = StrategyCore(rules.Params.from_settings(s.strategy), risk.Limits.from_settings(s.risk),
                        "ofi", [SYM])
    out = MemoryOutput()
    ex = Settings(latency_ms, 5.0, 2.0, True).executor()
    return Engine(signals, core, ex, out), out


def statuses(out, cid):
    return [o["status"] for o in out.records["orders"] if o["client_order_id"] == cid]


def test_engine_market_order_larger_than_top_fills_partly_then_fully():
    sigs = ScriptedSignals({T0 + 1000: signal(T0, 2.0)})
    eng, out = engine(sigs)
    for rec in (book(T0 + 1000), book(T0 + 1040, ask_qty=0.001), book(T0 + 1050, ask_qty=0.001),
                book(T0 + 1060, ask=50_000.5, ask_qty=2.0)):
        eng.feed(rec)
    s = eng.finish()
    (intent,) = out.records["intents"]
    cid = intent["client_order_id"]
    assert intent["ts"] == T0 + 1000 and intent["side"] == "BUY" and intent["qty"] == 0.003
    # the update at +1040 is before the order reaches the venue (+1050): no fill from it
    assert statuses(out, cid) == ["PENDING", "NEW", "PARTIALLY_FILLED", "FILLED"]
    f1, f2 = out.records["fills"]
    assert (f1["qty"], f1["price"], f1["T"]) == (0.001, 50_000.1, T0 + 1050)
    assert (f2["qty"], f2["price"], f2["T"]) == (pytest.approx(0.002), 50_000.5, T0 + 1060)
    assert [p["qty"] for p in out.records["positions"]] == [0.001, 0.003, 0.003]
    assert s.fills == 2 and s.open_orders == 0 and s.position == {SYM: 0.003}
    assert s.fees == pytest.approx((0.001 * 50_000.1 + 0.002 * 50_000.5) * 5e-4)


def test_engine_limit_order_fills_as_maker_when_a_trade_prints_through():
    sigs = ScriptedSignals({T0 + 1000: signal(T0, 2.0, mid=49_999.95)})
    eng, out = engine(sigs, order_type="LIMIT")
    for rec in (book(T0 + 1000), book(T0 + 1100, bid=50_000.1, ask=50_000.3),
                trade(T0 + 1200, 49_999.9), trade(T0 + 1300, 49_999.8, qty=0.01)):
        eng.feed(rec)
    eng.finish()
    (intent,) = out.records["intents"]
    assert intent["order_type"] == "LIMIT" and intent["price"] == 49_999.9   # mid, tick down
    (fill,) = out.records["fills"]        # a print at the limit price is not through it
    assert fill["maker"] is True and fill["price"] == 49_999.9 and fill["T"] == T0 + 1300
    assert fill["qty"] == 0.003 and fill["fee"] == pytest.approx(0.003 * 49_999.9 * 2e-4)
    assert statuses(out, intent["client_order_id"])[-1] == "FILLED"


def test_engine_order_sent_at_end_of_data_is_acknowledged_and_left_open():
    sigs = ScriptedSignals({}, at_end=[signal(T0, 2.0)])
    eng, out = engine(sigs)
    eng.feed(book(T0 + 500))
    s = eng.finish()
    (intent,) = out.records["intents"]
    assert statuses(out, intent["client_order_id"]) == ["PENDING", "NEW"]
    assert out.records["orders"][-1]["ts"] == T0 + 500 + 50
    assert s.open_orders == 1 and s.fills == 0 and out.records["fills"] == []


def test_engine_rate_limit_counts_orders_on_market_clock():
    # enter, exit, enter, ... one signal a second: a limit of 2 orders a minute lets 2 through
    sigs = {T0 + 1000 * (i + 1): signal(T0 + 1000 * i, 2.0 if i % 2 == 0 else -0.5)
            for i in range(6)}
    eng, out = engine(ScriptedSignals(sigs), max_orders=2, cooldown_s=0.0)
    for i in range(6):
        eng.feed(book(T0 + 1000 * (i + 1)))
    s = eng.finish()
    kinds = [(r["type"], r["reason"]) for r in out.records["intents"]]
    assert kinds[:2] == [("intent", "entry"), ("intent", "exit")]
    assert s.intents == 2 and s.denied >= 1
    assert out.records["intents"][2]["code"] == "rate_limit"


def test_engine_records_carry_market_time_in_ts():
    sigs = ScriptedSignals({T0 + 1000: signal(T0, 2.0)})
    eng, out = engine(sigs)
    for t in (T0 + 1000, T0 + 1020, T0 + 1100):
        eng.feed(book(t))
    eng.finish()
    assert out.records["signals"][0]["ts"] == T0 + 1000
    assert [o["ts"] for o in out.records["orders"]] == [T0 + 1000, T0 + 1050, T0 + 1100]
    assert out.records["fills"][0]["ts"] == T0 + 1100


def test_engine_positions_records_carry_intent_seq_and_in_flight_view_unchanged():
    sigs = ScriptedSignals({T0 + 1000: signal(T0, 2.0)})
    eng, out = engine(sigs)
    for rec in (book(T0 + 1000), book(T0 + 1050, ask_qty=0.001),
                book(T0 + 1060, ask=50_000.5, ask_qty=2.0)):
        eng.feed(rec)
    (intent,) = out.records["intents"]
    p1, p2 = out.records["positions"]
    assert (p1["qty"], p1["intent_seq"], p1["cause"]) == (0.001, intent["seq"], "fill")
    assert p1["in_flight"] == [{"client_order_id": intent["client_order_id"], "side": "BUY",
                                "qty": 0.002, "reduce_only": False}]
    assert (p2["qty"], p2["in_flight"]) == (0.003, [])
    # the broker's position plus what is in flight is what the strategy sent: no correction
    assert eng.strategy.views[SYM].qty == 0.003
    assert eng.strategy.counts["position_corrections"] == 0


def test_engine_order_refused_at_submit_writes_position_strategy_sees_flat():
    from daemons.broker.binance.errors import Rejected

    sigs = ScriptedSignals({T0 + 1000: signal(T0, 2.0)})
    eng, out = engine(sigs)

    def refuse(order, mark_price=None, now_ms=None):
        raise Rejected("Margin is insufficient.", -2019, 400)

    eng.executor.submit = refuse
    eng.feed(book(T0 + 1000))
    (pos,) = out.records["positions"]
    assert (pos["qty"], pos["intent_seq"], pos["in_flight"], pos["cause"]) == \
        (0.0, 1, [], "order_done")
    assert eng.strategy.views[SYM].qty == 0.0 and eng.strategy.pending[SYM] == []


def test_engine_signal_older_than_max_age_on_market_clock_not_traded():
    # a gap in the data: the interval's signal is closed 5 s after its end
    sigs = ScriptedSignals({T0 + 6000: signal(T0, 2.0)})
    eng, out = engine(sigs)
    eng.feed(book(T0 + 6000))
    s = eng.finish()
    assert out.records["intents"] == [] and s.intents == 0
    assert eng.strategy.counts["stale_signals"] == 1
