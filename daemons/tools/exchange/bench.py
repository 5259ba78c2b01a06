"""``ofi bench exchange``: orders per second (place + cancel, one signed client) and the REST
round trip p50/p99 on loopback, against a freshly started ``ofi exchange`` on a free port."""
from __future__ import annotations

import http.client
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from .signing import sign

KEY, SECRET = "bench-key", "bench-secret"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _start(home: str) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "daemons.tools.exchange", "--port", "0", "--home", home,
           "--api-key", KEY, "--api-secret", SECRET, "--balance", "100000000",
           "--faults", "weight_limit=1000000000,order_limit=1000000000,order_limit_10s=1000000000"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            line = p.stdout.readline()
            if "ofi-ready" in line:
                return p, json.loads(line)["port"]
        if p.poll() is not None:
            break
    p.kill()
    raise RuntimeError("the exchange did not become ready")


def run(seconds: float = 5.0) -> dict:
    """Start the exchange, measure, stop it; returns the figures."""
    with tempfile.TemporaryDirectory() as home:
        proc, port = _start(home)
        try:
            return _measure(port, seconds)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _measure(port: int, seconds: float) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"X-MBX-APIKEY": KEY}

    def call(method: str, path: str, query: str, signed: bool) -> tuple[float, dict]:
        if signed:
            query = f"{query}&timestamp={int(time.time() * 1000)}".lstrip("&")
            query += "&signature=" + sign(SECRET, query)
        t0 = time.perf_counter()
        conn.request(method, f"{path}?{query}" if query else path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {body[:200]!r}")
        return dt, json.loads(body)

    for _ in range(200):                     # warm up
        call("GET", "/fapi/v1/time", "", False)
    ping = [call("GET", "/fapi/v1/time", "", False)[0] for _ in range(1000)]
    _, bt = call("GET", "/fapi/v1/ticker/bookTicker", "symbol=BTCUSDT", False)
    price = f"{float(bt['bidPrice']) * 0.97:.1f}"        # rests: never fills
    place, cancel = [], []
    n = 0
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < seconds:
        dt, order = call("POST", "/fapi/v1/order",
                         f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010"
                         f"&price={price}&newClientOrderId=bench-{n}", True)
        place.append(dt)
        dt, _ = call("DELETE", "/fapi/v1/order", f"symbol=BTCUSDT&orderId={order['orderId']}", True)
        cancel.append(dt)
        n += 1
    elapsed = time.perf_counter() - t_start
    market = []
    for i in range(200):
        side = "BUY" if i % 2 == 0 else "SELL"
        market.append(call("POST", "/fapi/v1/order",
                           f"symbol=BTCUSDT&side={side}&type=MARKET&quantity=0.010", True)[0])
    conn.close()
    ms = 1000.0
    signed = place + cancel
    return {
        "orders_per_s": round(n / elapsed, 1),
        "place_cancel_cycles": n,
        "signed_requests_per_s": round(2 * n / elapsed, 1),
        "seconds": round(elapsed, 2),
        "rtt_ms": {
            "unsigned_time": {"p50": round(_pct(ping, 0.5) * ms, 3), "p99": round(_pct(ping, 0.99) * ms, 3)},
            "signed_place": {"p50": round(_pct(place, 0.5) * ms, 3), "p99": round(_pct(place, 0.99) * ms, 3)},
            "signed_cancel": {"p50": round(_pct(cancel, 0.5) * ms, 3), "p99": round(_pct(cancel, 0.99) * ms, 3)},
            "signed_all": {"p50": round(_pct(signed, 0.5) * ms, 3), "p99": round(_pct(signed, 0.99) * ms, 3),
                           "mean": round(statistics.fmean(signed) * ms, 3)},
            "market_fill": {"p50": round(_pct(market, 0.5) * ms, 3), "p99": round(_pct(market, 0.99) * ms, 3)},
        },
        "client": "one http.client keep-alive connection, HMAC-signed, same host (2 cores shared)",
    }
