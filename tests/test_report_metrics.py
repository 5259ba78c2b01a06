"""Pure parts of the report: period parsing and the metrics' edge cases."""
from __future__ import annotations

import pytest

from daemons.report import metrics as m
from daemons.report.period import PeriodError, parse_date, parse_since, resolve

NOW = 1_709_640_000_000   # 2024-03-05T12:00:00Z


def test_period_today_yesterday_and_dates_are_utc_days():
    assert parse_date("today", NOW).label == "2024-03-05"
    y = parse_date("yesterday", NOW)
    assert y.label == "2024-03-04" and y.until_ms - y.since_ms == 86_400_000
    assert parse_date("2024-02-29", NOW).since_ms == 1_709_164_800_000
    assert resolve(None, None, NOW).label == "2024-03-05"


@pytest.mark.parametrize("text", ["2023-02-29", "2024-3-5", "", "now"])
def test_period_bad_date_raises_one_line(text):
    with pytest.raises(PeriodError) as err:
        parse_date(text, NOW)
    assert "\n" not in str(err.value)


def test_period_since_accepts_iso_offsets_and_epoch_ms():
    assert parse_since("1709640000000").since_ms == NOW
    assert parse_since("2024-03-05T12:00:00Z").since_ms == NOW
    assert parse_since("2024-03-05T13:00:00+01:00").since_ms == NOW
    assert parse_since("2024-03-05 12:00").label == "since-20240305T120000Z"
    assert parse_since("1709640000123").label == "since-20240305T120000.123Z"
    assert parse_since("0").until_ms is None


def test_spearman_ties_get_average_ranks():
    assert m.ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    assert m.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert m.spearman([1, 1, 1], [1, 2, 3]) is None          # no variation: undefined


def test_percentile_nearest_rank():
    v = list(range(1, 101))
    assert m.percentile(v, 50) == 50 and m.percentile(v, 99) == 99
    assert m.percentile([7], 99) == 7 and m.percentile([], 50) is None


def _fill(seq, side, qty, price, rp=None, fee=0.0, asset="USDT"):
    return {"seq": seq, "ts": seq, "T": seq, "symbol": "BTCUSDT", "side": side, "qty": qty,
            "price": price, "fee": fee, "fee_asset": asset, "realized_pnl": rp,
            "trade_id": seq, "order_id": seq}


def test_ledger_flip_closes_trip_and_opens_the_rest():
    fills = m.unique_fills([_fill(1, "BUY", 1.0, 100.0, fee=0.1),
                            _fill(2, "SELL", 3.0, 110.0, fee=0.3),
                            _fill(3, "BUY", 2.0, 105.0, fee=0.2, asset="BNB")])
    books, trips = m.ledger(fills, {})
    b = books["BTCUSDT"]
    # realized from the average cost when the venue gave none: +10 long, then +10 short
    assert b.realized == pytest.approx(20.0)
    assert b.fees == pytest.approx(0.4) and b.other_fees == {"BNB": pytest.approx(0.2)}
    assert [(t.direction, t.closed_ms, round(t.net, 6)) for t in trips] == \
        [("LONG", 2, 9.6), ("SHORT", 3, 10.0)]
    assert b.turnover == pytest.approx(100 + 330 + 210)


def test_unique_fills_drops_replayed_fill():
    f = _fill(1, "BUY", 1.0, 100.0, rp=0.0)
    assert len(m.unique_fills([f, dict(f, seq=2)])) == 1


def test_slippage_sign_buy_paying_more_is_cost():
    fills = [_fill(1, "BUY", 1.0, 101.0), _fill(2, "SELL", 1.0, 99.0)]
    fills[0]["client_order_id"], fills[1]["client_order_id"] = "a", "b"
    s = m.slippage(fills, {"a": {"decision_mid": 100.0}, "b": {"decision_mid": 100.0}})["all"]
    assert s.avg_bps == pytest.approx(100.0) and s.cost == pytest.approx(2.0)


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_data_load_picks_the_day_across_segments(tmp_path, sink):
    from bus import open_bus
    from daemons.report import data
    from daemons.report.period import parse_date

    day0 = parse_date("2024-03-04", NOW).since_ms
    bus = open_bus(tmp_path, sink=sink, segment_bytes=2000)   # many small JSONL segments
    w = bus.writer("fills")
    for k in range(3 * 48):                                   # every 30 min for three days
        w.append({"type": "fill", "symbol": "BTCUSDT", "side": "BUY", "qty": 1.0,
                  "price": 1.0, "n": k}, ts=day0 + k * 1_800_000)
    w.close()
    bus.close()
    if sink == "jsonl":
        assert len(list((tmp_path / "bus" / "fills").glob("*.jsonl"))) > 5
    ds = data.load(tmp_path, parse_date("2024-03-05", NOW))
    assert [r["n"] for r in ds.records["fills"]] == list(range(48, 96))
    assert ds.sinks["fills"] == sink
    assert data.load(tmp_path, parse_date("2024-03-09", NOW)).records["fills"] == []
