"""harvest's replay source over the real recordings, run as a daemon process."""
from __future__ import annotations

import gzip
import json

import pytest
import yaml

from conftest import wait_for
from test_harvest_live import Oracle, harvest_output, read_topic, start_harvest, stop

USDM = "hftbacktest/usdm"


def replay_config(tmp_path, inputs, symbols=("BTCUSDT",), speed=0.0) -> str:
    cfg = {"symbols": list(symbols), "daemon": {"heartbeat_s": 0.2},
           "harvest": {"source": "replay", "inputs": [str(p) for p in inputs], "speed": speed,
                       "depth_levels": 5}}
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def heartbeat(home) -> dict:
    try:
        return json.loads((home / "run" / "harvest.json").read_text())
    except (OSError, ValueError):
        return {}


def replay_to_end(procs, home, config, tmp_path, timeout=40):
    proc = start_harvest(procs, home, config, tmp_path)
    wait_for(lambda: heartbeat(home).get("replay_done"), timeout, "the replay to end", proc=proc,
             detail=harvest_output(tmp_path))
    assert stop(proc) == 0


def recorded_book(path):
    """The oracle book after the last diff of a recording, and the number of diffs it applied."""
    snap, diffs = None, []
    with gzip.open(path, "rt") as f:
        for line in f:
            obj = json.loads(line.split(" ", 1)[1])
            if "stream" not in obj:
                snap = obj
            elif "@depth" in obj["stream"]:
                diffs.append(obj["data"])
    book = Oracle(snap)
    applied = [d for d in diffs if d["u"] >= snap["lastUpdateId"]]
    for d in applied:
        book.apply(d)
    return book, len(applied)


@pytest.mark.timeout(60)
def test_harvest_replay_recorded_file_counts_match_readme(data_dir, home, procs, tmp_path):
    src = data_dir / USDM / "btcusdt_20240718.gz"
    replay_to_end(procs, home, replay_config(tmp_path, [src]), tmp_path)
    trades, book, depth = (read_topic(home, t) for t in ("trades", "book", "depth"))
    # README: 974 trades, 7113 bookTicker; depth: every diff from the bridging one on
    oracle, n_diffs = recorded_book(src)
    assert len(trades) == 974
    assert len(book) == 7113
    assert [r["type"] for r in depth].count("snapshot") == 1
    assert [r["type"] for r in depth].count("gap") == 0
    diffs = [r for r in depth if r["type"] == "depth"]
    assert len(diffs) == n_diffs
    assert [diffs[-1]["bids"], diffs[-1]["asks"]] == list(oracle.top(5))
    # CVD reference sums of the README
    buy = sum(t["qty"] for t in trades if t["side"] == "buy")
    sell = sum(t["qty"] for t in trades if t["side"] == "sell")
    assert round(buy, 3) == 54.397 and round(sell, 3) == 41.516
    for rec in trades[:5] + book[:5] + diffs[:5]:
        assert rec["E"] and rec["recv_ts"] and rec["symbol"] == "BTCUSDT"


@pytest.mark.timeout(90)
def test_harvest_replay_two_symbols_merged_in_exchange_time_order(data_dir, home, procs,
                                                                  tmp_path):
    files = [data_dir / USDM / "btcusdt_20240718.gz", data_dir / USDM / "ethusdt_20240718.gz"]
    replay_to_end(procs, home, replay_config(tmp_path, files, ("BTCUSDT", "ETHUSDT")), tmp_path)
    trades, book = read_topic(home, "trades"), read_topic(home, "book")
    assert len(trades) == 974 + 1640 and len(book) == 7113 + 9089
    assert all(a["T"] <= b["T"] for a, b in zip(trades, trades[1:]))
    assert all(a["E"] <= b["E"] for a, b in zip(book, book[1:]))
    assert {t["symbol"] for t in trades} == {"BTCUSDT", "ETHUSDT"}


@pytest.mark.timeout(60)
def test_harvest_replay_speed_paces_in_exchange_time(data_dir, home, procs, tmp_path):
    src = data_dir / USDM / "btcusdt_20240718.gz"
    speed = 120.0
    replay_to_end(procs, home, replay_config(tmp_path, [src], speed=speed), tmp_path)
    book = read_topic(home, "book")
    exchange_span = (book[-1]["E"] - book[0]["E"]) / 1000
    wall_span = (book[-1]["ts"] - book[0]["ts"]) / 1000
    assert exchange_span / speed * 0.8 <= wall_span <= exchange_span / speed * 2 + 1.0
    # at a quarter of the way in exchange time, about a quarter of the way in wall time
    quarter = next(b for b in book if b["E"] >= book[0]["E"] + exchange_span * 250)
    elapsed = (quarter["ts"] - book[0]["ts"]) / 1000
    assert elapsed >= exchange_span / speed * 0.25 * 0.8


@pytest.mark.timeout(60)
def test_harvest_replay_restart_resumes_without_duplicates(data_dir, home, procs, tmp_path):
    src = data_dir / USDM / "btcusdt_20240718.gz"
    proc = start_harvest(procs, home, replay_config(tmp_path, [src], speed=30.0), tmp_path)
    wait_for(lambda: len(read_topic(home, "trades")) > 100, 20, "some trades", proc=proc,
             detail=harvest_output(tmp_path))
    assert stop(proc) == 0
    partial = len(read_topic(home, "book"))
    assert 0 < partial < 7113
    replay_to_end(procs, home, replay_config(tmp_path, [src], speed=0.0), tmp_path)
    trades, book = read_topic(home, "trades"), read_topic(home, "book")
    assert [t["t"] for t in trades] == sorted({t["t"] for t in trades})
    assert len(trades) == 974 and len(book) == 7113


@pytest.mark.timeout(30)
def test_harvest_replay_missing_input_fails_with_one_line(home, procs, tmp_path):
    proc = start_harvest(procs, home, replay_config(tmp_path, [tmp_path / "nope.gz"]), tmp_path)
    assert proc.wait(20) == 2
    out = (tmp_path / "harvest.out").read_text()
    assert "no such file" in out and "ofi-ready" not in out
    assert "Traceback" not in (tmp_path / "harvest.err").read_text()
