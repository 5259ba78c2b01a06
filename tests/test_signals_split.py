"""The two-process ``ofi signals`` path (depth stream in a worker) against the one-process one."""
from __future__ import annotations

import gzip
import subprocess

import orjson
import pytest

from daemons.signal import split
from daemons.signal.core import SignalCore
from daemons.signal.depth_terms import DepthTerms
from daemons.signal.offline import OfflineRun

from conftest import OFI

PAIRS = {
    "usdm": (["usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz"], "BTCUSDT", {}),
    "spot": (["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"], "BTCUSDT",
             {"interval_ms": 250, "levels": 10}),
}


def _run(paths, symbol, workers, **params):
    run = OfflineRun(paths, symbol, SignalCore(**params), workers=workers)
    out = orjson.dumps(list(run))
    return run, out


@pytest.mark.slow   # forks the depth worker (daemons/marketdata/forked.py)
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_signals_split_two_workers_equal_one_process_on_real_data(data_dir, pair):
    files, symbol, params = PAIRS[pair]
    paths = [str(data_dir / "hftbacktest" / f) for f in files]
    two, got = _run(paths, symbol, 2, **params)
    one, want = _run(paths, symbol, 1, **params)
    assert (two.workers, one.workers) == (2, 1)
    assert got == want  # byte for byte
    assert orjson.dumps(two.core.state()) == orjson.dumps(one.core.state())
    assert (two.messages, two.gaps) == (one.messages, one.gaps)
    assert not two._depth.proc.is_alive()


@pytest.mark.slow   # forks the depth worker (daemons/marketdata/forked.py)
def test_signals_split_depth_gap_equals_one_process(data_dir, tmp_path):
    lines = gzip.decompress((data_dir / "hftbacktest/usdm/btcusdt_20240718.gz").read_bytes())
    lines = lines.split(b"\n")
    depth = [i for i, ln in enumerate(lines) if b"@depth" in ln[:80]]
    del lines[depth[300]]  # the chain breaks: a gap, then a re-sync
    path = tmp_path / "btcusdt_gap.txt"
    path.write_bytes(b"\n".join(lines))
    two, got = _run([str(path)], "BTCUSDT", 2)
    one, want = _run([str(path)], "BTCUSDT", 1)
    assert two.workers == 2 and two.gaps == one.gaps == 1
    assert got == want


def test_signals_split_csv_input_runs_in_one_process(data_dir):
    path = data_dir / "binance_vision_spot" / "BTCUSDT-aggTrades-2026-01-01.csv"
    assert OfflineRun([str(path)], "BTCUSDT").workers == 1


@pytest.mark.slow   # forks the depth worker (daemons/marketdata/forked.py)
def test_signals_split_worker_failure_raises_one_line_error(data_dir, monkeypatch):
    def boom(self, d, recv):
        raise RuntimeError("book\nbroken")

    monkeypatch.setattr(DepthTerms, "diff", boom)  # the forked worker inherits it
    paths = [str(data_dir / "hftbacktest/usdm/btcusdt_20240718.gz")]
    run = OfflineRun(paths, "BTCUSDT")
    with pytest.raises(split.DepthWorkerError) as err:
        list(run)
    assert str(err.value) == "depth worker: RuntimeError: book broken"
    assert not run._depth.proc.is_alive()


@pytest.mark.slow   # forks the depth worker (daemons/marketdata/forked.py)
def test_signals_split_stopped_early_stops_the_worker(data_dir):
    paths = [str(data_dir / "hftbacktest/usdm/btcusdt_20240719.gz")]
    run = OfflineRun(paths, "BTCUSDT")
    it = iter(run)
    next(it)
    proc = run._depth.proc
    it.close()  # as on an exception or KeyboardInterrupt in the consumer
    assert not proc.is_alive() and proc.exitcode is not None


def test_signals_split_cli_bad_depth_line_gives_one_clean_line(data_dir, tmp_path):
    lines = gzip.decompress((data_dir / "hftbacktest/usdm/btcusdt_20240718.gz").read_bytes())
    lines = lines.split(b"\n")[:3000]
    depth = [i for i, ln in enumerate(lines) if b"@depth" in ln[:80]]
    bad = depth[200]
    lines[bad] = lines[bad][:-40]  # truncated JSON on a depth line: the worker's to find
    path = tmp_path / "btcusdt_bad.txt"
    path.write_bytes(b"\n".join(lines))
    errs = []
    for workers in ("2", "1"):
        # bounded: an orphaned worker holding the pipes would hang this past the timeout
        p = subprocess.run(OFI + ["signals", "--workers", workers, "--symbol", "BTCUSDT",
                                  str(path)], capture_output=True, timeout=60)
        assert p.returncode == 1
        errs.append(p.stderr.decode())
    assert errs[0] == errs[1] == f"ofi: {path}:{bad + 1}: unparseable JSON\n"
