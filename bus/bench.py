"""``ofi bench bus``: append and read rates, and writer-to-reader latency across two processes.

- ``append_per_s``: ``append_many`` of 1,000 records; ``append_single_per_s``: ``append``, one
  ``write(2)`` (JSONL) or one commit (SQLite) per record.
- ``read_per_s``: a consumer as a daemon runs it (poll up to 2,000, mark, commit) over a spool.
- ``latency_us``: the writer stamps ``t`` = ``time.monotonic_ns()`` (system-wide, so comparable
  across processes) into each record just before appending it; the reader, a fresh process
  running a daemon's loop (poll up to 2,000, mark, commit, sleep on the inotify waker when
  idle), subtracts it from ``monotonic_ns()`` taken right after the poll that returned the
  record. Two cadences: 1,000 records/s on absolute deadlines, and the writer's full
  single-record rate.
"""
from __future__ import annotations

import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import orjson

from . import open_bus

LATENCY_BATCH = 2000    # records the latency reader takes per poll (daemon.batch, default)
PAYLOAD = {"type": "trade", "symbol": "BTCUSDT", "price": "63943.90", "qty": "0.012",
           "side": "buy", "E": 1721347022504, "T": 1721347022504, "t": 0}


def _pct(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def _summary_us(lat_ns: list[int]) -> dict:
    s = sorted(lat_ns)
    return {"p50": round(_pct(s, 0.50) / 1000, 1), "p99": round(_pct(s, 0.99) / 1000, 1),
            "max": round(s[-1] / 1000, 1) if s else 0.0, "n": len(s)}


def append_rate(sink: str, n: int, batch: int) -> float:
    """Records per second appended, in batches of ``batch`` (1 = one write each)."""
    home = tempfile.mkdtemp(prefix="ofi-bench-")
    try:
        bus = open_bus(home, sink=sink)
        w = bus.writer("trades")
        payloads = [dict(PAYLOAD, t=i) for i in range(batch)]
        t0 = time.perf_counter()
        done = 0
        if batch == 1:
            one = payloads[0]
            append = w.append
            for _ in range(n):
                append(one)
            done = n
        else:
            while done < n:
                w.append_many(payloads)
                done += batch
        dt = time.perf_counter() - t0
        w.close()
        bus.close()
        return done / dt
    finally:
        shutil.rmtree(home, ignore_errors=True)


def read_rate(sink: str, n: int, batch: int = 2000) -> float:
    """Records per second delivered by a consumer (poll, mark, commit: a daemon's path) from
    a spool of ``n`` records."""
    home = tempfile.mkdtemp(prefix="ofi-bench-")
    try:
        bus = open_bus(home, sink=sink)
        w = bus.writer("trades")
        payloads = [dict(PAYLOAD, t=i) for i in range(1000)]
        for _ in range(n // 1000):
            w.append_many(payloads)
        w.close()
        c = bus.consumer("trades", "bench", start="beginning")
        t0 = time.perf_counter()
        got = 0
        while True:
            items = c.poll(batch)
            if not items:
                break
            got += len(items)
            c.mark(items[-1][1])
            c.commit()
        dt = time.perf_counter() - t0
        c.close()
        bus.close()
        assert got == n // 1000 * 1000, (got, n)
        return got / dt
    finally:
        shutil.rmtree(home, ignore_errors=True)


def reader_main(argv: list[str]) -> None:
    """The latency reader, a fresh process as supervisord would start a daemon: a daemon's
    loop (poll, handle, mark, commit; sleep on the waker when idle). Prints ``ready``, then
    the latencies as one JSON line."""
    home, sink, n, batch = argv[0], argv[1], int(argv[2]), int(argv[3])
    bus = open_bus(home, sink=sink)
    bus.watch("trades")
    c = bus.consumer("trades", "bench", start="beginning")
    lat = []
    expect = 1
    mono = time.monotonic_ns
    print("ready", flush=True)
    while len(lat) < n:
        items = c.poll(batch)
        if not items:
            bus.wait(0.5)
            continue
        now = mono()
        for rec, _pos in items:
            if rec["seq"] != expect:
                print(orjson.dumps({"error": f"seq {rec['seq']} arrived, expected {expect}"})
                      .decode(), flush=True)
                return
            expect += 1
            lat.append(now - rec["t"])
        c.mark(items[-1][1])
        c.commit()
    print(orjson.dumps({"lat": lat, "wakeups": bus.waker.wakeups,
                        "timeouts": bus.waker.timeouts}).decode(), flush=True)
    c.close()
    bus.close()


def _line(proc: subprocess.Popen, timeout: float) -> bytes:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"latency reader silent for {timeout} s")
    return proc.stdout.readline()


def latency(sink: str, n: int, rate: float | None, batch: int = LATENCY_BATCH) -> dict:
    """Writer-to-reader latency of ``n`` records at ``rate`` per second (None: full rate)."""
    home = tempfile.mkdtemp(prefix="ofi-bench-")
    proc = None
    try:
        bus = open_bus(home, sink=sink)
        w = bus.writer("trades")
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from bus.bench import reader_main; "
             "reader_main(sys.argv[1:])", home, sink, str(n), str(batch)],
            stdout=subprocess.PIPE)
        if _line(proc, 30).strip() != b"ready":
            raise RuntimeError("latency reader failed to start")
        time.sleep(0.05)          # let it fall asleep on its waker
        mono = time.monotonic_ns
        payload = dict(PAYLOAD)
        t_start = time.perf_counter()
        if rate:
            period = 1.0 / rate
            deadline = time.perf_counter()
            for _ in range(n):
                deadline += period
                delay = deadline - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                payload["t"] = mono()
                w.append(payload)
        else:
            for _ in range(n):
                payload["t"] = mono()
                w.append(payload)
        write_s = time.perf_counter() - t_start
        result = orjson.loads(_line(proc, 60))
        proc.wait(10)
        w.close()
        bus.close()
        if "error" in result:
            raise RuntimeError(result["error"])
        out = _summary_us(result["lat"])
        out["writer_per_s"] = round(n / write_s)
        out["poll_batch"] = batch
        out["reader_wakeups"] = result["wakeups"]
        return out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(home, ignore_errors=True)


def _median_of(runs: int, fn, *args) -> float:
    return statistics.median(fn(*args) for _ in range(runs))


def run(sinks=("jsonl", "sqlite"), n_rate: int = 500_000, n_latency: int = 10_000,
        quick: bool = False) -> dict:
    """The whole benchmark; returns the figures as a dict (the JSON of ``ofi bench bus``).

    Rates are the median of 3 runs (1 with ``quick``); latencies cover ``n_latency`` records
    at 1,000/s and 50,000 at the writer's full rate (10,000 with ``quick``), long enough for
    the steady state to outweigh the start of the burst (which ``max`` still shows).
    """
    runs, n_burst = 3, max(n_latency, 50_000)
    if quick:
        n_rate, n_latency, runs, n_burst = 50_000, 2_000, 1, 10_000
    out = {}
    for sink in sinks:
        n = n_rate if sink == "jsonl" else n_rate // 2
        n_single = min(n, 200_000) if sink == "jsonl" else min(n, 20_000)
        out[sink] = {
            "append_per_s": round(_median_of(runs, append_rate, sink, n, 1000)),
            "append_single_per_s": round(_median_of(runs, append_rate, sink, n_single, 1)),
            "read_per_s": round(_median_of(runs, read_rate, sink, n)),
            "latency_us": {
                "1000/s": latency(sink, n_latency, 1000.0),
                "max_rate": latency(sink, n_burst, None),
            },
        }
    return out
