"""Build one report: spools -> metrics -> charts -> report.md, report.html and PNGs."""
from __future__ import annotations

import os
from pathlib import Path

from . import data, render, sections
from .period import Period

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def report_dir(home: str | os.PathLike, period: Period) -> Path:
    """``<home>/reports/<date or range>``."""
    return Path(home) / "reports" / period.label


def build(home: str | os.PathLike, period: Period,
          out_dir: str | os.PathLike | None = None, charts: bool = True,
          fork: bool = False, tail: data.Tail | None = None) -> Path:
    """Write the report of ``period`` from the spools under ``home``; returns report.md's path.

    The same spools give byte-identical files, so rebuilding (cron, the daemon) is harmless.
    ``charts=False`` leaves the PNGs out (and matplotlib unimported); the report says so.
    ``fork=True`` draws part of the charts in a forked process meanwhile (the same PNGs); only
    for a process without other threads (the backtest's report process). ``tail``: the
    records of ``home`` read while they were written (:class:`data.Tail`), the same dataset.
    """
    ds = data.load(home, period) if tail is None else tail.load(period)
    # the forked process draws its charts from the dataset while this one analyses it
    forked = _fork_draw(_dataset_jobs(ds)) if charts and fork else None
    try:
        a = sections.analyse(ds)
    except BaseException:
        if forked is not None:
            forked.discard()
        raise
    images = draw(a, forked) if charts else {}
    blocks = sections.blocks(a, set(images), drawn=charts)
    out = Path(out_dir) if out_dir is not None else report_dir(home, period)
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(sections.CHARTS):
        if name in images:
            _write(out / name, images[name])
        elif (out / name).exists():
            (out / name).unlink()      # a chart of an earlier build that has no data now
    _write(out / REPORT_HTML, render.page(blocks, images, f"OFI report {period.title}").encode())
    _write(out / REPORT_MD, render.markdown(blocks).encode())
    return out / REPORT_MD


def draw(a: sections.Analysis, forked: _Forked | None = None) -> dict[str, bytes]:
    """The charts that have data, as PNG bytes by file name. ``forked``: a process already
    drawing the charts of :func:`_dataset_jobs` (about half of the drawing time) while this one draws
    the others; should that process fail, this one draws them too."""
    from . import charts  # lazy: matplotlib is slow to import

    jobs = {
        "equity.png": lambda: charts.equity(a.equity, a.position),
        "price.png": lambda: charts.price(a.prices, a.marks),
        "fusion.png": lambda: charts.fusion(a.fusion),
        "latency.png": lambda: charts.latency(a.latency),
    }
    here = [name for name in jobs if forked is None or name not in forked.names]
    try:
        drawn = {name: jobs[name]() for name in here}
    except BaseException:
        if forked is not None:
            forked.discard()
        raise
    if forked is not None:
        drawn.update(forked.result(jobs))
    return {name: drawn[name] for name in jobs if drawn[name] is not None}


def _dataset_jobs(ds: data.Dataset) -> dict:
    """The charts a forked process draws (``build(fork=True)``): the fusion and latency
    charts, from the dataset (the same data as the analysis')."""
    from . import charts
    from .metrics import signals_by_symbol

    return {
        "fusion.png": lambda: charts.fusion(
            sections.fusion_series(signals_by_symbol(ds.records["signals"]))),
        "latency.png": lambda: charts.latency(sections.latency_samples(ds)),
    }


class _Forked:
    """Charts drawn by a forked process: :meth:`result` reads them (or draws them here)."""

    def __init__(self, names, pid: int, fd: int):
        self.names, self.pid, self.fd = names, pid, fd

    def result(self, jobs) -> dict:
        import pickle

        with open(self.fd, "rb") as f:
            answer = f.read()
        _, status = os.waitpid(self.pid, 0)
        try:
            got = pickle.loads(answer) if status == 0 and answer else None
        except Exception:
            got = None
        if not isinstance(got, dict) or set(got) != set(self.names):
            got = {name: jobs[name]() for name in self.names}
        return got

    def discard(self) -> None:
        import signal

        os.close(self.fd)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def _fork_draw(jobs: dict) -> _Forked | None:
    """Run ``jobs`` (name -> PNG bytes or None) in a forked process; None without fork."""
    if not hasattr(os, "fork"):
        return None
    import pickle

    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:   # the drawing process: never returns
        code = 1
        try:
            os.close(r)
            out = pickle.dumps({name: job() for name, job in jobs.items()})
            with open(w, "wb") as f:
                f.write(out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return _Forked(tuple(jobs), pid, r)


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, and leave it alone when it already holds ``data``."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
