"""FastDepthTerms (the compiled depth book) against DepthTerms: the same items, gaps, stalls,
frontier and previous top, on the real recordings and on generated streams with gaps, re-syncs,
stalls and odd level texts."""
from __future__ import annotations

import random

import pytest

pytest.importorskip("numba")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from daemons.marketdata.book import MAX_BUFFER  # noqa: E402
from daemons.marketdata.fastbook import FastDepthTerms  # noqa: E402
from daemons.marketdata.merge import STALL_MS  # noqa: E402
from daemons.signal import split  # noqa: E402
from daemons.signal.depth_terms import DepthTerms  # noqa: E402

PAIRS = {
    "usdm": (["usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz"], 5),
    "spot": (["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"], 10),
}


class _Conn:
    def __init__(self):
        self.msgs = []

    def send(self, msg):
        self.msgs.append(msg)


def _send_depth(monkeypatch, cls, paths, levels, prev=None, stall_ms=STALL_MS):
    monkeypatch.setattr(split, "DepthTerms", cls)
    conn = _Conn()
    split._send_depth(conn, paths, "BTCUSDT", levels, prev, stall_ms)
    return conn.msgs


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_fastbook_depth_worker_equals_depth_terms_on_real_data(data_dir, monkeypatch, pair):
    files, levels = PAIRS[pair]
    paths = [str(data_dir / "hftbacktest" / f) for f in files]
    want = _send_depth(monkeypatch, DepthTerms, paths, levels)
    got = _send_depth(monkeypatch, FastDepthTerms, paths, levels)
    assert sum(len(m[1]) for m in want if m[0] == "d") > 5000
    assert got == want   # every batch of items, frontier, then gaps, prev, stalls, newest


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_fastbook_carried_prev_and_short_stalls_on_real_data(data_dir, monkeypatch, pair):
    """The second file from the first one's previous top (state carried over), with a silence
    rule of 20 ms (keys raised for the diffs received later than that)."""
    files, levels = PAIRS[pair]
    first, second = (str(data_dir / "hftbacktest" / f) for f in files)
    end_want = _send_depth(monkeypatch, DepthTerms, [first], levels, stall_ms=20)
    end_got = _send_depth(monkeypatch, FastDepthTerms, [first], levels, stall_ms=20)
    assert end_got == end_want
    prev = end_want[-1][2]
    assert prev is not None and len(prev[0]) == levels
    want = _send_depth(monkeypatch, DepthTerms, [second], levels, prev, 20)
    got = _send_depth(monkeypatch, FastDepthTerms, [second], levels, prev, 20)
    assert got == want


# -- generated streams -----------------------------------------------------------------------
_QTYS = ["0", "0.0", "0.000", "0.00000000", "0.", "0.0000000000000000000", "1", "1.5", "0.001",
         "0.00000001", "0.000000005", "0.000000015", "0.000000025", "123.456", "7",
         "99999.99999999", "3.14159265358979"]
_ODD_QTYS = ["2.5e-3", " 1.5", "1_0", 1.25, 0, "+2"]      # the general parse
_ODD_PRICES = ["{:.1f}e0", "0{:.1f}", " {:.1f}", "{:.1f}"]


def _price(rng, p: float, odd: float):
    r = rng.random()
    if r < odd:
        f = rng.choice(_ODD_PRICES)
        return f.format(p) if rng.random() < 0.8 else p   # sometimes a float, not a string
    return f"{p:.{rng.choice((1, 2, 3))}f}"   # "100.5", "100.50", "100.500": one price


def _levels(rng, truth: dict, side_prices: list, k: int, odd: float, wipe: bool):
    out = []
    for _ in range(k):
        p = rng.choice(side_prices)
        if wipe or rng.random() < 0.35:
            q = rng.choice(_QTYS[:6])
        else:
            q = rng.choice(_ODD_QTYS) if rng.random() < odd else rng.choice(_QTYS[6:])
        out.append([_price(rng, p, odd), q])
        if q in ("0", "0.0", "0.000", "0.00000000", 0):
            truth.pop(p, None)
        else:
            truth[p] = q if isinstance(q, str) else str(q)
    return out


def _stream(seed: int, spot: bool, grid: int, n: int, odd: float, p_gap: float, p_snap: float,
            first_snapshot_at: int = 0):
    """Events ("d", diff, recv) / ("s", snapshot, recv) of a made-up symbol."""
    rng = random.Random(seed)
    mid = grid // 2
    prices = [round(1000 + i * 0.5, 1) for i in range(grid)]
    bid_prices, ask_prices = prices[:mid + 3], prices[mid - 3:]
    truth_b: dict = {}
    truth_a: dict = {}
    u = 10
    recv = 1_700_000_000_000
    events = []
    for i in range(n):
        r = rng.random()
        recv += rng.choice((1, 5, 50, 100, 250))
        if rng.random() < 0.01:
            recv += rng.choice((40_000, 31_000, 250))     # a silence
        if i >= first_snapshot_at and (r < p_snap or i == first_snapshot_at):
            lid = u + rng.choice((0, 0, 0, -1, -2, -3, 5))
            snap = {"lastUpdateId": lid,
                    "bids": [[_price(rng, p, odd / 4), q] for p, q in truth_b.items()],
                    "asks": [[_price(rng, p, odd / 4), q] for p, q in truth_a.items()]}
            if rng.random() < 0.3:
                snap["bids"].append([f"{rng.choice(bid_prices):.1f}", "0.000"])
            rng.shuffle(snap["bids"])
            if rng.random() < 0.7:
                snap["E"] = recv - rng.choice((0, 3, 20))
                snap["T"] = snap["E"] - 1
            events.append(("s", snap, recv))
            continue
        U = u + 1
        if rng.random() < p_gap:
            U += rng.choice((1, 2, 7))
        new_u = U + rng.choice((0, 0, 1, 4))
        wipe = rng.random() < 0.04
        kb = rng.choice((0, 1, 2, 5, 12, 30, 80)) if not wipe else 60
        ka = rng.choice((0, 1, 2, 5, 12, 30, 80)) if not wipe else 60
        top_b = bid_prices[-40:] if wipe else bid_prices
        top_a = ask_prices[:40] if wipe else ask_prices
        d = {"e": "depthUpdate", "E": recv - rng.choice((0, 1, 10, 400, 50_000)), "s": "XYZ",
             "U": U, "u": new_u,
             "b": _levels(rng, truth_b, top_b, kb, odd, wipe),
             "a": _levels(rng, truth_a, top_a, ka, odd, wipe)}
        if not spot:
            d["T"] = d["E"] - 1
            d["pu"] = u if rng.random() > p_gap else u - 1
        if rng.random() < 0.02:
            del d["E"]
        u = new_u
        events.append(("d", d, recv))
    return events


def _compare(events, levels: int, prev=None, stall_ms: int = STALL_MS, every: int = 37):
    want = DepthTerms(levels, prev, stall_ms)
    got = FastDepthTerms(levels, prev, stall_ms)
    for i, (kind, x, recv) in enumerate(events):
        if kind == "s":
            want.snapshot(x, recv)
            got.snapshot(x, recv)
        else:
            want.diff(x, recv)
            got.diff(x, recv)
        if i % every == 0 or kind == "s":
            assert got.prev == want.prev, i
            assert got.frontier == want.frontier, i
    assert got.items == want.items
    assert [type(x[3]) for x in got.items] == [type(x[3]) for x in want.items]
    assert (got.gaps, got.stalls, got.prev, got.frontier) == \
        (want.gaps, want.stalls, want.prev, want.frontier)
    return want


@pytest.mark.parametrize("spot", [False, True])
def test_fastbook_generated_long_streams_with_gaps_and_resyncs(spot):
    want = _compare(_stream(7 + spot, spot, grid=600, n=4000, odd=0.01, p_gap=0.01,
                            p_snap=0.01), levels=5)
    assert want.gaps > 5 and want.stalls
    assert sum(1 for x in want.items if x[3] != 0) > 300
    # a deeper read (a cache of 4 * 20 prices) and a thin grid (sides thinner than the read)
    _compare(_stream(11 + spot, spot, grid=300, n=1500, odd=0.02, p_gap=0.005, p_snap=0.01),
             levels=20, stall_ms=100)
    _compare(_stream(13 + spot, spot, grid=12, n=1500, odd=0.02, p_gap=0.02, p_snap=0.03),
             levels=10)


@pytest.mark.parametrize("spot", [False, True])
def test_fastbook_buffer_overflow_before_the_snapshot(spot):
    """More than MAX_BUFFER diffs before the first snapshot: the oldest are gone, so the
    snapshot (older than what is kept) cannot be bridged: a gap, then a later re-sync."""
    events = _stream(3, spot, grid=200, n=MAX_BUFFER + 600, odd=0.0, p_gap=0.0, p_snap=0.002,
                     first_snapshot_at=MAX_BUFFER + 100)
    snap_at = next(i for i, e in enumerate(events) if e[0] == "s")
    events[snap_at][1]["lastUpdateId"] = events[5][1]["u"]
    want = _compare(events, levels=5, prev=([(999.0, 100)], [(1001.0, 200), (1002.0, 1)]))
    assert want.gaps >= 1


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32), spot=st.booleans(), grid=st.integers(2, 400),
       levels=st.integers(1, 12), odd=st.sampled_from([0.0, 0.05]),
       p_gap=st.sampled_from([0.0, 0.02, 0.1]), p_snap=st.sampled_from([0.0, 0.02, 0.1]),
       stall_ms=st.sampled_from([STALL_MS, 300]),
       prev=st.sampled_from([None, ([], []), ([(1000.5, 3)], [(1001.0, 4), (1001.5, 5)])]))
def test_fastbook_generated_streams_equal_depth_terms(seed, spot, grid, levels, odd, p_gap,
                                                     p_snap, stall_ms, prev):
    _compare(_stream(seed, spot, grid, 300, odd, p_gap, p_snap), levels, prev, stall_ms)


def test_fastbook_malformed_levels_raise_as_depth_terms():
    snap = {"lastUpdateId": 5, "bids": [["100.0", "1"]], "asks": [["101.0", "1"]]}
    bad = {"e": "depthUpdate", "E": 10, "U": 5, "u": 6, "pu": 4,
           "b": [["100.0", "1", "2"]], "a": []}
    for cls in (DepthTerms, FastDepthTerms):
        terms = cls(5)
        terms.snapshot(snap, 1)
        with pytest.raises(ValueError):
            terms.diff(bad, 11)
