"""What the gateway's calls need beside the proposal rules (:mod:`daemons.proposals`): a rate
limit, redaction of secrets for the ``audit`` topic, one-line errors, a report's summary. Pure
functions; the caller passes the clock."""
from __future__ import annotations

import re
from collections import deque

#: argument names whose values are never written anywhere (an audit record included)
SECRET_NAMES = re.compile(r"(api[_-]?key|secret|signature|password|passphrase|token|credential)",
                          re.IGNORECASE)


class RateLimit:
    """At most ``per_minute`` calls in any 60 s (0: no limit); the caller passes the clock."""

    def __init__(self, per_minute: int):
        self.per_minute = int(per_minute)
        self.times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self.times and self.times[0] <= now - 60.0:
            self.times.popleft()
        if self.per_minute and len(self.times) >= self.per_minute:
            return False
        self.times.append(now)
        return True


def redact(value, secrets=()):
    """``value`` with every field whose name looks secret masked, and every known secret
    string (``secrets``) cut out of strings: what may be written to ``audit``."""
    if isinstance(value, dict):
        return {k: "***" if isinstance(k, str) and SECRET_NAMES.search(k) else redact(v, secrets)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for s in secrets:
            if s and len(s) >= 4 and s in value:
                value = value.replace(s, "***")
        return value
    return value


def strip_userinfo(url):
    """A URL without ``user:password@`` (a venue URL may carry it)."""
    if not isinstance(url, str):
        return url
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.IGNORECASE)


def one_line(text: str, limit: int = 400) -> str:
    """The first line of an error, bounded."""
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def report_summary(markdown: str) -> dict[str, str]:
    """The Summary table of a ``report.md`` (Metric -> Value)."""
    out: dict[str, str] = {}
    inside = False
    for line in markdown.splitlines():
        if line.startswith("## "):
            if inside:
                break
            inside = line.strip() == "## Summary"
            continue
        if inside and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 2 and cells[0] not in ("Metric", "") and not set(cells[0]) <= set("-: "):
                out[cells[0]] = cells[1]
    return out
