"""The supervisord event listener: readiness from the ``ofi-ready`` log keyword, health on TICK.

Events (stdin, supervisord's listener protocol) and what the listener does with them:

====================  ========================================================================
PROCESS_LOG_STDOUT    a line containing ``ofi-ready``: write ``<home>/run/ready/<name>.json``
                      with the pid (``ofi run`` waits on it before starting the next program)
PROCESS_STATE_*       STARTING/EXITED/...: drop the ready mark; count restarts
TICK_5                judge each running program (heartbeat age, stalled input, the broker's
                      execution log) and restart an unhealthy one through XML-RPC
====================  ========================================================================

A program whose heartbeat file says it ``refused`` to start (config, keys, venue; it exits with
code 2, which supervisord does not restart) is never judged or restarted here either.

Only protocol goes to stdout; the listener's own log lines go to stderr.
"""
from __future__ import annotations

import os
import sys
import time

import orjson

from ... import config as configmod
from ...runtime import read_json, write_json_atomic
from .conf import LISTENER

READY_KEYWORD = b"ofi-ready"


def parse_headers(line: str) -> dict:
    return dict(tok.split(":", 1) for tok in line.split())


class HealthJudge:
    """Decides whether a running program is unhealthy; pure apart from the clock passed in.

    A program is unhealthy when its heartbeat is older than ``heartbeat_timeout_s``, or when an
    input lags while its processed count has not moved for ``stall_s``, or (the broker) when
    intents wait while its execution log has not been written for ``stall_s``. A program whose
    heartbeat says it is ``waiting`` until a time still ahead is healthy.
    """

    def __init__(self, heartbeat_timeout_s: float, stall_s: float, grace_s: float):
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stall_s = stall_s
        self.grace_s = grace_s
        self._progress: dict[str, tuple[int, float]] = {}

    def judge(self, name: str, now: float, started: float, beat: dict | None,
              exec_log_mtime: float | None = None) -> str | None:
        """The reason to restart ``name``, or None if it is healthy."""
        if now - started < self.grace_s:
            return None
        if beat is None or beat.get("pid") is None:
            if now - started > self.heartbeat_timeout_s:
                return "no heartbeat since start"
            return None
        age = now - float(beat.get("ts", 0))
        if age > self.heartbeat_timeout_s:
            return f"heartbeat {age:.0f}s old"
        processed = int(beat.get("processed", 0))
        lag = sum(int(v) for v in (beat.get("lag") or {}).values())
        waiting = beat.get("waiting")
        if waiting and float(waiting.get("until", 0)) > now:
            # it waits on purpose (a venue's Retry-After at start): a restart would not help
            self._progress[name] = (processed, now)
            return None
        last = self._progress.get(name)
        if last is None or last[0] != processed or lag == 0:
            self._progress[name] = (processed, now)
        elif now - last[1] > self.stall_s:
            return f"input lag {lag} with no progress for {now - last[1]:.0f}s"
        if name == "broker" and exec_log_mtime is not None and lag > 0 \
                and now - exec_log_mtime > self.stall_s and now - started > self.stall_s:
            return f"intents waiting and exec_log idle for {now - exec_log_mtime:.0f}s"
        return None

    def forget(self, name: str) -> None:
        self._progress.pop(name, None)


class Listener:
    """The imperative shell around :class:`HealthJudge` (I/O and clock injectable for tests)."""

    def __init__(self, home: str, judge: HealthJudge, rpc=None, stdin=None, stdout=None,
                 stderr=None, clock=time.time):
        self.home = home
        self.run_dir = os.path.join(home, "run")
        self.ready_dir = os.path.join(self.run_dir, "ready")
        os.makedirs(self.ready_dir, exist_ok=True)
        self.judge = judge
        self.rpc = rpc
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.clock = clock
        self.restarts = self._load_restarts()

    def log(self, event: str, **fields) -> None:
        line = {"ts": round(self.clock(), 3), "stage": LISTENER, "event": event, **fields}
        self.stderr.write(orjson.dumps(line).decode() + "\n")
        self.stderr.flush()

    def _load_restarts(self) -> dict:
        return read_json(os.path.join(self.run_dir, "restarts.json")) or {}

    # -- event handling ----------------------------------------------------------------------
    def handle(self, headers: dict, payload: str) -> None:
        event = headers.get("eventname", "")
        if event == "PROCESS_LOG_STDOUT":
            head, _, data = payload.partition("\n")
            h = parse_headers(head)
            if READY_KEYWORD in data.encode():
                self.mark_ready(h.get("processname", ""), int(h.get("pid", 0)))
        elif event.startswith("PROCESS_STATE_"):
            head, _, _ = payload.partition("\n")
            h = parse_headers(head)
            name = h.get("processname", "")
            if name == LISTENER:
                return
            state = event[len("PROCESS_STATE_"):]
            if state in ("STARTING", "EXITED", "STOPPED", "FATAL", "BACKOFF"):
                self.clear_ready(name)
                self.judge.forget(name)
            if state == "STARTING" and h.get("from_state") in ("BACKOFF", "EXITED"):
                self.count_restart(name, "exited")
        elif event.startswith("TICK"):
            self.check_health()

    def mark_ready(self, name: str, pid: int) -> None:
        write_json_atomic(os.path.join(self.ready_dir, f"{name}.json"),
                          {"name": name, "pid": pid, "ts": self.clock()})
        self.log("ready", program=name, pid=pid)

    def clear_ready(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.ready_dir, f"{name}.json"))
        except FileNotFoundError:
            pass

    def count_restart(self, name: str, why: str) -> None:
        self.restarts[name] = self.restarts.get(name, 0) + 1
        write_json_atomic(os.path.join(self.run_dir, "restarts.json"), self.restarts)
        self.log("restart", program=name, why=why, count=self.restarts[name])

    def check_health(self) -> None:
        if self.rpc is None:
            return
        try:
            infos = self.rpc.supervisor.getAllProcessInfo()
        except Exception as exc:  # supervisord busy or shutting down: try next tick
            self.log("rpc_error", error=str(exc))
            return
        now = self.clock()
        for info in infos:
            name = info["name"]
            if name == LISTENER or info.get("statename") != "RUNNING":
                continue
            beat = read_json(os.path.join(self.run_dir, f"{name}.json"))
            if beat is not None and beat.get("pid") != info.get("pid"):
                beat = None  # written by an earlier process
            if beat is not None and beat.get("refused"):
                continue     # refusing to start, on its way out: a restart would refuse again
            exec_mtime = None
            if name == "broker":
                try:
                    exec_mtime = os.path.getmtime(os.path.join(self.home, "log", "exec_log.jsonl"))
                except OSError:
                    exec_mtime = None
            reason = self.judge.judge(name, now, float(info.get("start", now)), beat, exec_mtime)
            if reason:
                self.restart(name, reason)

    def restart(self, name: str, reason: str) -> None:
        self.log("unhealthy", program=name, reason=reason)
        try:
            self.rpc.supervisor.stopProcess(name, True)
        except Exception as exc:
            self.log("rpc_error", program=name, error=str(exc))
        try:
            self.rpc.supervisor.startProcess(name, False)
        except Exception as exc:
            self.log("rpc_error", program=name, error=str(exc))
        self.judge.forget(name)
        self.count_restart(name, reason)

    # -- protocol loop -----------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            self.stdout.write("READY\n")
            self.stdout.flush()
            line = self.stdin.readline()
            if not line:
                return
            headers = parse_headers(line)
            payload = self.stdin.read(int(headers.get("len", 0)))
            try:
                self.handle(headers, payload)
            except Exception as exc:  # never let one bad event kill readiness tracking
                self.log("error", error=f"{type(exc).__name__}: {exc}")
            self.stdout.write("RESULT 2\nOK")
            self.stdout.flush()


def serve(home: str, config_path: str | None = None) -> int:
    """Run the listener of ``home`` (``ofi health-listener --home DIR [--config F]``)."""
    from supervisor import childutils

    try:
        cfg = configmod.load(config_path, {"home": home})
    except configmod.ConfigError as exc:
        print(f"ofi-health-listener: {exc}", file=sys.stderr)
        return 2
    s = cfg["supervise"]
    judge = HealthJudge(s["heartbeat_timeout_s"], s["stall_s"], s["grace_s"])
    rpc = childutils.getRPCInterface(os.environ) if "SUPERVISOR_SERVER_URL" in os.environ else None
    Listener(str(configmod.home_of(cfg)), judge, rpc=rpc).serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m daemons.tools.supervise.listener --home DIR [--config F]``: the command of
    ``ofi health-listener``."""
    from ..cli import run_command
    from ..cli.run_cmds import health_listener

    return run_command(health_listener, sys.argv[1:] if argv is None else list(argv),
                       "ofi-health-listener")


if __name__ == "__main__":
    sys.exit(main())
