"""Shared fixtures: a fresh home per test, the recorded data, free ports, process cleanup."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("OFI_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture
def home(tmp_path):
    """A fresh runtime directory."""
    d = tmp_path / "home"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def data_dir():
    """The recorded Binance data (../shared/data or $OFI_DATA_DIR); skips when absent."""
    if not (DATA_DIR / "hftbacktest").is_dir():
        pytest.skip(f"recorded market data not found at {DATA_DIR} (set OFI_DATA_DIR)")
    return DATA_DIR


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def procs():
    """Start processes that are killed (with their groups) when the test ends."""
    started: list[subprocess.Popen] = []

    def start(args, **kw):
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


OFI = [sys.executable, "-m", "daemons.cli"]


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    """``pred()``'s first true value, asked every ``interval`` s; AssertionError after
    ``timeout`` s naming ``what``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

_BUFFERS: dict[int, bytearray] = {}


def read_line(proc, timeout: float = 10.0) -> str:
    """A child's next stdout line, within ``timeout`` (reads the pipe's fd directly, so that
    lines already read ahead are never waited for)."""
    buf = _BUFFERS.setdefault(proc.pid, bytearray())
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"child printed no line in {timeout} s"
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, "child closed its stdout"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode().strip()
