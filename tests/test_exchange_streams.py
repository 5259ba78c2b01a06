"""Websocket streams of ``ofi exchange``: book sync from the snapshot, subscriptions, the user
data stream, listenKey expiry, dropped connections, and the replay of a real recording."""
import json
import time

import pytest
import requests
from websockets.sync.client import connect

from exchange_harness import start_exchange, um_client

pytestmark = pytest.mark.timeout(60)


def _recv(ws, timeout=5.0):
    return json.loads(ws.recv(timeout=timeout))


def _collect(ws, seconds):
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(_recv(ws, max(0.01, end - time.monotonic())))
        except TimeoutError:
            break
    return out


def _sync_book(port, stream_url, stream, symbol="BTCUSDT", seconds=1.5):
    """Binance's algorithm: buffer diffs, snapshot, drop u < L, first U <= L <= u, then pu == u."""
    with connect(stream_url) as ws:
        buf = _collect(ws, 0.4)
        snap = requests.get(f"http://127.0.0.1:{port}/fapi/v1/depth",
                            params={"symbol": symbol, "limit": 1000}, timeout=5).json()
        buf += _collect(ws, seconds)
        snap2 = requests.get(f"http://127.0.0.1:{port}/fapi/v1/depth",
                             params={"symbol": symbol, "limit": 1000}, timeout=5).json()
        buf += _collect(ws, 0.5)
    diffs = [m["data"] for m in buf if m.get("stream") == stream]
    L = snap["lastUpdateId"]
    book = {"b": dict(snap["bids"]), "a": dict(snap["asks"])}
    prev, applied, at_snap2 = None, 0, None
    for d in diffs:
        if d["u"] < L:
            continue
        if prev is None:
            assert d["U"] <= L <= d["u"]
        else:
            assert d["pu"] == prev
        prev = d["u"]
        for side in ("b", "a"):
            for p, q in d[side]:
                if float(q) == 0:
                    book[side].pop(p, None)
                else:
                    book[side][p] = q
        applied += 1
        if d["u"] == snap2["lastUpdateId"]:
            at_snap2 = {"b": dict(book["b"]), "a": dict(book["a"])}
    assert applied > 3
    return at_snap2, snap2


def test_exchange_ws_depth_diffs_sync_with_rest_snapshot(procs, home):
    _, port, _ = start_exchange(procs, home)
    url = f"ws://127.0.0.1:{port}/public/stream?streams=btcusdt@depth@0ms"
    local, snap2 = _sync_book(port, url, "btcusdt@depth@0ms")
    # replaying the diffs onto the first snapshot gives exactly the second snapshot
    assert local == {"b": dict(snap2["bids"]), "a": dict(snap2["asks"])}
    url = f"ws://127.0.0.1:{port}/stream?streams=btcusdt@depth@100ms"
    _sync_book(port, url, "btcusdt@depth@100ms")


def test_exchange_ws_subscribe_list_unsubscribe_and_stream_kinds(procs, home):
    _, port, _ = start_exchange(procs, home)
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        streams = ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@depth5@100ms",
                   "btcusdt@markPrice@1s"]
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
        seen, end = {}, time.monotonic() + 8
        while time.monotonic() < end and len(seen) < 5:
            m = _recv(ws)
            if "id" in m:
                assert m == {"result": None, "id": 1}
                continue
            kind = m["e"] + (":5" if m["e"] == "depthUpdate" else "")
            seen.setdefault(kind, m)
        assert set(seen) == {"trade", "aggTrade", "bookTicker", "depthUpdate:5", "markPriceUpdate"}
        assert len(seen["depthUpdate:5"]["b"]) == 5 and seen["trade"]["X"] == "MARKET"
        ask = float(seen["bookTicker"]["a"])
        assert float(seen["bookTicker"]["b"]) < ask
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": streams[1:], "id": 2}))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        replies = [m for m in _collect(ws, 1.0) if "id" in m]
        assert {"result": ["btcusdt@trade"], "id": 3} in replies
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@nope"], "id": 4}))
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": [], "id": "x"}))
        errs = [m for m in _collect(ws, 1.0) if "error" in m]
        assert [e["error"]["code"] for e in errs] == [2, 2]


def test_exchange_user_stream_order_trade_and_account_updates(procs, home):
    _, port, _ = start_exchange(procs, home)
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    assert c.new_listen_key()["listenKey"] == lk        # the active key again
    assert c.renew_listen_key(lk)["listenKey"] == lk
    with connect(f"ws://127.0.0.1:{port}/private/ws/{lk}") as ws:
        c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.050",
                    newClientOrderId="ws-1")
        events = []
        while not any(e["e"] == "ACCOUNT_UPDATE" for e in events):
            events.append(_recv(ws))
    updates = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert updates[0]["x"] == "NEW" and updates[0]["c"] == "ws-1"
    fills = [u for u in updates if u["x"] == "TRADE"]
    assert fills and fills[-1]["X"] == "FILLED" and fills[-1]["z"] == "0.050"
    assert sum(float(f["l"]) for f in fills) == pytest.approx(0.05)   # z is cumulative, l the last
    assert all(f["N"] == "USDT" and float(f["n"]) > 0 and f["m"] is False for f in fills)
    acct = [e for e in events if e["e"] == "ACCOUNT_UPDATE"][0]["a"]
    assert acct["m"] == "ORDER" and acct["P"][0]["pa"] == "0.050"
    c.close_listen_key(lk)


def test_exchange_listen_key_expiry_pushes_listen_key_expired(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", "listenkey_expire_s=1")
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    with connect(f"ws://127.0.0.1:{port}/ws/{lk}") as ws:
        ev = _recv(ws, timeout=5)
    assert ev["e"] == "listenKeyExpired" and ev["listenKey"] == lk
    from binance.error import ClientError
    with pytest.raises(ClientError) as exc:
        c.renew_listen_key(lk)
    assert exc.value.error_code == -1125


def test_exchange_ws_drop_fault_disconnects_clients(procs, home):
    _, port, _ = start_exchange(procs, home, "--faults", "ws_drop=0.05,seed=2")
    with connect(f"ws://127.0.0.1:{port}/ws/btcusdt@depth@0ms") as ws:
        with pytest.raises(Exception) as exc:
            while True:
                ws.recv(timeout=10)
        assert "TimeoutError" not in type(exc.value).__name__


def test_exchange_replay_republishes_recorded_stream_and_snapshot_syncs(procs, home, data_dir):
    src = data_dir / "hftbacktest" / "usdm" / "btcusdt_20240718.gz"
    _, port, ready = start_exchange(procs, home, "--feed", "replay", "--input", str(src),
                                    "--speed", "5")
    assert ready["symbols"] == ["BTCUSDT"] and ready["feed"] == "replay"
    url = f"ws://127.0.0.1:{port}/stream?streams=btcusdt@depth@0ms/btcusdt@trade"
    local, snap2 = _sync_book(port, url, "btcusdt@depth@0ms", seconds=2.0)
    assert local is not None

    def top(levels, n, reverse):
        return sorted(levels.items(), key=lambda kv: float(kv[0]), reverse=reverse)[:n]

    # the real book is deeper than the 1000-level snapshot: compare the top 100 levels
    assert top(local["b"], 100, True) == top(dict(snap2["bids"]), 100, True)
    assert top(local["a"], 100, False) == top(dict(snap2["asks"]), 100, False)
    # the real messages go out unchanged: recorded ids, prices and flags
    with connect(f"ws://127.0.0.1:{port}/ws/btcusdt@trade") as ws:
        t = _recv(ws)
    assert t["e"] == "trade" and t["s"] == "BTCUSDT" and 1721347000000 < t["T"] < 1721348000000
    assert t["X"] == "MARKET" and isinstance(t["m"], bool)


def test_exchange_official_connector_websocket_client_gets_chained_depth(procs, home):
    from binance.websocket.um_futures.websocket_client import UMFuturesWebsocketClient

    _, port, _ = start_exchange(procs, home)
    got = []
    client = UMFuturesWebsocketClient(stream_url=f"ws://127.0.0.1:{port}",
                                      on_message=lambda _, msg: got.append(json.loads(msg)))
    try:
        client.diff_book_depth(symbol="btcusdt", speed=100, id=7)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum("u" in m for m in got) < 8:
            time.sleep(0.05)
    finally:
        client.stop()
    assert {"result": None, "id": 7} in got
    diffs = [m for m in got if m.get("e") == "depthUpdate"]
    assert len(diffs) >= 8
    assert all(b["pu"] == a["u"] for a, b in zip(diffs, diffs[1:]))


def test_exchange_replay_aggtrades_csv_publishes_aggtrade_stream_with_readme_sums(procs, home,
                                                                                 data_dir):
    src = data_dir / "binance_vision_spot" / "BTCUSDT-aggTrades-2026-01-01.csv"
    _, port, ready = start_exchange(procs, home, "--feed", "replay", "--input", str(src),
                                    "--speed", "0", "--replay-wait")
    assert ready["symbols"] == ["BTCUSDT"]
    got = []
    with connect(f"ws://127.0.0.1:{port}/ws/btcusdt@aggTrade", max_size=None) as ws:
        deadline = time.monotonic() + 30
        while len(got) < 5000 and time.monotonic() < deadline:
            got.append(_recv(ws, max(0.1, deadline - time.monotonic())))
    assert len(got) == 5000
    first = got[0]
    assert set(first) == {"e", "E", "a", "s", "p", "q", "f", "l", "T", "m"}
    assert first["e"] == "aggTrade" and first["s"] == "BTCUSDT" and first["a"] == 3800397495
    assert first["p"] == "87648.21000000" and first["q"] == "0.08185000" and first["m"] is True
    assert first["T"] == first["E"] == 1767225600039          # µs in the file, ms on the wire
    assert [m["a"] for m in got] == list(range(3800397495, 3800397495 + 5000))
    buy = sum(float(m["q"]) for m in got if not m["m"])
    sell = sum(float(m["q"]) for m in got if m["m"])        # m == true: the taker sold
    assert buy == pytest.approx(48.52389, abs=1e-6) and sell == pytest.approx(31.22047, abs=1e-6)
    # no depth in the source: the REST book is empty, the prices follow the trades
    depth = requests.get(f"http://127.0.0.1:{port}/fapi/v1/depth",
                         params={"symbol": "BTCUSDT"}, timeout=5).json()
    assert depth["bids"] == [] and depth["asks"] == [] and depth["lastUpdateId"] == 0
    price = requests.get(f"http://127.0.0.1:{port}/fapi/v1/ticker/price",
                         params={"symbol": "BTCUSDT"}, timeout=5).json()["price"]
    assert float(price) == pytest.approx(float(got[-1]["p"]))
