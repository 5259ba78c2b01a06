"""`ofi signals` and `ofi bench signals` as commands."""
from __future__ import annotations

import subprocess

import orjson

from conftest import OFI


def test_signals_cli_aggtrades_csv_writes_jsonl(data_dir, tmp_path):
    out = tmp_path / "sig.jsonl"
    csv = data_dir / "binance_vision_spot" / "BTCUSDT-aggTrades-2026-01-01.csv"
    p = subprocess.run(OFI + ["signals", "--input", str(csv), "--symbol", "btcusdt",
                              "--interval-ms", "60000", "--out", str(out)],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""  # progress only on a tty
    sigs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [s["interval_ms"] for s in sigs] == [60000] * 13
    assert round(sigs[-1]["cvd"], 5) == 17.30342


def test_signals_cli_missing_file_is_one_line_error(tmp_path):
    p = subprocess.run(OFI + ["signals", "--input", str(tmp_path / "nope.gz"), "--symbol", "X"],
                       capture_output=True, timeout=60)
    assert p.returncode != 0
    assert p.stderr.decode().strip().count("\n") == 0 and "nope.gz" in p.stderr.decode()


def test_signals_bench_json_reports_rates(data_dir):
    f = data_dir / "hftbacktest/usdm/btcusdt_20240718.gz"
    p = subprocess.run(OFI + ["bench", "signals", "--json", "--repeat", "1", "--input", str(f)],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    data = orjson.loads(p.stdout)
    assert data["parse_only_per_s"] > 0 and data["end_to_end_per_s"] > 0
    assert data["core_only_records_per_s"] > 0 and data["depth_gaps"] == 0
