"""What a report says: metrics of a :class:`~.data.Dataset` laid out as render blocks."""
from __future__ import annotations

from dataclasses import dataclass

from . import metrics as m
from .data import FEED_TOPICS, SMALL_TOPICS, Dataset
from .period import iso_ms

NO_DATA = "No data in this period."
NOT_DRAWN = "Charts were not drawn for this report."
MAX_TRIPS_LISTED = 50
CHARTS = {
    "equity.png": "Net PnL and position over time",
    "price.png": "Mid price with entries and exits",
    "fusion.png": "Fusion signal",
    "latency.png": "Latency per stage",
}


@dataclass
class Analysis:
    ds: Dataset
    fills: list[dict]
    books: dict[str, m.Book]
    trips: list[m.Trip]
    end_positions: dict[str, dict]
    slippage: dict[str, m.Slippage]
    signals: dict[str, list[dict]]
    ic: dict[str, m.IC]
    latency: dict[str, list[float]]
    orders: dict[str, dict[str, int]]
    equity: list[tuple[int, float]]
    position: dict[str, list[tuple[int, float]]]
    prices: dict[str, list[tuple[int, float]]]
    marks: dict[str, list[tuple[int, float, int, str]]]
    fusion: dict[str, list[tuple[int, float]]]


def analyse(ds: Dataset) -> Analysis:
    """Every number and series of the report (pure)."""
    rec = ds.records
    fills = m.unique_fills(rec["fills"])
    books, trips = m.ledger(fills, ds.start_positions)
    intents = {}
    for i in ds.lookback["intents"] + rec["intents"]:
        intents.setdefault(i.get("client_order_id"), i)
    sig = m.signals_by_symbol(rec["signals"])
    marks: dict[str, list] = {}
    for f in fills:
        reason = str((intents.get(f.get("client_order_id")) or {}).get("reason") or "")
        marks.setdefault(f["symbol"], []).append(
            (m.fill_time(f), float(f["price"]), m.side_sign(f["side"]), reason))
    return Analysis(
        ds=ds, fills=fills, books=dict(sorted(books.items())), trips=trips,
        end_positions=_end_positions(ds),
        slippage=m.slippage(fills, intents), signals=sig,
        ic={s: m.information_coefficient(rows) for s, rows in sig.items()},
        latency=latency_samples(ds),
        orders=dict(sorted(m.order_outcomes(rec["orders"]).items())),
        equity=m.equity_series(fills, rec["positions"], ds.start_positions),
        position=m.position_series(fills, rec["positions"], ds.start_positions),
        prices=m.price_series(sig, ds.feeds["book"].price, ds.feeds["trades"].price),
        marks=dict(sorted(marks.items())),
        fusion=fusion_series(sig),
    )


def latency_samples(ds: Dataset) -> dict[str, list[float]]:
    """:attr:`Analysis.latency` (the latency chart's data, alone)."""
    rec = ds.records
    feed_lat = {t: [v for sym in sorted(ds.feeds[t].latency_ms)
                    for v in ds.feeds[t].latency_ms[sym]] for t in FEED_TOPICS}
    return m.latencies(rec["signals"], rec["intents"], rec["orders"],
                       ds.lookback["signals"], ds.lookback["intents"], feed_lat)


def fusion_series(sig: dict[str, list[dict]]) -> dict[str, list[tuple[int, float]]]:
    """:attr:`Analysis.fusion` of :func:`metrics.signals_by_symbol`'s rows."""
    return {s: [(int(r["bucket_ms"] + (r.get("interval_ms") or 0)), float(r["fusion"]))
                for r in rows if m.num(r.get("fusion"))] for s, rows in sig.items()}


def _end_positions(ds: Dataset) -> dict[str, dict]:
    """Last position per symbol: in the period, else one still open from before it."""
    out = {s: p for s, p in ds.start_positions.items() if m.num(p.get("qty")) and p["qty"]}
    out.update(m.last_positions(ds.records["positions"]))
    return dict(sorted(out.items()))


# -- formatting ----------------------------------------------------------------------------------
def f(x, nd: int = 4) -> str:
    """Fixed decimals; None -> n/a; never ``-0.00``."""
    if x is None:
        return "n/a"
    return f"{round(float(x), nd) + 0.0:.{nd}f}"


def q(x) -> str:
    """A quantity or price without trailing zeros."""
    if x is None or not m.num(x):
        return "n/a"
    s = f"{float(x):.8f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def pct(a: int, b: int) -> str:
    return f"{a / b * 100:.2f} %" if b else "n/a"


def t(ms) -> str:
    return iso_ms(int(ms)).replace("T", " ") if ms is not None else "n/a"


# -- blocks --------------------------------------------------------------------------------------
def blocks(a: Analysis, charts: set[str], drawn: bool = True) -> list[tuple]:
    """The report, top to bottom; ``charts``: the chart files there are, ``drawn=False``: none
    was drawn (a chart section says so rather than that it has no data)."""
    p = a.ds.period
    end = iso_ms(p.until_ms) if p.until_ms is not None else "the last record"
    out: list[tuple] = [
        ("h", 1, f"OFI pipeline report: {p.title}"),
        ("p", f"Period: {iso_ms(p.since_ms)} to {end} (records picked by their write time "
              "`ts`, UTC). Built from the bus spools alone; every figure can be recomputed "
              "from them."),
    ]
    out += _summary(a)
    out += _pnl(a)
    out += _positions(a)
    out += _chart("equity.png", charts, "Equity and position", drawn)
    out += _trips(a)
    out += _orders(a)
    out += _slippage(a)
    out += _chart("price.png", charts, "Price, entries and exits", drawn)
    out += _signal(a, charts)
    out += _latency(a, charts)
    out += _data(a)
    return out


def _totals(a: Analysis) -> dict:
    books = a.books.values()
    start_u = sum(m.unrealized(x) for x in a.ds.start_positions.values())
    end_u = sum(m.unrealized(p) for p in a.end_positions.values())
    realized = sum(b.realized for b in books)
    fees = sum(b.fees for b in books)
    funding = sum(m.funding_by_symbol(a.ds.records["funding"]).values())
    return {"realized": realized, "fees": fees, "funding": funding, "unreal_start": start_u,
            "unreal_end": end_u, "net": realized - fees + funding + end_u - start_u,
            "turnover": sum(b.turnover for b in books), "fills": sum(b.fills for b in books)}


def pnl(ds: Dataset) -> dict:
    """The PnL figures of the report (Summary and "PnL, fees and turnover by symbol") from the
    fills and positions of ``ds`` alone: ``{realized, fees, unrealized_start, unrealized_end,
    net, turnover, fills, symbols: [{symbol, fills, buys, sells, volume, turnover, realized,
    fees, funding, unrealized, net}], other_fees: {asset: amount}}`` (and ``funding``)."""
    fills = m.unique_fills(ds.records["fills"])
    paid = m.funding_by_symbol(ds.records["funding"])
    books, _trips = m.ledger(fills, ds.start_positions)
    end_positions = _end_positions(ds)
    start_u = sum(m.unrealized(x) for x in ds.start_positions.values())
    end_u = sum(m.unrealized(p) for p in end_positions.values())
    realized = sum(b.realized for b in books.values())
    fees = sum(b.fees for b in books.values())
    funding = sum(paid.values())
    symbols, other = [], {}
    for sym, b in sorted(books.items()):
        eu = m.unrealized(end_positions.get(sym))
        su = m.unrealized(ds.start_positions.get(sym))
        fu = paid.get(sym, 0.0)
        symbols.append({"symbol": sym, "fills": b.fills, "buys": b.buys, "sells": b.sells,
                        "volume": b.volume, "turnover": b.turnover, "realized": b.realized,
                        "fees": b.fees, "funding": fu, "unrealized": eu,
                        "net": b.realized - b.fees + fu + eu - su})
        for asset, v in b.other_fees.items():
            other[asset] = other.get(asset, 0.0) + v
    return {"realized": realized, "fees": fees, "funding": funding, "unrealized_start": start_u,
            "unrealized_end": end_u, "net": realized - fees + funding + end_u - start_u,
            "turnover": sum(b.turnover for b in books.values()),
            "fills": sum(b.fills for b in books.values()), "symbols": symbols,
            "other_fees": dict(sorted(other.items()))}


def _summary(a: Analysis) -> list[tuple]:
    tot = _totals(a)
    closed = [tr for tr in a.trips if tr.closed_ms is not None]
    wins = sum(tr.net > 0 for tr in closed)
    slip = a.slippage.get("all")
    rows = [
        ["Realized PnL", f(tot["realized"])],
        ["Fees (quote asset)", f(tot["fees"])],
        ["Funding (quote asset; negative: paid)", f(tot["funding"])],
        ["Unrealized PnL at the end", f(tot["unreal_end"])],
        ["Unrealized PnL at the start", f(tot["unreal_start"])],
        ["Net PnL", f(tot["net"])],
        ["Turnover (quote)", f(tot["turnover"])],
        ["Fills", str(tot["fills"])],
        ["Round trips closed", str(len(closed))],
        ["Win rate", pct(wins, len(closed))],
        ["Slippage (bps, weighted)", f(slip.avg_bps if slip else None, 2)],
        ["Signals", str(sum(len(r) for r in a.signals.values()))],
    ]
    out = [("h", 2, "Summary")]
    if not a.fills and not a.signals and not a.end_positions:
        out.append(("p", "No trading data in this period: no fills, positions or signals."))
    out.append(("table", ["Metric", "Value"], rows))
    out.append(("p", "Net PnL = realized − fees + (unrealized at the end − unrealized at the "
                     "start). Fees count when paid in the symbol's quote asset."))
    return out


def _pnl(a: Analysis) -> list[tuple]:
    out = [("h", 2, "PnL, fees and turnover by symbol")]
    if not a.books:
        return out + [("p", NO_DATA)]
    rows = []
    for sym, b in a.books.items():
        end_u = m.unrealized(a.end_positions.get(sym))
        start_u = m.unrealized(a.ds.start_positions.get(sym))
        rows.append([sym, str(b.fills), str(b.buys), str(b.sells), q(b.volume), f(b.turnover),
                     f(b.realized), f(b.fees), f(end_u), f(b.realized - b.fees + end_u - start_u)])
    out.append(("table", ["Symbol", "Fills", "Buys", "Sells", "Volume", "Turnover",
                          "Realized", "Fees", "Unrealized", "Net"], rows))
    other: dict[str, float] = {}
    for b in a.books.values():
        for asset, v in b.other_fees.items():
            other[asset] = other.get(asset, 0.0) + v
    if other:
        out.append(("p", "Fees in other assets (not in PnL): "
                    + ", ".join(f"{q(v)} {k}" for k, v in sorted(other.items())) + "."))
    return out


def _positions(a: Analysis) -> list[tuple]:
    out = [("h", 2, "Positions at the end (unrealized PnL)")]
    if not a.end_positions:
        return out + [("p", NO_DATA)]
    rows = [[sym, q(p.get("qty")), q(p.get("entry_price")), q(p.get("mark_price")),
             f(m.unrealized(p)), f(p.get("realized_pnl")) if m.num(p.get("realized_pnl"))
             else "n/a", t(p["ts"])] for sym, p in a.end_positions.items()]
    return out + [("table", ["Symbol", "Qty", "Entry price", "Mark price", "Unrealized",
                             "Realized (broker)", "As of"], rows)]


def _chart(name: str, charts: set[str], title: str, drawn: bool = True) -> list[tuple]:
    out = [("h", 2, title)]
    if name not in charts:
        return out + [("p", NO_DATA if drawn else NOT_DRAWN)]
    return out + [("img", name, CHARTS[name])]


def _trips(a: Analysis) -> list[tuple]:
    out = [("h", 2, "Round trips and win rate")]
    if not a.trips:
        return out + [("p", NO_DATA)]
    rows = []
    for sym in sorted({tr.symbol for tr in a.trips}):
        closed = [tr for tr in a.trips if tr.symbol == sym and tr.closed_ms is not None]
        opened = sum(1 for tr in a.trips if tr.symbol == sym and tr.closed_ms is None)
        wins = sum(tr.net > 0 for tr in closed)
        nets = [tr.net for tr in closed]
        rows.append([sym, str(len(closed)), str(wins), str(len(closed) - wins),
                     pct(wins, len(closed)), f(sum(nets) / len(nets) if nets else None),
                     f(max(nets) if nets else None), f(min(nets) if nets else None), str(opened)])
    out.append(("table", ["Symbol", "Closed", "Wins", "Losses", "Win rate", "Avg net",
                          "Best", "Worst", "Open"], rows))
    out.append(("p", "A round trip runs from flat to flat; it wins when realized PnL minus "
                     "fees is positive."))
    listed = sorted(a.trips, key=lambda tr: (tr.opened_ms, tr.symbol))[-MAX_TRIPS_LISTED:]
    out.append(("table", ["Opened", "Closed", "Symbol", "Direction", "Max qty", "Fills",
                          "Realized", "Fees", "Net"],
                [[t(tr.opened_ms), t(tr.closed_ms) if tr.closed_ms else "open", tr.symbol,
                  tr.direction, q(tr.max_qty), str(tr.fills), f(tr.realized), f(tr.fees),
                  f(tr.net)] for tr in listed]))
    if len(a.trips) > MAX_TRIPS_LISTED:
        out.append(("p", f"The last {MAX_TRIPS_LISTED} of {len(a.trips)} round trips."))
    return out


def _orders(a: Analysis) -> list[tuple]:
    out = [("h", 2, "Orders")]
    if not a.orders:
        return out + [("p", NO_DATA)]
    statuses = sorted({s for c in a.orders.values() for s in c})
    rows = [[sym, str(sum(c.values()))] + [str(c.get(s, 0)) for s in statuses]
            for sym, c in a.orders.items()]
    return out + [("table", ["Symbol", "Orders"] + statuses, rows),
                  ("p", "Orders counted by client order id, under their last status.")]


def _slippage(a: Analysis) -> list[tuple]:
    out = [("h", 2, "Slippage against the decision mid")]
    if not a.slippage:
        return out + [("p", NO_DATA)]
    rows = []
    for sym in sorted(k for k in a.slippage if k != "all") + ["all"]:
        s = a.slippage[sym]
        rows.append([sym, str(s.fills), f(s.avg_bps, 2), f(m.percentile(s.bps, 50), 2),
                     f(max(s.bps), 2), f(s.cost)])
    return out + [("table", ["Symbol", "Fills", "Avg bps (weighted)", "Median bps",
                             "Worst bps", "Cost (quote)"], rows),
                  ("p", "Per fill: s·(fill price − intent.decision_mid)/decision_mid·1e4, "
                        "s = +1 for a buy, −1 for a sell, so a positive number is a cost. "
                        "The average weighs fills by qty·decision_mid; cost = Σ s·(price − "
                        "mid)·qty.")]


def _signal(a: Analysis, charts: set[str]) -> list[tuple]:
    out = [("h", 2, "Signal and information coefficient")]
    if not a.ic:
        return out + [("p", NO_DATA)]
    rows = [[sym, str(ic.intervals), str(ic.with_fusion), f(ic.mean_abs_fusion),
             str(ic.pairs), f(ic.spearman), f(ic.pearson)] for sym, ic in sorted(a.ic.items())]
    out += [("table", ["Symbol", "Intervals", "With fusion", "Mean abs fusion", "Pairs",
                       "IC (Spearman)", "IC (Pearson)"], rows),
            ("p", "IC: Spearman rank correlation (ties get average ranks) of `fusion` at "
                  "interval t with the mid return from the end of t to the end of t+1 "
                  "(mid_t+1 / mid_t − 1), per symbol, over consecutive intervals where both "
                  "are known. Pearson on the same pairs for comparison.")]
    if "fusion.png" in charts:
        out.append(("img", "fusion.png", CHARTS["fusion.png"]))
    return out


def _latency(a: Analysis, charts: set[str]) -> list[tuple]:
    out = [("h", 2, "Latency per stage")]
    rows = []
    for name, how in m.LATENCY_STAGES:
        v = a.latency.get(name, [])
        rows.append([name, how, str(len(v)), f(m.percentile(v, 50), 1),
                     f(m.percentile(v, 99), 1), f(max(v) if v else None, 1)])
    if not any(a.latency.values()):
        return out + [("p", NO_DATA)]
    out += [("table", ["Stage", "Measured", "Samples", "p50 ms", "p99 ms", "Max ms"], rows),
            ("p", "Nearest-rank percentiles of record-field differences; clocks of different "
                  "hosts may differ.")]
    if "latency.png" in charts:
        out.append(("img", "latency.png", CHARTS["latency.png"]))
    return out


def _data(a: Analysis) -> list[tuple]:
    ds = a.ds
    rows = []
    for topic in SMALL_TOPICS + FEED_TOPICS:
        n = len(ds.records[topic]) if topic in ds.records else ds.feeds[topic].count
        rows.append([topic, ds.sinks.get(topic, "absent"), str(n),
                     str(ds.unreadable.get(topic, 0))])
    out = [("h", 2, "Data")]
    if not ds.sinks:
        out.append(("p", "No spools found under this home."))
    return out + [("table", ["Topic", "Sink", "Records in period", "Unreadable"], rows)]
