"""``ofi bench broker``: intent-appended to order-acknowledged latency through the broker daemon.

Starts ``ofi exchange`` (no faults) and the broker daemon in sim mode in a scratch home, appends
intents one at a time (alternating BUY/SELL MARKET, so the position stays flat), and times each
from its append to the moment the ``orders`` record carrying the venue's acknowledgement
(NEW / PARTIALLY_FILLED / FILLED) is visible on the bus to another process. Paced runs
(``--gap-ms``) with ``--hang-every N`` leave one order in N hanging until the HTTP timeout. Also reports the
broker's round trip for the order (``place_rtt_*``, from ``exec_log.jsonl``).

Both order transports are measured, one after the other, each with its own exchange and broker
(``broker.order_transport``): ``ws`` (Binance's WebSocket API, ``order.place`` on one persistent
connection) and ``rest`` (``POST /fapi/v1/order``); the figures come out side by side under
``ws`` and ``rest``. ``run(transport="ws")`` measures one.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import orjson

ACK = {"NEW", "PARTIALLY_FILLED", "FILLED"}
TRANSPORTS = ("ws", "rest")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(path: str, proc, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{os.path.basename(path)}: exited with {proc.returncode}")
        try:
            with open(path, "rb") as f:
                if b"ofi-ready" in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{os.path.basename(path)}: not ready after {timeout}s")


def _ws_api_requests(ex_home: str) -> int | None:
    """Requests the exchange answered on its WebSocket API, from its next heartbeat."""
    path = os.path.join(ex_home, "run", "exchange.json")
    start = time.time()
    while time.time() - start < 3.0:
        try:
            if os.path.getmtime(path) > start:
                with open(path, "rb") as f:
                    return orjson.loads(f.read()).get("wsapi_requests")
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return round(s[k], 3)


def run(n: int = 200, symbol: str = "BTCUSDT", qty: float = 0.002, warmup: int = 10,
        gap_ms: float | None = None, hang_every: int = 0, http_timeout_s: float = 5.0,
        transport: str | None = None) -> dict:
    """Measure both order transports (``transport`` None) or one; returns the figures as a
    dict (milliseconds): ``{"ws": {...}, "rest": {...}}``, or one transport's figures."""
    if transport is not None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport is one of {', '.join(TRANSPORTS)}, not {transport!r}")
        return run_one(n, symbol, qty, warmup, gap_ms, hang_every, http_timeout_s, transport)
    return {t: run_one(n, symbol, qty, warmup, gap_ms, hang_every, http_timeout_s, t)
            for t in TRANSPORTS}


def run_one(n: int = 200, symbol: str = "BTCUSDT", qty: float = 0.002, warmup: int = 10,
            gap_ms: float | None = None, hang_every: int = 0, http_timeout_s: float = 5.0,
            transport: str = "ws") -> dict:
    """Measure one transport; returns the figures as a dict (milliseconds).

    ``gap_ms`` None: one intent at a time (append, wait for its acknowledgement). Otherwise an
    intent every ``gap_ms`` without waiting, and with ``hang_every`` N the exchange leaves about
    one order in N unanswered until the broker's HTTP timeout (it is placed; the answer never
    comes): the figures of the other orders show whether they waited for it.
    """
    from bus import open_bus

    tmp = tempfile.mkdtemp(prefix="ofi-bench-broker-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    port = _free_port()
    py = [sys.executable, "-m", "daemons.tools.cli"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("EXECUTOR_MODE", "OFI_MODE", "OFI_REST_URL", "OFI_WS_URL",
                        "OFI_API_KEY", "OFI_API_SECRET", "OFI_HOME")}
    cfg = os.path.join(tmp, "broker.yaml")
    with open(cfg, "w") as f:
        f.write(f"symbols: [{symbol}]\nexchange:\n  port: {port}\nbroker:\n  mode: sim\n"
                f"  http_timeout_s: {http_timeout_s}\n  order_transport: {transport}\n")
    # order-rate limits far away: this measures latency, not the limiter's holds
    spec = "order_limit_10s=1000000,order_limit=1000000"
    if hang_every > 0:
        spec += f",timeout={1.0 / hang_every:.6f},timeout_s={http_timeout_s * 2:g},seed=5"
    faults = ["--faults", spec]
    procs = []
    try:
        ex_log = os.path.join(tmp, "exchange.log")
        with open(ex_log, "wb") as out:
            procs.append(subprocess.Popen(py + ["exchange", "--port", str(port), "--home",
                                                os.path.join(tmp, "ex"), "--symbols", symbol]
                                          + faults,
                                          stdout=out, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        _wait_ready(ex_log, procs[-1], 30)
        br_log = os.path.join(tmp, "broker.log")
        with open(br_log, "wb") as out:
            procs.append(subprocess.Popen(py + ["daemon", "broker", "--home", home, "--config", cfg],
                                          stdout=out, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        _wait_ready(br_log, procs[-1], 30)
        bus = open_bus(home)
        writer = bus.writer("intents")
        reader = bus.reader("orders", start="beginning")
        bus.watch("orders")
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        pid = os.getpid()
        total = n + warmup

        def intent(i: int) -> str:
            cid = f"bench-{pid}-{i}"
            sent[cid] = time.perf_counter()
            writer.append({"type": "intent", "symbol": symbol,
                           "side": "BUY" if i % 2 == 0 else "SELL", "qty": qty,
                           "order_type": "MARKET", "price": None, "reduce_only": False,
                           "client_order_id": cid, "reason": "bench", "signal_seq": i,
                           "bucket_ms": 0, "decision_mid": None, "fusion": None})
            return cid

        def collect(timeout: float, want: str | None = None) -> None:
            """Note the acknowledgements written so far; then wait up to ``timeout`` for more
            (not when ``want`` is already acknowledged)."""
            for rec, _pos in reader.read(1000):
                if isinstance(rec, dict) and rec.get("status") in ACK \
                        and rec.get("client_order_id") in sent \
                        and rec["client_order_id"] not in acked:
                    acked[rec["client_order_id"]] = time.perf_counter()
            if timeout > 0 and (want is None or want not in acked):
                bus.wait(timeout)

        if gap_ms is None:
            for i in range(total):
                cid = intent(i)
                deadline = time.time() + 10
                while cid not in acked:
                    if time.time() > deadline:
                        raise RuntimeError(f"no acknowledgement for {cid} within 10 s")
                    collect(0.5, want=cid)
        else:
            nxt = time.perf_counter()
            for i in range(total):
                while time.perf_counter() < nxt:
                    collect(min(0.005, max(0.0, nxt - time.perf_counter())))
                intent(i)
                nxt += gap_ms / 1000.0
            deadline = time.time() + http_timeout_s * 4 + 20
            while len(acked) < total and time.time() < deadline:
                collect(0.2)
        writer.close()
        reader.close()
        bus.close()
        rtt, hung = [], set()
        with open(os.path.join(home, "log", "exec_log.jsonl"), "rb") as f:
            for line in f:
                e = orjson.loads(line)
                if e.get("action") != "place":
                    continue
                if e.get("outcome") == "ok" and e.get("ms") is not None:
                    rtt.append(e["ms"])
                elif e.get("outcome") == "ambiguous":
                    hung.add(e.get("client_order_id"))
        rtt = rtt[warmup:]
        timed = [f"bench-{pid}-{i}" for i in range(warmup, total)]
        lat = [(acked[c] - sent[c]) * 1000.0 for c in timed if c in acked and c not in hung]
        hung_lat = [(acked[c] - sent[c]) * 1000.0 for c in timed if c in acked and c in hung]
        out = {
            "what": "intent appended -> order acknowledged (orders record visible), broker daemon "
                    f"in sim mode against ofi exchange on loopback, orders over {transport}, "
                    + ("one intent at a time" if gap_ms is None else
                       f"an intent every {gap_ms:g} ms"
                       + (f", about 1 order in {hang_every} left unanswered until the "
                          f"{http_timeout_s:g} s HTTP timeout" if hang_every else "")),
            "n": len(lat), "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90),
            "p99_ms": _pct(lat, 99), "max_ms": round(max(lat), 3) if lat else None,
            "mean_ms": round(sum(lat) / len(lat), 3) if lat else None,
            "transport": transport, "place_rtt_p50_ms": _pct(rtt, 50),
            "place_rtt_p99_ms": _pct(rtt, 99), "exchange_ws_api_requests": _ws_api_requests(os.path.join(tmp, "ex")),
        }
        if gap_ms is not None:
            out["unacknowledged"] = sum(1 for c in timed if c not in acked)
        if hang_every:
            out.update(hung=len([c for c in timed if c in hung]),
                       hung_ack_p50_ms=_pct(hung_lat, 50))
        return out
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
