"""The compiled readers of the two-process ``ofi signals`` (book-ticker and trade lines in the
main process, chained diffs in the depth worker) against the Python loops, on odd lines."""
from __future__ import annotations

import gzip

import orjson
import pytest

from daemons.marketdata.formats import FormatError
from daemons.signal import offline, split
from daemons.signal.core import SignalCore
from daemons.signal.offline import OfflineRun


@pytest.fixture(autouse=True)
def _compiled_for_small_files(monkeypatch):
    monkeypatch.setattr(offline, "TICKS_MIN_BYTES", 0)


def _run(paths, symbol, workers, stall_ms=30000):
    run = OfflineRun(paths, symbol, SignalCore(), workers=workers, stall_ms=stall_ms)
    out = orjson.dumps(list(run))
    return run, out


def _odd(lines: list[bytes]) -> list[bytes]:
    """The recording's lines with odd ones among them: every form the compiled reader leaves
    to Python, and silences."""
    out = []
    nb = nt = nd = 0
    for i, ln in enumerate(lines):
        if b"@depth" in ln[:60]:
            nd += 1
            if nd % 50 == 1:   # read by orjson
                ln = ln.replace(b'{"stream":"', b'{"stream": "', 1)
            elif nd == 700:    # the chain breaks: a gap, then a re-sync
                continue
        elif b"@bookTicker" in ln[:60]:
            nb += 1
            k = nb % 97
            if k == 1:   # 17 significant digits: float() reads it
                ln = ln.replace(b'"b":"', b'"b":"0', 1).replace(b'","B"', b'0000001","B"', 1)
            elif k == 2:   # a space in the JSON
                ln = ln.replace(b'{"stream":"', b'{"stream": "', 1)
            elif k == 3:   # an escape
                ln = ln.replace(b'"s":"BTCUSDT"', b'"s":"BTC\\u0055SDT"', 1)
            elif k == 4:   # keys in another order, one unknown
                ln = ln.replace(b'"e":"bookTicker",', b'', 1).replace(
                    b'}}', b',"e":"bookTicker","z":null}}', 1)
            elif k == 5:   # no event time
                ln = ln.replace(b',"E":', b',"x":', 1)
            elif k == 6:   # another symbol
                ln = ln.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"', 1)
            elif k == 7:   # an exponent
                ln = ln.replace(b'"A":"', b'"A":"1e-3","y":"', 1)
            elif k == 8:
                out.append(b"")   # a blank line
        elif b"@trade" in ln[:60]:
            nt += 1
            k = nt % 13
            if k == 1:
                ln = ln.replace(b'"X":"MARKET"', b'"X":"LIQUIDATION"', 1)
            elif k == 2:
                ln = ln.replace(b',"X":"MARKET"', b'', 1)
            elif k == 3:
                ln = ln.replace(b'"m":true', b'"m":1', 1).replace(b'"m":false', b'"m":0', 1)
            elif k == 4:
                ln = ln.replace(b'","X"', b'00000000000001","X"', 1)
        out.append(ln)
    return out


@pytest.mark.slow   # forks the depth worker
@pytest.mark.parametrize("stall_ms", [30000, 700])
def test_compiled_readers_equal_python_loops_on_odd_lines(data_dir, tmp_path, monkeypatch,
                                                          stall_ms):
    src = data_dir / "hftbacktest" / "usdm"
    paths = []
    for name in ("btcusdt_20240718.gz", "btcusdt_20240719.gz"):
        lines = gzip.decompress((src / name).read_bytes()).split(b"\n")
        if name.endswith("19.gz"):   # the book stream stops for a while, trades go on
            book = [i for i, ln in enumerate(lines) if b"@bookTicker" in ln[:60]]
            gone = set(book[2000:9000] + book[40000:])   # for 40 s, and from some point on
            ln = lines[book[9000]]   # back, with an event time older than the stall limit
            d = orjson.loads(ln[ln.find(b" ") + 1:])
            d["data"]["E"] = int(ln[:ln.find(b" ")]) // 10**6 - 5000
            lines[book[9000]] = ln[:ln.find(b" ") + 1] + orjson.dumps(d)
            lines = [ln for i, ln in enumerate(lines) if i not in gone]
        p = tmp_path / name.replace(".gz", ".txt")
        p.write_bytes(b"\n".join(_odd(lines)))
        paths.append(str(p))
    fast, got = _run(paths, "BTCUSDT", 2, stall_ms)
    one, want = _run(paths, "BTCUSDT", 1, stall_ms)
    assert fast.workers == 2 and one.gaps
    assert got == want
    assert fast.stalls or stall_ms > 1000
    assert (fast.messages, fast.gaps, fast.stalls) == (one.messages, one.gaps, one.stalls)
    assert orjson.dumps(fast.core.state()) == orjson.dumps(one.core.state())
    # and the two processes without numba's readers
    monkeypatch.setattr(offline, "_ticks", lambda: None)
    monkeypatch.setattr(split, "_fast_book", lambda levels: None)
    slow, got_slow = _run(paths, "BTCUSDT", 2, stall_ms)
    assert slow.workers == 2
    assert got_slow == want
    assert (slow.messages, slow.stalls) == (one.messages, one.stalls)


@pytest.mark.slow   # forks the depth worker
@pytest.mark.parametrize("kind", [b"@bookTicker", b"@trade"])
def test_compiled_reader_bad_line_is_reported_with_its_number(data_dir, tmp_path, kind):
    lines = gzip.decompress(
        (data_dir / "hftbacktest/usdm/btcusdt_20240718.gz").read_bytes()).split(b"\n")
    at = [i for i, ln in enumerate(lines) if kind in ln[:60]][500]
    lines[at] = lines[at][:-3]   # cut short
    p = tmp_path / "btcusdt_bad.txt"
    p.write_bytes(b"\n".join(lines))
    for workers in (2, 1):
        with pytest.raises(FormatError, match=rf":{at + 1}: unparseable JSON"):
            list(OfflineRun([str(p)], "BTCUSDT", workers=workers))


@pytest.mark.slow   # forks the depth worker
def test_compiled_reader_symbol_not_in_the_recording_leaves_the_core_as_python_does(data_dir):
    paths = [str(data_dir / "hftbacktest/usdm/btcusdt_20240718.gz")]
    fast, got = _run(paths, "ethusdt", 2)   # (the untagged snapshot is "ethusdt"'s)
    one, want = _run(paths, "ethusdt", 1)
    assert fast.workers == 2
    assert got == want == b"[]"
    assert orjson.dumps(fast.core.state()) == orjson.dumps(one.core.state())
    assert fast.messages == one.messages
