"""``ofi run``: render the supervisord config for a home, start the programs in order gated on
readiness, run for N minutes (or until Ctrl-C / SIGTERM), stop in reverse order, summarize.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import time

import yaml

from ... import config as configmod
from . import conf, control
from ...venue import resolve as venue_for
from .summary import summarize


def program_args(name: str, cfg: dict, home: str, cfg_file: str) -> str:
    """Flags for ``ofi daemon NAME``."""
    q = shlex.quote
    symbols = ",".join(cfg["symbols"])
    if name == "exchange":
        ex = cfg["exchange"]
        args = (f"--home {q(home)} --config {q(cfg_file)} --host {ex['host']} --port {ex['port']} "
                f"--symbols {symbols} --state {q(os.path.join(home, 'exchange'))} "
                f"--feed {ex['feed']}")
        for path in ex["inputs"]:
            args += f" --input {q(path)}"
        if ex["faults"]:
            args += f" --faults {q(ex['faults'])}"
        return args
    return (f"--home {q(home)} --config {q(cfg_file)} --sink {cfg['sink']} "
            f"--mode {cfg['broker']['mode']} --symbols {symbols}")


def prepare(cfg: dict, enable: list[str]) -> tuple[str, list[str], dict]:
    """Write ``run/ofi.yaml`` and ``supervisord.conf`` under the home.

    Returns (conf path, programs in start order, environment for supervisord). Secrets are
    never written to a file: they reach the daemons through supervisord's environment.
    """
    home = str(configmod.home_of(cfg))
    programs = conf.programs_for(enable, cfg["broker"]["mode"])
    # the production guard of the programs that connect, before supervisord starts: the same
    # line the broker or harvest would log, at once (ConfigError: exit code 2)
    venue = venue_for(cfg, guard=connects(cfg, programs))
    venue.pop("mode", None)
    for sub in ("log", "run", "run/ready", "state"):
        os.makedirs(os.path.join(home, sub), exist_ok=True)
    effective = dict(cfg, home=home, venue=dict(venue, api_key=None, api_secret=None))
    cfg_file = os.path.join(home, "run", "ofi.yaml")
    with open(cfg_file, "w") as f:
        f.write("# The configuration of the current `ofi run` (secrets omitted).\n")
        yaml.safe_dump(effective, f, sort_keys=False)
    env = dict(os.environ)
    for var, key in (("OFI_API_KEY", "api_key"), ("OFI_API_SECRET", "api_secret")):
        if venue.get(key):
            env[var] = venue[key]
    env.pop("EXECUTOR_MODE", None)  # the mode is passed explicitly to each program
    # the console script, not `python -m`: that would put the cwd (the home, which holds a
    # `bus/` directory of spools) first on sys.path, shadowing the `bus` package
    ofi = shlex.quote(ofi_command())
    listener = (f"{ofi} health-listener --home {shlex.quote(home)} "
                f"--config {shlex.quote(cfg_file)}")
    text = conf.render(programs=programs, home=home, ofi=ofi,
                       args_for=lambda n: program_args(n, cfg, home, cfg_file),
                       listener_cmd=listener, venue_cpu=cfg["supervise"]["venue_cpu"])
    conf_path = os.path.join(home, "supervisord.conf")
    with open(conf_path, "w") as f:
        f.write(text)
    # a fresh run starts with fresh readiness marks and restart counts
    for fn in os.listdir(os.path.join(home, "run", "ready")):
        os.unlink(os.path.join(home, "run", "ready", fn))
    try:
        os.unlink(os.path.join(home, "run", "restarts.json"))
    except FileNotFoundError:
        pass
    for name in programs:   # ... and no refusal left over from an earlier run
        if control.refusal(home, name):
            try:
                os.unlink(os.path.join(home, "run", f"{name}.json"))
            except FileNotFoundError:
                pass
    return conf_path, programs, env


def connects(cfg: dict, programs: list[str]) -> bool:
    """True if one of ``programs`` uses the venue URLs: the broker (every mode is guarded,
    mock included) or a harvest reading live market data."""
    return "broker" in programs or ("harvest" in programs and cfg["harvest"]["source"] == "live")


def ofi_command() -> str:
    """The installed ``ofi`` console script beside this interpreter."""
    exe = os.path.join(os.path.dirname(sys.executable), "ofi")
    if not os.path.exists(exe):
        raise control.SupervisorError(f"the ofi command is not installed beside {sys.executable}; "
                                       "pip install -e . first")
    return exe


class _Stop(Exception):
    pass


def run(cfg: dict, enable: list[str], minutes: float | None, echo=print) -> dict:
    """The whole ``ofi run``; returns the summary (also printed through ``echo``)."""
    home = str(configmod.home_of(cfg))
    conf_path, programs, env = prepare(cfg, enable)
    started_at = time.time()

    def _term(signum, frame):
        raise _Stop()

    old = signal.signal(signal.SIGTERM, _term)
    ready_times: dict[str, float] = {}
    stop_order: list[str] = []
    error = None
    refused: dict[str, str] = {}
    try:
        control.start_supervisord(home, conf_path, env=env)
        echo(f"supervisord up: {conf_path}")
        try:
            control.start_in_order(
                home, programs, cfg["supervise"]["start_timeout_s"],
                on_ready=lambda n, dt: (ready_times.__setitem__(n, round(dt, 2)),
                                        echo(f"  {n:<9} ready in {dt:.1f}s")))
            echo(f"running {'until Ctrl-C' if not minutes else f'for {minutes:g} min'} "
                 f"(home {home}; `ofi status --home {home}`)")
            deadline = time.time() + minutes * 60 if minutes else None
            while deadline is None or time.time() < deadline:
                time.sleep(0.5)
        except (KeyboardInterrupt, _Stop):
            echo("stopping (interrupted)")
        except control.RefusedError as exc:
            # supervisord does not restart a refusal: stop the rest and say why, once
            error = str(exc)
            refused[exc.name] = exc.reason
            echo(f"error: {error}")
        except control.SupervisorError as exc:
            error = str(exc)
            echo(f"error: {error}")
        finally:
            stop_order = control.stop_in_order(home, list(reversed(programs)),
                                               on_stopped=lambda n: echo(f"  {n:<9} stopped"))
            control.shutdown(home)
    finally:
        signal.signal(signal.SIGTERM, old)
    summary = summarize(cfg, programs)
    summary.update({"programs": programs, "ready_s": ready_times, "stop_order": stop_order,
                    "all_ready": set(ready_times) == set(programs) and error is None,
                    "error": error, "refused": refused,
                    "seconds": round(time.time() - started_at, 1)})
    return summary
