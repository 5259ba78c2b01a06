"""``ofi bench signals``: what the signal path costs against merely parsing its input.

Three figures over the same files, each the best of ``repeat`` runs:

- ``parse_only``: read every line (gunzip, split) and JSON-parse it (orjson), nothing else;
- ``core_only``: the topic records, prepared in memory beforehand, through ``SignalCore``;
- ``end_to_end``: ``ofi signals`` as it runs (:class:`~.offline.OfflineRun`, by default with
  the depth stream in a second process; ``workers`` says how many were used): read, parse,
  book sync, merge, core, JSON-encode the signal records.

Rates are input messages (lines) per second; ``core_only`` is topic records per second.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from ...marketdata.formats import iter_line_chunks
from ...marketdata.replay import Replay
from ...signal.core import SignalCore
from ...signal.offline import OfflineRun


def data_dir() -> Path:
    """The recorded data (``$OFI_DATA_DIR`` or ../shared/data beside the checkout)."""
    from ...config import ROOT

    return Path(os.environ.get("OFI_DATA_DIR", ROOT.parent / "shared" / "data"))


def default_inputs() -> list[str]:
    """The USD-M BTCUSDT 2024-07-18/19 recording of the data dir, if present."""
    data = data_dir()
    files = [data / "hftbacktest" / "usdm" / f"btcusdt_2024071{d}.gz" for d in (8, 9)]
    return [str(f) for f in files if f.is_file()]


def _best(fn, repeat: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def run(paths: list[str], symbol: str, repeat: int = 3, workers: int = 2) -> dict:
    """The figures as a dict (see the module docstring)."""
    loads = orjson.loads

    def parse_only() -> int:
        n = 0
        for p in paths:
            for lines in iter_line_chunks(p):  # the reader `ofi signals` uses
                for line in lines:
                    sp = line.find(b" ")
                    if line[:1] != b"{" and sp > 0:
                        line = line[sp + 1:]
                    if line[:1] == b"{":
                        loads(line)
                    n += 1
        return n

    run_box = {}

    def end_to_end() -> int:
        r = OfflineRun(paths, symbol, SignalCore(), workers=workers)
        dumps = orjson.dumps
        out = 0
        for sig in r:
            out += len(dumps(sig))
        run_box["r"] = r
        return r.messages

    records = list(Replay(paths, symbols={symbol}, symbol=symbol))

    def core_only() -> int:
        core = SignalCore()
        process = core.process
        for rec in records:
            process(rec)
        core.flush()
        return len(records)

    t_parse, n_parse = _best(parse_only, repeat)
    t_core, n_core = _best(core_only, repeat)
    t_e2e, n_e2e = _best(end_to_end, repeat)
    parse_rate = n_parse / t_parse
    e2e_rate = n_e2e / t_e2e
    return {
        "bench": "signals", "files": [os.path.basename(p) for p in paths], "symbol": symbol,
        "messages": n_parse, "records": n_core, "repeat": repeat,
        "parse_only_per_s": round(parse_rate), "core_only_records_per_s": round(n_core / t_core),
        "end_to_end_per_s": round(e2e_rate),
        "end_to_end_vs_parse": round(e2e_rate / parse_rate, 3),
        "seconds": {"parse_only": round(t_parse, 4), "core_only": round(t_core, 4),
                    "end_to_end": round(t_e2e, 4)},
        "depth_gaps": run_box["r"].gaps, "fast_path": run_box["r"].fast,
        "workers": run_box["r"].workers,
    }
