"""Tailing across processes: a consumer in another process is woken by inotify, not by its
slow poll. Run as a script, this file is that consumer (see :func:`child_tail`)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import orjson
import pytest

from conftest import read_line as _read_line
from bus import open_bus

HERE = __file__


def child_tail(home: str, sink: str) -> None:
    """Print ``[seq, wakeups, timeouts]`` per record, waiting with a 30 s slow poll."""
    bus = open_bus(home, sink=sink, poll_interval_s=30)
    bus.watch("trades")
    c = bus.consumer("trades", "tail", start="end")
    print("ready", flush=True)
    while True:
        items = c.poll()
        for rec, pos in items:
            w = bus.waker
            print(orjson.dumps([rec["seq"], w.wakeups, w.timeouts]).decode(), flush=True)
            c.mark(pos)
        c.commit()
        if not items:
            bus.wait()          # the default timeout: poll_interval_s, 30 s


def _wait_until_sleeping(pid: int, timeout: float = 5.0) -> None:
    """Wait until process ``pid`` sleeps in poll(2) (the waker), so that only a wake-up can
    deliver what comes next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/wchan") as f:
            if "poll" in f.read():
                return
        time.sleep(0.001)
    raise AssertionError("the reader never went to sleep")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_bus_reader_other_process_woken_by_inotify_not_poll(home, procs, sink):
    bus = open_bus(home, sink=sink, segment_bytes=300)
    w = bus.writer("trades")
    w.append({"type": "t"})                       # the topic exists before the reader starts
    p = procs([sys.executable, HERE, str(home), sink], stdout=subprocess.PIPE)
    assert _read_line(p, 15) == "ready"
    delays = []
    for i in range(20):                           # several segments: rotations wake it too
        _wait_until_sleeping(p.pid)
        t0 = time.monotonic()
        rec = w.append({"type": "t", "i": i})
        # within 5 s, while its slow poll is 30 s
        seq, wakeups, timeouts = orjson.loads(_read_line(p, 5))
        delays.append(time.monotonic() - t0)
        assert seq == rec["seq"] and timeouts == 0 and wakeups == i + 1
    w.close()
    assert sorted(delays)[len(delays) // 2] < 0.05
    bus.close()


def _ring(path) -> None:
    with open(path, "ab") as f:
        f.write(b"x")


def test_waker_blocks_after_a_lone_wake_up(tmp_path):
    """A reader back in ``wait`` right after a wake-up (the usual case: a record is handled in
    microseconds) blocks on the fd instead of napping: a lone record is no burst."""
    from bus.wake import Waker

    waker = Waker()
    try:
        waker.watch(tmp_path)
        _ring(tmp_path / "1.jsonl")
        assert waker.wait(5) and waker.wakeups == 1
        assert not waker.wait(0.01)                 # at once: no nap, only the timeout
        assert waker.naps == 0 and waker.timeouts == 1
    finally:
        waker.close()


def test_waker_naps_after_wake_ups_close_together(tmp_path, monkeypatch):
    """Two spool wake-ups within ``BURST_GAP_S`` of each other make the next wait nap (a
    burst) before it blocks; the gap is wide here so that a slow machine cannot spoil it."""
    from bus import wake

    monkeypatch.setattr(wake, "BURST_GAP_S", 60.0)
    waker = wake.Waker()
    try:
        waker.watch(tmp_path)
        _ring(tmp_path / "1.jsonl")
        assert waker.wait(5)
        assert waker.naps == 0                      # the first wake-up is no burst
        _ring(tmp_path / "1.jsonl")
        assert waker.wait(5) and waker.wakeups == 2
        assert not waker.wait(0.2)                  # naps, then blocks until the timeout
        assert 0 < waker.naps <= wake.BURST_NAPS
    finally:
        waker.close()


@pytest.mark.parametrize("wakes_it", ["socket", "kick"])
def test_a_socket_or_a_kick_ends_a_nap_at_once(tmp_path, monkeypatch, wakes_it):
    """During a burst a wait naps before it looks at the spools again; an answer on a socket
    of ``add_fd`` (or a kick from another thread) must not wait for the nap's end. The nap is
    made 30 s long here: the wait has to end long before it."""
    from bus import wake

    monkeypatch.setattr(wake, "BURST_GAP_S", 60.0)
    monkeypatch.setattr(wake, "NAP_S", 30.0)
    waker = wake.Waker()
    a, b = socket.socketpair()
    try:
        waker.watch(tmp_path)
        waker.add_fd(a.fileno())
        for _ in range(2):                          # two wake-ups close together: a burst
            _ring(tmp_path / "1.jsonl")
            assert waker.wait(5)
        if wakes_it == "socket":
            b.send(b"x")
        else:
            waker.kick()
        t0 = time.monotonic()
        woke = waker.wait(60)
        took = time.monotonic() - t0
    finally:
        waker.close()
        a.close()
        b.close()
    assert woke is True and waker.naps == 1
    assert (waker.readable, waker.kicks) == ((1, 0) if wakes_it == "socket" else (0, 1))
    assert took < 15.0                              # not the nap's 30 s


def test_a_readable_descriptor_ends_a_wait_until_it_is_removed(tmp_path):
    # Arrange
    bus = open_bus(tmp_path)
    bus.watch("intents")
    waker = bus.waker
    a, b = socket.socketpair()
    try:
        waker.add_fd(a.fileno())
        # Act
        b.send(b"x")
        woke = bus.wait(10)
        a.recv(16)
        waker.remove_fd(a.fileno())
        b.send(b"y")
        later = bus.wait(0.05)
    finally:
        a.close()
        b.close()
        bus.close()
    # Assert
    assert woke is True and waker.readable == 1
    assert later is False


if __name__ == "__main__":
    child_tail(sys.argv[1], sys.argv[2])
