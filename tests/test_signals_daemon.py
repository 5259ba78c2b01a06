"""The signal daemon as a real process: restart equivalence after SIGKILL, bad input."""
from __future__ import annotations

import os
import signal

import orjson
import pytest

from bus import open_bus
from conftest import wait_for
from daemons.harvest.replay import topic_of
from daemons.marketdata.replay import Replay
from daemons.signal.offline import run_files

FILES = ["hftbacktest/usdm/btcusdt_20240718.gz"]


def _fill(home, records, extra=None):
    bus = open_bus(home)
    buf = {"trades": [], "book": [], "depth": []}
    for r in records:
        buf[topic_of(r)].append(r)
    for topic, recs in (extra or {}).items():
        buf[topic].extend(recs)
    for topic, recs in buf.items():
        w = bus.writer(topic)
        w.append_many(recs)
        w.close()
    bus.close()
    return {t: len(v) for t, v in buf.items()}


def _signals(home):
    bus = open_bus(home)
    r = bus.reader("signals")
    out = []
    while True:
        batch = r.read(5000)
        if not batch:
            break
        out.extend(rec for rec, _ in batch)
    r.close()
    bus.close()
    return [{k: v for k, v in s.items() if k not in ("seq", "ts", "trace")} for s in out]


def _config(tmp_path, batch, save_every):
    path = tmp_path / f"cfg-{batch}.yaml"
    path.write_text(f"daemon:\n  batch: {batch}\nsignal:\n  save_every_s: {save_every}\n")
    return str(path)


def _beat(home):
    try:
        with open(os.path.join(home, "run", "signal.json"), "rb") as f:
            return orjson.loads(f.read())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _done(home, counts):
    def check():
        b = _beat(home)
        return b and b.get("ready") and b.get("positions") == counts
    return check


def _start(procs, home, cfg):
    from conftest import OFI
    return procs(OFI + ["daemon", "signal", "--home", str(home), "--config", cfg],
                 stdout=open(os.path.join(home, "out.log"), "ab"), stderr=open(os.path.join(home, "err.log"), "ab"))


@pytest.fixture(scope="module")
def records(data_dir):
    return list(Replay([str(data_dir / f) for f in FILES], symbols={"BTCUSDT"}))


def test_signals_daemon_sigkill_restart_equals_clean_run(tmp_path, procs, records, data_dir):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    counts = _fill(clean, records)
    _fill(killed, records)
    cfg = _config(tmp_path, 100, 0.05)

    p = _start(procs, clean, cfg)
    wait_for(_done(clean, counts), 60, "the clean run to finish")
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 0
    want = _signals(clean)
    assert len(want) > 150

    p = _start(procs, killed, cfg)
    wait_for(lambda: len(_signals(killed)) >= 40, 60, "signals before the kill")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    assert len(_signals(killed)) < len(want)  # really mid-stream
    p = _start(procs, killed, cfg)
    wait_for(_done(killed, counts), 60, "the restarted run to finish")
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 0
    got = _signals(killed)
    assert got == want
    # the daemon and `ofi signals` run the same code: its output is a prefix of the offline one
    offline = list(run_files([str(data_dir / f) for f in FILES], "BTCUSDT"))
    assert want == offline[:len(want)]


def test_signals_daemon_bad_records_go_to_deadletter(tmp_path, procs, records):
    home = tmp_path / "home"
    bad = [
        {"type": "trade", "symbol": "BTCUSDT", "T": 1721347022600, "E": 1721347022600,
         "price": 1.0, "qty": -1.0, "side": "buy", "X": "MARKET", "recv_ts": 1},
        {"type": "book", "symbol": "BTCUSDT", "E": 1721347022600, "bid": 1.0, "ask": 2.0,
         "bid_qty": 1.0, "recv_ts": 1},
        {"type": "trade", "symbol": "BTCUSDT", "T": 1721347022600, "price": "NaN", "qty": 1.0,
         "side": "buy", "recv_ts": 1},
    ]
    counts = _fill(home, records[:3000], {"trades": [bad[0], bad[2]], "book": [bad[1]]})
    p = _start(procs, home, _config(tmp_path, 2000, 0.2))
    wait_for(_done(home, counts), 60, "the run to finish")
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 0
    bus = open_bus(home)
    r = bus.reader("deadletter")
    dead = [rec for rec, _ in r.read(100)]
    r.close()
    assert len(dead) == 3 and {d["source"] for d in dead} == {"trades", "book"}
    assert any("negative" in d["reason"] for d in dead)
    assert _signals(home)  # and it kept going
