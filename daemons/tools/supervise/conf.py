"""The supervisord configuration: programs, their policy, and the health event listener.

Policy lives here and in the rendered file, never in the daemons: priority (lower starts first
and stops last), ``autorestart=unexpected``, start grace, stop timeout, process-group signals,
log rotation, the short CPU time slice of the programs on the path from a signal to an order
(``OFI_SCHED_SLICE_US``) and, with the local exchange in the group, its CPU of its own that the
broker keeps off (``OFI_CPU_PLACE``, ``supervise.venue_cpu``); the daemons apply both at start
(:mod:`daemons.sched`). ``etc/supervisord.conf`` is this rendering for a checkout (paths
relative to the file with ``%(here)s``); ``ofi run`` renders one per home with absolute paths.

Exit codes: 0 (a clean stop) and :data:`REFUSED` (2, a refusal to start: bad config, missing or
rejected keys, no confirmation, a production host outside live mode, an unreachable venue) are
``exitcodes``, so supervisord does not restart them; anything else (a crash, 1) is restarted.
An exit before ``startsecs`` would be a failed start, retried ``startretries`` times whatever its
code: each program gets its ``startsecs`` as ``OFI_STARTSECS`` and a refusing stage daemon stays
up that long before it exits (``daemons.runtime.hold_until_started``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...runtime import REFUSED, STARTSECS_ENV
from ...sched import BESIDE_VENUE, PLACE_ENV, SLICE_ENV, VENUE

PROGRAMS_ORDER = ("exchange", "harvest", "signal", "strategy", "broker", "report")
STAGES = ("harvest", "signal", "strategy", "broker", "report")


@dataclass(frozen=True)
class ProgramPolicy:
    """What supervisord does with one program."""

    priority: int
    startsecs: int
    stopwaitsecs: int
    slice_us: int = 0     # a CPU time slice of its own (:mod:`daemons.sched`); 0: the kernel's default
    place: str = ""       # its CPUs when the local exchange runs beside it (:mod:`daemons.sched`)


#: the slice of the programs a signal's order goes through (strategy, broker, and the local
#: exchange standing in for the venue): they wake on each hand-off and work briefly
ORDER_PATH_SLICE_US = 100

POLICY = {
    # the venue must answer before harvest connects, and must outlive the broker on the way down
    "exchange": ProgramPolicy(priority=10, startsecs=2, stopwaitsecs=10,
                              slice_us=ORDER_PATH_SLICE_US, place=VENUE),
    "harvest": ProgramPolicy(priority=20, startsecs=2, stopwaitsecs=10),
    # the signal stage saves its core state on SIGTERM
    "signal": ProgramPolicy(priority=30, startsecs=2, stopwaitsecs=20),
    "strategy": ProgramPolicy(priority=40, startsecs=2, stopwaitsecs=10,
                              slice_us=ORDER_PATH_SLICE_US),
    # the broker may be waiting on the venue for an order in flight: give it time to settle
    "broker": ProgramPolicy(priority=50, startsecs=3, stopwaitsecs=30,
                            slice_us=ORDER_PATH_SLICE_US, place=BESIDE_VENUE),
    # the report daemon writes a last report when stopped
    "report": ProgramPolicy(priority=60, startsecs=2, stopwaitsecs=60),
}
LISTENER = "health"
#: exit codes supervisord treats as expected (never restarted): a clean stop, a refusal to start
EXITCODES = (0, REFUSED)


def environment(p: ProgramPolicy, venue_cpu: bool) -> str:
    """A program's ``environment=`` value: its start grace, its slice when it has one, and its
    place when ``venue_cpu`` (the local exchange runs in the group and gets a CPU of its own)."""
    env = f'{STARTSECS_ENV}="{p.startsecs}"'
    if p.slice_us:
        env += f',{SLICE_ENV}="{p.slice_us}"'
    if venue_cpu and p.place:
        env += f',{PLACE_ENV}="{p.place}"'
    return env


def programs_for(enable: list[str], mode: str) -> list[str]:
    """The programs to run, in priority order: the exchange only in sim mode."""
    unknown = [e for e in enable if e not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) in --enable: {', '.join(unknown)}; "
                         f"stages are {', '.join(STAGES)}")
    names = [s for s in STAGES if s in enable]
    if mode == "sim":
        names.insert(0, "exchange")
    return names


def render(*, programs: list[str], home: str, ofi: str, args_for, listener_cmd: str,
           autostart: bool = False, venue_cpu: bool = True) -> str:
    """The text of a supervisord.conf.

    ``ofi`` is the command that runs the CLI (``bin/ofi`` or ``python -m daemons.tools.cli``),
    ``args_for(name)`` the flags of ``ofi daemon NAME`` (``--home ... --config ...``).
    ``venue_cpu`` (``supervise.venue_cpu``): the local exchange, when it is one of the programs,
    runs on a CPU of its own and the broker on the others.
    """
    venue_cpu = venue_cpu and "exchange" in programs
    out = [
        "; Rendered by the ofi pipeline. Programs start in ascending priority and stop in reverse.",
        "; Readiness: each daemon prints a line containing 'ofi-ready' (log-keyword probe, seen by",
        "; the [eventlistener:health] below); health: its heartbeat file, checked on TICK_5.",
        f"; Exit code {REFUSED} is a refusal to start (config, keys, venue): expected, never",
        f"; restarted; a refusing daemon first stays up {STARTSECS_ENV} seconds (a counted start).",
        "",
        "[unix_http_server]",
        f"file={home}/supervisor.sock",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={home}/log/supervisord.log",
        "logfile_maxbytes=10MB",
        "logfile_backups=5",
        f"pidfile={home}/supervisord.pid",
        f"directory={home}",
        "loglevel=info",
        "minfds=4096",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{home}/supervisor.sock",
        "",
    ]
    for name in programs:
        p = POLICY[name]
        out += [
            f"[program:{name}]",
            f"command={ofi} daemon {name} {args_for(name)}",
            f"priority={p.priority}",
            f"autostart={'true' if autostart else 'false'}",
            "autorestart=unexpected",
            f"exitcodes={','.join(str(c) for c in EXITCODES)}",
            f"startsecs={p.startsecs}",
            f"environment={environment(p, venue_cpu)}",
            "startretries=5",
            "stopsignal=TERM",
            f"stopwaitsecs={p.stopwaitsecs}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={home}/log/{name}.log",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=5",
            "stdout_events_enabled=true",
            "",
        ]
    out += [
        f"[eventlistener:{LISTENER}]",
        f"command={listener_cmd}",
        "events=PROCESS_LOG_STDOUT,PROCESS_STATE,TICK_5",
        "buffer_size=1024",
        # started before every program and stopped after them: it must see every ready line
        "priority=1",
        "autostart=true",
        "autorestart=true",
        f"stderr_logfile={home}/log/{LISTENER}.log",
        "stderr_logfile_maxbytes=10MB",
        "stderr_logfile_backups=3",
        "",
    ]
    return "\n".join(out)


def render_checkout() -> str:
    """``etc/supervisord.conf``: sim mode from a checkout, paths relative to the file."""
    here = "%(here)s"
    home = f"{here}/../var"

    def args_for(name: str) -> str:
        args = f"--home {home} --config {here}/sim.yaml"
        if name == "exchange":
            args += f" --state {home}/exchange"
        return args

    return render(programs=list(PROGRAMS_ORDER), home=home, ofi=f"{here}/../bin/ofi",
                  args_for=args_for,
                  listener_cmd=f"{here}/../bin/ofi health-listener --home {home} "
                               f"--config {here}/sim.yaml")
