"""``ofi signals`` over raw files holds a bounded amount whatever the input holds: a depth chain
that breaks and never re-syncs, a stream that stops while the others go on. Every path (one
process, two processes, the general Replay path) gives the same records, equal to the intact
recording's before the fault, and the silences are reported."""
from __future__ import annotations

import gzip

import orjson
import pytest

from daemons.marketdata.book import MAX_BUFFER, LocalBook
from daemons.marketdata.replay import Replay
from daemons.signal import split
from daemons.signal.core import SignalCore
from daemons.signal.offline import OfflineRun, run_files

# one recording in two files; the first starts with the REST snapshot that syncs the book
RECORDING = ["hftbacktest/usdm/btcusdt_20240718.gz", "hftbacktest/usdm/btcusdt_20240719.gz"]
SYMBOL = "BTCUSDT"


def _lines(data_dir):
    return b"".join(gzip.open(data_dir / f, "rb").read() for f in RECORDING).splitlines()


def _stamp_ms(line: bytes) -> int:
    return int(line[:line.index(b" ")]) // 1_000_000


def _write(tmp_path, name, lines):
    path = tmp_path / name
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"\n".join(lines) + b"\n")
    return str(path)


def _chain_breaks_for_good(lines, at):
    """Drop one depth diff after line ``at`` and every REST snapshot after it: the chain breaks
    and never re-syncs."""
    out, dropped = [], False
    for i, line in enumerate(lines):
        if i > at:
            if not dropped and b"@depth" in line[:80]:
                dropped = True
                continue
            if b'"stream"' not in line[:40]:   # a REST snapshot
                continue
        out.append(line)
    return out


def _trades_stop(lines, at):
    """The trade stream stops after line ``at``; book and depth go on."""
    return [line for i, line in enumerate(lines) if i <= at or b"@trade" not in line[:80]]


def _all_paths(path, **kw):
    """(records, run) of the one-process, two-process and general paths."""
    out = []
    for workers in (1, 2):
        run = OfflineRun([path], SYMBOL, SignalCore(), workers=workers, **kw)
        out.append((list(run), run))
    replay = Replay([path], symbols={SYMBOL}, symbol=SYMBOL, **kw)
    out.append((list(run_files([path], SYMBOL, replay=replay)), replay))
    return out


@pytest.mark.slow   # forks the depth worker (daemons/marketdata/forked.py)
@pytest.mark.parametrize("fault", ["chain_breaks_for_good", "trades_stop"])
def test_raw_path_holds_a_bounded_amount_whatever_the_input_holds(data_dir, tmp_path, fault):
    lines = _lines(data_dir)
    at = len(lines) // 3
    faulty = (_chain_breaks_for_good if fault == "chain_breaks_for_good" else _trades_stop)(
        lines, at)
    path = _write(tmp_path, f"{SYMBOL.lower()}_{fault}.gz", faulty)
    runs = _all_paths(path)
    # every path gives the same records
    want = orjson.dumps(runs[0][0])
    for records, _ in runs[1:]:
        assert orjson.dumps(records) == want
    # the merge never held more than ~stall_ms of data (the recording has ~170 events/s),
    # or, with the depth stream in a second process, what either process may run ahead
    for (_, run), bound in zip(runs, (20_000, split.MAX_PENDING + 5_000, 20_000)):
        assert 0 < run.peak_pending < bound, run.peak_pending
    # before the fault, the records are the intact recording's
    intact = list(run_files([str(data_dir / f) for f in RECORDING], SYMBOL))
    cut = _stamp_ms(lines[at]) - 1000
    before = [s for s in runs[0][0] if s["bucket_ms"] < cut]
    assert before and before == [s for s in intact if s["bucket_ms"] < cut]
    if fault == "trades_stop":
        # the silence is reported, as a stream silent to the end
        for _, run in runs:
            assert [s["stream"] for s in run.stalls] == ["trades"], run.stalls
            assert run.stalls[0]["until"] is None
        assert runs[0][0][-1]["trades"] == 0
    else:
        assert runs[0][1].gaps == runs[1][1].gaps == runs[2][1].gaps == 1
        assert runs[0][0][-1]["ofi_l5"] == 0   # no book, no multi-level term


def test_without_the_silence_rule_a_stopped_stream_holds_everything_back(data_dir, tmp_path):
    # the contrast that shows the bound above is the rule's doing
    lines = _lines(data_dir)
    path = _write(tmp_path, "btcusdt_stop.gz", _trades_stop(lines, len(lines) // 3))
    bounded = OfflineRun([path], SYMBOL, SignalCore(), workers=1)
    unbounded = OfflineRun([path], SYMBOL, SignalCore(), workers=1, stall_ms=10**12)
    assert orjson.dumps(list(bounded))[:2] and list(unbounded)
    assert unbounded.peak_pending > 3 * bounded.peak_pending
    assert unbounded.peak_pending > 30_000


def test_the_depth_buffer_waiting_for_a_snapshot_is_bounded():
    book = LocalBook()
    for u in range(1, 3 * MAX_BUFFER):
        book.diff({"U": u, "u": u, "pu": u - 1, "b": [["1.0", "1"]], "a": []}, tag=u)
    assert len(book.buffer) == MAX_BUFFER
    # a snapshot older than every diff kept is a gap (as it would be live), not a crash
    out = book.snapshot(5, [["1.0", "1"]], [["2.0", "1"]])
    assert not book.synced and out and out[-1][1].reason
    # a snapshot within the kept diffs syncs the book
    book2 = LocalBook()
    for u in range(1, 3 * MAX_BUFFER):
        book2.diff({"U": u, "u": u, "pu": u - 1, "b": [["1.0", str(u)]], "a": []}, tag=u)
    book2.snapshot(3 * MAX_BUFFER - 10, [], [])
    assert book2.synced and book2.bids[1.0] == str(3 * MAX_BUFFER - 1)
