"""The report's charts as PNG bytes (matplotlib, Agg, no pyplot state).

Deterministic on purpose: the same data gives byte-identical files (no Software/date metadata,
a fixed svg hash salt, fixed sizes and fonts), so cron can rebuild a report without churn.

Cheap on purpose (a backtest's report waits for them): margins are fixed in inches
(:func:`_layout`) instead of ``tight_layout``, which draws every figure once more to measure
its labels, and a histogram's bars are one collection, not one patch per bar.
"""
from __future__ import annotations

import datetime as dt
import io

import matplotlib
import numpy as np

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "ofi-report"
matplotlib.rcParams["font.family"] = "DejaVu Sans"   # bundled with matplotlib: same everywhere

from matplotlib import dates as mdates  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .metrics import percentile  # noqa: E402

DPI = 100
WIDTH = 10.0
#: fixed margins (inches): room for the y tick labels, a title, the x tick labels and a time
#: axis' offset label under them
LEFT, RIGHT, TOP, BOTTOM, GAP = 0.85, 0.25, 0.35, 0.6, 0.75
UTC = dt.timezone.utc
DAY_MS = 86_400_000.0


def _x(ms) -> float:
    """Epoch ms as matplotlib date numbers (days since 1970-01-01)."""
    return ms / DAY_MS


def _figure(rows: int, height: float = 2.6) -> Figure:
    fig = Figure(figsize=(WIDTH, max(2.5, height * rows + 0.6)), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _layout(fig: Figure) -> None:
    """Place the figure's rows of axes with the fixed margins (the figure's size is fixed)."""
    rows = len(fig.axes)
    w, h = fig.get_size_inches()
    axes_h = max(0.1, (h - TOP - BOTTOM - (rows - 1) * GAP) / rows)
    fig.subplots_adjust(left=LEFT / w, right=1 - RIGHT / w, top=1 - TOP / h, bottom=BOTTOM / h,
                        hspace=GAP / axes_h)


def _bars(ax, counts, edges, rwidth: float, color: str) -> None:
    """``ax.hist``'s bars (``rwidth`` of each bin, centred) as one collection."""
    from matplotlib.collections import PolyCollection

    lo, hi = edges[:-1], edges[1:]
    pad = (hi - lo) * (1 - rwidth) / 2
    x0, x1 = lo + pad, hi - pad
    verts = [((a, 0.0), (a, c), (b, c), (b, 0.0)) for a, b, c in zip(x0, x1, counts)]
    bars = PolyCollection(verts, facecolors=color, edgecolors="none")
    bars.sticky_edges.y.append(0.0)
    ax.add_collection(bars, autolim=False)
    ax.update_datalim([(edges[0], 0.0), (edges[-1], max(counts.max(), 1))])
    ax.autoscale_view()


def _time_axis(ax) -> None:
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.grid(True, alpha=0.3)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def equity(series: list[tuple[int, float]],
           positions: dict[str, list[tuple[int, float]]]) -> bytes | None:
    """Net PnL over time, and the position of each symbol below it."""
    if not series and not positions:
        return None
    fig = _figure(1 + len(positions))
    axes = fig.subplots(1 + len(positions), 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    if series:
        ax.step([_x(t) for t, _ in series], [v for _, v in series], where="post", color="tab:blue")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("Net PnL (quote)")
    _time_axis(ax)
    for ax, (sym, rows) in zip(axes[1:], positions.items()):
        ax.step([_x(t) for t, _ in rows], [q for _, q in rows], where="post", color="tab:purple")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{sym} position")
        _time_axis(ax)
    _layout(fig)
    return _png(fig)


def price(prices: dict[str, list[tuple[int, float]]],
          marks: dict[str, list[tuple[int, float, int, str]]]) -> bytes | None:
    """Mid price per symbol with fills: ▲ buy, ▼ sell; filled = entry, hollow = exit/other."""
    syms = sorted(set(prices) | set(marks))
    if not syms:
        return None
    fig = _figure(len(syms), 3.0)
    axes = fig.subplots(len(syms), 1, squeeze=False)[:, 0]
    for ax, sym in zip(axes, syms):
        rows = prices.get(sym, [])
        if rows:
            ax.plot([_x(t) for t, _ in rows], [p for _, p in rows], color="tab:gray", lw=0.8,
                    label="mid")
        for sign, marker, colour in ((1, "^", "tab:green"), (-1, "v", "tab:red")):
            for entry, label in ((True, "entry"), (False, "exit")):
                pts = [(t, p) for t, p, s, reason in marks.get(sym, [])
                       if s == sign and (reason == "entry") == entry]
                if pts:
                    ax.scatter([_x(t) for t, _ in pts], [p for _, p in pts], marker=marker,
                               s=40, zorder=3, label=f"{'buy' if sign > 0 else 'sell'} {label}",
                               facecolors=colour if entry else "none", edgecolors=colour)
        ax.set_title(f"{sym}: mid price, entries and exits")
        ax.legend(loc="upper left", fontsize=8)
        _time_axis(ax)
    _layout(fig)
    return _png(fig)


def fusion(series: dict[str, list[tuple[int, float]]]) -> bytes | None:
    """The fusion signal per symbol."""
    syms = [s for s in sorted(series) if series[s]]
    if not syms:
        return None
    fig = _figure(len(syms))
    axes = fig.subplots(len(syms), 1, squeeze=False)[:, 0]
    for ax, sym in zip(axes, syms):
        rows = series[sym]
        ax.plot([_x(t) for t, _ in rows], [v for _, v in rows], color="tab:orange", lw=0.8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{sym}: fusion (w_ofi·ofi_z + w_cvd·cvd_z)")
        _time_axis(ax)
    _layout(fig)
    return _png(fig)


def latency(samples: dict[str, list[float]]) -> bytes | None:
    """A histogram per stage with p50 and p99 marked (values above p99.9 left out)."""
    stages = [(name, v) for name, v in samples.items() if v]
    if not stages:
        return None
    fig = _figure(len(stages), 2.2)
    axes = fig.subplots(len(stages), 1, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, stages):
        top = percentile(values, 99.9)
        shown = [v for v in values if v <= top]
        lo = min(shown)
        if all(float(v).is_integer() for v in shown) and top - lo <= 60:
            bins = [lo - 0.5 + k for k in range(int(top - lo) + 2)]   # one bar per ms
        else:
            bins = [lo + (top - lo) * k / 50 for k in range(51)] if top > lo else [lo, lo + 1]
        counts, edges = np.histogram(shown, bins=bins)
        _bars(ax, counts, edges, 0.9, "tab:blue")
        for q, style in ((50, "--"), (99, ":")):
            ax.axvline(percentile(values, q), color="black", ls=style, lw=1, label=f"p{q}")
        ax.set_title(f"{name} latency (ms), {len(values)} samples")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(True, alpha=0.3)
    _layout(fig)
    return _png(fig)
