"""supervisord config and the health listener's logic (the pipeline itself: test_pipeline.py)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from daemons.tools.supervise import conf
from daemons.tools.supervise.listener import HealthJudge, Listener

ROOT = Path(__file__).resolve().parent.parent


def test_checked_in_supervisord_conf_is_the_rendering():
    assert (ROOT / "etc" / "supervisord.conf").read_text() == conf.render_checkout()


def test_supervisord_conf_priorities_ascend_in_pipeline_order():
    text = conf.render_checkout()
    prios = {}
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("[program:"):
            name = lines[0][len("[program:"):-1]
            kv = dict(line.split("=", 1) for line in lines[1:])
            prios[name] = int(kv["priority"])
            assert kv["autorestart"] == "unexpected"
            assert kv["stopasgroup"] == "true" and kv["stdout_events_enabled"] == "true"
    assert list(prios) == list(conf.PROGRAMS_ORDER)
    assert sorted(prios.values()) == list(prios.values())


def test_programs_for_adds_exchange_only_in_sim():
    assert conf.programs_for(["signal", "harvest"], "sim") == ["exchange", "harvest", "signal"]
    assert conf.programs_for(["broker"], "mock") == ["broker"]


def test_judge_healthy_then_stale_heartbeat_is_unhealthy():
    j = HealthJudge(heartbeat_timeout_s=10, stall_s=30, grace_s=5)
    beat = {"pid": 1, "ts": 100.0, "processed": 5, "lag": {"signals": 0}}
    assert j.judge("strategy", now=101, started=0, beat=beat) is None
    assert "heartbeat" in j.judge("strategy", now=120, started=0, beat=beat)
    # within the grace period nothing is judged
    assert j.judge("strategy", now=120, started=118, beat=beat) is None


def test_judge_stalled_input_is_unhealthy():
    j = HealthJudge(heartbeat_timeout_s=10, stall_s=30, grace_s=5)
    beat = {"pid": 1, "ts": 100.0, "processed": 5, "lag": {"signals": 7}}
    assert j.judge("strategy", now=100, started=0, beat=beat) is None
    beat = dict(beat, ts=140.0)
    assert "no progress" in j.judge("strategy", now=140, started=0, beat=beat)
    # progress resets the clock
    j2 = HealthJudge(10, 30, 5)
    j2.judge("s", 100, 0, beat)
    assert j2.judge("s", 140, 0, dict(beat, processed=6)) is None


def test_judge_a_program_waiting_on_purpose_is_healthy_until_its_wait_ends():
    j = HealthJudge(heartbeat_timeout_s=10, stall_s=30, grace_s=5)
    beat = {"pid": 1, "ts": 100.0, "processed": 0, "lag": {"intents": 7},
            "waiting": {"what": "open orders", "until": 160.0}}
    assert j.judge("broker", now=100, started=0, beat=beat) is None
    assert j.judge("broker", now=150, started=0, beat=dict(beat, ts=150.0)) is None
    # once the wait is over, the stall clock runs again
    assert j.judge("broker", now=170, started=0, beat=dict(beat, ts=170.0)) is None
    assert "no progress" in j.judge("broker", now=205, started=0, beat=dict(beat, ts=205.0))


def _event(name, headers, data=""):
    body = " ".join(f"{k}:{v}" for k, v in headers.items()) + "\n" + data
    return f"ver:3.0 server:supervisor serial:1 pool:health poolserial:1 eventname:{name} len:{len(body)}\n{body}"


def test_listener_marks_ready_on_keyword_and_clears_on_restart(tmp_path):
    events = [
        _event("PROCESS_LOG_STDOUT", {"processname": "signal", "groupname": "signal", "pid": 42,
                                      "channel": "stdout"},
               '{"event":"ofi-ready","stage":"signal"}\n'),
        _event("PROCESS_STATE_STARTING", {"processname": "signal", "groupname": "signal",
                                          "from_state": "BACKOFF", "tries": 1}),
    ]
    out = io.StringIO()
    lst = Listener(str(tmp_path), HealthJudge(10, 30, 5), stdin=io.StringIO(events[0]),
                   stdout=out, stderr=io.StringIO())
    lst.serve()
    mark = json.loads((tmp_path / "run" / "ready" / "signal.json").read_text())
    assert mark["pid"] == 42
    assert out.getvalue() == "READY\nRESULT 2\nOKREADY\n"
    lst.stdin = io.StringIO(events[1])
    lst.serve()
    assert not (tmp_path / "run" / "ready" / "signal.json").exists()
    assert json.loads((tmp_path / "run" / "restarts.json").read_text()) == {"signal": 1}


class FakeRPC:
    def __init__(self, infos):
        self.infos = infos
        self.calls = []
        self.supervisor = self

    def getAllProcessInfo(self):
        return self.infos

    def stopProcess(self, name, wait):
        self.calls.append(("stop", name))

    def startProcess(self, name, wait):
        self.calls.append(("start", name))


def test_listener_restarts_program_with_stale_heartbeat(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "broker.json").write_text(json.dumps({"pid": 7, "ts": 1000.0,
                                                              "processed": 1, "lag": {}}))
    (tmp_path / "run" / "signal.json").write_text(json.dumps({"pid": 8, "ts": 1099.0,
                                                              "processed": 1, "lag": {}}))
    rpc = FakeRPC([{"name": "broker", "statename": "RUNNING", "pid": 7, "start": 900},
                   {"name": "signal", "statename": "RUNNING", "pid": 8, "start": 900}])
    lst = Listener(str(tmp_path), HealthJudge(10, 30, 5), rpc=rpc, stdin=io.StringIO(),
                   stdout=io.StringIO(), stderr=io.StringIO(), clock=lambda: 1100.0)
    lst.handle({"eventname": "TICK_5"}, "when:1100")
    assert rpc.calls == [("stop", "broker"), ("start", "broker")]
    assert json.loads((tmp_path / "run" / "restarts.json").read_text()) == {"broker": 1}


def test_supervisord_accepts_the_checked_in_config(tmp_path):
    # supervisord's own parser reads the file as is (here: with a throwaway copy of etc/)
    p = subprocess.run([sys.executable, "-c",
                        "from supervisor.options import ServerOptions as O; o=O(); "
                        f"o.realize(['-c', {str(ROOT / 'etc' / 'supervisord.conf')!r}]); "
                        "print(sorted(g.name for g in o.process_group_configs))"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "broker" in p.stdout and "health" in p.stdout and "exchange" in p.stdout


def test_refusals_are_expected_exits_and_daemons_know_their_startsecs():
    for block in conf.render_checkout().split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("[program:"):
            name = lines[0][len("[program:"):-1]
            kv = dict(line.split("=", 1) for line in lines[1:])
            assert kv["exitcodes"] == "0,2"
            env = f'OFI_STARTSECS="{conf.POLICY[name].startsecs}"'
            if name in ("exchange", "strategy", "broker"):    # the order's path: a short slice
                env += f',OFI_SCHED_SLICE_US="{conf.ORDER_PATH_SLICE_US}"'
            if name in ("exchange", "broker"):    # the local venue on a CPU of its own
                env += f',OFI_CPU_PLACE="{"venue" if name == "exchange" else "beside-venue"}"'
            assert kv["environment"] == env


def _environments(text: str) -> dict[str, str]:
    out = {}
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("[program:"):
            kv = dict(line.split("=", 1) for line in lines[1:])
            out[lines[0][len("[program:"):-1]] = kv["environment"]
    return out


def test_the_broker_keeps_off_the_venue_cpu_only_when_the_local_exchange_runs():
    def render(programs, **kw):
        return _environments(conf.render(programs=programs, home="/h", ofi="ofi",
                                         args_for=lambda n: "", listener_cmd="l", **kw))
    sim = render(["exchange", "harvest", "signal", "strategy", "broker"])
    assert 'OFI_CPU_PLACE="venue"' in sim["exchange"]
    assert 'OFI_CPU_PLACE="beside-venue"' in sim["broker"]
    assert not any("OFI_CPU_PLACE" in sim[n] for n in ("harvest", "signal", "strategy"))
    testnet = render(["harvest", "signal", "strategy", "broker"])   # the venue is elsewhere
    assert not any("OFI_CPU_PLACE" in env for env in testnet.values())
    off = render(["exchange", "broker"], venue_cpu=False)         # supervise.venue_cpu: false
    assert not any("OFI_CPU_PLACE" in env for env in off.values())


def test_hold_until_started_waits_out_startsecs_only_under_supervisord(monkeypatch):
    import time

    from daemons import runtime
    monkeypatch.delenv("OFI_STARTSECS", raising=False)
    t = time.monotonic()
    runtime.hold_until_started()
    assert time.monotonic() - t < 0.1
    monkeypatch.setenv("OFI_STARTSECS", "1")
    monkeypatch.setattr(runtime, "_T0", time.monotonic())
    t = time.monotonic()
    runtime.hold_until_started()
    assert 1.0 <= time.monotonic() - t < 2.5
    # SIGTERM (the stage's stopping flag) ends the wait at once
    monkeypatch.setattr(runtime, "_T0", time.monotonic())
    t = time.monotonic()
    runtime.hold_until_started(lambda: True)
    assert time.monotonic() - t < 0.1


def test_listener_never_restarts_a_refused_program(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "broker.json").write_text(json.dumps(
        {"pid": 7, "ts": 900.0, "ready": False, "refused": "live mode needs API keys"}))
    rpc = FakeRPC([{"name": "broker", "statename": "RUNNING", "pid": 7, "start": 800}])
    lst = Listener(str(tmp_path), HealthJudge(10, 30, 5), rpc=rpc, stdin=io.StringIO(),
                   stdout=io.StringIO(), stderr=io.StringIO(), clock=lambda: 1100.0)
    lst.handle({"eventname": "TICK_5"}, "when:1100")
    assert rpc.calls == []


def test_exit_reason_is_the_refusal_not_what_was_logged_while_closing(tmp_path):
    from daemons.tools.supervise import control
    (tmp_path / "log").mkdir()
    (tmp_path / "run").mkdir()
    log = tmp_path / "log" / "broker.log"
    log.write_text(
        '{"level":"info","event":"starting"}\n'
        '{"level":"error","stage":"broker","event":"fatal","error":"live mode needs API keys"}\n'
        '{"level":"warning","stage":"broker","event":"settle_failed",'
        '"error":"AttributeError: no journal"}\n')
    assert control.exit_reason(str(tmp_path), "broker") == "live mode needs API keys"
    (tmp_path / "run" / "broker.json").write_text(json.dumps({"pid": 5, "refused": "no keys"}))
    assert control.refusal(str(tmp_path), "broker") == "no keys"
    assert control.refusal(str(tmp_path), "broker", pid=5) == "no keys"
    assert control.refusal(str(tmp_path), "broker", pid=6) is None   # an earlier process
    assert control.exit_reason(str(tmp_path), "broker") == "no keys"
    log.write_text("ofi daemon broker: config: unknown key 'x'\n")
    (tmp_path / "run" / "broker.json").unlink()
    assert control.exit_reason(str(tmp_path), "broker") == \
        "ofi daemon broker: config: unknown key 'x'"


def test_status_shows_why_a_program_refused_to_start(tmp_path):
    from daemons import config as configmod
    from daemons.tools.supervise import status
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "broker.json").write_text(json.dumps(
        {"name": "broker", "pid": 9, "ts": 1.0, "ready": False,
         "refused": "live mode needs API keys", "exit_code": 2}))
    cfg = configmod.load(None, {"home": str(tmp_path)}, environ={})
    s = status.status(cfg)
    assert [p["refused"] for p in s["programs"]] == ["live mode needs API keys"]
    assert "broker" in status.format_status(s)
    assert "refused to start: live mode needs API keys" in status.format_status(s)
