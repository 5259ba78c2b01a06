"""The depth workers' compiled parts (daemons/marketdata/fastbook.py) against the Python ones:
the array book against LocalBook, the line scan against the workers' bytes checks."""
from __future__ import annotations

import random

import orjson
import pytest

pytest.importorskip("numba", reason="the compiled depth book needs numba (pinned in setup.cfg; missing only on a hand-made install)")

from daemons.marketdata import formats  # noqa: E402
from daemons.marketdata.book import LocalBook  # noqa: E402
from daemons.marketdata.fastbook import (DEPTH_STREAM, OTHER_STREAM, ArrayBook,  # noqa: E402
                                         scan_block, with_levels)
from daemons.signal import split  # noqa: E402

ZERO_FORMS = ["0", "0.0", "0.000", "0.0000000000000000", "0.00000000000000000", "00"]


def _levels(rnd: random.Random) -> list:
    out = []
    for _ in range(rnd.randint(0, 25)):
        p = "%.1f" % (60000 + rnd.randint(-300, 300) / 10 * rnd.choice([1, 10]))
        q = rnd.choice(ZERO_FORMS + ["1.5", "%.3f" % rnd.random(), "12", "0.001",
                                     "123456789012.5", "1e-3", "0.123456789012345678"])
        out.append([p, q])
    return out


@pytest.mark.parametrize("levels", [1, 5, 10])
def test_array_book_equals_local_book(levels):
    rnd = random.Random(levels)
    for _trial in range(12):
        py, arr = LocalBook(levels=levels), ArrayBook(levels=levels)
        bids, asks = _levels(rnd), _levels(rnd)
        py.snapshot(100, bids, asks)
        arr.snapshot(100, bids, asks)
        u = 100
        for _step in range(150):
            d = {"e": "depthUpdate", "U": u, "u": u + 5, "pu": u, "b": _levels(rnd),
                 "a": _levels(rnd)}
            if rnd.random() < 0.02:
                d["pu"] = u - 1     # a gap now and then
            u += 5
            line = b"1 " + orjson.dumps(d)
            assert py.diff(d) == arr.diff(with_levels(orjson.loads(line[2:]), line, 2))
            assert py.touched == arr.touched
            for n in (levels, 1, 3, 60):
                assert py.top(n) == arr.top(n)
            if not py.synced:
                py.snapshot(u, bids, asks)
                arr.snapshot(u, bids, asks)


def test_scan_block_classifies_lines_as_the_bytes_checks_do(data_dir):
    tag, dtag, name = split.STREAM_TAG, split.DEPTH_TAG, split.NAME_AT
    odd = (b'12 {"stream":"x@depth"}\n\n13 {"stream":"x@bookTicker","data":{}}\n'
           b'ab {"stream":"x"}\n14 {"stream":"noquote@dept\n15 {"stream":"y@depth\n'
           b' 16 {"stream":"x"}\n17 {"lastUpdateId":1}\n99999999999999999999 {"stream":"a"}\n'
           b'18 {"stream":"a"')
    blocks = [odd] + list(formats.iter_blocks(
        str(data_dir / "hftbacktest" / "usdm" / "btcusdt_20240718.gz")))
    for block in blocks:
        starts, ends, stamps, kinds = scan_block(block)
        lines = [block[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
        want = block[:-1].split(b"\n") if block.endswith(b"\n") else block.split(b"\n")
        assert lines == want
        for line, kind, stamp in zip(lines, kinds.tolist(), stamps.tolist()):
            sp = line.find(b" ")
            tagged = sp > 0 and line.startswith(tag, sp + 1)
            depth = tagged and line.find(dtag, sp + name, line.find(b'"', sp + name)) >= 0
            if kind == OTHER_STREAM:
                assert tagged and not depth and int(line[:sp]) == stamp
            elif kind == DEPTH_STREAM:
                assert depth and int(line[:sp]) == stamp
            else:
                assert not (tagged and line[:sp].isdigit() and len(line[:sp]) < 19)


def test_blocks_hold_the_line_chunks(data_dir):
    path = str(data_dir / "hftbacktest" / "spot" / "ethusdt_20240808.gz")
    chunks = list(formats.iter_line_chunks(path, 1 << 16))
    blocks = list(formats.iter_blocks(path, 1 << 16))
    assert len(chunks) == len(blocks)
    for lines, block in zip(chunks, blocks):
        starts, ends, _, _ = scan_block(block)
        assert [block[a:b] for a, b in zip(starts.tolist(), ends.tolist())] == lines


class _Conn:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)


@pytest.mark.parametrize("files,symbol", [
    (["usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz"], "BTCUSDT"),
    (["spot/btcusdt_20240808.gz"], "BTCUSDT"),
])
def test_depth_worker_sends_the_same_with_and_without_numba(data_dir, monkeypatch, files,
                                                             symbol):
    paths = [str(data_dir / "hftbacktest" / f) for f in files]
    fast = _Conn()
    split._send_depth(fast, paths, symbol, 5, None, 2000)
    monkeypatch.setattr(split, "_fast_book", lambda levels: None)
    slow = _Conn()
    split._send_depth(slow, paths, symbol, 5, None, 2000)
    assert orjson.dumps(fast.sent) == orjson.dumps(slow.sent)


def test_depth_message_reads_diffs_as_orjson_does(data_dir):
    from daemons.marketdata.fastbook import depth_message

    n = 0
    for f in ("usdm/btcusdt_20240718.gz", "spot/btcusdt_20240808.gz"):
        for line in formats.iter_lines(str(data_dir / "hftbacktest" / f)):
            sp = line.find(b" ")
            if b"@depth" not in line[:80]:
                continue
            d = depth_message(line, sp + 1)
            want = orjson.loads(line[sp + 1:])["data"]
            assert d is not None
            b, a = d.pop("b"), d.pop("a")
            wb, wa = want.pop("b"), want.pop("a")
            assert d == want
            assert (len(b), len(a)) == (len(wb), len(wa))
            assert (list(b), list(a)) == (wb, wa)
            n += 1
    assert n > 1000
    head = b'{"stream":"x@depth","data":{"e":"depthUpdate",'
    for rest in (b'"E":1,"U":1,"u":2,"b":[],"a":[],"X":1}}',       # another key
                 b'"E":1,"U":1,"u":2,"b":[],"a":[]}} ',             # trailing bytes
                 b'"E":null,"U":1,"u":2,"b":[],"a":[]}}',           # null
                 b'"E":1,"E":2,"U":1,"u":2,"b":[],"a":[]}}',        # a key twice
                 b'"U":1,"u":2,"b":[["1.0","2e3"]],"a":[]}}',       # not plain digits
                 b'"U":-1,"u":2,"b":[],"a":[]}}',                   # a sign
                 b'"U":1,"u":2,"s":"A\\u0042","b":[],"a":[]}}'):    # an escape
        assert depth_message(head + rest, 0) is None, rest
    d = depth_message(head + b'"U":1,"u":2,"s":"BTC","b":[],"a":[["1.5","0"]]}}', 0)
    assert (d["s"], d["U"], d["u"], len(d["b"]), list(d["a"])) == ("BTC", 1, 2, 0,
                                                                     [["1.5", "0"]])
