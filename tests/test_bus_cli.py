"""``ofi tail``, ``ofi bus stats`` and ``ofi bus append`` as subprocesses, effects checked
through the bus API."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import orjson
import pytest
from conftest import OFI

from conftest import read_line as _read_line
from bus import open_bus

SINKS = ["jsonl", "sqlite"]


def ofi(*args, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*OFI, *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def _records(home, topic="trades"):
    bus = open_bus(home)
    reader = bus.reader(topic)
    out = []
    while True:
        items = reader.read()
        if not items:
            break
        out.extend(r for r, _ in items)
    reader.close()
    bus.close()
    return out


@pytest.mark.parametrize("sink", SINKS)
def test_bus_cli_append_stdin_lines_become_records(home, sink):
    lines = [{"type": "trade", "price": 1.5 + i, "symbol": "BTCUSDT"} for i in range(5)]
    r = ofi("bus", "append", "trades", "--home", home, "--sink", sink,
            stdin="".join(orjson.dumps(x).decode() + "\n" for x in lines))
    assert r.returncode == 0, r.stderr
    recs = _records(home)
    assert [x["seq"] for x in recs] == [1, 2, 3, 4, 5]
    assert [x["price"] for x in recs] == [1.5, 2.5, 3.5, 4.5, 5.5]
    assert open_bus(home).sink_of("trades") == sink


@pytest.mark.parametrize("sink", SINKS)
def test_bus_cli_append_bad_lines_deadlettered_rest_appended(home, sink):
    stdin = '{"type": "trade", "n": 1}\nnot json\n{"no_type": 1}\n{"type": "trade", "n": 2}\n'
    r = ofi("bus", "append", "trades", "--home", home, "--sink", sink, stdin=stdin)
    assert r.returncode == 1
    assert "appended 2 record(s) to trades; 2 to deadletter" in r.stderr
    assert "Traceback" not in r.stderr
    assert [x["n"] for x in _records(home)] == [1, 2]
    dead = _records(home, "deadletter")
    assert [(d["raw"], d["position"]) for d in dead] == [("not json", {"line": 2}),
                                                         ('{"no_type": 1}', {"line": 3})]
    assert "unparseable JSON" in dead[0]["reason"] and "type" in dead[1]["reason"]


@pytest.mark.parametrize("sink", SINKS)
def test_bus_cli_append_while_writer_holds_topic_one_line_error(home, procs, sink):
    code = ("import sys, bus; b = bus.open_bus(sys.argv[1], sink=sys.argv[2]); "
            "w = b.writer('trades'); print('ready', flush=True); sys.stdin.read()")
    holder = procs([sys.executable, "-c", code, str(home), sink], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    r = ofi("bus", "append", "trades", "--home", home, "--sink", sink,
            stdin='{"type": "trade"}\n')
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"topic 'trades' already has a writer (pid {holder.pid})" in r.stderr
    holder.stdin.close()
    holder.wait(10)
    assert _records(home) == []


@pytest.mark.parametrize("sink", SINKS)
def test_bus_cli_tail_json_prints_records_exactly_as_stored(home, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("signals")
    w.append_many([{"type": "signal", "fusion": 0.1 * i, "note": "é\u2028"} for i in range(50)])
    w.close()
    r = ofi("tail", "signals", "--home", home, "--from-start", "--no-follow", "--json")
    assert r.returncode == 0, r.stderr
    d = os.path.join(home, "bus", "signals")
    if sink == "jsonl":
        stored = open(os.path.join(d, "current.jsonl"), encoding="utf-8").read()
    else:
        conn = sqlite3.connect(os.path.join(d, "records.db"))
        stored = "".join(b + "\n" for (b,) in conn.execute("SELECT body FROM records ORDER BY seq"))
        conn.close()
    assert r.stdout == stored
    assert [orjson.loads(x)["seq"] for x in r.stdout.split("\n")[:-1]] == list(range(1, 51))
    # without --json: one readable line per record; the end (default) shows nothing yet
    r = ofi("tail", "signals", "--home", home, "--no-follow")
    assert r.returncode == 0 and r.stdout == ""
    r = ofi("tail", "signals", "--home", home, "--from-start", "--no-follow")
    assert r.stdout.count("\n") == 50 and "fusion=" in r.stdout.split("\n")[0]
    bus.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sink", SINKS)
def test_bus_cli_tail_follows_new_records(home, procs, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    w.append({"type": "trade", "n": -1})           # before the tail: not shown (from the end)
    p = procs([*OFI, "tail", "trades", "--home", str(home), "--json"], stdout=subprocess.PIPE)
    # the tail has started once it sleeps on its waker
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with open(f"/proc/{p.pid}/wchan") as f:
            if "poll" in f.read():
                break
        time.sleep(0.01)
    for n in range(3):
        w.append({"type": "trade", "n": n})
    got = [orjson.loads(_read_line(p))["n"] for _ in range(3)]
    assert got == [0, 1, 2]
    w.close()
    bus.close()


@pytest.mark.parametrize("sink", SINKS)
def test_bus_cli_stats_counts_and_lag(home, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    w.append_many([{"type": "trade", "n": n} for n in range(10)])
    w.close()
    c = bus.consumer("trades", "signal")
    items = c.poll(4)
    c.mark(items[-1][1])
    c.close()
    bus.close()
    r = ofi("bus", "stats", "--home", home, "--json")
    assert r.returncode == 0, r.stderr
    data = orjson.loads(r.stdout)
    t = data["topics"]["trades"]
    assert (t["sink"], t["records"], t["last_seq"]) == (sink, 10, 10) and t["bytes"] > 0
    assert data["consumers"] == [{"consumer": "signal", "topic": "trades", "position": 4,
                                  "lag": 6}]
    r = ofi("bus", "stats", "--home", home)
    assert r.returncode == 0 and "trades" in r.stdout and "signal" in r.stdout


def test_bus_cli_unknown_topic_one_line_error(home):
    r = ofi("tail", "nosuch", "--home", home, "--no-follow")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
