"""The harvest stage: market data in, ``trades`` / ``book`` / ``depth`` records out.

Live (``harvest.source: live``): a :class:`~.wsclient.LiveFeed` thread holds the websocket
connections and fetches snapshots; it queues what it gets and wakes the loop. ``tick`` drains
the queue through :class:`~.live.LiveBooks` and carries out its actions (emit, dead-letter,
ask for a snapshot, log). The ready line comes once every connection is open.

Replay (``harvest.source: replay``): the recorded ``harvest.inputs`` are opened (ready line),
then ``tick`` emits what the :class:`~.replay.Pacer` says is due. A restarted replay skips the
records the topics already hold from the same inputs.

Live market data comes from the venue of the broker mode (``daemons.venue.resolve``), under the
same production guard as the broker: in any mode but ``live`` a production Binance host is
refused at start (exit code 2), although market data is public. A mock, sim or testnet run
trades on prices of the venue it trades on, and one misplaced OFI_WS_URL/OFI_REST_URL cannot
half-connect a pipeline to production. To record or study production market data without
trading, run harvest in live mode without the broker (``ofi run --mode live --enable
harvest,signal``: no keys needed, nothing is sent), or replay recordings.
"""
from __future__ import annotations

import json
import os
import queue
import time

from daemons import config as configmod
from daemons import venue as venuemod
from daemons.marketdata.formats import FormatError
from daemons.runtime import Stage, write_json_atomic

from . import streams as streamsmod
from .live import LiveBooks
from .replay import Pacer, open_replay, topic_of
from .wsclient import LiveFeed


OUTPUTS = ("trades", "book", "depth")


class HarvestStage(Stage):
    """Binance USD-M market data (websocket or recorded files) to trades, book and depth."""

    name = "harvest"
    inputs = ()
    outputs = OUTPUTS

    def __init__(self, ctx):
        super().__init__(ctx)
        self.h = ctx.settings.harvest
        self.symbols = [s.upper() for s in ctx.settings.symbols]
        self.source = self.h.source
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.feed: LiveFeed | None = None
        self.books: LiveBooks | None = None
        self.pacer: Pacer | None = None
        self.max_drain = 20000
        self._replay_state = os.path.join(ctx.state_dir, "harvest_replay.json")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.source == "replay":   # allowed values checked at load (config.CHOICES)
            self._start_replay()
        else:
            self._start_live()

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
            self.feed = None

    def tick(self, now: float) -> None:
        if self.books is not None:
            self._drain()
        elif self.pacer is not None:
            self._pace()

    def idle_timeout(self) -> float | None:
        if self.pacer is not None:
            return self.pacer.wait(time.monotonic())
        return None  # live: the feed thread wakes the loop

    def health(self) -> dict:
        if self.books is not None:
            out = self.books.health()
            out["source"] = "live"
            out["queued"] = self.queue.qsize()
            return out
        if self.pacer is not None:
            return {"source": "replay", "connected": True, "messages": self.pacer.emitted,
                    "gaps": self._replay_gaps(), "replay_done": self.pacer.done,
                    "last_event_ms": self.pacer.last_event_ms, "event_lag_ms": None}
        return {"source": self.source, "connected": False}

    # -- live ------------------------------------------------------------------------------------
    def _start_live(self) -> None:
        # the mode's venue (sim: the local exchange; testnet/live: Binance's defaults), refused
        # before anything connects when a mode but live names a production Binance host
        venue = venuemod.resolve(self.ctx.config)
        ws_url, rest_url = venue.get("ws_url"), venue.get("rest_url")
        if not ws_url:
            raise configmod.ConfigError("config: harvest.source is live but venue.ws_url is not "
                                        "set (config key venue.ws_url or OFI_WS_URL)")
        kinds = list(self.h.streams)
        if any(k.startswith("depth") for k in kinds) and not rest_url:
            raise configmod.ConfigError("config: depth streams need venue.rest_url for the book "
                                        "snapshot (config key venue.rest_url or OFI_REST_URL)")
        try:
            urls = streamsmod.connection_urls(ws_url, self.symbols, kinds, self.h.route)
        except ValueError as exc:
            raise configmod.ConfigError(f"config: harvest: {exc}") from None
        depth_groups = [g for g, u in urls.items() if "@depth" in u]
        self.books = LiveBooks(urls, self.h.depth_levels, depth_groups)
        self.feed = LiveFeed(
            urls, rest_url, self._put,
            reconnect_min_s=self.h.reconnect_min_s, reconnect_max_s=self.h.reconnect_max_s,
            stall_timeout_s=self.h.stall_timeout_s,
            rotate_after_s=self.h.reconnect_before_s,
            open_timeout_s=self.h.open_timeout_s, snapshot_limit=self.h.snapshot_limit,
            rest_timeout_s=self.h.rest_timeout_s,
            snapshot_min_interval_s=self.h.snapshot_min_interval_s)
        self.ctx.log.info("connecting", urls=urls, rest_url=rest_url)
        self.feed.start()
        # the ready line waits for every connection; SIGTERM meanwhile ends the process
        while not self.books.connected:
            if self.ctx.stopping:
                self.stop()
                raise SystemExit(0)
            self._drain()
            if not self.books.connected:
                self.ctx.bus.wait(0.2)

    def _put(self, item: tuple) -> None:
        # called on the feed thread
        self.queue.put(item)
        self.ctx.wake()

    def _drain(self) -> None:
        books, q, ctx = self.books, self.queue, self.ctx
        batches: dict[str, list] = {}
        for _ in range(self.max_drain):
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            for act in books.handle(item):
                kind = act.kind
                if kind == "emit":
                    batches.setdefault(act.a, []).append(act.b)
                elif kind == "dead":
                    ctx.bus.deadletter(act.a, act.b, source=act.c, stage=self.name)
                    ctx.log.warning("deadletter", reason=act.a, source=act.c)
                elif kind == "snapshot":
                    self.feed.request_snapshot(act.a)
                elif kind == "log":
                    ctx.log.log(act.a, act.b, **act.c)
                elif kind == "alert":
                    ctx.alert(act.a, act.b, **act.c)
        for topic, payloads in batches.items():
            ctx.emit_many(topic, payloads)
        if not q.empty():
            ctx.wake()  # more to do: come back at once

    # -- replay ----------------------------------------------------------------------------------
    def _start_replay(self) -> None:
        inputs = [os.path.expanduser(p) for p in self.h.inputs]
        if not inputs:
            raise configmod.ConfigError("config: harvest.source is replay but harvest.inputs "
                                        "lists no file")
        for p in inputs:
            if not os.path.isfile(p):
                raise configmod.ConfigError(f"config: harvest.inputs: no such file: {p}")
        try:
            self.replay = open_replay(inputs, self.symbols, self.h.depth_levels)
        except FormatError as exc:
            raise configmod.ConfigError(f"config: harvest.inputs: {exc}") from None
        skip = self._resume_point(inputs)
        self.pacer = Pacer(self.replay, self.h.speed, skip=skip)
        self.ctx.log.info("replay opened", inputs=inputs, speed=self.h.speed,
                          symbols=self.symbols, resumed_after=skip)

    def _resume_point(self, inputs: list[str]) -> int:
        """Records of this replay already in the topics (0 for a new replay)."""
        seqs = {t: self.ctx.writers[t].seq for t in OUTPUTS}
        key = {"inputs": [os.path.abspath(p) for p in inputs], "symbols": self.symbols,
               "levels": self.h.depth_levels}
        try:
            with open(self._replay_state) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = None
        if state and state.get("key") == key:
            return sum(seqs[t] - state["base"].get(t, 0) for t in OUTPUTS)
        # the topics' sequence numbers before this replay: all a resume needs later
        write_json_atomic(self._replay_state, {"key": key, "base": seqs})
        return 0

    def _replay_gaps(self) -> int:
        return self.replay.gaps if self.pacer is not None else 0

    def _pace(self) -> None:
        recs = self.pacer.take(time.monotonic())
        if recs:
            batches: dict[str, list] = {}
            for rec in recs:
                batches.setdefault(topic_of(rec), []).append(rec)
            for topic, payloads in batches.items():
                self.ctx.emit_many(topic, payloads)
        elif self.pacer.done and not getattr(self, "_told_done", False):
            self._told_done = True
            self.ctx.log.info("replay finished", records=self.pacer.emitted,
                              messages=self.replay.messages, gaps=self.replay.gaps)
            if self.pacer.emitted == 0:
                self.ctx.log.warning("replay produced no records", symbols=self.symbols)
