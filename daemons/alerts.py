"""Alerts: events that need an operator, as records on the ``alerts`` topic and webhook POSTs.

    alerter = Alerter(ctx.settings.alerts, bus, "broker", log)
    alerter.alert("halted", "trading HALTED: overfill", subject="overfill", symbol="BTCUSDT")
    ...
    alerter.close(2.0)

Each alert is one record ``{type:"alert", kind, subject, message, source, ts, ...fields}``
appended to the shared ``alerts`` topic (any number of processes append to it, taking the
topic's lock per append, as ``deadletter``), one structured log line (``alert``, at error or
warning level) and, when ``alerts.webhook_url`` is set, an HTTP POST of
``{"text": "[ofi <kind>] <message>", kind, subject, source, ts, ...fields}`` (a Slack-style
incoming webhook accepts it). The POST runs on a background daemon thread fed by a bounded
queue: the caller never waits for the network. A POST is tried up to 3 times (connection
errors, timeouts, 5xx, 429), then given up with one ``alert_webhook_failed`` log line.

The same (kind, subject) is raised at most once per ``alerts.repeat_s``: a repeat within that
time writes, logs and posts nothing (``alert`` returns None).

The webhook URL is a secret (it authorises posting to the channel): it is never logged and never
written into a record; errors are logged by their class and HTTP status only, since the
messages of ``requests`` exceptions carry the URL.

"""
from __future__ import annotations

import queue
import threading
import time

import orjson

from .log import Logger, redact

KINDS = (
    "halted",            # trading state set to HALTED (by the broker or the strategy)
    "reconciliation",    # positions/orders that differ from the venue's without an explanation
    "banned",            # the venue answered 418 (IP ban) / the weight limit
    "stale_feed",        # the signals the strategy gets are too old to act on
    "stop_triggered",    # a protective stop fired
    "flatten_failed",    # a flatten left positions or orders open
    "late_execution",    # an order presumed never placed was executed by the venue after all
)
#: kinds logged at warning level; the others are errors
WARNING_KINDS = ("stale_feed", "stop_triggered")
#: fields of every record; extra fields may not use these names
RESERVED = ("seq", "ts", "type", "kind", "subject", "message", "source", "text")
MAX_MESSAGE = 500          # characters of the one-line message
QUEUE_SIZE = 100           # alerts waiting for the webhook thread; more are dropped (logged)
ATTEMPTS = 3               # POSTs per alert
BACKOFF_S = (0.5, 1.0)     # waits between attempts
#: record fields left out of the log line (the logger's own, and the record's type)
_NOT_LOGGED = ("type", "ts", "level", "stage", "event")


def _one_line(text) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "..."


def _jsonable(value):
    """``value`` if orjson can encode it, else its ``str``."""
    try:
        orjson.dumps(value)
        return value
    except TypeError:
        return str(value)


def alert_record(kind: str, message: str, *, source: str, subject: str = "", now: int,
                 **fields) -> dict:
    """The payload of one alert (pure). ``now`` is the time in epoch milliseconds; ``fields``
    are extra JSON fields (a value orjson cannot encode becomes its ``str``; values of keys that
    look like credentials are masked). Raises ValueError for an unknown kind or a field that
    takes the name of a common one."""
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}; kinds are: {', '.join(KINDS)}")
    clash = sorted(set(fields) & set(RESERVED))
    if clash:
        raise ValueError(f"alert field(s) {', '.join(clash)} are reserved")
    rec = {"type": "alert", "kind": kind, "subject": str(subject or ""),
           "message": _one_line(message), "source": str(source), "ts": int(now)}
    for key, value in redact(fields).items():
        rec[key] = _jsonable(value)
    return rec


def webhook_document(rec: dict) -> dict:
    """The JSON document POSTed for a record (its bus ``seq`` left out)."""
    doc = {"text": f"[ofi {rec['kind']}] {rec['message']}"}
    doc.update((k, v) for k, v in rec.items() if k not in ("seq", "type"))
    return doc


def _scrub(rec: dict, url: str) -> dict:
    """``rec`` with the webhook URL masked wherever a caller put it by mistake."""
    if not url or url not in orjson.dumps(rec).decode():
        return rec
    return orjson.loads(orjson.dumps(rec).decode().replace(url, "****"))


def post_webhook(session, url: str, doc: dict, timeout_s: float,
                 sleep=time.sleep) -> tuple[bool, int, str]:
    """POST ``doc`` up to :data:`ATTEMPTS` times; returns (delivered, attempts, why not).

    Retried: connection errors, timeouts, 5xx and 429. ``why`` names the exception class or the
    HTTP status, never the URL. ``sleep(seconds)`` waits between attempts (False: give up)."""
    import requests

    why = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            resp = session.post(url, json=doc, timeout=timeout_s)
            status = resp.status_code
            resp.close()
            if status < 300:
                return True, attempt, ""
            why = f"HTTP {status}"
            if status != 429 and status < 500:
                return False, attempt, why           # the hook refuses it: retrying won't help
        except (requests.ConnectionError, requests.Timeout) as exc:
            why = type(exc).__name__
        except requests.RequestException as exc:     # a malformed URL and the like
            return False, attempt, type(exc).__name__
        if attempt < ATTEMPTS and sleep(BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1]) is False:
            return False, attempt, why
    return False, ATTEMPTS, why


class Alerter:
    """Raises alerts for one program: de-duplication, the ``alerts`` record, the log line and
    the webhook thread. Thread-safe; ``clock`` (epoch seconds) drives the de-duplication."""

    def __init__(self, section, bus, source: str, log: Logger, clock=time.time):
        #: the typed ``alerts`` settings (:class:`daemons.settings.Alerts`), as this alerter uses
        #: them: a program that posts synchronously turns off its own webhook and repeats
        self.webhook_url = section.webhook_url.strip()
        self.timeout_s = section.timeout_s
        self.repeat_s = section.repeat_s
        self.bus = bus
        self.source = source
        self.log = log
        self.clock = clock
        self.sent = 0           # alerts raised (not de-duplicated)
        self.suppressed = 0     # repeats within repeat_s
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._writer = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._give_up = threading.Event()

    # -- raising -----------------------------------------------------------------------------
    def alert(self, kind: str, message: str, subject: str = "", **fields) -> dict | None:
        """Raise one alert; returns its record (with ``seq`` once on the bus), or None when the
        same kind and subject was raised less than ``repeat_s`` ago. Raises ValueError for a
        kind not in :data:`KINDS` only; a field named like a common one (``ts``, ``source``,
        ...) becomes ``<name>_``; a failed write to the bus is logged (``alert_write_failed``)."""
        subject = str(subject or "")
        # a field named like a common one is kept under another name rather than refused
        fields = {(f"{k}_" if k in RESERVED else k): v for k, v in fields.items()}
        now = self.clock()
        rec = alert_record(kind, message, source=self.source, subject=subject,
                           now=int(now * 1000), **fields)
        rec = _scrub(rec, self.webhook_url)
        with self._lock:
            last = self._last.get((kind, subject))
            if last is not None and now - last < self.repeat_s:
                self.suppressed += 1
                return None
            self._last[(kind, subject)] = now
            self.sent += 1
            written = self._append(rec)
        if written is not None:
            rec = written           # as stored: its seq, and the bus's ts
        level = "warning" if kind in WARNING_KINDS else "error"
        self.log.log(level, "alert", **{k: v for k, v in rec.items() if k not in _NOT_LOGGED})
        if self.webhook_url:
            self._enqueue(webhook_document(rec))
        return rec

    def _append(self, rec: dict) -> dict | None:
        """Append to ``alerts``; an error is logged, never raised (the alert still goes on)."""
        from bus import BusError

        try:
            if self._writer is None:
                self._writer = open_alerts_writer(self.bus)
            return self._writer.append(rec)
        except (BusError, OSError) as exc:
            self.log.error("alert_write_failed", kind=rec["kind"], subject=rec["subject"],
                           error=f"{type(exc).__name__}: {exc}")
            return None

    # -- the webhook thread ------------------------------------------------------------------
    def _enqueue(self, doc: dict) -> None:
        if self._thread is None:
            self._give_up.clear()
            self._queue = queue.Queue(QUEUE_SIZE)
            self._thread = threading.Thread(target=self._run, name="alerts-webhook",
                                            daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(doc)
        except queue.Full:
            self.log.error("alert_webhook_dropped", kind=doc["kind"], subject=doc["subject"],
                           queued=QUEUE_SIZE)

    def _run(self) -> None:
        import requests

        session = requests.Session()
        try:
            while True:
                doc = self._queue.get()
                try:
                    if doc is None:
                        return
                    if self._give_up.is_set():
                        ok, attempts, why = False, 0, "not sent: closing"
                    else:
                        ok, attempts, why = post_webhook(
                            session, self.webhook_url, doc,
                            self.timeout_s,
                            sleep=lambda s: not self._give_up.wait(s))
                    if not ok:
                        self.log.error("alert_webhook_failed", kind=doc["kind"],
                                       subject=doc["subject"], attempts=attempts, error=why)
                except Exception as exc:   # never let the thread die on one alert
                    self.log.error("alert_webhook_failed", kind=doc["kind"],
                                   subject=doc["subject"], error=type(exc).__name__)
                finally:
                    self._queue.task_done()
        finally:
            session.close()

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (waiting at most ``timeout`` s), stop the thread, close the
        writer. Alerts still queued after that are given up (one log line each)."""
        thread = self._thread
        if thread is not None:
            deadline = time.monotonic() + max(0.0, timeout)
            while True:   # the queue may be full: put the stop mark within the deadline
                try:
                    self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                    break
                except queue.Full:
                    if time.monotonic() >= deadline:
                        break
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._give_up.set()            # cut short retries and what is left
                thread.join(0.5)
            self._thread = None
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def open_alerts_writer(bus):
    """A shared writer of ``alerts``; an existing topic keeps its sink (as ``deadletter``
    does), so a command run with another ``--sink`` still adds its alerts to it."""
    existing = bus.sink_of("alerts")
    if existing == bus.sink:
        return bus.writer("alerts", shared=True)
    return bus._open_writer("alerts", existing, True)
