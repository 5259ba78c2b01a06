"""Talking to supervisord: start it, start programs in order gated on readiness, stop in reverse.

supervisord's own ``start all`` / ``stop all`` start in priority order but do not wait for a
program to be *ready*, and ``stop all`` does not keep the reverse order; this module does both,
one program at a time, over the XML-RPC interface on the home's unix socket.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import xmlrpc.client

import orjson
from supervisor.xmlrpc import SupervisorTransport

from ...runtime import REFUSED


class SupervisorError(Exception):
    """supervisord could not be started or reached, or a program did not become ready."""


def rpc_for(home: str):
    """An XML-RPC proxy to the supervisord of ``home``."""
    sock = os.path.join(home, "supervisor.sock")
    return xmlrpc.client.ServerProxy(
        "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))


def is_running(home: str) -> bool:
    """True if a supervisord answers on the home's socket."""
    if not os.path.exists(os.path.join(home, "supervisor.sock")):
        return False
    try:
        rpc_for(home).supervisor.getState()
        return True
    except Exception:
        return False


def start_supervisord(home: str, conf_path: str, env: dict | None = None,
                      timeout: float = 20.0) -> None:
    """Start supervisord on ``conf_path`` (it daemonizes) and wait until it answers."""
    if is_running(home):
        raise SupervisorError(f"a supervisord already runs for {home}; "
                              f"stop it first (ofi run stops its own at the end)")
    exe = os.path.join(os.path.dirname(sys.executable), "supervisord")
    if not os.path.exists(exe):
        exe = "supervisord"
    try:
        proc = subprocess.run([exe, "-c", conf_path], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise SupervisorError("supervisord is not installed (pip install supervisor)") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SupervisorError(f"supervisord did not start: {msg[-1] if msg else proc.returncode}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if is_running(home):
            return
        time.sleep(0.1)
    raise SupervisorError(f"supervisord did not answer on {home}/supervisor.sock in {timeout:.0f}s")


def ready_mark(home: str, name: str) -> dict | None:
    try:
        with open(os.path.join(home, "run", "ready", f"{name}.json"), "rb") as f:
            return orjson.loads(f.read())
    except (OSError, ValueError):
        return None


def _log_tail(home: str, name: str, size: int = 16384) -> list[str]:
    try:
        with open(os.path.join(home, "log", f"{name}.log"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - size))
            return [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return []


def last_log_line(home: str, name: str) -> str:
    lines = _log_tail(home, name, 4096)
    return lines[-1][:300] if lines else ""


def refusal(home: str, name: str, pid: int | None = None) -> str | None:
    """Why ``name`` refused to start (the ``refused`` field its runtime wrote into its heartbeat
    file), or None; with ``pid``, only that process's refusal."""
    try:
        with open(os.path.join(home, "run", f"{name}.json"), "rb") as f:
            beat = orjson.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(beat, dict) or not beat.get("refused"):
        return None
    if pid is not None and beat.get("pid") != pid:
        return None
    return str(beat["refused"])


def exit_reason(home: str, name: str) -> str:
    """Why ``name`` ended: its refusal, else the error of its last ``fatal`` or ``crash`` log
    line (not whatever it logged while closing after it), else its last log line."""
    why = refusal(home, name)
    if why:
        return why
    for line in reversed(_log_tail(home, name)):
        try:
            rec = orjson.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") in ("fatal", "crash") and rec.get("error"):
            return str(rec["error"])[:500]
    return last_log_line(home, name)


class RefusedError(SupervisorError):
    """A program refused to start (config, keys, venue): supervisord does not restart it."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} refused to start: {reason}")
        self.name = name
        self.reason = reason


def start_in_order(home: str, names: list[str], timeout: float, on_ready=None) -> None:
    """Start each program and wait for its ``ofi-ready`` before starting the next."""
    rpc = rpc_for(home)
    for name in names:
        t0 = time.time()
        try:
            rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise SupervisorError(f"{name}: could not start: {fault.faultString}") from None
        deadline = t0 + timeout
        while True:
            info = rpc.supervisor.getProcessInfo(name)
            mark = ready_mark(home, name)
            if mark and info["pid"] and mark.get("pid") == info["pid"]:
                break
            # a refusal is final (supervisord will not restart it): say so at once, not after
            # the refusing process has waited out its startsecs
            why = refusal(home, name, info["pid"]) if info["pid"] else None
            if why:
                raise RefusedError(name, why)
            if info["statename"] in ("FATAL", "EXITED", "BACKOFF", "STOPPED") \
                    and time.time() - t0 > 1.0 and info["statename"] != "BACKOFF":
                if info["statename"] == "EXITED" and info.get("exitstatus") == REFUSED:
                    raise RefusedError(name, exit_reason(home, name))
                raise SupervisorError(f"{name} {info['statename'].lower()} before it was ready: "
                                      f"{exit_reason(home, name)}")
            if time.time() > deadline:
                raise SupervisorError(f"{name} not ready after {timeout:.0f}s "
                                      f"({info['statename'].lower()}): {exit_reason(home, name)}")
            time.sleep(0.05)
        if on_ready:
            on_ready(name, time.time() - t0)


def stop_in_order(home: str, names: list[str], on_stopped=None) -> list[str]:
    """Stop the programs one by one in the given (reverse priority) order."""
    rpc = rpc_for(home)
    order = []
    for name in names:
        try:
            info = rpc.supervisor.getProcessInfo(name)
            if info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
                rpc.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault:
            continue
        order.append(name)
        if on_stopped:
            on_stopped(name)
    return order


def shutdown(home: str, timeout: float = 30.0) -> None:
    """Ask supervisord to exit and wait until it has: its socket goes quiet first, while it
    still stops the programs, then its process ends (its pidfile names it)."""
    pid = _pid(home)
    try:
        rpc_for(home).supervisor.shutdown()
    except Exception:
        return
    deadline = time.time() + timeout
    while time.time() < deadline and (is_running(home) or _alive(pid)):
        time.sleep(0.1)


def _pid(home: str) -> int | None:
    try:
        with open(os.path.join(home, "supervisord.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
