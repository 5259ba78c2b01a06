"""A daemon that refuses to start says why once, under real supervisord, and is not restarted.

The broker in live mode without keys refuses (exit code 2). ``ofi run`` prints its reason and
exits non-zero after one spawn; left to supervisord alone, the refusal ends EXITED (expected),
is not retried as a failed start, and the health listener leaves it alone. Every venue URL is a
closed loopback port: nothing here can reach a real host.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from daemons import config as configmod
from daemons.tools.supervise import control
from daemons.tools.supervise import run as runmod
from tests.conftest import OFI, ROOT, free_port

pytestmark = pytest.mark.slow

NEEDS_KEYS = "live mode needs API keys"


def _env(port: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OFI_", "EXECUTOR_MODE", "SUPERVISOR_"))}
    env.update(PYTHONPATH=str(ROOT), OFI_REST_URL=f"http://127.0.0.1:{port}",
               OFI_WS_URL=f"ws://127.0.0.1:{port}")
    return env


def _spawns(home, name: str) -> int:
    text = (home / "log" / "supervisord.log").read_text()
    return text.count(f"spawned: '{name}'")


def _kill_supervisord(home) -> None:
    """Last resort when the test failed before supervisord was shut down."""
    if control.is_running(str(home)):
        control.shutdown(str(home), timeout=30)
    try:
        pid = int((home / "supervisord.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


@pytest.mark.timeout(150)
def test_ofi_run_live_without_keys_prints_the_refusal_once_and_exits_nonzero(tmp_path):
    home = tmp_path / "home"
    env = _env(free_port())
    env["EXECUTOR_MODE"] = "live"
    try:
        p = subprocess.run(OFI + ["run", "--enable", "broker", "--home", str(home),
                                  "--minutes", "1"],
                           capture_output=True, text=True, timeout=120, env=env,
                           cwd=str(tmp_path))
    finally:
        _kill_supervisord(home)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert NEEDS_KEYS in p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert err == [ln for ln in err if NEEDS_KEYS in ln] and len(err) == 1, err
    assert "broker refused to start" in err[0]
    assert "Traceback" not in out and "AttributeError" not in out
    # started exactly once, stopped by `ofi run`, never restarted
    assert _spawns(home, "broker") == 1
    assert "restarts.json" not in os.listdir(home / "run")
    fatal = [json.loads(ln) for ln in (home / "log" / "broker.log").read_text().splitlines()
             if '"fatal"' in ln]
    assert len(fatal) == 1 and NEEDS_KEYS in fatal[0]["error"]


@pytest.mark.timeout(150)
def test_supervisord_does_not_restart_a_refusal_and_status_says_why(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    cfg = configmod.load(None, {"home": str(home), "broker.mode": "live",
                                "venue.rest_url": f"http://127.0.0.1:{port}",
                                "venue.ws_url": f"ws://127.0.0.1:{port}",
                                "supervise.grace_s": 0.0, "supervise.heartbeat_timeout_s": 1.0},
                         environ={})
    conf_path, programs, _ = runmod.prepare(cfg, ["broker"])
    assert programs == ["broker"]
    env = _env(port)
    try:
        control.start_supervisord(str(home), conf_path, env=env)
        rpc = control.rpc_for(str(home))
        rpc.supervisor.startProcess("broker", False)
        deadline = time.time() + 30
        while time.time() < deadline:
            info = rpc.supervisor.getProcessInfo("broker")
            if info["statename"] not in ("STARTING", "RUNNING"):
                break
            time.sleep(0.1)
        # longer than a BACKOFF retry and two TICK_5 of the health listener
        time.sleep(6)
        info = rpc.supervisor.getProcessInfo("broker")
        assert info["statename"] == "EXITED", info
        assert info["exitstatus"] == 2
        assert _spawns(home, "broker") == 1
        assert "restarts.json" not in os.listdir(home / "run")
        p = subprocess.run(OFI + ["status", "--json", "--home", str(home)], capture_output=True,
                           text=True, timeout=30, env=env)
        assert p.returncode == 0, p.stderr
        s = json.loads(p.stdout)
        broker = next(x for x in s["programs"] if x["name"] == "broker")
        assert broker["state"] == "EXITED" and NEEDS_KEYS in broker["refused"]
        p = subprocess.run(OFI + ["status", "--home", str(home)], capture_output=True,
                           text=True, timeout=30, env=env)
        assert f"refused to start: {NEEDS_KEYS}" in p.stdout
    finally:
        _kill_supervisord(home)
