"""Structured logs through the standard logging module: ours and the libraries'."""
import io
import logging
import warnings

import orjson

from daemons.log import Logger, install


def _lines(buf: io.StringIO) -> list[dict]:
    return [orjson.loads(x) for x in buf.getvalue().splitlines()]


def test_our_lines_are_json_with_fields_redacted_and_below_the_level_dropped():
    buf = io.StringIO()
    log = Logger("broker", "info", stream=buf)
    log.debug("hidden")
    log.info("order_sent", client_order_id="c1", api_key="k-123", qty=0.5)
    (line,) = _lines(buf)
    assert set(line) == {"ts", "level", "stage", "event", "client_order_id", "api_key", "qty"}
    assert (line["level"], line["stage"], line["event"]) == ("info", "broker", "order_sent")
    assert line["api_key"] == "****" and line["qty"] == 0.5
    other = io.StringIO()
    Logger("broker", "info", stream=other).info("x")    # two loggers never share a handler
    assert len(_lines(buf)) == 1 and len(_lines(other)) == 1


def test_library_warnings_become_structured_lines_too():
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        install("harvest", "info", stream=buf)
        logging.getLogger("websockets.client").warning("connection %s closed", "wss://x")
        logging.getLogger("urllib3.connectionpool").info("below WARNING: not written")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("something is deprecated", DeprecationWarning)
        lines = _lines(buf)
        assert lines[0]["event"] == "connection wss://x closed"
        assert (lines[0]["logger"], lines[0]["stage"], lines[0]["level"]) == \
            ("websockets.client", "harvest", "warning")
        assert lines[1]["logger"] == "py.warnings" and "deprecated" in lines[1]["event"]
        assert len(lines) == 2
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


class _Writes(io.StringIO):
    """Counts the writes it gets (each one is a wake-up of supervisord on a pipe)."""

    writes = 0

    def write(self, s):
        self.writes += 1
        return super().write(s)


def test_held_lines_keep_their_time_and_order_and_go_out_in_one_write():
    buf = _Writes()
    log = Logger("strategy", "info", stream=buf)
    log.hold()
    log.info("intent", n=1)
    log.info("intent", n=2)
    assert buf.getvalue() == "" and buf.writes == 0
    first = _lines_of(log, buf)
    assert [x["n"] for x in first] == [1, 2] and buf.writes == 1
    log.info("intent", n=3)
    log.warning("risk_denied", n=4)          # a warning writes what is held first, then itself
    assert [x["n"] for x in _lines(buf)] == [1, 2, 3, 4]
    log.info("intent", n=5)
    log.hold(False)                          # writes what is held, then holds no more
    log.info("stopped", n=6)
    lines = _lines(buf)
    assert [x["n"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert [x["ts"] for x in lines] == sorted(x["ts"] for x in lines)


def _lines_of(log, buf):
    log.write_held()
    return _lines(buf)
