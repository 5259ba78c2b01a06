"""The daemon skeleton, run as a real process: ready line, heartbeat, dead-letter, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bus import open_bus
from conftest import wait_for

STAGE = textwrap.dedent('''
    import sys
    from bus import BadRecord
    from daemons import runtime
    from daemons.tools.cli.daemon_cmd import run_stage

    class Doubler(runtime.Stage):
        """Doubles x of each trade into a signal (a stand-in stage)."""
        name = "signal"
        inputs = ("trades",)
        outputs = ("signals",)

        def handle(self, topic, rec):
            if not isinstance(rec.get("x"), int) or rec["x"] < 0:
                raise BadRecord("x must be a non-negative integer")
            self.ctx.emit("signals", {"type": "signal", "src": rec["seq"], "y": 2 * rec["x"]})

    sys.exit(run_stage(Doubler, sys.argv[1:]))
''')


@pytest.fixture
def stage_file(tmp_path):
    p = tmp_path / "doubler.py"
    p.write_text(STAGE)
    return p


def _start(procs, stage_file, home, sink="jsonl"):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return procs([sys.executable, str(stage_file), "--home", str(home), "--sink", sink],
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _read(home, topic):
    bus = open_bus(home)
    r = bus.reader(topic)
    out = [rec for rec, _ in r.read(100000)]
    r.close()
    bus.close()
    return out


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_runtime_stage_ready_processes_deadletters_and_stops_on_sigterm(procs, stage_file, home, sink):
    bus = open_bus(home, sink=sink)
    w = bus.writer("trades")
    w.append_many([{"type": "trade", "x": i} for i in range(100)])
    w.append({"type": "trade", "x": -1})
    p = _start(procs, stage_file, home, sink)
    line = p.stdout.readline()
    assert "ofi-ready" in line and json.loads(line)["stage"] == "signal"
    wait_for(lambda: len(_read(home, "signals")) == 100, what="100 signals")
    # more input while running: woken by inotify
    w.append_many([{"type": "trade", "x": i} for i in range(100, 150)])
    wait_for(lambda: len(_read(home, "signals")) == 150, what="150 signals")
    dead = _read(home, "deadletter")
    assert len(dead) == 1 and dead[0]["source"] == "trades" and "non-negative" in dead[0]["reason"]
    beat = json.loads((home / "run" / "signal.json").read_text())
    assert beat["ready"] is True and beat["pid"] == p.pid
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 0
    out = _read(home, "signals")
    assert [r["y"] for r in out] == [2 * i for i in range(150)]
    # restart: resumes from the saved position, nothing is processed twice
    w.append({"type": "trade", "x": 500})
    p2 = _start(procs, stage_file, home, sink)
    assert "ofi-ready" in p2.stdout.readline()
    wait_for(lambda: len(_read(home, "signals")) == 151, what="151 signals")
    p2.send_signal(signal.SIGTERM)
    assert p2.wait(20) == 0
    out = _read(home, "signals")
    assert [r["src"] for r in out] == list(range(1, 101)) + list(range(102, 152)) + [152]
    w.close()
    bus.close()


def test_runtime_second_instance_fails_cleanly_on_writer_lock(procs, stage_file, home):
    p = _start(procs, stage_file, home)
    assert "ofi-ready" in p.stdout.readline()
    p2 = _start(procs, stage_file, home)
    out, _ = p2.communicate(timeout=30)
    assert p2.returncode != 0
    assert "already has a writer" in out and "Traceback" not in out
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 0


REFUSING = textwrap.dedent('''
    import sys
    from daemons import config, runtime
    from daemons.tools.cli.daemon_cmd import run_stage

    class Refuser(runtime.Stage):
        """Refuses to start; its stop() trips over what start() never set up."""
        name = "broker"

        def start(self):
            raise config.ConfigError("live mode needs API keys (a stand-in)")

        def stop(self):
            self.ctx.log.warning("settle_failed", error=str(self.never_set))   # AttributeError

    sys.exit(run_stage(Refuser, sys.argv[1:]))
''')


@pytest.mark.parametrize("startsecs", [None, "1"])
def test_runtime_refusal_says_why_once_marks_it_and_exits_2(tmp_path, home, startsecs):
    script = tmp_path / "refuser.py"
    script.write_text(REFUSING)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    env.pop("OFI_STARTSECS", None)
    if startsecs:
        env["OFI_STARTSECS"] = startsecs   # as under supervisord: outlive startsecs, then exit
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(script), "--home", str(home)], capture_output=True,
                       text=True, timeout=30, env=env)
    took = time.monotonic() - t0
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [ln["event"] for ln in lines] == ["fatal"]
    assert lines[0]["error"] == "live mode needs API keys (a stand-in)"
    assert p.stderr == ""
    beat = json.loads((home / "run" / "broker.json").read_text())
    assert beat["refused"] == lines[0]["error"] and beat["ready"] is False
    assert beat["exit_code"] == 2
    assert (took >= 1.0) if startsecs else (took < 5.0)
