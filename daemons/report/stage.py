"""The report daemon: rebuilds today's report every ``report.interval_s`` and at stop.

It has no bus inputs: a report is rebuilt from the spools, so there is nothing to consume. The
build runs in a worker thread so that the heartbeat goes on during a long day's build. After
midnight (UTC) the previous day gets one last build too; cron's ``--date yesterday`` run then
finds it final.
"""
from __future__ import annotations

import threading
import time

from .. import runtime
from .build import build
from .period import parse_date


class ReportStage(runtime.Stage):
    """Report daemon: rebuilds today's report from the spools periodically."""

    name = "report"
    inputs = ()
    outputs = ()

    def __init__(self, ctx):
        super().__init__(ctx)
        self.interval_s = ctx.settings.report.interval_s
        self.next_due = 0.0
        self.worker: threading.Thread | None = None
        self.lock = threading.Lock()
        self.built_day = None
        self.builds = 0
        self.last_path: str | None = None
        self.last_seconds: float | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self.next_due = self.ctx.clock()      # the first build right after ready

    def tick(self, now: float) -> None:
        if now < self.next_due or (self.worker is not None and self.worker.is_alive()):
            return
        self.next_due = now + self.interval_s
        self.worker = threading.Thread(target=self.rebuild, name="report-build", daemon=True)
        self.worker.start()

    def idle_timeout(self) -> float | None:
        return max(0.0, self.next_due - self.ctx.clock())

    def rebuild(self) -> None:
        """Build today's report (and, at a day change, the previous day's one last time)."""
        with self.lock:
            today = parse_date("today", self.ctx.now_ms())
            days = [today]
            if self.built_day is not None and self.built_day.label != today.label:
                days.insert(0, self.built_day)
            for period in days:
                t0 = time.monotonic()
                try:
                    path = build(self.ctx.home, period)
                except Exception as exc:   # a bad build must not take the daemon down
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.ctx.log.error("report_failed", period=period.label, error=self.last_error)
                    continue
                self.last_seconds = round(time.monotonic() - t0, 3)
                self.last_path = str(path)
                self.last_error = None
                self.builds += 1
                self.ctx.log.info("report_built", period=period.label, path=self.last_path,
                                  seconds=self.last_seconds)
            self.built_day = today

    def health(self) -> dict:
        return {"builds": self.builds, "last_report": self.last_path,
                "last_build_s": self.last_seconds, "last_error": self.last_error,
                "next_build_in_s": round(max(0.0, self.next_due - self.ctx.clock()), 1)}

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.join()
        self.rebuild()
