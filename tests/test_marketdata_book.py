"""The local book's Binance sync against the real recordings, and gap detection."""
from __future__ import annotations

import pytest

from daemons.marketdata import formats
from daemons.marketdata.book import APPLIED, DepthFeed, Gap, LocalBook
from daemons.marketdata.replay import Replay

PAIRS = [
    ("usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz", "BTCUSDT"),
    ("usdm/ethusdt_20240718.gz", "usdm/ethusdt_20240719.gz", "ETHUSDT"),
    ("usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz", "BTCUSDT"),
    ("spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz", "BTCUSDT"),
]


@pytest.mark.parametrize("a,b,symbol", PAIRS)
def test_marketdata_book_syncs_from_snapshot_without_gaps(data_dir, a, b, symbol):
    paths = [str(data_dir / "hftbacktest" / p) for p in (a, b)]
    diffs = sum(1 for p in paths for m in formats.read_tuples(p) if m[0] == "depthUpdate")
    replay = Replay(paths, symbols={symbol})
    depth = [r for r in replay if r["type"] in ("depth", "snapshot", "gap")]
    assert replay.gaps == 0
    assert depth[0]["type"] == "snapshot"
    applied = [r for r in depth if r["type"] == "depth"]
    assert 0 <= diffs - len(applied) < 20  # only the diffs the snapshot already held are dropped
    for r in applied[::50]:
        assert len(r["bids"]) == 5 and len(r["asks"]) == 5
        assert r["bids"][0][0] < r["asks"][0][0]  # never crossed
        assert [p for p, _ in r["bids"]] == sorted((p for p, _ in r["bids"]), reverse=True)


def _usdm_messages(data_dir, n):
    path = str(data_dir / "hftbacktest/usdm/btcusdt_20240718.gz")
    out = []
    for m in formats.read_messages(path):
        if m.kind in ("depthUpdate", "snapshot"):
            out.append(m)
        if len(out) >= n:
            break
    return out


def test_marketdata_book_dropped_diff_is_a_gap(data_dir):
    msgs = _usdm_messages(data_dir, 200)
    feed = DepthFeed("BTCUSDT")
    records = []
    dropped = None
    for i, m in enumerate(msgs):
        if m.kind == "snapshot":
            records += feed.on_snapshot(m.data, m.recv_ts)
        elif i == 120:
            dropped = m.data  # lost on the wire
        else:
            records += feed.on_diff(m.data, m.recv_ts)
    gaps = [r for r in records if r["type"] == "gap"]
    assert len(gaps) == 1 and feed.needs_snapshot
    assert gaps[0]["expected_pu"] == dropped["pu"] and gaps[0]["got_pu"] == dropped["u"]
    assert records.index(gaps[0]) == len(records) - 1  # nothing applied after the gap


def test_marketdata_book_spot_rules_bridge_and_chain():
    book = LocalBook()
    assert book.diff({"U": 8, "u": 10, "b": [["1.0", "1"]], "a": []}) == "buffered"
    assert book.diff({"U": 11, "u": 12, "b": [["1.1", "2"]], "a": [["1.2", "3"]]}) == "buffered"
    res = book.snapshot(10, [["1.0", "5"]], [["1.3", "1"]])
    assert [r for _, r in res] == ["dropped", APPLIED]  # u <= lastUpdateId dropped (spot)
    assert book.top(2) == ([[1.1, 2.0], [1.0, 5.0]], [[1.2, 3.0], [1.3, 1.0]])
    assert book.diff({"U": 13, "u": 13, "b": [["1.1", "0.000"]], "a": []}) == APPLIED
    assert book.best() == (1.0, 1.2)
    gap = book.diff({"U": 15, "u": 16, "b": [], "a": []})
    assert isinstance(gap, Gap) and gap.expected_pu == 13 and not book.synced


def _oracle_top(side: dict, n: int, bid: bool) -> list:
    live = sorted(((p, q) for p, q in side.items() if q > 0), reverse=bid)
    return [[p, q] for p, q in live[:n]]


def test_marketdata_book_random_diffs_match_plain_book_and_touched_is_exact_enough():
    """Unsorted levels, repeated prices, zeros for absent levels, thin and emptied sides, reads
    deeper than the cache: the top levels always equal a plain dict book's, and ``touched`` is
    true whenever the top 5 changed."""
    import random

    rng = random.Random(7)
    book = LocalBook(levels=5)
    oracle = {"b": {}, "a": {}}
    snap_b = [[f"{100 - i * 0.5:.2f}", f"{rng.randint(1, 9)}.000"] for i in range(60)]
    snap_a = [[f"{101 + i * 0.5:.2f}", f"{rng.randint(1, 9)}.000"] for i in range(60)]
    book.snapshot(1, snap_b, snap_a)
    for p, q in snap_b:
        oracle["b"][float(p)] = float(q)
    for p, q in snap_a:
        oracle["a"][float(p)] = float(q)
    u = 1
    prev = book.top(5)
    for step in range(3000):
        diff = {"U": u, "u": u + 1, "pu": u, "b": [], "a": []}
        u += 1
        wipe = step % 500 == 499  # now and then empty a side entirely
        for side, lo in (("b", 60.0), ("a", 101.0)):
            if wipe:
                diff[side] = [[f"{p:.2f}", "0.000"] for p in oracle[side]]
                continue
            for _ in range(rng.randint(0, 12)):
                p = f"{lo + rng.randint(0, 160) * 0.25:.2f}"
                q = rng.choice(["0.000", "0", f"{rng.randint(1, 50) / 10:.3f}"])
                diff[side].append([p, q])
        for side in ("b", "a"):
            for p, q in diff[side]:
                oracle[side][float(p)] = float(q)
        # a crossed book is possible here; the book does not care
        assert book.diff(diff) == APPLIED
        cur = book.top(5)
        assert cur == (_oracle_top(oracle["b"], 5, True), _oracle_top(oracle["a"], 5, False))
        if cur != prev:
            assert book.touched
        prev = cur
        if step % 97 == 0:
            assert book.top(50) == (_oracle_top(oracle["b"], 50, True),
                                    _oracle_top(oracle["a"], 50, False))
