"""A stateful stage on the runtime, in process: state and input positions saved together,
restored exactly after a crash, and the injected clock."""
from __future__ import annotations

import orjson
import pytest

from bus import BadRecord, open_bus
from daemons import config as configmod
from daemons import runtime


class Summer(runtime.Stage):
    """Sums x of each trade; state: the sum and the trades seen."""

    name = "signal"
    inputs = ("trades",)
    outputs = ("signals",)
    stateful = True
    save_every_s = 3600.0     # the tests save by hand

    def __init__(self, ctx):
        super().__init__(ctx)
        self.total, self.seen, self.restored, self.ticks = 0, [], None, []

    def restore(self, state):
        self.restored = state
        self.total, self.seen = state["total"], list(state["seen"])

    def snapshot(self):
        return {"total": self.total, "seen": list(self.seen)}

    def handle(self, topic, rec):
        if not isinstance(rec.get("x"), int):
            raise BadRecord("x must be an integer")
        self.total += rec["x"]
        self.seen.append(rec["seq"])

    def tick(self, now):
        self.ticks.append((now, self.ctx.now_ms()))


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def cfg(tmp_path):
    return configmod.load(None, {"home": str(tmp_path)})


def append(cfg, xs):
    bus = open_bus(configmod.home_of(cfg))
    w = bus.writer("trades")
    for x in xs:
        w.append({"type": "trade", "x": x})
    w.close()
    bus.close()


def started(cfg, clock=None):
    r = runtime.Runner(Summer, cfg, clock=clock or Clock(1_000.0))
    r.open()
    r.stage.start()
    r.ready = True
    return r


def drain(r):
    while r.step():
        pass


def test_state_and_positions_restored_together_after_a_crash(cfg):
    append(cfg, range(1, 11))
    r = started(cfg)
    drain(r)
    r.save_state()
    assert r.stage.total == 55
    append(cfg, [100, 200, 300])
    drain(r)
    assert r.stage.total == 655
    r.close(save=False)          # a crash: what was handled after the save is not in the state
    r = started(cfg)
    assert r.stage.restored == {"total": 55, "seen": list(range(1, 11))}
    drain(r)
    # the three records after the save are read again, once, and nothing before them
    assert r.stage.total == 655 and r.stage.seen == list(range(1, 14))
    r.close()
    r = started(cfg)             # a clean stop saved everything: nothing is read again
    drain(r)
    assert r.stage.seen == list(range(1, 14))
    r.close()


def test_state_file_holds_state_and_positions(cfg):
    append(cfg, [1, 2])
    r = started(cfg)
    drain(r)
    r.close()
    saved = orjson.loads((configmod.home_of(cfg) / "state" / "signal.json").read_bytes())
    assert saved["runtime"] == runtime.STATE_FORMAT and saved["stage"] == "signal"
    assert saved["state"] == {"total": 3, "seen": [1, 2]}
    assert saved["positions"]["trades"]["seq"] == 2


def test_without_a_state_the_inputs_start_at_the_beginning(cfg):
    append(cfg, [5, 6])
    r = started(cfg)
    drain(r)
    r.close()
    (configmod.home_of(cfg) / "state" / "signal.json").unlink()
    r = started(cfg)   # the consumer file says "after seq 2", but without the state it is moot
    assert r.stage.restored is None
    drain(r)
    assert r.stage.total == 11
    r.close()


def test_bad_records_are_deadlettered_and_their_position_saved(cfg):
    append(cfg, [1, "two", 3])
    r = started(cfg)
    drain(r)
    assert r.stage.total == 4 and r.deadlettered == 1
    r.close()
    bus = open_bus(configmod.home_of(cfg))
    dead = bus.read_all("deadletter")
    bus.close()
    assert [d["reason"] for d in dead] == ["x must be an integer"]
    r = started(cfg)
    drain(r)
    assert r.stage.total == 4 and r.deadlettered == 0
    r.close()


def test_an_unreadable_state_refuses_to_start_with_one_line(cfg):
    state = configmod.home_of(cfg) / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "signal.json").write_text("{not json")
    r = runtime.Runner(Summer, cfg)
    with pytest.raises(configmod.ConfigError, match="signal state .* is unreadable"):
        r.open()
    r.close(save=False)


def test_the_stage_reads_the_injected_clock(cfg):
    clock = Clock(1_700_000_000.25)
    r = started(cfg, clock)
    now = r.clock()
    r.stage.tick(now)
    assert r.stage.ticks == [(1_700_000_000.25, 1_700_000_000_250)]
    clock.t += 2
    assert r.ctx.now_ms() == 1_700_000_002_250
    r.close()
    saved = orjson.loads((configmod.home_of(cfg) / "state" / "signal.json").read_bytes())
    assert saved["saved"] == 1_700_000_002.25


class Teller(runtime.Stage):
    """Logs a line for each trade (what the strategy does for each intent)."""

    name = "strategy"
    inputs = ("trades",)

    def handle(self, topic, rec):
        self.ctx.log.info("seen", x=rec["x"])


def test_held_log_lines_are_written_once_the_input_is_quiet_not_at_the_slow_poll(tmp_path):
    """Info lines wait while records come, then go out once the input has been quiet for
    QUIET_S: the loop wakes for them, not only at its slow poll or its next heartbeat."""
    import io
    import threading

    from conftest import wait_for
    from daemons.log import Logger

    cfg = configmod.load(None, {"home": str(tmp_path), "bus.poll_interval_s": 30.0,
                                "daemon.heartbeat_s": 30.0})
    out = io.StringIO()
    r = runtime.Runner(Teller, cfg, log=Logger("strategy", "info", stream=out))
    r.open()
    r.ready = True
    r.log.hold()
    loop = threading.Thread(target=r.loop, daemon=True)
    loop.start()
    try:
        wait_for(lambda: r.beat.next_at > 0, what="the first pass")   # the first beat is written
        append(cfg, [7])
        line = wait_for(lambda: out.getvalue(), timeout=5.0, what="the held line")
        assert orjson.loads(line)["event"] == "seen" and orjson.loads(line)["x"] == 7
    finally:
        r.ctx.stopping = True
        r.ctx.wake()
        loop.join(10)
        r.close()
