"""``ofi status``: each program's supervisord state, pid, readiness, heartbeat age and lag (and
why it refused to start, if it did), the trading state, and the venue (mode, URLs; never keys).
"""
from __future__ import annotations

import os
import time

import yaml

from ... import config as configmod
from ...runtime import read_json
from . import conf, control


def run_config(cfg: dict) -> dict:
    """The config of the home's current/last ``ofi run`` if there is one, else ``cfg``."""
    path = os.path.join(str(configmod.home_of(cfg)), "run", "ofi.yaml")
    try:
        with open(path) as f:
            return yaml.safe_load(f) or cfg
    except (OSError, yaml.YAMLError):
        return cfg


def trading_status(home: str) -> dict:
    """The kill-switch state (ACTIVE when never set)."""
    try:
        from ... import trading
    except ImportError:
        return {"state": "ACTIVE", "reason": None}
    return trading.status(home)


def status(cfg: dict) -> dict:
    """Everything ``ofi status`` shows, as a dict."""
    home = str(configmod.home_of(cfg))
    now = time.time()
    infos = {}
    supervisor_up = control.is_running(home)
    if supervisor_up:
        try:
            infos = {i["name"]: i for i in control.rpc_for(home).supervisor.getAllProcessInfo()}
        except Exception:
            supervisor_up = False
    names = [n for n in conf.PROGRAMS_ORDER if n in infos] or \
        [n for n in conf.PROGRAMS_ORDER if os.path.exists(os.path.join(home, "run", f"{n}.json"))]
    programs = []
    for name in names:
        info = infos.get(name, {})
        beat = read_json(os.path.join(home, "run", f"{name}.json")) or {}
        mark = control.ready_mark(home, name)
        pid = info.get("pid") or None
        # a refusal to start stands until the program runs again (a new pid)
        refused = beat.get("refused") if beat.get("refused") and \
            (pid is None or beat.get("pid") == pid) else None
        programs.append({
            "name": name,
            "state": info.get("statename", "NOT RUNNING" if not supervisor_up else "UNKNOWN"),
            "pid": pid,
            "ready": bool(mark and pid and mark.get("pid") == pid),
            "heartbeat_age_s": round(now - beat["ts"], 1) if beat.get("ts") else None,
            "lag": beat.get("lag", {}),
            "processed": beat.get("processed"),
            "refused": refused,
            # a start still waiting on purpose (a venue's Retry-After): what for, until when
            "waiting": beat.get("waiting") if beat.get("pid") == pid else None,
        })
    rc = run_config(cfg)
    venue = rc.get("venue", {})
    restarts = read_json(os.path.join(home, "run", "restarts.json")) or {}
    return {
        "home": home,
        "supervisord": "running" if supervisor_up else "not running",
        "programs": programs,
        "restarts": restarts,
        "trading": trading_status(home),
        "venue": {"mode": rc.get("broker", {}).get("mode"), "rest_url": venue.get("rest_url"),
                  "ws_url": venue.get("ws_url")},
    }


def format_status(s: dict) -> str:
    lines = [f"home {s['home']}  supervisord {s['supervisord']}"]
    lines.append(f"{'program':<10} {'state':<12} {'pid':>7} {'ready':<6} {'beat(s)':>8}  lag")
    for p in s["programs"]:
        lag = " ".join(f"{t}={n}" for t, n in (p["lag"] or {}).items()) or "-"
        age = "-" if p["heartbeat_age_s"] is None else f"{p['heartbeat_age_s']:.1f}"
        lines.append(f"{p['name']:<10} {p['state']:<12} {p['pid'] or '-':>7} "
                     f"{'yes' if p['ready'] else 'no':<6} {age:>8}  {lag}")
        if p.get("refused"):
            lines.append(f"{'':<10} refused to start: {p['refused']}")
        if p.get("waiting"):
            w = p["waiting"]
            lines.append(f"{'':<10} starting, waits on the venue ({w.get('what')}: "
                         f"{w.get('error')}) until {time.strftime('%H:%M:%S', time.localtime(w['until']))}")
    if not s["programs"]:
        lines.append("(no programs have run in this home)")
    t = s["trading"]
    lines.append(f"trading {t.get('state')}" + (f" ({t['reason']})" if t.get("reason") else ""))
    if t.get("summary"):
        lines.append(f"risk    {t['summary']}")
    v = s["venue"]
    lines.append(f"venue   mode {v['mode']}  rest {v['rest_url'] or '-'}  ws {v['ws_url'] or '-'}")
    return "\n".join(lines)
