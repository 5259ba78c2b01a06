"""Intervals closed by watermark: the delay estimate, the merge's low water, the core's advance
and late records, and the signal stage on an injected clock, on the real recording."""
from __future__ import annotations

import pytest

from bus import open_bus
from daemons import config as configmod
from daemons import runtime
from daemons.harvest.replay import topic_of
from daemons.marketdata.merge import Merger, event_time
from daemons.marketdata.replay import Replay
from daemons.signal.core import SignalCore
from daemons.signal.stage import INPUTS, SignalStage
from daemons.signal.watermark import LIVE_MS, Watermark
from daemons.tools.bench.lateness import replay, shifted

T0 = 1_800_000_000_000          # an interval boundary, "now" for the injected clock


# -- the pure parts ------------------------------------------------------------------------------
def test_delay_is_the_smallest_age_and_rises_slowly():
    w = Watermark(lateness_ms=20)
    w.observe("trades", 1_000, 1_005)
    w.observe("trades", 1_010, 1_013)
    w.observe("trades", 1_020, 1_029)
    assert w.delay["trades"] == pytest.approx(3.0 + 16 * 0.001)
    assert w.frontier("trades", 2_000) == pytest.approx(2_000 - w.delay["trades"] - 20)
    # a lasting rise of the delay (ages of 50 ms from now on) is learnt at 1 ms per second
    for i in range(1, 11):
        w.observe("trades", 1_029 + i * 1_000 - 50, 1_029 + i * 1_000)
    assert 12.9 < w.delay["trades"] < 13.1
    assert w.frontier("book", 2_000) is None            # never seen


def test_a_replay_of_the_past_is_not_moved_by_the_clock():
    w = Watermark(lateness_ms=20)
    w.observe("trades", 1_000, 1_000 + LIVE_MS + 1)
    assert w.frontier("trades", 10**13) is None and w.wait_ms(2_000, 1_500) is None


def test_low_water_is_the_least_head_or_frontier():
    m = Merger(["a", "b", "c"], grace_ms=0)
    assert m.low_water() is None                     # nobody spoke: nothing is known
    m.idle.add("c")                                  # caught up, never spoke: holds nothing
    m.push("a", 100, "x")
    m.advance("b", 150)
    assert m.low_water() == 100
    assert m.pop() == [("a", "x")]
    assert m.low_water() == 100                      # a's frontier
    m.advance("a", 300)
    assert m.low_water() == 150


def test_advance_closes_intervals_without_a_record_and_counts_late_ones():
    core = SignalCore(interval_ms=1000, min_periods=1)
    core.count_late = True             # as the daemon does
    trade = {"type": "trade", "symbol": "S", "price": 10.0, "qty": 1.0, "side": "buy",
             "X": "MARKET"}
    assert core.process({**trade, "T": T0 + 100}) == []
    assert core.advance(T0 + 999) == []
    (s0,) = core.advance(T0 + 1000)
    assert (s0["bucket_ms"], s0["trades"], s0["late"]) == (T0, 1, 0)
    assert core.next_close_ms() == T0 + 2000
    core.process({**trade, "T": T0 + 900})          # its interval is closed: late
    (s1, s2) = core.advance(T0 + 3000)              # an empty interval too
    assert (s1["bucket_ms"], s1["trades"], s1["late"], s1["buy_qty"]) == (T0 + 1000, 1, 1, 1.0)
    assert (s2["trades"], s2["late"]) == (0, 0)


def test_offline_nothing_is_late():
    core = SignalCore(interval_ms=1000)
    trade = {"type": "trade", "symbol": "S", "price": 10.0, "qty": 1.0, "side": "buy"}
    core.process({**trade, "T": T0 + 1500})
    core.process({**trade, "T": T0 + 900})   # older than the open interval: not counted late
    (s,) = core.flush()
    assert s["trades"] == 2 and s["late"] == 0


# -- the stage on an injected clock --------------------------------------------------------------
class Clock:
    def __init__(self, ms):
        self.ms = ms

    def __call__(self):
        return self.ms / 1000


def _runner(tmp_path, clock, lateness_ms):
    cfg = configmod.load(None, {"home": str(tmp_path), "signal.allowed_lateness_ms": lateness_ms})
    r = runtime.Runner(SignalStage, cfg, clock=clock)
    r.open()
    r.stage.start()
    r.ready = True
    return r


def _append(home, records):
    bus = open_bus(home)
    for topic in INPUTS:
        recs = [r for r in records if topic_of(r) == topic]
        if recs:
            w = bus.writer(topic)
            w.append_many(recs)
            w.close()
    bus.close()


def _turn(r):
    r.step()
    r.stage.tick(r.clock())


def _signals(home):
    bus = open_bus(home)
    out = [{k: v for k, v in s.items() if k not in ("seq", "ts", "trace")}
           for s in bus.read_all("signals")]
    bus.close()
    return out


def test_stage_closes_an_interval_on_time_when_no_stream_speaks(tmp_path):
    clock = Clock(T0 + 102)
    r = _runner(tmp_path, clock, 20.0)
    _append(tmp_path, [
        {"type": "trade", "symbol": "S", "T": T0 + 100, "E": T0 + 100, "price": 10.0,
         "qty": 1.0, "side": "buy", "X": "MARKET"},
        {"type": "book", "symbol": "S", "E": T0 + 100, "bid": 9.9, "ask": 10.1, "bid_qty": 1.0,
         "ask_qty": 1.0},
        {"type": "depth", "symbol": "S", "E": T0 + 100, "bids": [[9.9, 1.0]],
         "asks": [[10.1, 1.0]]}])
    _turn(r)
    _turn(r)                                         # the streams are caught up
    assert r.stage.idle_timeout() == pytest.approx((1000 + 2 + 20 - 102) / 1000)
    clock.ms = T0 + 1000 + 2 + 20 - 1
    _turn(r)
    assert _signals(tmp_path) == []
    clock.ms = T0 + 1000 + 2 + 20
    _turn(r)
    (s,) = _signals(tmp_path)
    assert (s["bucket_ms"], s["trades"], s["book_updates"], s["late"]) == (T0, 1, 1, 0)
    # a trade of the closed interval comes late: counted in the next one, never dropped
    clock.ms = T0 + 1300
    _append(tmp_path, [{"type": "trade", "symbol": "S", "T": T0 + 990, "E": T0 + 990,
                        "price": 10.0, "qty": 2.0, "side": "sell", "X": "MARKET"}])
    _turn(r)
    clock.ms = T0 + 2100
    _turn(r)
    s = _signals(tmp_path)[-1]
    assert (s["bucket_ms"], s["trades"], s["sell_qty"], s["late"]) == (T0 + 1000, 1, 2.0, 1)
    assert r.stage.health()["late_records"] == 1
    r.close()


def _offline(records, interval_ms=1000):
    """What ``ofi signals`` computes over the same records: the merge of the three streams by
    exchange time, the core, the last interval closed at the end."""
    m = Merger(INPUTS)
    for rec in records:
        m.push(topic_of(rec), event_time(rec), rec)
    for s in INPUTS:
        m.end(s)
    core = SignalCore(interval_ms=interval_ms)
    out = []
    for _, rec in m.pop():
        out.extend(core.process(rec))
    return out + core.flush()


@pytest.fixture(scope="module")
def recording(data_dir):
    """Two minutes of the BTCUSDT recording (book, trades, depth from its first snapshot)."""
    recs = []
    for rec in Replay([str(data_dir / "hftbacktest/usdm/btcusdt_20240718.gz")],
                      symbols={"BTCUSDT"}):
        recs.append(rec)
        if len(recs) > 50 and event_time(rec) - event_time(recs[0]) > 120_000:
            break
    return recs


@pytest.mark.parametrize("lateness_ms,jitter_ms", [(5_000.0, 40), (0.0, 40)])
def test_stage_on_the_recording_in_real_time(recording, lateness_ms, jitter_ms):
    """The recording replayed on the injected clock, each record read 2 ms after its exchange
    time (plus ``jitter_ms`` on every 7th trade: a slow path). With a lateness above the jitter
    the daemon's records are exactly the offline ones; with none, the slow trades come late,
    are counted as such, and no trade is lost."""
    start = event_time(recording[0])
    live = [shifted(r, (T0 - start // 1000 * 1000) + 60_000) for r in recording]
    slow = {id(r) for r in [r for r in live if r["type"] == "trade"][6::7]}

    def arrival(rec):
        return event_time(rec) + 2 + (jitter_ms if id(rec) in slow else 0)
    out = replay(live, arrival, ["BTCUSDT"], lateness_ms, step_ms=10, tail_ms=200)
    got = [{k: v for k, v in s.items() if k not in ("seq", "ts", "trace")} for s in out.signals]
    want = _offline(live)
    assert len(want) > 100
    if lateness_ms >= 5_000:
        # the last interval closes when the clock has passed it: a prefix of the same records
        assert got == want[:len(got)] and len(got) >= len(want) - 6
    else:
        assert sum(s["late"] for s in got) > 0
        trades = sum(1 for rec in live if rec["type"] == "trade")
        assert sum(s["trades"] for s in got) + sum(s["trades"] for s in _tail(got, want)) \
            == trades


def _tail(got, want):
    """The offline intervals after the daemon's last (still open when the test stopped)."""
    last = got[-1]["bucket_ms"]
    return [s for s in want if s["bucket_ms"] > last]


def test_bench_lateness_replays_the_recording_at_its_receive_times(data_dir):
    from daemons.tools.bench.lateness import run

    path = [str(data_dir / "hftbacktest/usdm/btcusdt_20240718.gz")]
    tight = run(path, "BTCUSDT", 0.0, minutes=2)
    loose = run(path, "BTCUSDT", 2_000.0, minutes=2)
    assert tight["records"] == loose["records"] > 1_000
    assert 0 < tight["late_records"] < tight["records"] and loose["late_records"] == 0
    assert 100 < tight["signals"] and abs(tight["signals"] - loose["signals"]) <= 3
    # the recorder's clock ran about 1.5 s behind Binance's: learnt as a negative delay
    assert all(-1_600 < d < -1_400 for d in tight["delay_ms"].values())
    # a large lateness leaves the closing to the merge's grace for a silent stream
    grace = configmod.defaults()["signal"]["merge_grace_ms"]
    assert tight["close_after_end_ms"]["p50"] < 20 < loose["close_after_end_ms"]["p50"] < 2 * grace
