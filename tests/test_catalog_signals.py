"""Signals and backtests read from a market-data catalog (docs/catalog.md) give the raw path's
records exactly, on the real recordings; errors are one line.

The catalogs are written by ``ofi data import``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from daemons.marketdata.merge import event_time
from daemons.marketdata.replay import Replay

from conftest import OFI

USDM = ("btcusdt_20240718.gz", "btcusdt_20240719.gz")
SPOT = "btcusdt_20240808.gz"
CONFIG = {   # as tests/test_backtest.py: the strategy trades often on this recording
    "signal": {"min_periods": 20},
    "strategy": {"entry_threshold": 1.2, "cooldown_s": 2.0},
    "risk": {"max_orders_per_minute": 0},
    "backtest": {"latency_ms": 40, "taker_fee_bps": 5.0, "maker_fee_bps": 2.0},
}


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def usdm(data_dir, tmp_path_factory):
    files = [str(data_dir / "hftbacktest/usdm" / f) for f in USDM]
    root = tmp_path_factory.mktemp("catalog_usdm")
    imported = ofi("data", "import", *files, "--catalog", root)
    assert imported.returncode == 0, imported.stderr
    return files, root


@pytest.fixture(scope="module")
def spot(data_dir, tmp_path_factory):
    files = [str(data_dir / "hftbacktest/spot" / SPOT)]
    root = tmp_path_factory.mktemp("catalog_spot")
    imported = ofi("data", "import", *files, "--catalog", root)
    assert imported.returncode == 0, imported.stderr
    return files, root


def ofi(*args, timeout=120):
    return subprocess.run(OFI + [str(a) for a in args], capture_output=True, timeout=timeout)


def jsonl(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines()]


# -- signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["usdm", "spot"])
def test_catalog_signals_equal_raw_signals(which, request):
    files, root = request.getfixturevalue(which)
    raw = ofi("signals", *files, "--symbol", "BTCUSDT")
    assert raw.returncode == 0, raw.stderr
    cat = ofi("signals", "--catalog", root, "--symbol", "BTCUSDT")
    assert cat.returncode == 0, cat.stderr
    want, got = jsonl(raw.stdout), jsonl(cat.stdout)
    assert len(want) > 100
    assert any(s["ofi_z"] is not None for s in want)
    assert any(s["ofi_l5"] != 0 for s in want)   # depth terms are compared too
    for i, (w, g) in enumerate(zip(want, got)):
        assert g == w, f"signal {i} differs"
    assert len(got) == len(want)


def test_integer_columns_are_delta_encoded_and_plain_ones_still_read(usdm, tmp_path):
    """The import writes integer columns DELTA_BINARY_PACKED; a catalog written before (plain
    encoding) reads the same."""
    import shutil

    import pyarrow.parquet as pq

    _, root = usdm
    files = sorted(Path(root).glob("*/symbol=*/date=*/*.parquet"))
    assert files
    for path in files:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
        for i, field in enumerate(schema):
            encodings = meta.row_group(0).column(i).encodings
            if str(field.type) == "int64":
                assert "DELTA_BINARY_PACKED" in encodings, (path.name, field.name)
    old = tmp_path / "old"
    shutil.copytree(root, old)
    for path in sorted(old.glob("*/symbol=*/date=*/*.parquet")):
        f = pq.ParquetFile(path)
        tables = [f.read_row_group(g) for g in range(f.metadata.num_row_groups)]
        with pq.ParquetWriter(path, f.schema_arrow, compression="zstd",
                              use_dictionary=False) as w:
            for t in tables:
                w.write_table(t, row_group_size=len(t))
        assert "DELTA_BINARY_PACKED" not in pq.ParquetFile(path).metadata.row_group(0) \
            .column(0).encodings
    new = ofi("signals", "--catalog", root, "--symbol", "BTCUSDT")
    plain = ofi("signals", "--catalog", old, "--symbol", "BTCUSDT")
    assert new.returncode == 0 and plain.returncode == 0, (new.stderr, plain.stderr)
    assert new.stdout == plain.stdout and len(new.stdout) > 1000


def test_catalog_signals_of_a_period_equal_the_core_over_its_records(usdm):
    """--from/--to: the rows with from <= t < to, i.e. SignalCore.process over those records."""
    from daemons.signal.core import SignalCore

    files, root = usdm
    start, end = 1721347100000, 1721347300500
    core = SignalCore()
    want = []
    for rec in Replay(files, symbols={"BTCUSDT"}, symbol="BTCUSDT", levels=5):
        if start <= event_time(rec) < end:
            want.extend(core.process(rec))
    want.extend(core.flush())
    cat = ofi("signals", "--catalog", root, "--symbol", "btcusdt", "--from", "2024-07-18T23:58:20Z",
              "--to", end)
    assert cat.returncode == 0, cat.stderr
    got = jsonl(cat.stdout)
    assert got[0]["bucket_ms"] == start and got[-1]["bucket_ms"] == end - 500
    assert got == [orjson.loads(orjson.dumps(s)) for s in want]


# -- backtest ------------------------------------------------------------------------------------

TOPICS = ("signals", "intents", "orders", "fills", "positions")


def _backtest(tmp_path, *args, report=False) -> tuple[dict, dict, str]:
    cfg = tmp_path / "bt.yaml"
    if not cfg.exists():
        cfg.write_bytes(orjson.dumps(CONFIG))   # JSON is YAML
    home = tmp_path / f"home{len(list(tmp_path.iterdir()))}"
    p = ofi("backtest", *args, "--symbol", "BTCUSDT", "--config", cfg, "--out", home,
            *(() if report else ("--no-report",)))
    assert p.returncode == 0, p.stderr
    from bus import open_bus

    bus = open_bus(home)
    try:
        records = {t: bus.read_all(t) for t in TOPICS}
    finally:
        bus.close()
    summary = orjson.loads((home / "backtest.json").read_bytes())
    return records, summary, p.stdout.decode()


def test_catalog_backtest_equals_raw_backtest(usdm, tmp_path):
    files, root = usdm
    raw, raw_sum, raw_out = _backtest(tmp_path, *files)
    cat, cat_sum, cat_out = _backtest(tmp_path, "--catalog", root, "--no-charts", report=True)
    assert len(raw["fills"]) >= 10 and len(raw["signals"]) > 400
    for topic in TOPICS:
        assert cat[topic] == raw[topic], topic
    assert cat_sum["summary"] == raw_sum["summary"]
    assert cat_sum["settings"] == raw_sum["settings"]

    def figures(out):
        return [line for line in out.splitlines() if not line.startswith(("home:", "events:"))]
    assert figures(cat_out)[:-1] == figures(raw_out)   # and the report's path
    # the report is built by default; --no-charts leaves its PNG charts out
    md = Path(cat_out.split("report: ")[1].strip())
    assert sorted(p.name for p in md.parent.iterdir()) == ["report.html", "report.md"]
    text = md.read_text()
    assert f"| Fills | {len(cat['fills'])} |" in text
    assert text.count("Charts were not drawn for this report.") == 2 and ".png" not in text


# -- errors --------------------------------------------------------------------------------------

def one_line_error(p, *words):
    err = p.stderr.decode()
    assert p.returncode != 0 and p.stdout == b""
    assert err.startswith("ofi: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("verb", ["signals", "backtest"])
def test_catalog_errors_are_one_line(verb, usdm, tmp_path):
    _, root = usdm
    one_line_error(ofi(verb, "--catalog", tmp_path / "nope", "--symbol", "BTCUSDT"),
                   "no catalog at", "nope")
    one_line_error(ofi(verb, "--catalog", tmp_path, "--symbol", "BTCUSDT"),
                   "is not a catalog")
    one_line_error(ofi(verb, "--catalog", root, "--symbol", "ETHUSDT"),
                   "ETHUSDT is not in the catalog", "it has BTCUSDT")
    one_line_error(ofi(verb, "--catalog", root, "--symbol", "BTCUSDT", "--from", "2024-07-20"),
                   "no BTCUSDT data from 2024-07-20T00:00:00Z",
                   "it has 2024-07-18T23:57:02.507Z to 2024-07-19T00:05:02.291Z")
    one_line_error(ofi(verb, "--catalog", root, "--symbol", "BTCUSDT", "--to", "yesterday"),
                   "bad time 'yesterday'")
