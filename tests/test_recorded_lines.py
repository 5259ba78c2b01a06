"""A bad recorded line gets one message and one line number, whichever reader finds it."""
from __future__ import annotations

import gzip
import subprocess

import pytest

from conftest import OFI
from daemons.marketdata import formats


def _recording(data_dir):
    path = data_dir / "hftbacktest/usdm/btcusdt_20240718.gz"
    if not path.exists():
        pytest.skip(f"recorded data not found: {path}")
    # 3.9 MB: several of the readers' 1 MB chunks, so numbers must count across them
    return gzip.decompress(path.read_bytes()).rstrip(b"\n").split(b"\n")


def _first(lines, after, marker):
    return next(i for i in range(after, len(lines)) if marker in lines[i][:80])


def _damage(lines, kind):
    """(lines with one bad line, its 1-based number, the message it deserves)."""
    lines = list(lines)
    if kind == "depth json":       # the depth worker's line
        i = _first(lines, 9_000, b"@depth")
        lines[i] = lines[i][:-40]
        return lines, i + 1, "unparseable JSON"
    if kind == "book json":        # the main process's line
        i = _first(lines, 8_000, b"@bookTicker")
        lines[i] = lines[i][:-10]
        return lines, i + 1, "unparseable JSON"
    if kind == "no stamp":
        i = _first(lines, 6_000, b"@trade")
        lines[i] = lines[i][lines[i].index(b" ") + 1:]
        return lines, i + 1, "expected '<local_ts> <json>'"
    i = _first(lines, 4_000, b"@depth")   # "bad stamp"
    lines[i] = b"17x" + lines[i]
    return lines, i + 1, "bad local timestamp"


def _run(*args):
    p = subprocess.run(OFI + [str(a) for a in args], capture_output=True, timeout=120)
    assert p.returncode == 1, p.stderr.decode()
    return p.stderr.decode()


@pytest.mark.parametrize("kind", ["depth json", "book json", "no stamp", "bad stamp"])
def test_every_reader_names_the_same_bad_line(data_dir, tmp_path, kind):
    lines, number, reason = _damage(_recording(data_dir), kind)
    lines.insert(10, b"")   # a blank line is skipped by all, and counted as a line
    number += 1
    path = tmp_path / "btcusdt_20240718.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1))
    want = f"{path}:{number}: {reason}"

    with pytest.raises(formats.FormatError) as err:
        for _ in formats.read_messages(str(path)):
            pass
    assert str(err.value) == want
    for workers in ("1", "2"):
        assert _run("signals", "--workers", workers, "--symbol", "BTCUSDT", path) \
            == f"ofi: {want}\n"
    err = _run("data", "import", path, "--catalog", tmp_path / "cat")
    assert want in err and "\n" not in err.strip()
    assert not (tmp_path / "cat").exists()


def test_bad_line_diagnoses_each_kind_and_passes_blank_lines():
    assert formats.bad_line("f", 3, b"  ") is None
    assert formats.bad_line("f", 3, b"1721260800000 ") is None
    for line, reason in [(b"{}", "expected '<local_ts> <json>'"),
                         (b"12a {}", "bad local timestamp"),
                         (b"12 {", "unparseable JSON")]:
        with pytest.raises(formats.FormatError, match=f"^f:3: {reason}$"):
            formats.bad_line("f", 3, line)
    with pytest.raises(formats.FormatError, match="^f:3: unparseable JSON$"):
        formats.bad_line("f", 3, b"{", stamped=False)
