"""``ofi bench research``: the research path as whole processes, beside the plain loop.

The denominator is ``plain_loop.py`` of the bench baselines (gunzip + orjson + a Python L1 OFI
and CVD loop over an hftbacktest recording), run in turn with each measured command on the same
corpus, so a drift of the machine hits both. Every figure is a whole process, start to exit
(interpreter start and imports included), wall time and peak RSS (the process and the children
it waited for), the median of ``runs`` pairs:

- ``raw_signals``: ``ofi signals CORPUS`` -> events/s and the ratio to the plain loop's;
- ``raw_signals_small``: the same on the one-copy corpus: peak RSS ratio (big / small);
- ``import``: ``ofi data import CORPUS`` into a new catalog -> lines/s against the plain loop's;
- ``catalog_signals``: ``ofi signals --catalog`` -> events/s and ratio;
- ``catalog_backtest``: ``ofi backtest --catalog`` with its report -> events/s.

Events are book-ticker updates plus MARKET trades (the plain loop's count), lines all lines.
The project's modules are byte-compiled first, as an installed package's are: under
``PYTHONDONTWRITEBYTECODE`` every run would otherwise compile the modules changed since their
``.pyc`` was written.
"""
from __future__ import annotations

import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORDING = ("btcusdt_20240718.gz", "btcusdt_20240719.gz")


def baselines_dir() -> Path:
    """The bench baselines' signal scripts (``$OFI_BENCH_BASELINES`` or ../shared/...)."""
    from ...config import ROOT

    return Path(os.environ.get("OFI_BENCH_BASELINES",
                               ROOT.parent / "shared" / "bench-baselines")) / "signals"


def make_corpus(copies: int, out: Path, data_dir: Path) -> Path:
    """``copies`` consistent copies of the USD-M BTCUSDT recording (the baselines' script)."""
    script = baselines_dir() / "make_corpus.py"
    src = [str(data_dir / "hftbacktest" / "usdm" / f) for f in RECORDING]
    for p in [script, *src]:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"not found: {p}")
    subprocess.run([sys.executable, str(script), str(copies), str(out), *src], check=True)
    return out


def count(corpus: Path) -> tuple[int, int]:
    """(lines, events) of a corpus, events counted as the plain loop counts them."""
    lines = events = 0
    with gzip.open(corpus, "rb") as f:
        for line in f:
            lines += 1
            if b'"e":"bookTicker"' in line:
                events += 1
            elif b'"e":"trade"' in line and (b'"X":' not in line or b'"X":"MARKET"' in line):
                events += 1
    return lines, events


def timed(cmd: list[str], cwd: str | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one run of ``cmd``; raises when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {err[-400:]}")
    return wall, usage.ru_maxrss // 1024


def paired(cmd, plain: list[str], runs: int, before=None) -> dict:
    """``cmd`` (a list, or ``i -> list`` for the i-th run) and the plain loop in turn ``runs``
    times, after a warm-up pair; ``before()`` runs before each of ours. Medians."""
    ours, base, rss = [], [], []
    for i in range(runs + 1):
        if before:
            before()
        w, m = timed(cmd(i) if callable(cmd) else cmd)
        b, _ = timed(plain)
        if i:  # the first pair warms the page cache and the interpreter's files
            ours.append(w)
            base.append(b)
            rss.append(m)
    return {"wall_s": round(statistics.median(ours), 3),
            "plain_wall_s": round(statistics.median(base), 3),
            "ratio": round(statistics.median(b / w for w, b in zip(ours, base)), 3),
            "peak_rss_mb": statistics.median(rss)}


def _compile() -> None:
    """Write the ``.pyc`` files of the project's packages (nothing when they are current)."""
    import compileall

    root = Path(__file__).resolve().parents[3]
    for pkg in ("daemons", "bus"):
        compileall.compile_dir(str(root / pkg), quiet=2)


def run(data_dir: Path, copies: int = 20, runs: int = 3, corpus: Path | None = None) -> dict:
    """All the figures (module docstring) as a dict."""
    ofi = [sys.executable, "-m", "daemons.tools.cli"]
    _compile()
    with tempfile.TemporaryDirectory(prefix="ofi-bench-research-") as tmp:
        tmp = Path(tmp)
        big = corpus or make_corpus(copies, tmp / f"btcusdt_x{copies}.gz", data_dir)
        small = make_corpus(1, tmp / "btcusdt_x1.gz", data_dir)
        lines, events = count(big)
        plain = [sys.executable, str(baselines_dir() / "plain_loop.py"), str(big)]
        plain_small = [sys.executable, str(baselines_dir() / "plain_loop.py"), str(small)]
        signals = ofi + ["signals", str(big), "--symbol", "BTCUSDT", "--out", str(tmp / "s.jsonl")]
        out = {"bench": "research", "corpus": big.name, "lines": lines, "events": events,
               "runs": runs}
        raw = paired(signals, plain, runs)
        raw["events_per_s"] = round(events / raw["wall_s"])
        out["raw_signals"] = raw
        raw_small = paired(ofi + ["signals", str(small), "--symbol", "BTCUSDT",
                                  "--out", str(tmp / "s1.jsonl")], plain_small, runs)
        raw_small["peak_rss_ratio_big_to_small"] = round(
            raw["peak_rss_mb"] / max(1, raw_small["peak_rss_mb"]), 2)
        out["raw_signals_small"] = raw_small
        catalog = tmp / "catalog"

        def fresh_catalog():
            shutil.rmtree(catalog, ignore_errors=True)
        imp = paired(ofi + ["data", "import", str(big), "--catalog", str(catalog),
                            "--no-progress"], plain, runs, before=fresh_catalog)
        imp["lines_per_s"] = round(lines / imp["wall_s"])
        out["import"] = imp
        csig = paired(ofi + ["signals", "--catalog", str(catalog), "--symbol", "BTCUSDT",
                             "--out", str(tmp / "c.jsonl")], plain, runs)
        csig["events_per_s"] = round(events / csig["wall_s"])
        out["catalog_signals"] = csig
        cbt = paired(lambda i: ofi + ["backtest", "--catalog", str(catalog), "--symbol",
                                      "BTCUSDT", "--no-progress", "--out", str(tmp / f"bt{i}")],
                     plain, runs)
        cbt["events_per_s"] = round(events / cbt["wall_s"])
        out["catalog_backtest"] = cbt
        if raw["plain_wall_s"]:
            out["plain_loop_events_per_s"] = round(events / raw["plain_wall_s"])
        return out
