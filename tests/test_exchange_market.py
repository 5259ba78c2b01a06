"""The simulated market (seeded, consistent diffs) and the replay feed (real recordings)."""
import copy

from daemons.tools.exchange import filters
from daemons.tools.exchange.book import Book
from daemons.tools.exchange.market import SimFeed
from daemons.tools.exchange.replay import ReplayFeed
from daemons.tools.exchange.streams import DepthAggregator

SPECS = {s: filters.spec_for(s) for s in ("BTCUSDT", "ETHUSDT")}


def _run(seed, steps=400):
    feed = SimFeed(SPECS, seed, 0)
    out = []
    for i in range(1, steps + 1):
        out.extend((k, s, {x: y for x, y in p.items() if x not in ("E", "T")})
                   for k, s, p in feed.advance(i * 50))
    return out


def test_market_same_seed_same_events_other_seed_differs():
    a, b, c = _run(3), _run(3), _run(4)
    assert a == b
    assert a != c
    kinds = {k for k, _, _ in a}
    assert kinds == {"depth", "trade", "bookTicker"}


def _apply(book: dict, diff: dict, spec) -> None:
    for side, key in (("b", "b"), ("a", "a")):
        for p, q in diff[key]:
            book[side][p] = q
            if float(q) == 0:
                del book[side][p]


def _as_strings(b: Book, spec) -> dict:
    return {"b": {spec.fmt_price(p): spec.fmt_qty(q) for p, q in b.bids.items()},
            "a": {spec.fmt_price(p): spec.fmt_qty(q) for p, q in b.asks.items()}}


def test_market_depth_diffs_chain_and_rebuild_the_book_exactly():
    feed = SimFeed({"BTCUSDT": SPECS["BTCUSDT"]}, 7, 0)
    spec = SPECS["BTCUSDT"]
    local = _as_strings(feed.books["BTCUSDT"], spec)
    prev_u = feed.books["BTCUSDT"].last_update_id
    agg = DepthAggregator(100)
    agg_local = copy.deepcopy(local)
    agg_prev = prev_u
    for i in range(1, 600):
        for kind, _, d in feed.advance(i * 50):
            if kind == "trade":
                continue
            if kind == "bookTicker":
                bb = feed.books["BTCUSDT"].best_bid()
                assert d["b"] == spec.fmt_price(bb[0])
                continue
            assert d["pu"] == prev_u and d["U"] == prev_u + 1 and d["u"] >= d["U"]
            prev_u = d["u"]
            _apply(local, d, spec)
            agg.add(d)
        if i % 2 == 0:       # a throttled stream merges two steps and still chains
            out = agg.flush()
            if out:
                assert out["pu"] == agg_prev
                agg_prev = out["u"]
                _apply(agg_local, out, spec)
    agg_out = agg.flush()
    if agg_out:
        _apply(agg_local, agg_out, spec)
    truth = _as_strings(feed.books["BTCUSDT"], spec)
    assert local == truth == agg_local
    assert feed.books["BTCUSDT"].last_update_id == prev_u


def test_market_taker_take_consumes_liquidity_and_prints_trades():
    feed = SimFeed({"BTCUSDT": SPECS["BTCUSDT"]}, 7, 0)
    book = feed.books["BTCUSDT"]
    ask, qty = book.best_ask()
    events = feed.take("BTCUSDT", "BUY", [(ask, qty)], 1)
    trades = [p for k, _, p in events if k == "trade"]
    assert trades and trades[0]["m"] is False and trades[0]["q"] == SPECS["BTCUSDT"].fmt_qty(qty)
    assert book.best_ask()[0] > ask


def test_replay_feed_syncs_and_republishes_the_real_diff_chain(data_dir):
    usdm = data_dir / "hftbacktest" / "usdm"
    feed = ReplayFeed([str(usdm / "btcusdt_20240718.gz")], speed=0, start_ms=0)
    events = []
    while not feed.finished:
        events.extend(feed.advance(0, 100000))
    depth = [p for k, _, p in events if k == "depth"]
    assert depth and feed.state["BTCUSDT"].snapshot_id is None
    # the first published diff bridges the recorded snapshot; every later one chains on pu
    for a, b in zip(depth, depth[1:]):
        assert b["pu"] == a["u"]
    assert feed.books["BTCUSDT"].last_update_id == depth[-1]["u"]
    trades = [p for k, _, p in events if k == "trade"]
    assert len(trades) > 900 and trades[0]["e"] == "trade"
    bb, ba = feed.books["BTCUSDT"].best_bid(), feed.books["BTCUSDT"].best_ask()
    assert bb[0] < ba[0]


def test_replay_feed_csv_trades_and_bookticker_become_websocket_events(tmp_path):
    trades = tmp_path / "BTCUSDT-trades-2026-01-01.csv"
    trades.write_text("id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
                      "7,87648.21,0.00013,11.39,1767225600039409,true,true\n")
    ticker = tmp_path / "BTCUSDT-bookTicker-2026-01-01.csv"
    ticker.write_text("9,87648.20,1.5,87648.30,0.25,1767225600040,1767225600041\n")
    feed = ReplayFeed([str(trades), str(ticker)], speed=0, start_ms=0)
    events = []
    while not feed.finished:
        events.extend(feed.advance(0))
    assert [k for k, _, _ in events] == ["trade", "bookTicker"]
    t, b = events[0][2], events[1][2]
    assert (t["e"], t["t"], t["p"], t["q"], t["T"], t["m"]) == (
        "trade", 7, "87648.21", "0.00013", 1767225600039, True)
    assert (b["e"], b["u"], b["b"], b["A"], b["E"]) == ("bookTicker", 9, "87648.20", "0.25",
                                                        1767225600041)
    book, spec = feed.books["BTCUSDT"], feed.specs["BTCUSDT"]
    assert spec.qp >= 5                       # spot quantities are finer than the futures rules
    assert spec.fmt_price(book.best_bid()[0]) == "87648.20" and book.last_update_id == 9
    assert spec.fmt_qty(book.best_ask()[1]).rstrip("0") == "0.25"
