"""The span of time a report covers: ``--date`` (a UTC day) or ``--since`` (open-ended).

Pure parsing; "now" is passed in so that callers and tests control it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAY_MS = 86_400_000
UTC = dt.timezone.utc


class PeriodError(ValueError):
    """A --date or --since value that cannot be understood (message fit for one line)."""


@dataclass(frozen=True)
class Period:
    """Records with ``since_ms <= ts < until_ms`` (``until_ms`` None: no end)."""

    since_ms: int
    until_ms: int | None
    label: str          # directory name under <home>/reports
    title: str          # human heading

    def contains(self, ts: int) -> bool:
        return ts >= self.since_ms and (self.until_ms is None or ts < self.until_ms)


def iso_ms(ms: int) -> str:
    """``2024-03-05T12:00:01.250Z`` (milliseconds only when not zero)."""
    t = dt.datetime.fromtimestamp(ms / 1000, UTC)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms % 1000:03d}Z" if ms % 1000 else f"{base}Z"


def day(date: dt.date) -> Period:
    """The UTC day ``date``."""
    start = int(dt.datetime(date.year, date.month, date.day, tzinfo=UTC).timestamp() * 1000)
    label = date.isoformat()
    return Period(start, start + DAY_MS, label, f"{label} (UTC)")


def parse_date(text: str, now_ms: int) -> Period:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC)."""
    value = text.strip().lower()
    today = dt.datetime.fromtimestamp(now_ms / 1000, UTC).date()
    if value == "today":
        return day(today)
    if value == "yesterday":
        return day(today - dt.timedelta(days=1))
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise PeriodError(f"invalid --date {text!r}: expected YYYY-MM-DD, today or yesterday")
    try:
        return day(dt.date.fromisoformat(value))
    except ValueError as exc:
        raise PeriodError(f"invalid --date {text!r}: {exc}") from None


def epoch_ms(text: str) -> int:
    """An ISO 8601 date or time (UTC when it has no offset) or epoch milliseconds, as epoch ms;
    ValueError when it is neither."""
    value = text.strip()
    if re.fullmatch(r"\d{1,15}", value):
        return int(value)
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return round(t.timestamp() * 1000)


def parse_since(text: str) -> Period:
    """An ISO 8601 time (UTC when it has no offset) or epoch milliseconds; no end."""
    try:
        ms = epoch_ms(text)
    except ValueError:
        raise PeriodError(f"invalid --since {text!r}: expected an ISO time "
                          "(e.g. 2024-03-05T12:00:00Z) or epoch milliseconds") from None
    if ms < 0:
        raise PeriodError(f"invalid --since {text!r}: before 1970")
    stamp = iso_ms(ms).replace("-", "").replace(":", "")
    return Period(ms, None, f"since-{stamp}", f"since {iso_ms(ms)}")


def resolve(date: str | None, since: str | None, now_ms: int) -> Period:
    """The period of ``--date``/``--since`` (neither: today, UTC)."""
    if date is not None and since is not None:
        raise PeriodError("--date and --since exclude each other")
    if since is not None:
        return parse_since(since)
    return parse_date(date if date is not None else "today", now_ms)
