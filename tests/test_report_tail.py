"""The backtest's report process: records read while they are written (``data.Tail``) and
charts drawn by a forked process give exactly what ``data.load`` and ``build.draw`` give."""
from __future__ import annotations

import datetime as dt

import pytest

import report_scenario as scenario
from bus import open_bus
from daemons.report import build, data, sections
from daemons.report.period import Period, day

pytestmark = pytest.mark.timeout(120)
T0 = 1_721_347_200_000


def _write(home, sink, topic, n, start):
    bus = open_bus(home, sink=sink)
    try:
        w = bus.writer(topic)
        for i in range(n):
            w.append({"type": topic.rstrip("s"), "symbol": "BTCUSDT", "i": start + i},
                     ts=T0 + 1000 * (start + i))
        w.close()
    finally:
        bus.close()


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_tail_read_while_written_equals_load(tmp_path, sink):
    tail = data.Tail(tmp_path)
    tail.poll()   # no bus yet: nothing to read
    for step in range(3):
        for topic in ("signals", "intents", "orders", "fills", "positions"):
            _write(tmp_path, sink, topic, 7 + step, 100 * step)
        tail.poll()
    _write(tmp_path, sink, "signals", 5, 1000)   # written after the last poll
    period = Period(T0, T0 + 2_000_000, "backtest", "t")
    tail.poll()
    fast = tail._dataset(period)
    assert fast is not None   # every record inside the period: no second reading
    want = data.load(tmp_path, period)
    assert fast == want
    assert len(want.records["signals"]) == 7 + 8 + 9 + 5
    assert data.Tail(tmp_path).load(period) == want


def test_tail_outside_the_period_reads_it_again(tmp_path):
    for topic in ("signals", "fills"):
        _write(tmp_path, "jsonl", topic, 10, 0)
    period = Period(T0 + 5000, T0 + 8000, "backtest", "t")   # look-back, records after it
    tail = data.Tail(tmp_path)
    tail.poll()
    assert tail._dataset(period) is None
    assert data.Tail(tmp_path).load(period) == data.load(tmp_path, period)


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_tail_of_the_report_scenario_equals_load(tmp_path, sink):
    tail = data.Tail(tmp_path)
    scenario.write(tmp_path, sink)
    period = day(dt.date.fromisoformat(scenario.DATE))
    assert tail.load(period) == data.load(tmp_path, period)


def test_charts_drawn_by_a_forked_process_are_the_same(tmp_path):
    scenario.write(tmp_path, "jsonl")
    ds = data.load(tmp_path, day(dt.date.fromisoformat(scenario.DATE)))
    a = sections.analyse(ds)
    serial = build.draw(a)
    assert set(serial) == set(sections.CHARTS)
    # the forked process draws its charts from the dataset, this one the rest from the analysis
    assert build.draw(a, build._fork_draw(build._dataset_jobs(ds))) == serial


def test_build_with_a_forked_process_writes_the_same_files(tmp_path):
    scenario.write(tmp_path / "home", "jsonl")
    period = day(dt.date.fromisoformat(scenario.DATE))
    build.build(tmp_path / "home", period, out_dir=tmp_path / "a")
    build.build(tmp_path / "home", period, out_dir=tmp_path / "b", fork=True,
                tail=data.Tail(tmp_path / "home"))
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert set(sections.CHARTS) <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
