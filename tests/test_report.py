"""``ofi report`` end to end: spools written through the bus API, figures checked by hand."""
from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

import report_scenario as scenario
from conftest import OFI, ROOT

pytestmark = pytest.mark.timeout(120)
CHARTS = ("equity.png", "fusion.png", "latency.png", "price.png")


def run_report(*args, timeout=60):
    return subprocess.run(OFI + ["report", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def tables(md: str, heading: str) -> list[list[list[str]]]:
    """The tables of the section ``## heading``: tables -> rows -> cells (header row dropped)."""
    body = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    out, cur = [], None
    for line in body.splitlines():
        if line.startswith("|"):
            if cur is None:
                cur = []
                out.append(cur)
            cur.append([c.strip() for c in line.strip("|").split("|")])
        else:
            cur = None
    return [t[2:] for t in out]


def rows_by_key(md: str, heading: str, index: int = 0) -> dict[str, list[str]]:
    return {r[0]: r[1:] for r in tables(md, heading)[index]}


def close(text: str, value: float, decimals: int) -> bool:
    return abs(float(text.rstrip(" %")) - value) <= 0.5 * 10 ** -decimals + 1e-9


def digest(directory) -> dict[str, str]:
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest()
            for n in sorted(os.listdir(directory))}


@pytest.fixture(scope="module", params=["jsonl", "sqlite"])
def built(request, tmp_path_factory):
    """A home holding the scenario in one sink, and its report of the scenario's day."""
    home = tmp_path_factory.mktemp(f"report-{request.param}")
    expected = scenario.write(home, request.param)
    res = run_report("--home", str(home), "--date", scenario.DATE)
    assert res.returncode == 0, res.stderr
    path = home / "reports" / scenario.DATE / "report.md"
    return {"home": home, "sink": request.param, "exp": expected, "stdout": res.stdout,
            "path": path, "md": path.read_text(), "digest": digest(path.parent)}


def test_report_day_prints_path_and_writes_files(built):
    assert built["stdout"].strip() == str(built["path"])
    assert sorted(built["digest"]) == sorted(CHARTS + ("report.html", "report.md"))


def test_report_day_pnl_fees_turnover_match_hand_computation(built):
    md, exp = built["md"], built["exp"]
    summary = rows_by_key(md, "Summary")
    assert close(summary["Realized PnL"][0], exp["realized"], 4)
    assert close(summary["Fees (quote asset)"][0], exp["fees"], 4)
    assert close(summary["Unrealized PnL at the end"][0], exp["unreal_end"], 4)
    assert close(summary["Funding (quote asset; negative: paid)"][0], exp["funding"], 4)
    assert close(summary["Net PnL"][0], exp["net"], 4)
    assert close(summary["Turnover (quote)"][0], exp["turnover"], 4)
    assert summary["Fills"][0] == str(len(exp["fills"]))   # the previous day's are left out
    assert summary["Signals"][0] == str(exp["signals"])
    by_sym = rows_by_key(md, "PnL, fees and turnover by symbol")
    for sym in ("BTCUSDT", "ETHUSDT"):
        fills = [f for f in exp["fills"] if f["symbol"] == sym]
        assert by_sym[sym][0] == str(len(fills))
        assert close(by_sym[sym][4], sum(f["qty"] * f["price"] for f in fills), 4)
        assert close(by_sym[sym][5], sum(f["rp"] for f in fills), 4)
        assert close(by_sym[sym][6], sum(f["fee"] for f in fills), 4)


def test_report_day_win_rate_and_slippage_match_hand_computation(built):
    md, exp = built["md"], built["exp"]
    summary = rows_by_key(md, "Summary")
    assert exp["wins"] == 4 and exp["closed"] == 5          # the scenario has a loser
    assert summary["Round trips closed"][0] == "5"
    assert close(summary["Win rate"][0], exp["win_rate"], 2)
    assert close(summary["Slippage (bps, weighted)"][0], exp["slip_bps"], 2)
    slip = rows_by_key(md, "Slippage against the decision mid")
    assert slip["all"][0] == str(len(exp["fills"]))
    assert close(slip["all"][1], exp["slip_bps"], 2)
    assert close(slip["all"][4], exp["slip_cost"], 4)
    trips = rows_by_key(md, "Round trips and win rate")
    assert trips["ETHUSDT"][-1] == "1"                       # the open ETH position


def test_report_day_ic_and_latency_match_hand_computation(built):
    md, exp = built["md"], built["exp"]
    ic = rows_by_key(md, "Signal and information coefficient")
    for sym, want in exp["ic"].items():
        assert ic[sym][3] == str(want["pairs"])
        assert close(ic[sym][4], want["spearman"], 4)
        assert close(ic[sym][5], want["pearson"], 4)
    assert "Spearman rank correlation" in md
    lat = rows_by_key(md, "Latency per stage")
    names = {"trades": "harvest (trades)", "book": "harvest (book)", "signal": "signal",
             "strategy": "strategy", "broker": "broker"}
    for key, row in names.items():
        values = exp["lat"][key]
        assert lat[row][1] == str(len(values))
        assert close(lat[row][2], scenario.nearest_rank(values, 50), 1)
        assert close(lat[row][3], scenario.nearest_rank(values, 99), 1)


def test_report_day_html_embeds_valid_pngs(built):
    from PIL import Image

    directory = built["path"].parent
    html = (directory / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert html.count('src="data:image/png;base64,') == len(CHARTS)
    for name in CHARTS:
        with Image.open(directory / name) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] >= 800


def test_report_day_run_twice_byte_identical(built):
    res = run_report("--home", str(built["home"]), "--date", scenario.DATE)
    assert res.returncode == 0, res.stderr
    assert digest(built["path"].parent) == built["digest"]


def test_report_since_and_out_cover_the_rest(built, tmp_path):
    out = tmp_path / "out"
    since = scenario.BASE + 60_000                 # 10:01:00: the later fills only
    res = run_report("--home", str(built["home"]), "--since", str(since), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "report.md")
    md = (out / "report.md").read_text()
    assert "since 2024-03-05T10:01:00Z" in md
    res = run_report("--home", str(built["home"]), "--since", "2024-03-05T10:01:00Z")
    assert res.returncode == 0, res.stderr
    path = built["home"] / "reports" / "since-20240305T100100Z" / "report.md"
    assert res.stdout.strip() == str(path)
    assert path.read_bytes() == md.encode()


def test_report_empty_home_says_no_data_exits_0(tmp_path):
    home = tmp_path / "empty"
    res = run_report("--home", str(home), "--date", "2024-01-02")
    assert res.returncode == 0, res.stderr
    md = (home / "reports" / "2024-01-02" / "report.md").read_text()
    assert "No data in this period." in md and "No spools found" in md
    assert (home / "reports" / "2024-01-02" / "report.html").exists()
    assert not list((home / "reports" / "2024-01-02").glob("*.png"))


@pytest.mark.parametrize("args", [["--date", "2024-02-30"], ["--date", "05/03/2024"],
                                  ["--date", "tomorrow"], ["--since", "last tuesday"],
                                  ["--date", "today", "--since", "0"]])
def test_report_bad_period_exits_2_one_line(args, tmp_path):
    res = run_report("--home", str(tmp_path), *args, timeout=30)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ofi: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "reports").exists()
