"""`ofi data import` / `ofi data ls`: the catalog holds exactly what the raw path reads."""
from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
import zipfile

import orjson
import pyarrow.parquet as pq
import pytest

from conftest import OFI
from daemons.tools.catalog import store
from daemons.marketdata.replay import Replay

LEVELS = 10


def btc_files(data_dir):
    d = data_dir / "hftbacktest" / "usdm"
    return [d / "btcusdt_20240718.gz", d / "btcusdt_20240719.gz"]


def ofi(*args, timeout=120):
    return subprocess.run(OFI + [str(a) for a in args], capture_output=True, timeout=timeout)


def one_line_error(p) -> str:
    err = p.stderr.decode()
    assert p.returncode != 0, err
    assert err.strip() and "\n" not in err.strip() and "Traceback" not in err, err
    return err.strip()


def expected_rows(paths, levels=LEVELS) -> dict:
    """What docs/catalog.md says each kind's rows are, from Replay's keyed records."""
    out = {k: [] for k in store.KINDS}
    seq: dict = {}

    def nxt(kind, sym):
        s = seq.get((kind, sym), 0)
        seq[(kind, sym)] = s + 1
        return s

    def levels_of(side, name):
        side = side or []
        row = {}
        for i in range(levels):
            have = i < len(side)
            row[f"{name}_px_{i}"] = side[i][0] if have else None
            row[f"{name}_qty_{i}"] = side[i][1] if have else None
        return row

    replay = Replay([str(p) for p in paths], levels=levels)
    for stream, key, r in replay.keyed():
        sym = r["symbol"]
        if stream == "trades":
            t = r["T"] if r["T"] is not None else r["E"]
            row = {"E": r["E"], "trade_id": r["t"], "price": r["price"], "qty": r["qty"],
                   "is_buy": r["side"] == "buy", "market": r["X"] == "MARKET"}
        elif stream == "book":
            t = r["E"] if r["E"] is not None else r["recv_ts"]
            row = {k: r[k] for k in ("E", "T", "u", "bid", "bid_qty", "ask", "ask_qty")}
        else:
            t = r["E"] if r.get("E") is not None else r["recv_ts"]
            typ = r["type"]
            row = {"type": typ, "U": r.get("U"),
                   "u": r["lastUpdateId"] if typ == "snapshot" else r["u"], "pu": r.get("pu")}
            row.update(levels_of(r.get("bids"), "bid"))
            row.update(levels_of(r.get("asks"), "ask"))
            if typ == "gap":
                out["gaps"].append({"seq": nxt("gaps", sym), "key": key, "t": t,
                                    "recv_ts": r["recv_ts"], "stream": "depth",
                                    "reason": r["reason"], "expected_pu": r["expected_pu"],
                                    "got_pu": r["got_pu"], "u": r["u"], "until": None})
        out[stream].append({"seq": nxt(stream, sym), "key": key, "t": t,
                            "recv_ts": r["recv_ts"], **row})
    last = max(r["t"] for k in ("trades", "book", "depth") for r in out[k])
    for sym in sorted({sym for (kind, sym) in seq}):
        for st in replay.stalls:
            out["gaps"].append({"seq": nxt("gaps", sym), "key": st["t"], "t": st["t"],
                                "recv_ts": st["t"], "stream": st["stream"],
                                "reason": "stream silent", "expected_pu": None, "got_pu": None,
                                "u": None, "until": last if st["until"] is None else st["until"]})
    return out, replay


def catalog_rows(catalog, kind, symbol) -> list[dict]:
    rows = []
    for p in store.source_files(catalog, kind, symbol):
        rows += pq.read_table(p).to_pylist()
    rows.sort(key=lambda r: r["seq"])
    return rows


@pytest.fixture(scope="module")
def imported(data_dir, tmp_path_factory):
    """The two BTCUSDT USD-M recordings imported once (through the command)."""
    cat = tmp_path_factory.mktemp("catalog")
    p = ofi("data", "import", *btc_files(data_dir), "--catalog", cat)
    assert p.returncode == 0, p.stderr
    return cat, p.stdout.decode()


def test_import_holds_exactly_the_replay_records(imported, data_dir):
    cat, out = imported
    want, replay = expected_rows(btc_files(data_dir))
    assert "BTCUSDT" in out and "lines/s" in out
    for kind in store.KINDS:
        got = catalog_rows(cat, kind, "BTCUSDT")
        assert len(got) == len(want[kind]), kind
        assert got == want[kind], kind
    assert want["depth"] and want["trades"] and want["book"]
    [m] = store.manifests(cat)
    assert m["kinds"] == {k: len(v) for k, v in want.items()}
    assert m["dates"] == ["2024-07-18", "2024-07-19"] and m["symbols"] == ["BTCUSDT"]
    assert m["levels"] == LEVELS and m["format"] == "hftbacktest"
    assert [f["name"] for f in m["files"]] == ["btcusdt_20240718.gz", "btcusdt_20240719.gz"]
    ts = [r["t"] for k in ("trades", "book", "depth") for r in want[k]]
    assert (m["first_ms"], m["last_ms"]) == (min(ts), max(ts))
    # every row sits in the partition of its own UTC date
    for kind in ("trades", "book", "depth"):
        for p in store.source_files(cat, kind, "BTCUSDT"):
            date = p.parent.name.removeprefix("date=")
            assert {store.date_of(t) for t in pq.read_table(p, columns=["t"])["t"].to_pylist()} \
                == {date}
    assert replay.stalls == [] and not (cat / "_tmp").exists()


def test_row_groups_do_not_change_the_rows(imported, data_dir, tmp_path):
    """Flushed every 1000 rows (many row groups, bounded memory): the same tables."""
    from daemons.tools.catalog.importer import import_source, prepare, sources_of

    cat, _ = imported
    [src] = sources_of(prepare([str(p) for p in btc_files(data_dir)], str(tmp_path)))
    import_source(tmp_path / "small", src, levels=LEVELS, flush_rows=1000)
    for kind in ("trades", "book", "depth"):
        small = store.source_files(tmp_path / "small", kind, "BTCUSDT")
        assert pq.ParquetFile(small[-1]).metadata.num_row_groups > 1
        assert [pq.read_table(p) for p in small] == \
            [pq.read_table(p) for p in store.source_files(cat, kind, "BTCUSDT")]


def test_reimport_changes_nothing(imported, data_dir):
    cat, _ = imported
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cat.rglob("*") if p.is_file()}
    p = ofi("data", "import", *btc_files(data_dir), "--catalog", cat)
    assert p.returncode == 0, p.stderr
    assert "already in the catalog" in p.stdout.decode()
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cat.rglob("*") if p.is_file()}
    assert after == before


def test_ls_shows_the_import(imported):
    cat, _ = imported
    [m] = store.manifests(cat)
    p = ofi("data", "ls", "--catalog", cat)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert lines[0].split()[:6] == ["symbol", "date", "trades", "book", "depth", "gaps"]
    assert [ln.split()[:2] for ln in lines[1:]] == [["BTCUSDT", "2024-07-18"],
                                                   ["BTCUSDT", "2024-07-19"]]
    assert all(m["source_id"] in ln for ln in lines[1:])
    rows = orjson.loads(ofi("data", "ls", "--catalog", cat, "--json").stdout)
    for kind in store.KINDS:
        assert sum(r["kinds"][kind] for r in rows) == m["kinds"][kind]
    assert rows[0]["first_ms"] == m["first_ms"] and rows[-1]["last_ms"] == m["last_ms"]
    assert rows[0]["kinds"]["trades"] == 974  # the 0718 file's trades all happened that day


def recording_twice(data_dir, tmp_path):
    """The start of a recording twice, the copy 10 minutes and 10**10 update ids later (as
    the benchmark corpus is built): every stream falls silent, the depth chain breaks and the
    copy's snapshot re-syncs it."""
    lines = gzip.decompress(btc_files(data_dir)[0].read_bytes()).splitlines()[:3000]
    times = re.compile(rb'"([ET])":(\d+)')
    ids = re.compile(rb'"(U|u|pu|lastUpdateId)":(\d+)')
    out = list(lines)
    for line in lines:
        ts, _, js = line.partition(b" ")
        js = times.sub(lambda m: b'"%s":%d' % (m.group(1), int(m.group(2)) + 600_000), js)
        js = ids.sub(lambda m: b'"%s":%d' % (m.group(1), int(m.group(2)) + 10**10), js)
        out.append(b"%d %s" % (int(ts) + 600 * 10**9, js))
    f = tmp_path / "btcusdt_twice.gz"
    f.write_bytes(gzip.compress(b"\n".join(out) + b"\n"))
    return f


def test_silences_and_chain_breaks_land_in_gaps(data_dir, tmp_path):
    f = recording_twice(data_dir, tmp_path)
    cat = tmp_path / "cat"
    p = ofi("data", "import", f, "--catalog", cat)
    assert p.returncode == 0, p.stderr
    want, replay = expected_rows([f])
    assert replay.stalls and replay.gaps
    for kind in store.KINDS:
        assert catalog_rows(cat, kind, "BTCUSDT") == want[kind], kind
    reasons = {(r["stream"], r["reason"]) for r in want["gaps"]}
    assert ("depth", "stream silent") in reasons and ("depth", "pu != previous u") in reasons


def two_symbols(data_dir, tmp_path, lines=6000):
    """The starts of the BTCUSDT and ETHUSDT recordings of one day in one file, by receive
    time (their REST snapshots given their symbol): the depth worker switches books from line
    to line."""
    d = data_dir / "hftbacktest" / "usdm"
    both = []
    for name in ("btcusdt_20240718.gz", "ethusdt_20240718.gz"):
        sym = name.split("_")[0].upper().encode()
        for line in gzip.decompress((d / name).read_bytes()).splitlines()[:lines]:
            ts, _, js = line.partition(b" ")
            if not js.startswith(b'{"stream"'):   # a REST snapshot: no symbol of its own
                js = b'{"s":"%s",%s' % (sym, js[1:])
            both.append(b"%s %s" % (ts, js))
    both.sort(key=lambda line: int(line.partition(b" ")[0]))
    f = tmp_path / "usdm_two_20240718.gz"
    f.write_bytes(gzip.compress(b"\n".join(both) + b"\n"))
    return f


@pytest.mark.slow   # forks the depth worker (daemons/marketdata/forked.py)
@pytest.mark.parametrize("case", ["usdm", "spot", "twice", "two symbols"])
def test_one_pass_import_writes_the_general_paths_rows(case, data_dir, tmp_path):
    """hftbacktest recordings are read in one pass (the depth stream in a worker process, or
    in this one): every table and the manifest are those of the Replay path."""
    from daemons.tools.catalog.importer import import_source, prepare, sources_of

    files = {"usdm": btc_files(data_dir),
             "spot": [data_dir / "hftbacktest" / "spot" / "btcusdt_20240808.gz"],
             "twice": [recording_twice(data_dir, tmp_path)],
             "two symbols": [two_symbols(data_dir, tmp_path)]}[case]
    symbols = ("BTCUSDT", "ETHUSDT") if case == "two symbols" else ("BTCUSDT",)
    [src] = sources_of(prepare([str(p) for p in files], str(tmp_path)))
    got = {}
    for mode, kw in (("replay", {"fast": False}), ("worker", {}), ("one", {"workers": 1})):
        res = import_source(tmp_path / mode, src, levels=LEVELS, **kw)
        m = dict(res.manifest)
        del m["imported_at"]
        tables = {(kind, sym, p.parent.name): pq.read_table(p) for kind in store.KINDS
                  for sym in symbols for p in store.source_files(tmp_path / mode, kind, sym)}
        got[mode] = (m, tables, res.lines)
    want = got.pop("replay")
    assert want[0]["kinds"]["depth"] and want[0]["kinds"]["trades"] and want[0]["kinds"]["book"]
    for sym in symbols:   # every symbol's book synced: diffs applied, rows with levels
        depth = [t for k, t in want[1].items() if k[:2] == ("depth", sym)]
        assert sum(t["type"].to_pylist().count("depth") for t in depth) > 100, sym
    if case == "twice":
        reasons = {r for k, t in want[1].items() if k[0] == "gaps"
                   for r in t["reason"].to_pylist()}
        assert {"stream silent", "pu != previous u"} <= reasons
    for mode, (m, tables, lines) in got.items():
        assert m == want[0], mode
        assert lines == want[2], mode
        assert tables.keys() == want[1].keys(), mode
        for k, t in tables.items():
            assert t.equals(want[1][k]), (mode, k)


def _zip_with_checksum(tmp_path, csv, checksum=None):
    z = tmp_path / (csv.stem + ".zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.write(csv, csv.name)
    digest = checksum or hashlib.sha256(z.read_bytes()).hexdigest()
    (tmp_path / (z.name + ".CHECKSUM")).write_text(f"{digest}  {z.name}\n")
    return z


def test_zip_with_checksum_imports_a_wrong_one_is_refused(data_dir, tmp_path):
    csv = data_dir / "binance_vision_spot" / "BTCUSDT-aggTrades-2026-01-01.csv"
    good = tmp_path / "good"
    good.mkdir()
    z = _zip_with_checksum(good, csv)
    cat = tmp_path / "cat"
    p = ofi("data", "import", z, "--catalog", cat)
    assert p.returncode == 0, p.stderr
    [m] = store.manifests(cat)
    assert m["format"] == "csv_aggtrades" and m["kinds"]["trades"] == 5000
    assert m["files"][0]["name"] == z.name
    assert m["files"][0]["sha256"] == hashlib.sha256(z.read_bytes()).hexdigest()
    rows = catalog_rows(cat, "trades", "BTCUSDT")
    assert round(sum(r["qty"] if r["is_buy"] else -r["qty"] for r in rows), 5) == 17.30342

    bad = tmp_path / "bad"
    bad.mkdir()
    z = _zip_with_checksum(bad, csv, checksum="0" * 64)
    cat2 = tmp_path / "cat2"
    err = one_line_error(ofi("data", "import", z, "--catalog", cat2))
    assert "checksum" in err and z.name in err
    assert not cat2.exists()


def test_corrupt_inputs_are_one_line_errors_and_write_nothing(data_dir, tmp_path):
    src = btc_files(data_dir)[0].read_bytes()
    truncated = tmp_path / "btcusdt_20240718.gz"
    truncated.write_bytes(src[: len(src) // 2])
    cat = tmp_path / "cat"
    err = one_line_error(ofi("data", "import", truncated, "--catalog", cat))
    assert truncated.name in err
    assert not cat.exists()

    lines = gzip.decompress(src).splitlines()[:50]
    lines[20] = lines[20][:40]  # a line cut in the middle of its JSON
    broken = tmp_path / "ethusdt_20240718.gz"
    broken.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    err = one_line_error(ofi("data", "import", broken, "--catalog", cat))
    assert f"{broken}:21" in err
    assert not cat.exists()

    junk = tmp_path / "btcusdt_junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert "zip" in one_line_error(ofi("data", "import", junk, "--catalog", cat))

    err = one_line_error(ofi("data", "import", tmp_path / "nope.gz", "--catalog", cat))
    assert "nope.gz" in err


def test_ls_of_an_empty_or_missing_catalog_is_one_line(tmp_path):
    assert "no imported sources" in one_line_error(ofi("data", "ls", "--catalog", tmp_path))
    assert "no such" in one_line_error(ofi("data", "ls", "--catalog", tmp_path / "nope"))
