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
          out_dir: str | os.PathLike | None = None, charts: bool = True) -> Path:
    """Write the report of ``period`` from the spools under ``home``; returns report.md's path.

    The same spools give byte-identical files, so rebuilding (cron, the daemon) is harmless.
    ``charts=False`` leaves the PNGs out (and matplotlib unimported); the report says so.
    """
    ds = data.load(home, period)
    a = sections.analyse(ds)
    images = draw(a) if charts else {}
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


def draw(a: sections.Analysis) -> dict[str, bytes]:
    """The charts that have data, as PNG bytes by file name."""
    from . import charts  # lazy: matplotlib is slow to import

    drawn = {
        "equity.png": charts.equity(a.equity, a.position),
        "price.png": charts.price(a.prices, a.marks),
        "fusion.png": charts.fusion(a.fusion),
        "latency.png": charts.latency(a.latency),
    }
    return {name: png for name, png in drawn.items() if png is not None}


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
