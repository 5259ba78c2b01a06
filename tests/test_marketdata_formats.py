"""Recorded-file formats: detection, CSV variants, hftbacktest and websocket JSON lines."""
from __future__ import annotations

import gzip

import orjson
import pytest

from daemons.marketdata import formats
from daemons.marketdata.replay import Replay
from daemons.signal.offline import run_files

ROWS_SPOT = [  # spot aggTrades layout, µs times, True/False
    "3800397495,87648.21000000,0.08185000,5723703861,5723703861,1767225600039409,True,True",
    "3800397496,87648.22000000,0.00013000,5723703862,5723703862,1767225600272386,False,True",
    "3800397497,87648.22000000,0.00023000,5723703863,5723703863,1767225601276733,False,True",
]


def _write(path, text, gz=False):
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


@pytest.mark.parametrize("header,unit,boolean,gz", [
    (False, "us", "True", False), (True, "ms", "true", False), (True, "us", "true", True),
    (False, "ms", "false", True),
])
def test_marketdata_aggtrades_csv_variants_give_same_trades(tmp_path, header, unit, boolean, gz):
    lines = []
    for row in ROWS_SPOT:
        c = row.split(",")
        if unit == "ms":
            c[5] = str(int(c[5]) // 1000)
        c[6] = boolean if c[6] == "True" else ("false" if boolean.islower() else "False")
        lines.append(",".join(c[:7] if header else c))
    if header:
        lines.insert(0, "agg_trade_id,price,quantity,first_trade_id,last_trade_id,"
                        "transact_time,is_buyer_maker")
    path = _write(tmp_path / "BTCUSDT-aggTrades-x.csv", "\n".join(lines) + "\n", gz)
    assert formats.detect(path) == "csv_aggtrades"
    recs = list(Replay([path]))
    assert [r["T"] for r in recs] == [1767225600039, 1767225600272, 1767225601276]
    assert [r["side"] for r in recs] == (["sell", "buy", "buy"] if boolean.lower() == "true"
                                         else ["buy", "buy", "buy"])
    assert recs[0]["symbol"] == "BTCUSDT" and recs[0]["qty"] == 0.08185


def test_marketdata_futures_trades_and_bookticker_csv_merge_by_time(tmp_path):
    trades = _write(tmp_path / "t.csv", "id,price,qty,quote_qty,time,is_buyer_maker\n"
                    "1,100.0,0.5,50.0,1721347201000,true\n2,100.1,0.25,25.0,1721347202500,false\n")
    book = _write(tmp_path / "b.csv", "1,99.9,1.0,100.1,2.0,1721347200900,1721347200901\n"
                  "2,100.0,1.5,100.1,2.0,1721347202000,1721347202001\n")
    assert formats.detect(trades) == "csv_trades"
    assert formats.detect(book) == "csv_bookticker"
    recs = list(Replay([trades, book], symbol="ETHUSDT"))
    assert [r["type"] for r in recs] == ["book", "trade", "book", "trade"]
    sigs = list(run_files([trades, book], "ETHUSDT"))
    assert [s["bucket_ms"] - 1721347200000 for s in sigs] == [0, 1000, 2000]
    assert sigs[-1]["cvd"] == -0.25 and sigs[2]["ofi_l1"] == 1.5  # bid up: +new bid qty


def test_marketdata_websocket_json_lines_bare_and_combined(tmp_path):
    msgs = [
        {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1721347200000, "T": 1721347200000, "s": "BTCUSDT",
                                             "t": 1, "p": "10", "q": "2", "X": "MARKET", "m": False}},
        {"e": "bookTicker", "u": 5, "s": "BTCUSDT", "b": "9", "B": "1", "a": "11", "A": "1",
         "T": 1721347200001, "E": 1721347200001},
        {"e": "trade", "E": 1721347200002, "T": 1721347200002, "s": "BTCUSDT", "t": 2, "p": "10", "q": "1",
         "X": "INSURANCE_FUND", "m": True},
        {"stream": "btcusdt@markPrice@1s", "data": {"e": "markPriceUpdate", "E": 1721347200003, "s": "BTCUSDT"}},
    ]
    path = _write(tmp_path / "ws.jsonl", "\n".join(orjson.dumps(m).decode() for m in msgs) + "\n")
    assert formats.detect(path) == "wsjson"
    kinds = [m.kind for m in formats.read_messages(path)]
    assert kinds == ["trade", "bookTicker", "trade", "other"]
    sigs = list(run_files([path], "BTCUSDT"))
    assert len(sigs) == 1 and sigs[0]["buy_qty"] == 2.0 and sigs[0]["trades"] == 1


def test_marketdata_hftbacktest_units_and_spot_bookticker(data_dir):
    usdm = str(data_dir / "hftbacktest/usdm/btcusdt_20230404.dat.gz")  # µs stamps
    first = next(formats.read_messages(usdm))
    assert formats.detect(usdm) == "hftbacktest" and first.recv_ts == 1680652700423
    spot = str(data_dir / "hftbacktest/spot/btcusdt_20240808.gz")  # ns stamps
    book = next(m for m in formats.read_messages(spot) if m.kind == "bookTicker")
    rec = formats.book_record(book.data, book.recv_ts)
    assert rec["E"] is None and rec["recv_ts"] == 1723161254087 and rec["symbol"] == "BTCUSDT"


def test_marketdata_unknown_format_is_one_clear_error(tmp_path):
    path = _write(tmp_path / "x.txt", "hello world\n")
    with pytest.raises(formats.FormatError, match="unknown format"):
        formats.detect(path)
