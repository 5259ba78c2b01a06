"""harvest against a loopback venue that replays real recorded Binance USD-M messages.

The venue (:class:`FakeVenue`) is a websockets server on 127.0.0.1 serving the combined-stream
paths and ``GET /fapi/v1/depth`` on the same port. It streams the recording from the diff that
bridges the recorded REST snapshot, keeps its own book in step (the oracle), and can drop a
diff, cut every connection, or go silent on the open ones, at given message indices.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from bus import open_bus
from conftest import OFI, free_port, wait_for

RECORDING = "hftbacktest/usdm/btcusdt_20240718.gz"
LEVELS = 5
# a message harvest must dead-letter: a bookTicker with a NaN price
GARBAGE = ('{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"s":"BTCUSDT",'
           '"b":"NaN","B":"1","a":"2","A":"1","T":1,"E":1}}')


class Oracle:
    """The plain book a recording implies: a snapshot, then absolute level quantities."""

    def __init__(self, snap: dict):
        self.bids = {float(p): float(q) for p, q in snap["bids"]}
        self.asks = {float(p): float(q) for p, q in snap["asks"]}
        self.last_u = snap["lastUpdateId"]

    def apply(self, diff: dict) -> None:
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
        self.last_u = diff["u"]

    def top(self, n: int) -> tuple[list, list]:
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return [[p, q] for p, q in bids], [[p, q] for p, q in asks]


def load_recording(path) -> tuple[dict, list[tuple[str, str, dict]]]:
    """(snapshot, messages from the bridging diff on) of an hftbacktest recording."""
    snap, msgs = None, []
    with gzip.open(path, "rt") as f:
        for line in f:
            _, text = line.rstrip("\n").split(" ", 1)
            obj = json.loads(text)
            if "stream" not in obj:
                snap = obj
                continue
            msgs.append((obj["stream"], text, obj["data"]))
    last = snap["lastUpdateId"]
    start = next(i for i, (s, _, d) in enumerate(msgs)
                 if "@depth" in s and d["U"] <= last <= d["u"])
    return snap, msgs[start:]


def expected_tops(snap: dict, msgs) -> dict[int, tuple[list, list]]:
    """Diff u -> the oracle's top levels after that diff."""
    book, out = Oracle(snap), {}
    for stream, _, data in msgs:
        if "@depth" in stream:
            book.apply(data)
            out[data["u"]] = book.top(LEVELS)
    return out


class Conn:
    def __init__(self, ws, streams):
        self.ws = ws
        self.streams = streams
        self.stalled = False
        self.pongs = 0


class FakeVenue:
    """Loopback Binance stand-in; see the module docstring."""

    def __init__(self, snap, msgs, *, rate=2500.0, expect=1, drop=(), disconnect=(),
                 stall=(), garbage=(), fail_snapshots=0):
        self.snap, self.msgs = snap, msgs
        self.rate, self.expect = rate, expect
        self.drop, self.disconnect, self.stall = set(drop), set(disconnect), set(stall)
        self.garbage = set(garbage)
        self.fail_snapshots = fail_snapshots
        self.oracle = Oracle(snap)
        self.conns: set[Conn] = set()
        self.paths: list[str] = []
        self.closes: list[tuple[int | None, str]] = []
        self.snapshot_requests = 0
        self.delivered = {"trade": [], "bookTicker": [], "depth": []}
        self.dropped_diffs: list[dict] = []
        self.pongs = 0
        self.done = threading.Event()
        self.port = free_port()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10), "venue did not start"
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self):
        return f"http://127.0.0.1:{self.port}"

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._enough = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", self.port, process_request=self._http,
                         compression=None):
            self._ready.set()
            feed = asyncio.create_task(self._feed())
            await self._stop.wait()
            feed.cancel()

    def _http(self, connection, request):
        if not request.path.startswith("/fapi/v1/depth"):
            return None  # a websocket handshake
        self.snapshot_requests += 1
        if self.fail_snapshots > 0:
            self.fail_snapshots -= 1
            return connection.respond(503, "Service Unavailable\n")
        bids = sorted(self.oracle.bids.items(), reverse=True)[:1000]
        asks = sorted(self.oracle.asks.items())[:1000]
        body = json.dumps({"lastUpdateId": self.oracle.last_u, "E": 0, "T": 0,
                           "bids": [[f"{p:.2f}", f"{q:.3f}"] for p, q in bids],
                           "asks": [[f"{p:.2f}", f"{q:.3f}"] for p, q in asks]}).encode()
        return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                            ("Content-Length", str(len(body)))]), body)

    async def _handler(self, ws):
        url = urlsplit(ws.request.path)
        self.paths.append(ws.request.path)
        streams = set(parse_qs(url.query).get("streams", [""])[0].split("/"))
        conn = Conn(ws, streams)
        self.conns.add(conn)
        if len(self.conns) >= self.expect:
            self._enough.set()
        pinger = asyncio.create_task(self._ping(conn))
        try:
            await ws.wait_closed()
        finally:
            pinger.cancel()
            self.conns.discard(conn)
            self.closes.append((ws.close_code, url.path))

    async def _ping(self, conn):
        # pings must be answered while the client reads: count the pongs
        while True:
            await asyncio.sleep(0.2)
            try:
                await asyncio.wait_for(await conn.ws.ping(), 2)
            except Exception:
                return
            conn.pongs += 1
            self.pongs += 1

    async def _feed(self):
        await self._enough.wait()
        t0 = time.monotonic()
        for i, (stream, text, data) in enumerate(self.msgs):
            if i in self.disconnect:
                for c in list(self.conns):
                    c.ws.transport.abort()  # the network goes away: no close frame
                self._enough.clear()
            if i in self.stall:
                for c in self.conns:
                    c.stalled = True
            if i in self.garbage:
                for c in list(self.conns):
                    await c.ws.send(GARBAGE)
            kind = stream.split("@", 1)[1].split("@")[0]
            if kind == "depth":
                self.oracle.apply(data)
                if i in self.drop:
                    self.dropped_diffs.append(data)
                    continue
            sent = False
            for c in list(self.conns):
                if not c.stalled and stream in c.streams:
                    try:
                        await c.ws.send(text)
                        sent = True
                    except Exception:
                        pass
            if sent:
                self.delivered[kind].append(data)
            if i % 50 == 0:
                ahead = t0 + i / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        self.done.set()


def index_of_depth(msgs, nth: int) -> int:
    """Message index of the nth depth diff."""
    seen = 0
    for i, (stream, _, _) in enumerate(msgs):
        if "@depth" in stream:
            seen += 1
            if seen == nth:
                return i
    raise IndexError(nth)


def write_config(tmp_path, venue, **harvest) -> str:
    cfg = {
        "symbols": ["BTCUSDT"],
        "venue": {"ws_url": venue.ws_url, "rest_url": venue.rest_url} if venue else {},
        "daemon": {"heartbeat_s": 0.2},
        "harvest": {"streams": ["trade", "bookTicker", "depth@0ms"], "route": "routed",
                    "depth_levels": LEVELS, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
                    "stall_timeout_s": 0.5, "snapshot_min_interval_s": 0.05, **harvest},
    }
    path = tmp_path / "harvest.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def start_harvest(procs, home, config, tmp_path, **environ):
    out = open(tmp_path / "harvest.out", "wb")
    env = dict(os.environ, OFI_LOG_LEVEL="info")
    env.pop("OFI_WS_URL", None)
    env.pop("OFI_REST_URL", None)
    env.update(environ)
    return procs(OFI + ["daemon", "harvest", "--home", str(home), "--config", config],
                 stdout=out, stderr=open(tmp_path / "harvest.err", "wb"), env=env)


def log_lines(tmp_path) -> list[dict]:
    out = []
    for line in (tmp_path / "harvest.out").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def harvest_output(tmp_path):
    """The tails of the harvest process's stdout and stderr (for a failed wait)."""
    return lambda: ((tmp_path / "harvest.out").read_text()[-3000:]
                    + (tmp_path / "harvest.err").read_text()[-3000:])


def read_topic(home, topic) -> list[dict]:
    bus = open_bus(home)
    try:
        if not os.path.isdir(os.path.join(home, "bus", topic)):
            return []
        reader = bus.reader(topic)
        out = []
        while True:
            batch = reader.read(100000)
            if not batch:
                break
            out.extend(rec for rec, _ in batch)
        reader.close()
        return out
    finally:
        bus.close()


def stop(proc, timeout=10) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


@pytest.fixture(scope="module")
def recording(data_dir):
    return load_recording(data_dir / RECORDING)


@pytest.mark.timeout(60)
def test_harvest_faulty_venue_book_resyncs_and_records_every_gap(recording, home, procs,
                                                                 tmp_path):
    snap, msgs = recording
    drop_at = index_of_depth(msgs, 600)
    cut_at = index_of_depth(msgs, 1200)
    stall_at = index_of_depth(msgs, 1900)
    with FakeVenue(snap, msgs, expect=2, drop=[drop_at], disconnect=[cut_at], stall=[stall_at],
                   garbage=[drop_at + 7], fail_snapshots=1) as venue:
        proc = start_harvest(procs, home, write_config(tmp_path, venue), tmp_path)
        wait_for(venue.done.is_set, 40, "the venue to play the recording", proc=proc,
                 detail=harvest_output(tmp_path))
        last_depth = venue.delivered["depth"][-1]["u"]
        last_book = venue.delivered["bookTicker"][-1]["u"]
        wait_for(lambda: (read_topic(home, "depth") or [{}])[-1].get("u") == last_depth
                 and (read_topic(home, "book") or [{}])[-1].get("u") == last_book,
                 15, "harvest to catch up", proc=proc, detail=harvest_output(tmp_path))
        assert stop(proc) == 0
        paths = sorted(set(venue.paths))
        pongs = venue.pongs

    depth = read_topic(home, "depth")
    diffs = [r for r in depth if r["type"] == "depth"]
    gaps = [r for r in depth if r["type"] == "gap"]
    snaps = [r for r in depth if r["type"] == "snapshot"]
    tops = expected_tops(snap, msgs)

    # routed layout: book streams on /public, trades on /market, one connection each
    assert paths == ["/market/stream?streams=btcusdt@trade",
                     "/public/stream?streams=btcusdt@bookTicker/btcusdt@depth@0ms"]
    assert pongs > 0
    # every depth record equals the book built straight from the recording at that update id
    assert len(diffs) > 0.8 * len(venue.delivered["depth"])
    for rec in diffs:
        bids, asks = tops[rec["u"]]
        assert rec["bids"] == bids and rec["asks"] == asks, rec["u"]
    # the dropped diff is reported as a gap naming the broken link, then the book re-syncs
    dropped = venue.dropped_diffs[0]
    assert any(g["got_pu"] == dropped["u"] and g["expected_pu"] == dropped["pu"] for g in gaps)
    # the cut and the stall lose diffs too: a gap, a fresh snapshot, each time
    assert len(gaps) >= 3 and len(snaps) >= 4
    # and no break in the chain of depth records goes without a gap record before it
    prev_u = None
    for rec in depth:
        if rec["type"] == "depth":
            if prev_u is not None:
                assert rec["pu"] == prev_u, f"unrecorded gap before u={rec['u']}"
            prev_u = rec["u"]
        elif rec["type"] == "gap":
            prev_u = None
    # trades and tickers: exactly what the venue delivered, once each
    trades = read_topic(home, "trades")
    assert [t["t"] for t in trades] == [d["t"] for d in venue.delivered["trade"]]
    book = read_topic(home, "book")
    assert [b["u"] for b in book] == [d["u"] for d in venue.delivered["bookTicker"]]
    # the malformed message went to deadletter (on every connection it came) and harvest went on
    dead = read_topic(home, "deadletter")
    assert len(dead) == 2 and all(d["raw"] == GARBAGE and d["stage"] == "harvest" for d in dead)
    assert "out of range" in dead[0]["reason"]
    # the log tells the story: reconnects after the cut and after the stall
    downs = [ln for ln in log_lines(tmp_path) if ln["event"] == "disconnected"]
    assert any("stall" in ln["reason"] for ln in downs)
    # the stall, and only it, is a stale_feed alert for the operator
    alerts = read_topic(home, "alerts")
    assert alerts and {a["kind"] for a in alerts} == {"stale_feed"}
    assert all("stall" in a["message"] and a["source"] == "harvest" for a in alerts)
    assert sum(1 for ln in log_lines(tmp_path) if ln["event"] == "connected") >= 6


@pytest.mark.timeout(30)
def test_harvest_daemon_sigterm_closes_websocket_exits_zero(recording, home, procs, tmp_path):
    snap, msgs = recording
    with FakeVenue(snap, msgs[:3000], expect=1, rate=1000) as venue:
        # the venue's URLs come from the environment this time
        config = write_config(tmp_path, None, route="legacy")
        proc = start_harvest(procs, home, config, tmp_path, OFI_WS_URL=venue.ws_url + "/ws",
                             OFI_REST_URL=venue.rest_url)
        wait_for(lambda: any("ofi-ready" in ln.get("event", "") for ln in log_lines(tmp_path)),
                 15, "the ready line", proc=proc, detail=harvest_output(tmp_path))
        beat_path = home / "run" / "harvest.json"
        wait_for(lambda: beat_path.exists() and json.loads(beat_path.read_text()).get("messages", 0)
                 > 100, 15, "messages in the heartbeat", proc=proc,
                 detail=harvest_output(tmp_path))
        beat = json.loads(beat_path.read_text())
        assert beat["connected"] is True and beat["ready"] is True
        assert stop(proc) == 0
        wait_for(lambda: venue.closes, 5, "the server to see the close")
        assert venue.closes[0] == (1000, "/stream")
        assert venue.paths == ["/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@0ms"]
    lines = log_lines(tmp_path)
    events = [ln["event"] for ln in lines]
    assert events.index("connected") < events.index("ofi-ready")
    assert events[-1] == "stopped"


@pytest.mark.timeout(30)
def test_harvest_connection_older_than_limit_reconnects_on_purpose(recording, home, procs,
                                                                   tmp_path):
    snap, msgs = recording
    with FakeVenue(snap, msgs, expect=2, rate=1500) as venue:
        config = write_config(tmp_path, venue, reconnect_before_s=0.5)
        proc = start_harvest(procs, home, config, tmp_path)
        rotations = lambda: [ln for ln in log_lines(tmp_path)  # noqa: E731
                             if ln["event"] == "disconnected" and "rotate" in ln["reason"]]
        wait_for(lambda: len(rotations()) >= 4, 15, "planned reconnects", proc=proc,
                 detail=harvest_output(tmp_path))
        assert stop(proc) == 0
    assert all(ln["retry_in_s"] == 0 for ln in rotations())
    assert {ln["group"] for ln in rotations()} == {"market", "public"}
    # planned cuts close cleanly (1000) from our side
    assert sum(1 for code, _ in venue.closes if code == 1000) >= 4


@pytest.mark.timeout(60)
def test_harvest_against_local_exchange_syncs_book_and_records_trades(home, procs, tmp_path):
    from exchange_harness import start_exchange, stop_exchange

    ex, port, _ = start_exchange(procs, tmp_path / "exchange-home")
    config = write_config(tmp_path, None, streams=["trade", "bookTicker", "depth@100ms"],
                          stall_timeout_s=10.0)
    proc = start_harvest(procs, home, config, tmp_path, OFI_WS_URL=f"ws://127.0.0.1:{port}",
                         OFI_REST_URL=f"http://127.0.0.1:{port}")
    kinds = lambda: {r["type"] for r in read_topic(home, "depth")}  # noqa: E731
    wait_for(lambda: {"snapshot", "depth"} <= kinds() and read_topic(home, "trades")
             and read_topic(home, "book"), 30, "records from the local exchange", proc=proc,
             detail=harvest_output(tmp_path))
    assert stop(proc) == 0
    assert stop_exchange(ex) == 0
    depth = [r for r in read_topic(home, "depth") if r["type"] == "depth"]
    assert all(a["u"] == b["pu"] for a, b in zip(depth, depth[1:]))
    top = depth[-1]
    assert top["bids"][0][0] < top["asks"][0][0] and len(top["bids"]) == LEVELS


@pytest.mark.timeout(30)
def test_harvest_unreachable_venue_retries_without_ready_and_stops_on_sigterm(home, procs,
                                                                             tmp_path):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, None, reconnect_min_s=0.05, reconnect_max_s=0.2)
    proc = start_harvest(procs, home, config, tmp_path, OFI_WS_URL=f"ws://127.0.0.1:{port}",
                         OFI_REST_URL=f"http://127.0.0.1:{port}")
    downs = lambda: [ln for ln in log_lines(tmp_path) if ln["event"] == "disconnected"]  # noqa
    wait_for(lambda: len(downs()) >= 6, 15, "connection attempts", proc=proc,
             detail=harvest_output(tmp_path))
    assert all(ln["retry_in_s"] <= 0.2 for ln in downs())
    assert stop(proc) == 0
    assert not any(ln["event"] == "ofi-ready" for ln in log_lines(tmp_path))


@pytest.mark.timeout(30)
def test_harvest_bad_venue_url_fails_with_config_error(home, procs, tmp_path):
    config = write_config(tmp_path, None)
    port = free_port()  # nothing listens there, and nothing may connect
    proc = start_harvest(procs, home, config, tmp_path, OFI_WS_URL=f"https://127.0.0.1:{port}",
                         OFI_REST_URL=f"https://127.0.0.1:{port}")
    assert proc.wait(20) == 2
    fatal = [ln for ln in log_lines(tmp_path) if ln["event"] == "fatal"]
    assert len(fatal) == 1 and "ws:// or wss://" in fatal[0]["error"]
    assert "Traceback" not in (tmp_path / "harvest.err").read_text()
