"""The skeleton every daemon shares: config, input topics, loop, emit, heartbeat, clean stop.

A stage is a :class:`Stage` subclass that names its ``inputs`` and ``outputs`` and implements
``handle(topic, record)``; :func:`run` does the rest::

    read config -> open bus, writers, consumers -> [restore state] -> stage.start() -> ofi-ready
    loop: for each input, take a batch; handle each record; mark its position; commit
          stage.tick(); [save state]; heartbeat; log lines; sleep on inotify (or the slow
          poll) when idle
    SIGTERM/SIGINT: finish the record in hand, commit, [save state], stage.stop(), exit 0

``handle`` may raise :class:`bus.BadRecord`: the record goes to ``deadletter`` with the reason
and the loop goes on. Any other exception is unrecoverable: logged, then exit code 1 (supervisord
restarts the program and the consumer resumes from its last committed position).

A *stateful* stage (``stateful = True``: signal, strategy) keeps what it has learnt from its
inputs in memory. The runtime saves ``stage.snapshot()`` every ``save_every_s`` (once its input has
been quiet for :data:`QUIET_S`, as it writes the heartbeat) and at stop, in
one file written atomically (``<home>/state/<name>.json``) together with the input positions it
reflects; on start it hands the state back to ``stage.restore`` and rewinds every input to its
saved position, so a SIGKILL at any instant loses nothing and applies nothing twice. The
consumer files under ``bus/.consumers`` then only report progress (lag). Inputs that are not
topics of this home's bus (a signals directory elsewhere) come from ``stage.sources()`` and are
read, marked and saved the same way.

Time comes from the injected clock (``ctx.clock``; ``ctx.now_ms()``), the wall clock by
default, so a stage's timers run under a test's clock too.

A refusal to start (a ``ConfigError``: bad config, missing or rejected keys, no confirmation, a
production host outside live mode, an unreachable venue) is not a crash: it is logged once as
``fatal``, written into the heartbeat file as ``refused`` (what ``ofi run`` and ``ofi status``
report), and the process exits with :data:`REFUSED` (2), which supervisord's ``exitcodes`` list
as expected, so ``autorestart=unexpected`` leaves it stopped. supervisord counts an exit before
``startsecs`` as a failed start and retries it whatever the code, so under supervisord (which
passes ``OFI_STARTSECS``, see ``supervise/conf.py``) a refusing process first stays up until its
start counts, then exits; SIGTERM ends that wait at once.
"""
from __future__ import annotations

import os
import signal
import time
import traceback

import orjson

from bus import BadRecord, BusError, open_bus

from . import config as configmod
from . import sched, settings
from .log import LEVELS, Logger
from .log import install as install_logging

READY = "ofi-ready"
#: the loop saves state, beats and writes its held log lines (each one wakes supervisord and its
#: event listener) once its input has been quiet this long, so that those writes do not compete
#: for the CPU with the stage that reads the records just emitted
QUIET_S = 0.02
#: ... or once they are this late, however busy the input
BUSY_GRACE_S = 1.0
#: exit code of a refusal to start; listed in supervisord's ``exitcodes``: never restarted
REFUSED = 2
#: environment variable with the program's ``startsecs`` (set by the rendered supervisord.conf)
STARTSECS_ENV = "OFI_STARTSECS"
ALERTS_CLOSE_S = 3.0    # how long a stop waits for queued alert webhooks
STATE_FORMAT = 1        # of the state file the runtime writes for a stateful stage
_T0 = time.monotonic()   # about when the process started (the module is imported at start)


class Stage:
    """Base class of a daemon's logic; subclasses override what they need."""

    name = "stage"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    #: where a consumer without a saved position starts: "beginning" or "end"
    default_start = "beginning"
    #: the runtime saves ``snapshot()`` with the input positions (see the module docstring)
    stateful = False
    #: seconds between two saves of a stateful stage's state (a stage may set it from config)
    save_every_s = 1.0

    def __init__(self, ctx: "Context"):
        self.ctx = ctx

    def restore(self, state: dict) -> None:
        """Take back the state of the last ``snapshot`` (called before ``start``, and only
        when one was saved)."""

    def snapshot(self) -> dict:
        """The state to save with the current input positions (JSON-serialisable)."""
        return {}

    def sources(self) -> dict:
        """Inputs that are not topics of this home's bus: ``{topic: source}``, each with the
        consumer's ``poll``/``mark``/``seek``/``commit``/``position``/``lag``/``close`` (its
        records reach ``handle`` under ``topic``; an optional ``key`` names its saved
        position). Called after ``restore``."""
        return {}

    def start(self) -> None:
        """Open connections; called before the ready line."""

    def handle(self, topic: str, record: dict) -> None:
        """Process one input record (raise ``BadRecord`` to dead-letter it)."""

    def drained(self, topic: str, caught_up: bool) -> None:
        """After each read of an input: whether it is caught up (nothing more to read now)."""

    def tick(self, now: float) -> None:
        """Called on every loop turn, records or not (timers, external sources)."""

    def idle_timeout(self) -> float | None:
        """Longest sleep before the next ``tick`` is due (None: the slow poll)."""
        return None

    def health(self) -> dict:
        """Extra fields for the heartbeat file."""
        return {}

    def stop(self) -> None:
        """Flush and close; called once on the way out."""


class Context:
    """What a stage gets: settings, bus, its writers, a logger, its directories, the clock."""

    def __init__(self, name: str, cfg: dict, bus, log: Logger, clock=time.time):
        self.name = name
        self.clock = clock                  # seconds since the epoch (injected in tests)
        self.config = cfg                   # the mapping (``ofi status`` shows it, masked)
        self.settings = settings.of(cfg)    # the same, typed and frozen: what stages read
        self.bus = bus
        self.log = log
        self.home = str(configmod.home_of(cfg))
        self.state_dir = os.path.join(self.home, "state")
        self.run_dir = os.path.join(self.home, "run")
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        self.writers: dict = {}
        self.stopping = False
        self.waiting: dict | None = None   # what a pause waits for (in the heartbeat file)
        self.beat = lambda now: None       # the runner's heartbeat, so a long pause keeps it
        self.alerter = None                # daemons.alerts.Alerter, made by the first alert
        self.unsaved = False               # a stateful stage changed since its last save

    def now_ms(self) -> int:
        """The clock in integer milliseconds (the bus's time unit)."""
        return int(self.clock() * 1000)

    def changed(self) -> None:
        """Note that a stateful stage's state changed without an input record (a timer):
        the next save is due."""
        self.unsaved = True

    def pause(self, seconds: float, **why) -> bool:
        """Wait ``seconds`` (during start-up, say for a venue's Retry-After) with the heartbeat
        going on and ``why`` plus ``until`` in it; False at once when a stop is asked."""
        until = time.time() + max(0.0, seconds)
        self.waiting = dict(why, until=round(until, 3))
        try:
            while not self.stopping:
                now = time.time()
                if now >= until:
                    return True
                self.beat(now)
                time.sleep(min(0.1, until - now))
            return False
        finally:
            self.waiting = None

    def alert(self, kind: str, message: str, subject: str = "", **fields) -> dict | None:
        """Raise an alert (``alerts`` topic, log line, webhook; see ``daemons/alerts.py``);
        None when the same kind and subject was raised less than ``alerts.repeat_s`` ago."""
        if self.alerter is None:
            from .alerts import Alerter

            self.alerter = Alerter(self.settings.alerts, self.bus, self.name, self.log)
        return self.alerter.alert(kind, message, subject, **fields)

    def emit(self, topic: str, payload: dict) -> dict:
        """Append a record to one of the stage's output topics."""
        return self.writers[topic].append(payload)

    def emit_many(self, topic: str, payloads: list[dict]) -> int:
        return self.writers[topic].append_many(payloads)

    def wake(self) -> None:
        """Wake the loop from another thread."""
        if self.bus.waker is not None:
            self.bus.waker.kick()


class Heartbeat:
    """``<home>/run/<name>.json``, rewritten every ``every_s`` by each daemon and by the
    exchange: who (name, pid), when (ts, started), whether it serves (ready), plus the
    process's own fields. ``ofi status``, ``ofi run`` and the health listener read it."""

    def __init__(self, run_dir: str, name: str, every_s: float, clock=time.time):
        self.path = os.path.join(run_dir, f"{name}.json")
        self.name = name
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def write(self, ready: bool, **fields) -> None:
        now = self.clock()
        self.next_at = now + self.every_s
        write_json_atomic(self.path, {"name": self.name, "pid": os.getpid(), "ts": now,
                                      "started": self.started, "ready": ready, **fields})


def announce_ready(log: Logger, **fields) -> None:
    """The one log line supervisord's readiness check and ``ofi run`` wait for."""
    log.info(READY, pid=os.getpid(), **fields)


def write_json_atomic(path: str, data: dict) -> None:
    """Replace ``path`` with ``data`` as JSON (write a temporary file, then rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    """The JSON object in ``path``, or None if it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return orjson.loads(f.read())
    except (OSError, ValueError):
        return None


class Runner:
    """Drives one stage; see the module docstring."""

    def __init__(self, stage_cls, cfg: dict, log: Logger | None = None, clock=time.time):
        self.cfg = cfg
        self.name = stage_cls.name
        self.log = log or Logger(self.name, cfg["log"]["level"])
        home = configmod.home_of(cfg)
        self.bus = open_bus(home, sink=cfg["sink"], **cfg["bus"])
        self.ctx = Context(self.name, cfg, self.bus, self.log, clock)
        self.clock = clock
        self.stage = stage_cls(self.ctx)
        daemon = self.ctx.settings.daemon
        self.consumers = {}
        self.keys = {}            # input topic -> the name of its position in the state file
        self.processed = 0
        self.deadlettered = 0
        self.beat = Heartbeat(self.ctx.run_dir, self.name, daemon.heartbeat_s, clock)
        self.batch = daemon.batch
        self.state_path = os.path.join(self.ctx.state_dir, f"{self.name}.json")
        self._saved_at = time.monotonic()
        self._logged_at = time.monotonic()
        self.ready = False
        self.ctx.beat = self.heartbeat

    def open(self) -> None:
        stage = self.stage
        for topic in stage.outputs:
            self.ctx.writers[topic] = self.bus.writer(topic)
        saved = self.load_state() if stage.stateful else None
        for topic in stage.inputs:
            self.consumers[topic] = self.bus.consumer(
                topic, self.name, default_start=stage.default_start)
            self.keys[topic] = topic
            self.bus.watch(topic)
        if saved is not None:
            stage.restore(saved["state"])
        for topic, source in stage.sources().items():
            self.consumers[topic] = source
            self.keys[topic] = getattr(source, "key", topic)
        if stage.stateful:
            positions = saved.get("positions") if saved is not None else {}
            if positions is not None:   # None: a state file of before the runtime kept them
                for topic, consumer in self.consumers.items():
                    consumer.seek(positions.get(self.keys[topic]))
        if not stage.inputs:
            self.bus.wait(0)  # create the waker so that other threads can kick the loop

    # -- state of a stateful stage ---------------------------------------------------------
    def load_state(self) -> dict | None:
        """The saved state (``{"state", "positions"}``), or None when there is none."""
        try:
            with open(self.state_path, "rb") as f:
                data = orjson.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise configmod.ConfigError(f"{self.name} state {self.state_path} is unreadable: "
                                        f"{exc}") from None
        if not isinstance(data, dict):
            raise configmod.ConfigError(f"{self.name} state {self.state_path} is not an object")
        if "runtime" not in data:
            # written by the stage itself before the runtime saved it: the positions, if it
            # kept them, sit beside the state
            return {"state": data, "positions": data.get("positions")}
        if data["runtime"] != STATE_FORMAT:
            raise configmod.ConfigError(f"{self.name} state {self.state_path}: unknown format "
                                        f"{data['runtime']!r}")
        return data

    def save_state(self) -> None:
        """Write the stage's state and the positions it reflects (one atomic file), then
        commit the consumers (their files only report progress)."""
        state = self.stage.snapshot()
        write_json_atomic(self.state_path, {
            "runtime": STATE_FORMAT, "stage": self.name, "saved": self.clock(),
            "positions": {self.keys[t]: c.position for t, c in self.consumers.items()},
            "state": state})
        for consumer in self.consumers.values():
            consumer.commit()
        self.ctx.unsaved = False
        self._saved_at = time.monotonic()

    # -- loop ------------------------------------------------------------------------------
    def heartbeat(self, now: float, force: bool = False) -> None:
        if not force and not self.beat.due(now):
            return
        fields = {
            "processed": self.processed, "deadlettered": self.deadlettered,
            "lag": {t: c.lag() for t, c in self.consumers.items()},
            "positions": {t: (c.position or {}).get("seq", 0) for t, c in self.consumers.items()},
            "emitted": {t: w.seq for t, w in self.ctx.writers.items()},
        }
        if self.ctx.waiting:
            fields["waiting"] = self.ctx.waiting
        fields.update(self.stage.health())
        self.beat.write(self.ready, **fields)

    def step(self) -> int:
        """One pass over the inputs; returns how many records were handled."""
        handled = 0
        stage = self.stage
        handle = stage.handle
        for topic, consumer in self.consumers.items():
            batch = consumer.poll(self.batch)
            stage.drained(topic, len(batch) < self.batch)
            for rec, pos in batch:
                try:
                    handle(topic, rec)
                except BadRecord as bad:
                    self.bus.deadletter(bad.reason, bad.raw or orjson.dumps(rec).decode(),
                                        source=topic, position=pos, stage=self.name)
                    self.deadlettered += 1
                consumer.mark(pos)
                handled += 1
                if self.ctx.stopping:
                    break
            if not stage.stateful:
                consumer.commit()
            if self.ctx.stopping:
                break
        self.processed += handled
        if handled:
            self.ctx.unsaved = True
        return handled

    def loop(self) -> None:
        poll = self.ctx.settings.bus.poll_interval_s
        stateful = self.stage.stateful
        every = self.stage.save_every_s
        active = float("-inf")   # when records were last handled (monotonic)
        while not self.ctx.stopping:
            handled = self.step()
            now = self.clock()
            self.stage.tick(now)
            mono = time.monotonic()
            if handled:
                active = mono
            # the state and the heartbeat are written once the input has been quiet for
            # QUIET_S (or when BUSY_GRACE_S late): not while the next stage reads what this
            # one just wrote, on the same CPUs
            quiet = mono - active >= QUIET_S
            save_due = stateful and self.ctx.unsaved and mono - self._saved_at >= every
            if save_due and (quiet or mono - self._saved_at >= every + BUSY_GRACE_S):
                self.save_state()
                save_due = False
            if quiet or now >= self.beat.next_at + BUSY_GRACE_S:
                self.heartbeat(now)
            if quiet or mono - self._logged_at >= BUSY_GRACE_S:
                self.log.write_held()
                self._logged_at = mono
            if handled or self.ctx.stopping:
                continue
            timeout = self.stage.idle_timeout()
            timeout = poll if timeout is None else max(0.0, min(poll, timeout))
            timeout = min(timeout, max(0.0, self.beat.next_at - now))
            if stateful and self.ctx.unsaved:
                timeout = min(timeout, max(0.0, self._saved_at + every - mono))
            if self.log.has_held():   # written once the quiet time is over
                timeout = min(timeout, max(0.0, active + QUIET_S - mono))
            if save_due or self.beat.due(now):   # wait out the quiet time first
                timeout = max(timeout, min(poll, active + QUIET_S - mono))
            self.bus.wait(timeout)

    def close(self, save: bool = True) -> None:
        """Stop: save a stateful stage's state (not after a crash: the record in hand may be
        half applied, and the last save is the truth), close the inputs, ``stage.stop()``."""
        try:
            if save and self.stage.stateful and self.ready:
                self.save_state()
            for consumer in self.consumers.values():
                consumer.close()
            self.stage.stop()
        finally:
            for w in self.ctx.writers.values():
                w.close()
            if self.ctx.alerter is not None:
                self.ctx.alerter.close(ALERTS_CLOSE_S)
            self.ready = False
            self.log.hold(False)
            self.heartbeat(time.time(), force=True)
            self.bus.close()


def run(stage_cls, cfg: dict) -> int:
    """Run a stage until SIGTERM/SIGINT; returns the process exit code."""
    # before any thread starts (they inherit them): the CPU slice and place supervisord asks for
    placed = sched.apply_from_env()
    runner = Runner(stage_cls, cfg)
    log = runner.log
    install_logging(runner.name, runner.ctx.settings.log.level)

    def _stop(signum, _frame):
        runner.ctx.stopping = True
        runner.ctx.wake()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        runner.open()
        runner.stage.start()
        runner.ready = True
        runner.heartbeat(time.time(), force=True)
        announce_ready(log, inputs=list(runner.consumers), outputs=list(stage_cls.outputs),
                       sink=cfg["sink"], home=runner.ctx.home, **placed)
        log.hold()   # info lines wait for a quiet moment of the loop (QUIET_S)
        runner.loop()
    except (BusError, configmod.ConfigError) as exc:
        if runner.ctx.stopping and not runner.ready:
            # SIGTERM during a start that was still waiting (on the venue): a stop, not a refusal
            log.info("stopped", during="start", reason=str(exc))
            _safe_close(runner)
            return 0
        log.error("fatal", error=str(exc))
        if not isinstance(exc, configmod.ConfigError):
            _safe_close(runner)
            return 1
        # a refusal says why once: the clean-up of a stage that never started logs no warnings
        log.threshold = max(log.threshold, LEVELS["error"])
        _safe_close(runner)
        _mark_refused(runner, str(exc))
        hold_until_started(lambda: runner.ctx.stopping)
        return REFUSED
    except Exception as exc:
        log.error("crash", error=f"{type(exc).__name__}: {exc}",
                  traceback=traceback.format_exc().splitlines()[-6:])
        _safe_close(runner)
        return 1
    runner.close()
    log.info("stopped", processed=runner.processed)
    return 0


def _safe_close(runner: Runner) -> None:
    try:
        runner.close(save=False)
    except Exception:
        pass


def _mark_refused(runner: Runner, reason: str) -> None:
    """The heartbeat file says why this process refused to start (for ``ofi run``/``status``
    and the health listener, which never restarts a refused program)."""
    try:
        runner.beat.write(False, refused=reason, exit_code=REFUSED)
    except OSError:
        pass


def hold_until_started(stopping=lambda: False) -> None:
    """Under supervisord, stay up until the start counts (``startsecs`` plus a margin), so that
    the exit that follows is judged by ``exitcodes`` rather than retried as a failed start.
    Returns at once outside supervisord, and as soon as ``stopping()`` (SIGTERM) is true."""
    try:
        startsecs = float(os.environ.get(STARTSECS_ENV) or 0)
    except ValueError:
        return
    if startsecs <= 0:
        return
    until = _T0 + startsecs + 0.5
    while not stopping() and time.monotonic() < until:
        time.sleep(min(0.1, max(0.0, until - time.monotonic())))
