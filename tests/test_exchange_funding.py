"""Mark price and funding on ``ofi exchange``: <s>@markPrice streams, premiumIndex, funding at an
accelerated schedule (wallet, GET /fapi/v1/income, ACCOUNT_UPDATE m=FUNDING_FEE), unrealized PnL
from the mark."""
import json
import time
from collections import Counter
from decimal import Decimal

import pytest
import requests
from websockets.sync.client import connect

from exchange_harness import ccxt_client, start_exchange, um_client

pytestmark = pytest.mark.timeout(60)

RATE = "0.001"
FLAGS = ("--symbols", "BTCUSDT", "ETHUSDT", "--funding-interval-s", "1", "--funding-rate", RATE)


def _funding_events(ws, n, timeout=10.0):
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n:
        e = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if e.get("e") == "ACCOUNT_UPDATE" and e["a"]["m"] == "FUNDING_FEE":
            out.append(e)
    return out


def test_funding_charges_positions_and_reconciles_wallet_income_and_events(procs, home):
    _, port, _ = start_exchange(procs, home, *FLAGS)
    c = um_client(port)
    lk = c.new_listen_key()["listenKey"]
    with connect(f"ws://127.0.0.1:{port}/private/ws/{lk}") as ws:
        c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.050")
        c.new_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.500")
        events = _funding_events(ws, 6)           # three funding times, two positions each
        # right after a funding time: a second before the next one
        incomes = c.get_income_history(limit=1000)
        wallet = Decimal(c.balance()[0]["balance"])
        more = _funding_events(ws, 2)
    funding = [r for r in incomes if r["incomeType"] == "FUNDING_FEE"]
    # the wallet is the start plus every income, each listed once
    assert wallet == Decimal("10000") + sum(Decimal(r["income"]) for r in incomes)
    assert {r["incomeType"] for r in incomes} == {"COMMISSION", "FUNDING_FEE"}
    assert len({r["tranId"] for r in incomes}) == len(incomes)
    assert all(r["time"] % 1000 == 0 and r["asset"] == "USDT" and r["info"] == "FUNDING_FEE"
               for r in funding)
    per_time = Counter(r["time"] for r in funding)
    assert len(per_time) >= 3 and set(per_time.values()) == {2}
    btc = [Decimal(r["income"]) for r in funding if r["symbol"] == "BTCUSDT"]
    eth = [Decimal(r["income"]) for r in funding if r["symbol"] == "ETHUSDT"]
    assert all(x < 0 for x in btc) and all(x > 0 for x in eth)   # positive rate: longs pay shorts
    mark = Decimal(c.mark_price("BTCUSDT")["markPrice"])
    assert abs(btc[-1] + Decimal("0.050") * mark * Decimal(RATE)) < Decimal("0.05")
    # one ACCOUNT_UPDATE per payment: the balance only (cross), bc = the fee, wb = the wallet
    by_key = {(r["time"], r["income"]) for r in funding}
    for e in events:
        a = e["a"]
        assert a["P"] == [] and a["B"][0]["a"] == "USDT"
        assert (e["T"], a["B"][0]["bc"]) in by_key
    assert events[-1]["a"]["B"][0]["wb"] == f"{wallet:.8f}"
    assert more[0]["T"] > events[-1]["T"]
    # filters and paging of GET /fapi/v1/income
    only = c.get_income_history(incomeType="FUNDING_FEE", symbol="ETHUSDT", limit=1000)
    assert only and {(r["incomeType"], r["symbol"]) for r in only} == {("FUNDING_FEE", "ETHUSDT")}
    page1 = c.get_income_history(incomeType="FUNDING_FEE", limit=2, page=1)
    page2 = c.get_income_history(incomeType="FUNDING_FEE", limit=2, page=2)
    assert [r["tranId"] for r in page1 + page2] == [r["tranId"] for r in funding[:4]]
    first = funding[0]["time"]
    assert all(r["time"] == first for r in
               c.get_income_history(incomeType="FUNDING_FEE", startTime=first, endTime=first))
    # unrealized PnL from the mark
    pos = c.get_position_risk(symbol="BTCUSDT")[0]
    up = Decimal(pos["positionAmt"]) * (Decimal(pos["markPrice"]) - Decimal(pos["entryPrice"]))
    assert abs(Decimal(pos["unRealizedProfit"]) - up) < Decimal("0.00001")


def test_mark_price_streams_and_premium_index(procs, home):
    _, port, _ = start_exchange(procs, home, *FLAGS)
    with connect(f"ws://127.0.0.1:{port}/market/ws/btcusdt@markPrice@1s") as ws:
        ev = json.loads(ws.recv(timeout=5))
    assert set(ev) == {"e", "E", "s", "p", "ap", "i", "P", "r", "T"}
    assert ev["e"] == "markPriceUpdate" and ev["s"] == "BTCUSDT" and ev["r"] == "0.00100000"
    assert isinstance(ev["E"], int) and isinstance(ev["T"], int) and ev["T"] > ev["E"]
    assert ev["T"] - ev["E"] <= 1000 and ev["T"] % 1000 == 0
    assert float(ev["p"]) > 0 and len(ev["p"].split(".")[1]) == 8
    t0 = time.monotonic()
    with connect(f"ws://127.0.0.1:{port}/market/stream?streams=ethusdt@markPrice") as ws:
        msg = json.loads(ws.recv(timeout=5))
        msg2 = json.loads(ws.recv(timeout=5))
    assert msg["stream"] == "ethusdt@markPrice" and msg["data"]["s"] == "ETHUSDT"
    assert 2500 < msg2["data"]["E"] - msg["data"]["E"] < 3500       # every 3 s
    assert time.monotonic() - t0 < 8
    pi = requests.get(f"http://127.0.0.1:{port}/fapi/v1/premiumIndex",
                      params={"symbol": "BTCUSDT"}, timeout=5).json()
    assert pi["lastFundingRate"] == "0.00100000" and pi["nextFundingTime"] % 1000 == 0
    assert pi["markPrice"] == pi["indexPrice"]
    assert len(requests.get(f"http://127.0.0.1:{port}/fapi/v1/premiumIndex", timeout=5).json()) == 2
    e = ccxt_client(port)
    e.load_markets()
    fr = e.fetch_funding_rate("BTC/USDT:USDT")
    assert fr["fundingRate"] == pytest.approx(0.001) and fr["markPrice"] > 0
