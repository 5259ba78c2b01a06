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
